//! Ops that cut, join or extend tensors: slice, dynamic_slice, dynamic_update_slice,
//! concatenate and pad.

use crate::op::Op;
use crate::{Graph, GraphError, Result, Shape, Tensor};

pub(crate) fn infer_slice(
    x: &Shape,
    start: &[i64],
    limit: &[i64],
    strides: &[i64],
) -> Result<Shape, String> {
    let r = x.rank();
    if start.len() != r || limit.len() != r || strides.len() != r {
        return Err(format!("start, limit and strides need {r} entries each"));
    }
    let mut dims = Vec::with_capacity(r);
    for i in 0..r {
        if !(0 <= start[i] && start[i] <= limit[i] && limit[i] <= x.dims[i]) || strides[i] <= 0 {
            return Err(format!(
                "dimension {i}: need 0 <= start {} <= limit {} <= size {} and stride {} > 0",
                start[i], limit[i], x.dims[i], strides[i]
            ));
        }
        dims.push((limit[i] - start[i] + strides[i] - 1) / strides[i]);
    }
    Ok(x.with_dims(dims))
}

fn check_start_indices(rank: usize, starts: &[&Shape]) -> Result<(), String> {
    if starts.len() != rank {
        return Err(format!("need {rank} start indices, got {}", starts.len()));
    }
    for s in starts {
        if s.rank() != 0 || !s.dtype.is_integer() || s.dtype != starts[0].dtype {
            return Err("start indices must be integer scalars of one type".into());
        }
    }
    Ok(())
}

pub(crate) fn infer_dynamic_slice(ops: &[&Shape], sizes: &[i64]) -> Result<Shape, String> {
    let x = ops[0];
    check_start_indices(x.rank(), &ops[1..])?;
    if sizes.len() != x.rank() || sizes.iter().zip(&x.dims).any(|(&s, &d)| s < 0 || s > d) {
        return Err(format!("slice_sizes {sizes:?} must fit in {:?}", x.dims));
    }
    Ok(x.with_dims(sizes.to_vec()))
}

pub(crate) fn infer_dynamic_update_slice(ops: &[&Shape]) -> Result<Shape, String> {
    let (x, u) = (ops[0], ops[1]);
    check_start_indices(x.rank(), &ops[2..])?;
    if u.dtype != x.dtype || u.rank() != x.rank() || u.dims.iter().zip(&x.dims).any(|(a, b)| a > b)
    {
        return Err("the update must have the operand's element type and fit inside it".into());
    }
    Ok(x.clone())
}

pub(crate) fn infer_concatenate(ops: &[&Shape], dim: usize) -> Result<Shape, String> {
    let first = ops[0];
    if dim >= first.rank() {
        return Err(format!(
            "dimension {dim} is out of range for rank {}",
            first.rank()
        ));
    }
    let mut dims = first.dims.clone();
    dims[dim] = 0;
    for s in ops {
        let same_elsewhere = s.rank() == first.rank()
            && (0..first.rank()).all(|i| i == dim || s.dims[i] == first.dims[i]);
        if s.dtype != first.dtype || !same_elsewhere {
            return Err(format!(
                "operands must agree on everything but dimension {dim}"
            ));
        }
        dims[dim] += s.dims[dim];
    }
    Ok(first.with_dims(dims))
}

pub(crate) fn infer_pad(
    x: &Shape,
    value: &Shape,
    low: &[i64],
    high: &[i64],
    interior: &[i64],
) -> Result<Shape, String> {
    let r = x.rank();
    if value.rank() != 0 || value.dtype != x.dtype {
        return Err("the padding value must be a scalar of the operand's type".into());
    }
    if low.len() != r || high.len() != r || interior.len() != r {
        return Err(format!("low, high and interior need {r} entries each"));
    }
    let mut dims = Vec::with_capacity(r);
    for i in 0..r {
        if interior[i] < 0 {
            return Err(format!("negative interior padding in dimension {i}"));
        }
        let d = low[i] + high[i] + x.dims[i] + (x.dims[i] - 1).max(0) * interior[i];
        if d < 0 {
            return Err(format!("dimension {i} would have negative size {d}"));
        }
        dims.push(d);
    }
    Ok(x.with_dims(dims))
}

impl Tensor {
    /// Elements `start..limit` stepping by `strides`, per dimension.
    pub fn slice(&self, start: &[i64], limit: &[i64], strides: &[i64]) -> Result<Tensor> {
        let op = Op::Slice {
            start: start.to_vec(),
            limit: limit.to_vec(),
            strides: strides.to_vec(),
        };
        self.graph.build1(op, &[self])
    }

    /// `start..limit` along one axis, everything along the others.
    pub fn slice_axis(&self, axis: usize, start: i64, limit: i64) -> Result<Tensor> {
        let dims = self.dims();
        if axis >= dims.len() {
            return Err(self.graph.op_error(
                "stablehlo.slice",
                &[self],
                format!("axis {axis} is out of range"),
            ));
        }
        let mut lo = vec![0; dims.len()];
        let mut hi = dims.clone();
        lo[axis] = start;
        hi[axis] = limit;
        self.slice(&lo, &hi, &vec![1; dims.len()])
    }

    /// A `sizes` window at run-time `starts` (clamped so the window stays inside).
    pub fn dynamic_slice(&self, starts: &[Tensor], sizes: &[i64]) -> Result<Tensor> {
        let mut operands = vec![self];
        operands.extend(starts);
        self.graph.build1(
            Op::DynamicSlice {
                sizes: sizes.to_vec(),
            },
            &operands,
        )
    }

    /// `self` with `update` written at run-time `starts` (clamped like dynamic_slice).
    pub fn dynamic_update_slice(&self, update: &Tensor, starts: &[Tensor]) -> Result<Tensor> {
        let mut operands = vec![self, update];
        operands.extend(starts);
        self.graph.build1(Op::DynamicUpdateSlice, &operands)
    }

    /// Pads with `value` (a scalar): `low`/`high` at the edges (negative cuts), `interior`
    /// between elements.
    pub fn pad(
        &self,
        value: &Tensor,
        low: &[i64],
        high: &[i64],
        interior: &[i64],
    ) -> Result<Tensor> {
        let op = Op::Pad {
            low: low.to_vec(),
            high: high.to_vec(),
            interior: interior.to_vec(),
        };
        self.graph.build1(op, &[self, value])
    }
}

impl Graph {
    pub fn concatenate(&self, tensors: &[Tensor], dimension: usize) -> Result<Tensor> {
        if tensors.is_empty() {
            return Err(GraphError::invalid(
                "stablehlo.concatenate",
                "needs at least one operand",
            ));
        }
        let refs: Vec<&Tensor> = tensors.iter().collect();
        self.build1(Op::Concatenate { dimension }, &refs)
    }
}
