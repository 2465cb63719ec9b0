//! Ops that move elements without changing them: reshape, transpose, broadcast_in_dim,
//! reverse, plus the numpy-style `broadcast_to` convenience built on broadcast_in_dim.

use crate::op::Op;
use crate::{Result, Shape, Tensor};

pub(crate) fn check_axes(axes: &[usize], rank: usize, what: &str) -> Result<(), String> {
    let mut seen = vec![false; rank];
    for &a in axes {
        if a >= rank {
            return Err(format!("{what} {a} is out of range for rank {rank}"));
        }
        if seen[a] {
            return Err(format!("{what} {a} appears twice"));
        }
        seen[a] = true;
    }
    Ok(())
}

pub(crate) fn infer_reshape(x: &Shape, dims: &[i64]) -> Result<Shape, String> {
    if dims.iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in {dims:?}"));
    }
    let n: i64 = dims.iter().product();
    if n != x.numel() {
        return Err(format!(
            "cannot reshape {} elements into {dims:?}",
            x.numel()
        ));
    }
    Ok(x.with_dims(dims.to_vec()))
}

pub(crate) fn infer_transpose(x: &Shape, perm: &[usize]) -> Result<Shape, String> {
    if perm.len() != x.rank() {
        return Err(format!(
            "permutation {perm:?} does not have rank {}",
            x.rank()
        ));
    }
    check_axes(perm, x.rank(), "permutation entry")?;
    Ok(x.with_dims(perm.iter().map(|&p| x.dims[p]).collect()))
}

pub(crate) fn infer_broadcast(x: &Shape, dims: &[i64], bdims: &[usize]) -> Result<Shape, String> {
    if bdims.len() != x.rank() {
        return Err(format!(
            "broadcast_dimensions {bdims:?} must have one entry per operand dimension"
        ));
    }
    check_axes(bdims, dims.len(), "broadcast dimension")?;
    for (i, &d) in bdims.iter().enumerate() {
        if x.dims[i] != 1 && x.dims[i] != dims[d] {
            return Err(format!(
                "operand dimension {i} (size {}) cannot broadcast to result dimension {d} of {dims:?}",
                x.dims[i]
            ));
        }
    }
    if dims.iter().any(|&d| d < 0) {
        return Err(format!("negative dimension in {dims:?}"));
    }
    Ok(x.with_dims(dims.to_vec()))
}

impl Tensor {
    /// Same elements in row-major order, new dimensions (no op when they are the same).
    pub fn reshape(&self, dims: &[i64]) -> Result<Tensor> {
        if self.dims() == dims {
            return Ok(self.clone());
        }
        self.graph.build1(Op::Reshape(dims.to_vec()), &[self])
    }

    /// Result dimension i is operand dimension `permutation[i]` (no op for the identity).
    pub fn transpose(&self, permutation: &[usize]) -> Result<Tensor> {
        let identity = permutation.len() == self.rank()
            && permutation.iter().enumerate().all(|(i, &p)| i == p);
        if identity {
            return Ok(self.clone());
        }
        self.graph
            .build1(Op::Transpose(permutation.to_vec()), &[self])
    }

    /// Operand dimension i becomes result dimension `broadcast_dimensions[i]` of `dims`.
    /// Broadcasting a splat constant makes a bigger splat constant instead.
    pub fn broadcast_in_dim(&self, dims: &[i64], broadcast_dimensions: &[usize]) -> Result<Tensor> {
        let op = Op::BroadcastInDim {
            dims: dims.to_vec(),
            broadcast_dimensions: broadcast_dimensions.to_vec(),
        };
        let shape = self.shape();
        crate::infer::infer(&op, &[&shape])
            .map_err(|reason| self.graph.op_error(op.name(), &[self], reason))?;
        if let Some(splat) = self.splat_value() {
            return self.graph.constant(splat.with_dims(dims));
        }
        self.graph.build1(op, &[self])
    }

    /// Numpy-style broadcasting: trailing dimensions align, size-1 dimensions stretch.
    /// Returns `self` unchanged when the shape already matches.
    pub fn broadcast_to(&self, dims: &[i64]) -> Result<Tensor> {
        let own = self.dims();
        if own == dims {
            return Ok(self.clone());
        }
        if own.len() > dims.len() {
            return Err(self.graph.op_error(
                "stablehlo.broadcast_in_dim",
                &[self],
                format!("cannot broadcast to the lower rank {dims:?}"),
            ));
        }
        let offset = dims.len() - own.len();
        let bdims: Vec<usize> = (offset..dims.len()).collect();
        self.broadcast_in_dim(dims, &bdims)
    }

    /// Reverses the order of elements along each of `dimensions`.
    pub fn reverse(&self, dimensions: &[usize]) -> Result<Tensor> {
        self.graph.build1(Op::Reverse(dimensions.to_vec()), &[self])
    }
}

/// The numpy broadcast of two dimension lists, or `None` when they are incompatible.
pub fn broadcast_dims(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let mut out = vec![0; n];
    for i in 0..n {
        let da = if i < n - a.len() {
            1
        } else {
            a[i - (n - a.len())]
        };
        let db = if i < n - b.len() {
            1
        } else {
            b[i - (n - b.len())]
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}
