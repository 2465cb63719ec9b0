//! Backward of gather (a scatter-add of the cotangent into zeros) and of scatter-add (a
//! gather of the cotangent).

use crate::ops::gather::{Gather, GatherDimensionNumbers};
use crate::ops::scatter::{Scatter, ScatterDimensionNumbers};
use crate::{Result, Shape, Tensor};

/// gather clamps each start index so the slice fits, but scatter drops windows that do not
/// fit; clamping the indices first makes the scatter hit exactly the gathered elements.
fn clamp_indices(indices: &Tensor, operand: &Shape, g: &Gather) -> Result<Tensor> {
    let d = &g.dims;
    let upper: Vec<f64> = d
        .start_index_map
        .iter()
        .map(|&a| (operand.dims[a] - g.slice_sizes[a]) as f64)
        .collect();
    let ishape = indices.shape();
    let graph = indices.graph();
    let upper = if d.index_vector_dim < ishape.rank() {
        graph
            .constant_f64(ishape.dtype, &[upper.len() as i64], &upper)?
            .broadcast_in_dim(&ishape.dims, &[d.index_vector_dim])?
    } else {
        graph.splat(upper[0], ishape.dtype, &ishape.dims)?
    };
    indices.clamp(&indices.zeros_like()?, &upper)
}

/// Cotangent of gather's operand: scatter-add of `ct` at the (clamped) start indices.
pub(crate) fn gather_vjp(
    ct: &Tensor,
    operand: &Tensor,
    indices: &Tensor,
    g: &Gather,
) -> Result<Tensor> {
    let shape = operand.shape();
    let d = &g.dims;
    let indices = clamp_indices(indices, &shape, g)?;
    let zeros = ct.graph().splat(0.0, ct.dtype(), &shape.dims)?;
    let attrs = Scatter {
        dims: ScatterDimensionNumbers {
            update_window_dims: d.offset_dims.clone(),
            inserted_window_dims: d.collapsed_slice_dims.clone(),
            input_batching_dims: d.operand_batching_dims.clone(),
            scatter_indices_batching_dims: d.start_indices_batching_dims.clone(),
            scatter_dims_to_operand_dims: d.start_index_map.clone(),
            index_vector_dim: d.index_vector_dim,
        },
        indices_are_sorted: g.indices_are_sorted,
        unique_indices: false,
    };
    zeros.scatter_add(&indices, ct, attrs)
}

/// Cotangent of scatter-add's updates: the cotangent gathered at the same windows. Exact for
/// in-bounds windows; windows scatter dropped for being out of bounds would get values here.
pub(crate) fn scatter_updates_vjp(
    ct: &Tensor,
    indices: &Tensor,
    updates: &Tensor,
    s: &Scatter,
) -> Result<Tensor> {
    let d = &s.dims;
    let udims = updates.dims();
    let rank = ct.rank();
    let mut window = d.update_window_dims.iter();
    let slice_sizes: Vec<i64> = (0..rank)
        .map(|i| {
            if d.inserted_window_dims.contains(&i) || d.input_batching_dims.contains(&i) {
                1
            } else {
                window.next().map_or(1, |&u| udims[u])
            }
        })
        .collect();
    let attrs = Gather {
        dims: GatherDimensionNumbers {
            offset_dims: d.update_window_dims.clone(),
            collapsed_slice_dims: d.inserted_window_dims.clone(),
            operand_batching_dims: d.input_batching_dims.clone(),
            start_indices_batching_dims: d.scatter_indices_batching_dims.clone(),
            start_index_map: d.scatter_dims_to_operand_dims.clone(),
            index_vector_dim: d.index_vector_dim,
        },
        slice_sizes,
        indices_are_sorted: s.indices_are_sorted,
    };
    ct.gather(indices, attrs)
}
