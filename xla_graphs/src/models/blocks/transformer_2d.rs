//! diffusers' `Transformer2DModel` on continuous inputs, as the UNet's cross-attention blocks
//! use it: group norm, `proj_in`, `BasicTransformerBlock`s (self-attention, cross-attention on
//! the text encoder's states, GEGLU feed-forward, each pre-normed with a residual),
//! `proj_out`, and the residual around the whole.

use crate::models::blocks::attention::{attention, AttentionConfig};
use crate::models::modules::{group_norm, layer_norm, linear};
use crate::models::params::Params;
use crate::{nn, Result, Tensor};

/// diffusers hard-codes these for Transformer2DModel's group norm and its blocks' layer norms.
const GROUP_NORM_EPS: f64 = 1e-6;
const LAYER_NORM_EPS: f64 = 1e-5;
/// `FeedForward(mult=4)`.
const FF_MULT: i64 = 4;

/// The constructor arguments the UNet blocks pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transformer2DModel {
    /// `in_channels`; the UNet also makes `heads * dim_head` equal to it.
    pub in_channels: i64,
    pub heads: i64,
    pub dim_head: i64,
    /// `num_layers`: BasicTransformerBlocks in sequence.
    pub num_layers: usize,
    pub cross_attention_dim: i64,
    /// `norm_num_groups` of the input group norm (the UNet's `norm_num_groups`).
    pub norm_num_groups: i64,
    /// `proj_in`/`proj_out` are `nn.Linear` over tokens (SD 2.x) rather than 1x1 convs.
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl Transformer2DModel {
    fn inner_dim(&self) -> i64 {
        self.heads * self.dim_head
    }

    /// `x` `[B, in_channels, H, W]` attending to `context` `[B, L, cross_attention_dim]` ->
    /// `[B, in_channels, H, W]`; `p` is the module's view (`...attentions.<i>`).
    pub fn forward(&self, p: &Params, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let d = x.dims();
        if d.len() != 4 || d[1] != self.in_channels {
            return Err(x.graph().op_error(
                "Transformer2DModel",
                &[x],
                format!("needs [B, {}, H, W]", self.in_channels),
            ));
        }
        let c = d[1];
        let inner = self.inner_dim();
        let linear = self.use_linear_projection;
        let h = group_norm(p, "norm", x, self.norm_num_groups, GROUP_NORM_EPS)?;
        let mut h = projection(p, "proj_in", &to_tokens(&h)?, c, inner, linear)?;
        for i in 0..self.num_layers {
            h = p.scope(format!("transformer_blocks.{i}"), |p| {
                self.basic_transformer_block(p, &h, context)
            })?;
        }
        let out = projection(p, "proj_out", &h, inner, c, linear)?;
        from_tokens(&out, d[2], d[3])?.add(x)
    }

    /// `BasicTransformerBlock` with `norm_type="layer_norm"` on tokens `[B, T, inner]`.
    fn basic_transformer_block(&self, p: &Params, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let inner = self.inner_dim();
        let attn = AttentionConfig {
            upcast_attention: self.upcast_attention,
            ..AttentionConfig::new(inner, self.heads, self.dim_head)
        };
        let cross = AttentionConfig {
            cross_attention_dim: Some(self.cross_attention_dim),
            ..attn
        };
        let n = layer_norm(p, "norm1", x, LAYER_NORM_EPS)?;
        let h = x.add(&p.scope("attn1", |p| attention(p, &n, None, &attn))?)?;
        let n = layer_norm(p, "norm2", &h, LAYER_NORM_EPS)?;
        let h = h.add(&p.scope("attn2", |p| attention(p, &n, Some(context), &cross))?)?;
        let n = layer_norm(p, "norm3", &h, LAYER_NORM_EPS)?;
        h.add(&p.scope("ff", |p| feed_forward(p, &n, inner))?)
    }
}

/// `FeedForward(dim, activation_fn="geglu")`: `net.0` is GEGLU (one projection to twice the
/// hidden width, split into value and gate, `value * gelu(gate)`), `net.2` projects back.
pub fn feed_forward(p: &Params, x: &Tensor, dim: i64) -> Result<Tensor> {
    let hidden = dim * FF_MULT;
    let last = x.rank() - 1;
    let proj = p.scope("net.0", |p| linear(p, "proj", x, dim, 2 * hidden, true))?;
    let value = proj.slice_axis(last, 0, hidden)?;
    let gate = proj.slice_axis(last, hidden, 2 * hidden)?;
    let h = value.multiply(&nn::gelu(&gate)?)?;
    p.scope("net", |p| linear(p, "2", &h, hidden, dim, true))
}

/// `[B, C, H, W]` -> `[B, H*W, C]`, as `permute(0, 2, 3, 1).reshape` does.
fn to_tokens(x: &Tensor) -> Result<Tensor> {
    let d = x.dims();
    x.transpose(&[0, 2, 3, 1])?
        .reshape(&[d[0], d[2] * d[3], d[1]])
}

/// `[B, H*W, C]` -> `[B, C, H, W]`.
fn from_tokens(x: &Tensor, height: i64, width: i64) -> Result<Tensor> {
    let d = x.dims();
    x.reshape(&[d[0], height, width, d[2]])?
        .transpose(&[0, 3, 1, 2])
}

/// `proj_in` / `proj_out` on tokens `[B, T, cin]`: an `nn.Linear` (weight `[cout, cin]`) or,
/// in SD 1.x checkpoints, a 1x1 `nn.Conv2d` (weight `[cout, cin, 1, 1]`), which is the same
/// product over the channels, so the image is flattened once either way.
fn projection(
    p: &Params,
    name: &str,
    tokens: &Tensor,
    cin: i64,
    cout: i64,
    linear_weight: bool,
) -> Result<Tensor> {
    if linear_weight {
        return linear(p, name, tokens, cin, cout, true);
    }
    p.scope(name, |p| {
        let w = p.get("weight", &[cout, cin, 1, 1])?.reshape(&[cout, cin])?;
        let b = p.get("bias", &[cout])?;
        nn::linear(tokens, &w, Some(&b))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Graph, Shape};

    fn model(linear: bool) -> Transformer2DModel {
        Transformer2DModel {
            in_channels: 8,
            heads: 2,
            dim_head: 4,
            num_layers: 2,
            cross_attention_dim: 6,
            norm_num_groups: 2,
            use_linear_projection: linear,
            upcast_attention: linear,
        }
    }

    #[test]
    fn binds_the_checkpoint_keys_for_both_projections() {
        for linear in [false, true] {
            let g = Graph::new();
            let p = Params::new(&g, DType::F32);
            let x = p.input("x", Shape::new(DType::F32, &[2, 8, 3, 5])).unwrap();
            let ctx = p.input("ctx", Shape::new(DType::F32, &[2, 7, 6])).unwrap();
            let y = p
                .scope("attentions.0", |p| model(linear).forward(p, &x, &ctx))
                .unwrap();
            assert_eq!(y.shape(), x.shape());
            let w: Vec<(String, Vec<i64>)> = p
                .weights()
                .into_iter()
                .map(|s| (s.name.clone(), s.checkpoint_dims()))
                .collect();
            let find = |k: &str| w.iter().find(|(n, _)| n == k).map(|(_, d)| d.clone());
            let proj = if linear { vec![8, 8] } else { vec![8, 8, 1, 1] };
            assert_eq!(find("attentions.0.proj_in.weight"), Some(proj.clone()));
            assert_eq!(find("attentions.0.proj_out.weight"), Some(proj));
            assert_eq!(find("attentions.0.norm.weight"), Some(vec![8]));
            let b1 = "attentions.0.transformer_blocks.1";
            assert_eq!(find(&format!("{b1}.attn2.to_k.weight")), Some(vec![8, 6]));
            assert_eq!(
                find(&format!("{b1}.ff.net.0.proj.weight")),
                Some(vec![64, 8])
            );
            assert_eq!(find(&format!("{b1}.ff.net.2.weight")), Some(vec![8, 32]));
            assert_eq!(find(&format!("{b1}.norm3.bias")), Some(vec![8]));
            assert_eq!(find(&format!("{b1}.attn1.to_q.bias")), None);
            assert_eq!(w.len(), 6 + 2 * 20);
            assert!(g.to_stablehlo(&[&y]).is_ok());
        }
    }

    #[test]
    fn a_wrong_channel_count_names_the_module() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let x = p.input("x", Shape::new(DType::F32, &[1, 4, 3, 3])).unwrap();
        let ctx = p.input("ctx", Shape::new(DType::F32, &[1, 7, 6])).unwrap();
        let err = p
            .scope("mid_block.attentions.0", |p| {
                model(true).forward(p, &x, &ctx)
            })
            .unwrap_err();
        assert_eq!(err.path(), Some("mid_block.attentions.0"));
        assert!(err.to_string().contains("[B, 8, H, W]"), "{err}");
    }
}
