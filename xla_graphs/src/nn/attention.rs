//! Scaled dot-product attention as torch's `F.scaled_dot_product_attention` computes it.

use crate::nn::activations::softmax;
use crate::{ComparisonDirection, DType, DotDimensionNumbers, Result, Shape, Tensor};

#[derive(Clone, Debug, Default)]
pub struct AttentionOptions {
    /// Query i sees keys 0..=i (torch's top-left aligned causal mask).
    pub causal: bool,
    /// Multiplies the scores; default `1 / sqrt(head_dim)`.
    pub scale: Option<f64>,
    /// Added to the scores; numpy-broadcastable to `[.., Lq, Lk]`.
    pub mask: Option<Tensor>,
}

/// `softmax(q k^T * scale + mask) v` for `q: [.., Lq, D]`, `k: [.., Lk, D]`, `v: [.., Lk, Dv]`,
/// where `..` are batch dimensions shared by all three.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    o: &AttentionOptions,
) -> Result<Tensor> {
    let qd = q.dims();
    if qd.len() < 2 {
        return Err(q.graph().op_error(
            "scaled_dot_product_attention",
            &[q, k, v],
            "q needs rank >= 2".into(),
        ));
    }
    let nb = qd.len() - 2;
    let batch: Vec<usize> = (0..nb).collect();
    let qk = DotDimensionNumbers {
        lhs_batching_dimensions: batch.clone(),
        rhs_batching_dimensions: batch.clone(),
        lhs_contracting_dimensions: vec![nb + 1],
        rhs_contracting_dimensions: vec![nb + 1],
    };
    let scale = o.scale.unwrap_or(1.0 / (qd[nb + 1] as f64).sqrt());
    let mut scores = q.dot_general(k, qk)?.mul_scalar(scale)?;
    let sd = scores.dims();
    if let Some(m) = &o.mask {
        scores = scores.add(&m.broadcast_to(&sd)?)?;
    }
    if o.causal {
        let g = q.graph();
        let rows = g.iota(Shape::new(DType::I64, &sd), nb)?;
        let cols = g.iota(Shape::new(DType::I64, &sd), nb + 1)?;
        let visible = cols.compare(&rows, ComparisonDirection::Le)?;
        scores = visible.select(&scores, &scores.full_like(f64::NEG_INFINITY)?)?;
    }
    let p = softmax(&scores, nb + 1)?;
    let pv = DotDimensionNumbers {
        lhs_batching_dimensions: batch.clone(),
        rhs_batching_dimensions: batch,
        lhs_contracting_dimensions: vec![nb + 1],
        rhs_contracting_dimensions: vec![nb],
    };
    p.dot_general(v, pv)
}
