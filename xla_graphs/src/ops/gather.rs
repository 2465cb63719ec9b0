//! gather with general dimension numbers (StableHLO semantics: start indices are clamped so
//! every slice lies inside the operand).

use crate::op::Op;
use crate::ops::layout::check_axes;
use crate::{Result, Shape, Tensor};

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct GatherDimensionNumbers {
    pub offset_dims: Vec<usize>,
    pub collapsed_slice_dims: Vec<usize>,
    pub operand_batching_dims: Vec<usize>,
    pub start_indices_batching_dims: Vec<usize>,
    pub start_index_map: Vec<usize>,
    pub index_vector_dim: usize,
}

/// gather's attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Gather {
    pub dims: GatherDimensionNumbers,
    pub slice_sizes: Vec<i64>,
    pub indices_are_sorted: bool,
}

pub(crate) fn check_sorted(axes: &[usize], what: &str) -> Result<(), String> {
    if axes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!("{what} {axes:?} must be sorted and unique"));
    }
    Ok(())
}

/// Dimensions of the index tensor that enumerate slices (all but `index_vector_dim`), and
/// the length of each index vector.
pub(crate) fn index_batch(
    indices: &Shape,
    index_vector_dim: usize,
) -> Result<(Vec<i64>, i64), String> {
    if index_vector_dim > indices.rank() {
        return Err(format!(
            "index_vector_dim {index_vector_dim} exceeds the indices' rank"
        ));
    }
    if !indices.dtype.is_integer() {
        return Err("indices must be integers".into());
    }
    let mut batch = indices.dims.clone();
    let len = if index_vector_dim < indices.rank() {
        batch.remove(index_vector_dim)
    } else {
        1
    };
    Ok((batch, len))
}

/// Checks shared by gather and scatter: batching dimensions pair up, the index map fits.
pub(crate) fn check_index_dims(
    operand: &Shape,
    indices: &Shape,
    index_vector_dim: usize,
    operand_batching: &[usize],
    indices_batching: &[usize],
    index_map: &[usize],
    collapsed: &[usize],
) -> Result<(), String> {
    let r = operand.rank();
    check_sorted(collapsed, "collapsed/inserted dims")?;
    check_sorted(operand_batching, "operand batching dims")?;
    let mut both: Vec<usize> = [collapsed, operand_batching].concat();
    check_axes(&both, r, "collapsed or batching dimension")?;
    both = [index_map, operand_batching].concat();
    check_axes(&both, r, "index map or batching dimension")?;
    if indices_batching.len() != operand_batching.len() {
        return Err("operand and indices need as many batching dimensions".into());
    }
    check_axes(
        indices_batching,
        indices.rank(),
        "indices batching dimension",
    )?;
    for (&o, &i) in operand_batching.iter().zip(indices_batching) {
        if i == index_vector_dim || operand.dims[o] != indices.dims[i] {
            return Err(format!("batching dimensions {o} and {i} do not pair up"));
        }
    }
    let (_, len) = index_batch(indices, index_vector_dim)?;
    if index_map.len() as i64 != len {
        return Err(format!(
            "index vectors have {len} entries but the index map {index_map:?} does not"
        ));
    }
    Ok(())
}

pub(crate) fn infer_gather(operand: &Shape, indices: &Shape, g: &Gather) -> Result<Shape, String> {
    let d = &g.dims;
    let r = operand.rank();
    check_index_dims(
        operand,
        indices,
        d.index_vector_dim,
        &d.operand_batching_dims,
        &d.start_indices_batching_dims,
        &d.start_index_map,
        &d.collapsed_slice_dims,
    )?;
    check_sorted(&d.offset_dims, "offset_dims")?;
    if g.slice_sizes.len() != r {
        return Err(format!("slice_sizes needs {r} entries"));
    }
    for i in 0..r {
        let squeezed = d.collapsed_slice_dims.contains(&i) || d.operand_batching_dims.contains(&i);
        if g.slice_sizes[i] < 0
            || g.slice_sizes[i] > operand.dims[i]
            || (squeezed && g.slice_sizes[i] > 1)
        {
            return Err(format!(
                "slice size {} does not fit dimension {i}",
                g.slice_sizes[i]
            ));
        }
    }
    let offsets: Vec<i64> = (0..r)
        .filter(|i| !d.collapsed_slice_dims.contains(i) && !d.operand_batching_dims.contains(i))
        .map(|i| g.slice_sizes[i])
        .collect();
    if offsets.len() != d.offset_dims.len() {
        return Err(format!("offset_dims needs {} entries", offsets.len()));
    }
    let (batch, _) = index_batch(indices, d.index_vector_dim)?;
    let rank = offsets.len() + batch.len();
    if d.offset_dims.iter().any(|&o| o >= rank) {
        return Err(format!(
            "offset_dims {:?} out of range for result rank {rank}",
            d.offset_dims
        ));
    }
    let (mut off, mut bat) = (offsets.into_iter(), batch.into_iter());
    let dims = (0..rank)
        .map(|i| {
            if d.offset_dims.contains(&i) {
                off.next()
            } else {
                bat.next()
            }
        })
        .collect::<Option<Vec<i64>>>()
        .ok_or("offset and batch dimensions do not add up")?;
    Ok(operand.with_dims(dims))
}

impl Tensor {
    /// Gathers slices of `self` starting at `indices`.
    pub fn gather(&self, indices: &Tensor, attrs: Gather) -> Result<Tensor> {
        self.graph.build1(Op::Gather(attrs), &[self, indices])
    }

    /// Rows of `self` along axis 0 picked by an integer tensor of any shape: the result has
    /// shape `indices.dims ++ self.dims[1..]` (an embedding lookup).
    pub fn take_rows(&self, indices: &Tensor) -> Result<Tensor> {
        let dims = self.dims();
        let irank = indices.rank();
        let mut slice_sizes = dims.clone();
        if let Some(first) = slice_sizes.first_mut() {
            *first = 1;
        }
        let attrs = Gather {
            dims: GatherDimensionNumbers {
                offset_dims: (irank..irank + dims.len().saturating_sub(1)).collect(),
                collapsed_slice_dims: vec![0],
                start_index_map: vec![0],
                index_vector_dim: irank,
                ..GatherDimensionNumbers::default()
            },
            slice_sizes,
            indices_are_sorted: false,
        };
        self.gather(indices, attrs)
    }
}
