//! diffusers' `Attention` module (`attention_processor.py`, run by `AttnProcessor2_0`): q/k/v
//! projections, multi-head scaled dot-product attention, `to_out.0`; optionally a group norm
//! in front and a residual and rescale behind, as the VAE's mid-block attention uses them.
//! The attention itself is `nn::multi_head_attention`.

use crate::models::modules::{group_norm, linear};
use crate::models::params::Params;
use crate::{nn, GraphError, Result, Tensor};

/// The constructor arguments of diffusers' `Attention` that SD's UNet and VAE set.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionConfig {
    /// Channels of the hidden states (`query_dim`); also the output width.
    pub query_dim: i64,
    /// Width of the context for cross-attention (`cross_attention_dim`); `None` for
    /// self-attention, where keys and values come from the hidden states.
    pub cross_attention_dim: Option<i64>,
    pub heads: i64,
    pub dim_head: i64,
    /// Bias on `to_q`, `to_k`, `to_v` (`bias`): off in the UNet, on in the VAE. `to_out.0`
    /// always has one (`out_bias`).
    pub bias: bool,
    /// `upcast_attention`: q and k enter the score product in f32, not just its result.
    pub upcast_attention: bool,
    /// `norm_num_groups`: a `group_norm` over the channels before the projections.
    pub norm_num_groups: Option<i64>,
    /// The group norm's `eps`.
    pub eps: f64,
    /// `residual_connection`: adds the input (before the group norm) to the output.
    pub residual_connection: bool,
    /// `rescale_output_factor`: the output is divided by it (after the residual).
    pub rescale_output_factor: f64,
}

impl AttentionConfig {
    /// The UNet's attention: `heads` heads of `dim_head`, no q/k/v bias, no norm or residual.
    pub fn new(query_dim: i64, heads: i64, dim_head: i64) -> AttentionConfig {
        AttentionConfig {
            query_dim,
            cross_attention_dim: None,
            heads,
            dim_head,
            bias: false,
            upcast_attention: false,
            norm_num_groups: None,
            eps: 1e-5,
            residual_connection: false,
            rescale_output_factor: 1.0,
        }
    }

    fn inner_dim(&self) -> i64 {
        self.heads * self.dim_head
    }
}

/// `Attention.forward` at `p` (the module's key prefix, e.g. `...transformer_blocks.0.attn2`).
/// `x` is `[B, L, query_dim]` or an image `[B, query_dim, H, W]` (attended over its H*W pixels
/// and returned in the same layout). `context` is `[B, Lc, cross_attention_dim]` for
/// cross-attention, `None` for self-attention.
pub fn attention(
    p: &Params,
    x: &Tensor,
    context: Option<&Tensor>,
    c: &AttentionConfig,
) -> Result<Tensor> {
    let dims = x.dims();
    let image = dims.len() == 4;
    if !(dims.len() == 3 && dims[2] == c.query_dim || image && dims[1] == c.query_dim) {
        return Err(shape_error(
            x,
            format!(
                "hidden states must be [B, L, {0}] or [B, {0}, H, W]",
                c.query_dim
            ),
        ));
    }
    let kv_dim = c.cross_attention_dim.unwrap_or(c.query_dim);
    if let Some(ctx) = context {
        let cd = ctx.dims();
        if c.cross_attention_dim.is_none() || cd.len() != 3 || cd[0] != dims[0] || cd[2] != kv_dim {
            return Err(shape_error(
                ctx,
                format!(
                    "context must be [{}, Lc, {kv_dim}] for an attention with \
                     cross_attention_dim {:?}",
                    dims[0], c.cross_attention_dim
                ),
            ));
        }
    } else if c.cross_attention_dim.is_some() {
        return Err(GraphError::invalid(
            "attention",
            format!(
                "{}: cross-attention needs a context, none was given",
                p.prefix()
            ),
        ));
    }
    let b = dims[0];
    // Group-normalise in the channels-first layout the norm wants, then flatten the pixels.
    let mut h = x.clone();
    if let Some(groups) = c.norm_num_groups {
        h = if image {
            group_norm(p, "group_norm", &h, groups, c.eps)?
        } else {
            let t = h.transpose(&[0, 2, 1])?;
            group_norm(p, "group_norm", &t, groups, c.eps)?.transpose(&[0, 2, 1])?
        };
    }
    if image {
        h = h
            .reshape(&[b, c.query_dim, dims[2] * dims[3]])?
            .transpose(&[0, 2, 1])?;
    }
    let len = h.dims()[1];
    let inner = c.inner_dim();
    let kv_in = context.unwrap_or(&h);
    let lk = kv_in.dims()[1];
    let split = |t: Tensor, l: i64| t.reshape(&[b, l, c.heads, c.dim_head]);
    let q = split(linear(p, "to_q", &h, c.query_dim, inner, c.bias)?, len)?;
    let k = split(linear(p, "to_k", kv_in, kv_dim, inner, c.bias)?, lk)?;
    let v = split(linear(p, "to_v", kv_in, kv_dim, inner, c.bias)?, lk)?;
    // q scaled and the softmax divided after the value product: two fewer sweeps over the
    // score matrix, SD's largest tensor.
    let o = nn::AttentionOptions {
        upcast: c.upcast_attention,
        scale_at: nn::ScaleAt::Queries,
        normalize: nn::Normalize::AfterValues,
        ..nn::AttentionOptions::default()
    };
    let out = nn::multi_head_attention(&q, &k, &v, &o)?.reshape(&[b, len, inner])?;
    let mut out = p.scope("to_out", |p| linear(p, "0", &out, inner, c.query_dim, true))?;
    if image {
        out = out
            .transpose(&[0, 2, 1])?
            .reshape(&[b, c.query_dim, dims[2], dims[3]])?;
    }
    if c.residual_connection {
        out = out.add(x)?;
    }
    if c.rescale_output_factor != 1.0 {
        out = out.mul_scalar(1.0 / c.rescale_output_factor)?;
    }
    Ok(out)
}

fn shape_error(t: &Tensor, reason: String) -> GraphError {
    t.graph().op_error("attention", &[t], reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Graph, Shape};
    use std::collections::BTreeSet;

    #[test]
    fn unet_cross_attention_binds_diffusers_keys() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let x = g
            .parameter("x", Shape::new(DType::F32, &[2, 6, 8]))
            .unwrap();
        let ctx = g
            .parameter("ctx", Shape::new(DType::F32, &[2, 5, 12]))
            .unwrap();
        let c = AttentionConfig {
            cross_attention_dim: Some(12),
            ..AttentionConfig::new(8, 2, 4)
        };
        let y = p
            .scope("attn2", |p| attention(p, &x, Some(&ctx), &c))
            .unwrap();
        assert_eq!(y.dims(), vec![2, 6, 8]);
        let specs: Vec<(String, Vec<i64>)> = p
            .specs()
            .into_iter()
            .map(|s| (s.name.clone(), s.checkpoint_dims()))
            .collect();
        assert_eq!(
            specs,
            [
                ("attn2.to_q.weight".to_string(), vec![8, 8]),
                ("attn2.to_k.weight".to_string(), vec![8, 12]),
                ("attn2.to_v.weight".to_string(), vec![8, 12]),
                ("attn2.to_out.0.weight".to_string(), vec![8, 8]),
                ("attn2.to_out.0.bias".to_string(), vec![8]),
            ]
        );
        let err = p
            .scope("attn1", |p| attention(p, &x, None, &c))
            .unwrap_err();
        assert!(err.to_string().contains("needs a context"), "{err}");
    }

    #[test]
    fn vae_attention_on_an_image_keeps_its_layout() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let x = g
            .parameter("x", Shape::new(DType::BF16, &[1, 8, 3, 5]))
            .unwrap();
        let c = AttentionConfig {
            bias: true,
            norm_num_groups: Some(4),
            eps: 1e-6,
            residual_connection: true,
            ..AttentionConfig::new(8, 1, 8)
        };
        let y = attention(&p, &x, None, &c).unwrap();
        assert_eq!(y.shape(), x.shape());
        let names: Vec<String> = p.specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names[..3],
            ["group_norm.weight", "group_norm.bias", "to_q.weight"]
        );
        assert!(names.contains(&"to_v.bias".to_string()));
        // Every reduce (the group norm's statistics, the softmax's max and sum over the
        // [B, H, Lq, Lk] scores) reads f32.
        let reduced = g.reduce_operands();
        assert!(
            reduced.iter().all(|s| s.dtype == DType::F32),
            "statistics and scores in f32: {reduced:?}"
        );
        let dims: BTreeSet<Vec<i64>> = reduced.iter().map(|s| s.dims.clone()).collect();
        assert_eq!(
            dims,
            BTreeSet::from([vec![1, 4, 30], vec![1, 1, 15, 15]]),
            "norm statistics and softmax over the scores"
        );
    }
}
