//! reduce (sum, max, min over chosen dimensions), printed with its region and init value.

use crate::op::{Op, ReduceKind};
use crate::ops::layout::check_axes;
use crate::{DType, Result, Shape, Tensor};

pub(crate) fn infer_reduce(
    kind: ReduceKind,
    x: &Shape,
    dimensions: &[usize],
) -> Result<Shape, String> {
    check_axes(dimensions, x.rank(), "reduce dimension")?;
    if !(x.dtype.is_float() || x.dtype.is_integer()) {
        return Err(format!("cannot reduce {} with {kind:?}", x.dtype));
    }
    let dims = (0..x.rank())
        .filter(|i| !dimensions.contains(i))
        .map(|i| x.dims[i])
        .collect();
    Ok(x.with_dims(dims))
}

/// The identity of the reduction; every integer identity survives the round trip via f64
/// (the cast saturates i64::MAX).
pub(crate) fn init_value(kind: ReduceKind, dtype: DType) -> f64 {
    match kind {
        ReduceKind::Sum => 0.0,
        ReduceKind::Max if dtype.is_float() => f64::NEG_INFINITY,
        ReduceKind::Min if dtype.is_float() => f64::INFINITY,
        ReduceKind::Max => match dtype {
            DType::I32 => i32::MIN as f64,
            DType::I64 => i64::MIN as f64,
            _ => 0.0,
        },
        ReduceKind::Min => match dtype {
            DType::U8 => u8::MAX as f64,
            DType::U32 => u32::MAX as f64,
            DType::I32 => i32::MAX as f64,
            // i64::MAX is not an f64; the nearest f64 saturates to it on conversion.
            _ => i64::MAX as f64,
        },
    }
}

impl Tensor {
    pub fn reduce(&self, kind: ReduceKind, dimensions: &[usize]) -> Result<Tensor> {
        let op = Op::Reduce {
            kind,
            dimensions: dimensions.to_vec(),
        };
        self.graph.build1(op, &[self])
    }

    pub fn reduce_sum(&self, dimensions: &[usize]) -> Result<Tensor> {
        self.reduce(ReduceKind::Sum, dimensions)
    }

    pub fn reduce_max(&self, dimensions: &[usize]) -> Result<Tensor> {
        self.reduce(ReduceKind::Max, dimensions)
    }

    pub fn reduce_min(&self, dimensions: &[usize]) -> Result<Tensor> {
        self.reduce(ReduceKind::Min, dimensions)
    }

    /// Sum of every element, a scalar.
    pub fn sum_all(&self) -> Result<Tensor> {
        let all: Vec<usize> = (0..self.rank()).collect();
        self.reduce_sum(&all)
    }
}
