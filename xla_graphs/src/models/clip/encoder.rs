//! `CLIPEncoder`: pre-norm transformer layers (`CLIPEncoderLayer`) of causal multi-head
//! self-attention (`CLIPAttention`) and an MLP (`CLIPMLP`), as transformers defines them.

use crate::models::modules::{layer_norm, linear, Activation};
use crate::models::params::Params;
use crate::{nn, Result, Tensor};

/// The sizes every layer shares.
#[derive(Clone, Copy, Debug)]
pub struct EncoderDims {
    pub hidden: i64,
    pub heads: i64,
    pub intermediate: i64,
    pub layer_norm_eps: f64,
    pub activation: Activation,
}

/// `CLIPEncoder` at `p` (`text_model.encoder`): `[B, L, D]` through `layers` layers, returning
/// transformers' `hidden_states`: the input, then every layer's output `[B, L, D]` (tapped as
/// `<prefix>.layers.<i>`).
pub fn clip_encoder(p: &Params, x: &Tensor, layers: usize, d: &EncoderDims) -> Result<Vec<Tensor>> {
    let mut states = Vec::with_capacity(layers + 1);
    states.push(x.clone());
    for i in 0..layers {
        let h = p.scope(format!("layers.{i}"), |p| {
            let out = clip_encoder_layer(p, &states[i], d)?;
            p.tap(&out);
            Ok::<_, crate::GraphError>(out)
        })?;
        states.push(h);
    }
    Ok(states)
}

/// `x + attn(ln1(x))`, then `+ mlp(ln2(.))`.
pub fn clip_encoder_layer(p: &Params, x: &Tensor, d: &EncoderDims) -> Result<Tensor> {
    let eps = d.layer_norm_eps;
    let n = layer_norm(p, "layer_norm1", x, eps)?;
    let h = x.add(&p.scope("self_attn", |p| clip_attention(p, &n, d))?)?;
    let n = layer_norm(p, "layer_norm2", &h, eps)?;
    let m = p.scope("mlp", |p| {
        let f = linear(p, "fc1", &n, d.hidden, d.intermediate, true)?;
        linear(
            p,
            "fc2",
            &d.activation.apply(&f)?,
            d.intermediate,
            d.hidden,
            true,
        )
    })?;
    h.add(&m)
}

/// Causal multi-head self-attention with q/k/v/out projections, at `p` (`...self_attn`), in
/// transformers' eager order: scores scaled after the product, softmax normalised before the
/// value product.
pub fn clip_attention(p: &Params, x: &Tensor, d: &EncoderDims) -> Result<Tensor> {
    let dims = x.dims();
    let (b, l, hidden) = (dims[0], dims[1], d.hidden);
    let head_dim = hidden / d.heads;
    let split =
        |name: &str| linear(p, name, x, hidden, hidden, true)?.reshape(&[b, l, d.heads, head_dim]);
    let (q, k, v) = (split("q_proj")?, split("k_proj")?, split("v_proj")?);
    let o = nn::AttentionOptions {
        causal: true,
        // transformers fills masked scores with finfo(f32).min: finite, so a fully masked row
        // would still be defined (a causal row never is).
        masked_score: f32::MIN as f64,
        ..nn::AttentionOptions::default()
    };
    let out = nn::multi_head_attention(&q, &k, &v, &o)?.reshape(&[b, l, hidden])?;
    linear(p, "out_proj", &out, hidden, hidden, true)
}
