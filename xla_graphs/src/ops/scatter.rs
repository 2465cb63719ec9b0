//! scatter with an add region (the transpose of gather). Updates whose window would leave the
//! operand are skipped, as StableHLO specifies.

use crate::op::Op;
use crate::ops::gather::{check_index_dims, check_sorted, index_batch};
use crate::{Result, Shape, Tensor};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ScatterDimensionNumbers {
    pub update_window_dims: Vec<usize>,
    pub inserted_window_dims: Vec<usize>,
    pub input_batching_dims: Vec<usize>,
    pub scatter_indices_batching_dims: Vec<usize>,
    pub scatter_dims_to_operand_dims: Vec<usize>,
    pub index_vector_dim: usize,
}

/// scatter's attributes; the combiner is always add.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scatter {
    pub dims: ScatterDimensionNumbers,
    pub indices_are_sorted: bool,
    pub unique_indices: bool,
}

pub(crate) fn infer_scatter(
    operand: &Shape,
    indices: &Shape,
    updates: &Shape,
    s: &Scatter,
) -> Result<Shape, String> {
    let d = &s.dims;
    if updates.dtype != operand.dtype {
        return Err("updates must have the operand's element type".into());
    }
    if !(operand.dtype.is_float() || operand.dtype.is_integer()) {
        return Err(format!("cannot add {}", operand.dtype));
    }
    check_index_dims(
        operand,
        indices,
        d.index_vector_dim,
        &d.input_batching_dims,
        &d.scatter_indices_batching_dims,
        &d.scatter_dims_to_operand_dims,
        &d.inserted_window_dims,
    )?;
    check_sorted(&d.update_window_dims, "update_window_dims")?;
    let window: Vec<usize> = (0..operand.rank())
        .filter(|i| !d.inserted_window_dims.contains(i) && !d.input_batching_dims.contains(i))
        .collect();
    if window.len() != d.update_window_dims.len() {
        return Err(format!("update_window_dims needs {} entries", window.len()));
    }
    let (batch, _) = index_batch(indices, d.index_vector_dim)?;
    if updates.rank() != window.len() + batch.len()
        || d.update_window_dims.iter().any(|&u| u >= updates.rank())
    {
        return Err(format!(
            "updates must have rank {}",
            window.len() + batch.len()
        ));
    }
    let scatter_sizes: Vec<i64> = (0..updates.rank())
        .filter(|i| !d.update_window_dims.contains(i))
        .map(|i| updates.dims[i])
        .collect();
    if scatter_sizes != batch {
        return Err(format!(
            "update scatter dimensions {scatter_sizes:?} must equal the index batch {batch:?}"
        ));
    }
    for (&u, &o) in d.update_window_dims.iter().zip(&window) {
        if updates.dims[u] > operand.dims[o] {
            return Err(format!(
                "update window dimension {u} is larger than operand dimension {o}"
            ));
        }
    }
    Ok(operand.clone())
}

impl Tensor {
    /// Adds `updates` into `self` at `indices`; repeated indices accumulate.
    pub fn scatter_add(
        &self,
        indices: &Tensor,
        updates: &Tensor,
        attrs: Scatter,
    ) -> Result<Tensor> {
        self.graph
            .build1(Op::Scatter(attrs), &[self, indices, updates])
    }
}
