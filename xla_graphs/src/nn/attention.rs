//! Multi-head scaled dot-product attention, the one core behind the UNet's and VAE's
//! attention (diffusers' `AttnProcessor2_0`) and CLIP's causal self-attention (transformers'
//! eager `CLIPAttention`), with the options where their numerics differ.
//!
//! Scores and softmax are computed in at least f32 (`statistics_dtype`) whatever the compute
//! dtype: bf16 probabilities over thousands of latent pixels would lose the small weights.

use crate::models::modules::statistics_dtype;
use crate::nn::activations::softmax_terms;
use crate::nn::reduce::expand_reduced;
use crate::{ComparisonDirection, DType, DotDimensionNumbers, DotGeneral, Result, Shape, Tensor};

/// Where the scale multiplies in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ScaleAt {
    /// On the scores, after the product (torch's and transformers' order).
    #[default]
    Scores,
    /// On q before the product: the `[.., Lq, Lk]` scores are the one large tensor (512 MB
    /// per UNet layer at SD's 64x64 latents), so this saves a memory sweep over them.
    Queries,
}

/// Where the softmax denominator divides.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Normalize {
    /// The textbook order: the probabilities are formed in the wide dtype, cast to the
    /// compute dtype, and the value product runs in the compute dtype (transformers' CLIP
    /// casts its probabilities back before the product).
    #[default]
    BeforeValues,
    /// After the value product, on the `[.., Lq, Dv]` rows rather than the scores: the
    /// unnormalised weights are cast to the compute dtype, the product accumulates in the
    /// wide dtype and is divided there, leaving max, exp and sum as the only passes over the
    /// scores. Equal to the textbook order up to rounding.
    AfterValues,
}

#[derive(Clone, Debug)]
pub struct AttentionOptions {
    /// Query i sees keys 0..=i (torch's top-left aligned causal mask); the hidden scores
    /// are replaced by `masked_score`.
    pub causal: bool,
    /// What a causally hidden score becomes; -inf by default (torch's SDPA).
    pub masked_score: f64,
    /// Added to the (scaled) scores; numpy-broadcastable to `[B, H, Lq, Lk]`, converted to
    /// the scores' dtype.
    pub mask: Option<Tensor>,
    /// Multiplies the scores; default `1 / sqrt(d)`.
    pub scale: Option<f64>,
    pub scale_at: ScaleAt,
    /// `upcast_attention`: q and k enter the score product in the wide dtype, not just its
    /// result.
    pub upcast: bool,
    pub normalize: Normalize,
}

impl Default for AttentionOptions {
    fn default() -> AttentionOptions {
        AttentionOptions {
            causal: false,
            masked_score: f64::NEG_INFINITY,
            mask: None,
            scale: None,
            scale_at: ScaleAt::default(),
            upcast: false,
            normalize: Normalize::default(),
        }
    }
}

/// `softmax(q k^T * scale + mask) v` over heads laid out as `[B, L, H, d]` (how the
/// projections produce them): `q: [B, Lq, H, d]`, `k: [B, Lk, H, d]`, `v: [B, Lk, H, Dv]`,
/// returned as `[B, Lq, H, Dv]` in q's dtype. Batching over B and H in place traces no
/// transposes before the products.
pub fn multi_head_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &AttentionOptions,
) -> Result<Tensor> {
    check_operands(q, k, v)?;
    let dtype = q.dtype();
    let wide = statistics_dtype(dtype);
    let (q, k) = if o.upcast && wide != dtype {
        (q.convert(wide)?, k.convert(wide)?)
    } else {
        (q.clone(), k.clone())
    };
    let scale = o.scale.unwrap_or(1.0 / (q.dims()[3] as f64).sqrt());
    let q = match o.scale_at {
        ScaleAt::Queries => q.mul_scalar(scale)?,
        ScaleAt::Scores => q,
    };
    // [B, Lq, H, d] x [B, Lk, H, d] -> [B, H, Lq, Lk]
    let qk = DotGeneral {
        dims: DotDimensionNumbers {
            lhs_batching_dimensions: vec![0, 2],
            rhs_batching_dimensions: vec![0, 2],
            lhs_contracting_dimensions: vec![3],
            rhs_contracting_dimensions: vec![3],
        },
        result_dtype: (q.dtype() != wide).then_some(wide),
        ..DotGeneral::default()
    };
    let mut scores = q.dot_general_with(&k, qk)?;
    if o.scale_at == ScaleAt::Scores {
        scores = scores.mul_scalar(scale)?;
    }
    let sd = scores.dims();
    if let Some(m) = &o.mask {
        let m = if m.dtype() == wide {
            m.clone()
        } else {
            m.convert(wide)?
        };
        scores = scores.add(&m.broadcast_to(&sd)?)?;
    }
    if o.causal {
        let g = scores.graph();
        let rows = g.iota(Shape::new(DType::I32, &sd), 2)?;
        let cols = g.iota(Shape::new(DType::I32, &sd), 3)?;
        let visible = cols.compare(&rows, ComparisonDirection::Le)?;
        scores = visible.select(&scores, &scores.full_like(o.masked_score)?)?;
    }
    let (e, sum) = softmax_terms(&scores, 3)?;
    let narrow = |t: Tensor| {
        if wide == dtype {
            Ok(t)
        } else {
            t.convert(dtype)
        }
    };
    // [B, H, Lq, Lk] x [B, Lk, H, Dv] -> [B, H, Lq, Dv]
    let mut pv = DotGeneral {
        dims: DotDimensionNumbers {
            lhs_batching_dimensions: vec![0, 1],
            rhs_batching_dimensions: vec![0, 2],
            lhs_contracting_dimensions: vec![3],
            rhs_contracting_dimensions: vec![1],
        },
        ..DotGeneral::default()
    };
    let out = match o.normalize {
        Normalize::BeforeValues => {
            let probs = narrow(e.divide(&expand_reduced(&sum, &sd, &[3])?)?)?;
            probs.dot_general_with(v, pv)?
        }
        Normalize::AfterValues => {
            pv.result_dtype = (wide != dtype).then_some(wide);
            let out = narrow(e)?.dot_general_with(v, pv)?;
            let od = out.dims();
            narrow(out.divide(&expand_reduced(&sum, &od, &[3])?)?)?
        }
    };
    out.transpose(&[0, 2, 1, 3])
}

fn check_operands(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<()> {
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    let reason = if qd.len() != 4 || kd.len() != 4 || vd.len() != 4 {
        Some("q, k, v must be [B, L, H, d]".to_string())
    } else if kd[0] != qd[0] || vd[0] != qd[0] || kd[2] != qd[2] || vd[2] != qd[2] {
        Some("q, k, v must share batch and heads (dims 0 and 2)".to_string())
    } else if kd[3] != qd[3] {
        Some("q and k must share the head dim (dim 3)".to_string())
    } else if vd[1] != kd[1] {
        Some("k and v must share the key length (dim 1)".to_string())
    } else if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
        Some("q, k, v must share a dtype".to_string())
    } else {
        None
    };
    match reason {
        Some(r) => Err(q.graph().op_error("multi_head_attention", &[q, k, v], r)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Graph;

    #[test]
    fn rejects_mismatched_heads_naming_the_op() {
        let g = Graph::new();
        let t = |n: &str, d: &[i64]| g.parameter(n, Shape::new(DType::F32, d)).unwrap();
        let (q, k, v) = (
            t("q", &[1, 3, 2, 4]),
            t("k", &[1, 5, 2, 4]),
            t("v", &[1, 5, 3, 4]),
        );
        let err = multi_head_attention(&q, &k, &v, &AttentionOptions::default()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("multi_head_attention"), "{text}");
        assert!(text.contains("batch and heads"), "{text}");
        let flat = t("flat", &[3, 4]);
        assert!(multi_head_attention(&flat, &k, &v, &AttentionOptions::default()).is_err());
    }

    #[test]
    fn bf16_scores_and_softmax_run_in_f32() {
        let g = Graph::new();
        let t = |n: &str| {
            g.parameter(n, Shape::new(DType::BF16, &[1, 3, 2, 4]))
                .unwrap()
        };
        let (q, k, v) = (t("q"), t("k"), t("v"));
        for normalize in [Normalize::BeforeValues, Normalize::AfterValues] {
            let o = AttentionOptions {
                causal: true,
                normalize,
                ..AttentionOptions::default()
            };
            let y = multi_head_attention(&q, &k, &v, &o).unwrap();
            assert_eq!(y.shape(), Shape::new(DType::BF16, &[1, 3, 2, 4]));
            let text = g.to_stablehlo(&[&y]).unwrap();
            assert!(text.contains("tensor<1x2x3x3xf32>"), "scores in f32");
        }
    }
}
