//! dot_general: batched, general contractions. The result holds batch dimensions, then the
//! lhs free dimensions, then the rhs free dimensions, in operand order.

use crate::op::{Op, Precision};
use crate::ops::layout::check_axes;
use crate::{DType, Result, Shape, Tensor};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DotDimensionNumbers {
    pub lhs_batching_dimensions: Vec<usize>,
    pub rhs_batching_dimensions: Vec<usize>,
    pub lhs_contracting_dimensions: Vec<usize>,
    pub rhs_contracting_dimensions: Vec<usize>,
}

impl DotDimensionNumbers {
    /// `[.., m, k] x [.., k, n] -> [.., m, n]` with `batch` leading batch dimensions.
    pub fn matmul(batch: usize) -> DotDimensionNumbers {
        DotDimensionNumbers {
            lhs_batching_dimensions: (0..batch).collect(),
            rhs_batching_dimensions: (0..batch).collect(),
            lhs_contracting_dimensions: vec![batch + 1],
            rhs_contracting_dimensions: vec![batch],
        }
    }
}

/// dot_general's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct DotGeneral {
    pub dims: DotDimensionNumbers,
    pub precision: Precision,
    /// Result element type when it differs from the operands' (bf16 x bf16 -> f32).
    pub result_dtype: Option<DType>,
}

/// Dimensions of an operand that are neither batch nor contracting, in order.
pub(crate) fn free_dims(rank: usize, batch: &[usize], contracting: &[usize]) -> Vec<usize> {
    (0..rank)
        .filter(|d| !batch.contains(d) && !contracting.contains(d))
        .collect()
}

pub(crate) fn infer_dot_general(
    lhs: &Shape,
    rhs: &Shape,
    attrs: &DotGeneral,
) -> Result<Shape, String> {
    let d = &attrs.dims;
    if lhs.dtype != rhs.dtype {
        return Err("operands must have the same element type".into());
    }
    if d.lhs_batching_dimensions.len() != d.rhs_batching_dimensions.len()
        || d.lhs_contracting_dimensions.len() != d.rhs_contracting_dimensions.len()
    {
        return Err("lhs and rhs need as many batching and contracting dimensions".into());
    }
    let lhs_used: Vec<usize> = [
        &d.lhs_batching_dimensions[..],
        &d.lhs_contracting_dimensions[..],
    ]
    .concat();
    let rhs_used: Vec<usize> = [
        &d.rhs_batching_dimensions[..],
        &d.rhs_contracting_dimensions[..],
    ]
    .concat();
    check_axes(&lhs_used, lhs.rank(), "lhs batching/contracting dimension")?;
    check_axes(&rhs_used, rhs.rank(), "rhs batching/contracting dimension")?;
    for (&l, &r) in lhs_used.iter().zip(&rhs_used) {
        if lhs.dims[l] != rhs.dims[r] {
            return Err(format!(
                "lhs dimension {l} (size {}) does not match rhs dimension {r} (size {})",
                lhs.dims[l], rhs.dims[r]
            ));
        }
    }
    let result_dtype = attrs.result_dtype.unwrap_or(lhs.dtype);
    if result_dtype.is_float() != lhs.dtype.is_float() || lhs.dtype == DType::Pred {
        return Err(format!(
            "cannot compute {} from {} operands",
            result_dtype, lhs.dtype
        ));
    }
    let mut dims: Vec<i64> = d
        .lhs_batching_dimensions
        .iter()
        .map(|&i| lhs.dims[i])
        .collect();
    dims.extend(
        free_dims(
            lhs.rank(),
            &d.lhs_batching_dimensions,
            &d.lhs_contracting_dimensions,
        )
        .iter()
        .map(|&i| lhs.dims[i]),
    );
    dims.extend(
        free_dims(
            rhs.rank(),
            &d.rhs_batching_dimensions,
            &d.rhs_contracting_dimensions,
        )
        .iter()
        .map(|&i| rhs.dims[i]),
    );
    Ok(Shape {
        dtype: result_dtype,
        dims,
    })
}

impl Tensor {
    pub fn dot_general(&self, rhs: &Tensor, dims: DotDimensionNumbers) -> Result<Tensor> {
        self.dot_general_with(
            rhs,
            DotGeneral {
                dims,
                ..DotGeneral::default()
            },
        )
    }

    pub fn dot_general_with(&self, rhs: &Tensor, attrs: DotGeneral) -> Result<Tensor> {
        self.graph.build1(Op::DotGeneral(attrs), &[self, rhs])
    }

    /// `[b.., m, k] x [b.., k, n] -> [b.., m, n]`; both operands have the same rank.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        let batch = self.rank().saturating_sub(2);
        self.dot_general(rhs, DotDimensionNumbers::matmul(batch))
    }
}
