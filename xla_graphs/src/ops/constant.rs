//! Ops without operands that make values: constants, iota and replica_id.

use crate::literal::NativeType;
use crate::op::Op;
use crate::{DType, Graph, GraphError, Literal, Result, Shape, Tensor};

pub(crate) fn infer_iota(dimension: usize, shape: &Shape) -> Result<Shape, String> {
    if dimension >= shape.rank() {
        return Err(format!(
            "iota_dimension {dimension} is out of range for {shape}"
        ));
    }
    if !(shape.dtype.is_integer() || shape.dtype.is_float()) {
        return Err(format!("iota of {} is not defined", shape.dtype));
    }
    Ok(shape.clone())
}

impl Tensor {
    /// The single repeated element when this value is a splat constant.
    pub(crate) fn splat_value(&self) -> Option<Literal> {
        let inner = self.graph.borrow();
        let node = inner.values[self.id.index()].node as usize;
        match &inner.nodes[node].op {
            Op::Constant(l) if l.data().len() == 1 => Some(l.clone()),
            _ => None,
        }
    }
}

impl Graph {
    pub fn constant(&self, literal: Literal) -> Result<Tensor> {
        self.build1(Op::Constant(literal), &[])
    }

    /// A constant from row-major values; fails if `values` does not fill `dims`.
    pub fn constant_vec<T: NativeType>(&self, dims: &[i64], values: Vec<T>) -> Result<Tensor> {
        let n = values.len();
        match Literal::from_vec(dims, values) {
            Some(l) => self.constant(l),
            None => Err(GraphError::Op {
                op: "stablehlo.constant",
                path: self.path(),
                operands: crate::error::Operands(Vec::new()),
                reason: format!("{n} values do not fill dimensions {dims:?} of {}", T::DTYPE),
            }),
        }
    }

    /// A constant of element type `dtype` from f64 values (converted as a cast would).
    pub fn constant_f64(&self, dtype: DType, dims: &[i64], values: &[f64]) -> Result<Tensor> {
        let data = crate::literal::LiteralData::from_f64(dtype, values);
        match Literal::new(dims, data) {
            Some(l) => self.constant(l),
            None => Err(GraphError::Op {
                op: "stablehlo.constant",
                path: self.path(),
                operands: crate::error::Operands(Vec::new()),
                reason: format!("{} values do not fill dimensions {dims:?}", values.len()),
            }),
        }
    }

    /// Every element equal to `value`, printed as one splat constant.
    pub fn splat(&self, value: f64, dtype: DType, dims: &[i64]) -> Result<Tensor> {
        if dims.iter().any(|&d| d < 0) {
            return Err(GraphError::Op {
                op: "stablehlo.constant",
                path: self.path(),
                operands: crate::error::Operands(Vec::new()),
                reason: format!("negative dimension in {dims:?}"),
            });
        }
        self.constant(Literal::splat(dtype, dims, value))
    }

    pub fn scalar(&self, value: f64, dtype: DType) -> Result<Tensor> {
        self.splat(value, dtype, &[])
    }

    /// A scalar constant carried exactly in its own type (u32 bit patterns, large i64).
    pub fn scalar_native<T: NativeType>(&self, value: T) -> Result<Tensor> {
        self.constant(Literal::scalar(value))
    }

    pub fn zeros(&self, shape: &Shape) -> Result<Tensor> {
        self.splat(0.0, shape.dtype, &shape.dims)
    }

    /// 0, 1, 2, ... along `dimension`, repeated along the others.
    pub fn iota(&self, shape: Shape, dimension: usize) -> Result<Tensor> {
        self.build1(Op::Iota { dimension, shape }, &[])
    }

    /// This replica's index as a `tensor<ui32>`.
    pub fn replica_id(&self) -> Result<Tensor> {
        self.build1(Op::ReplicaId, &[])
    }
}
