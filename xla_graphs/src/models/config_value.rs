//! Config fields that diffusers lets be either one value or one value per block.

use serde::Deserialize;

/// `attention_head_dim: 8` or `attention_head_dim: [5, 10, 20, 20]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerBlock<T> {
    /// The value for each of `blocks` blocks, or `None` when a list has the wrong length.
    pub fn expand(&self, blocks: usize) -> Option<Vec<T>> {
        match self {
            PerBlock::One(v) => Some(vec![v.clone(); blocks]),
            PerBlock::Each(vs) if vs.len() == blocks => Some(vs.clone()),
            PerBlock::Each(_) => None,
        }
    }
}

impl<T: Clone> PerBlock<T> {
    /// Entry `j` of a per-layer value: the one value, or the list's `j`-th (`None` past its
    /// end).
    pub fn at(&self, j: usize) -> Option<T> {
        match self {
            PerBlock::One(v) => Some(v.clone()),
            PerBlock::Each(vs) => vs.get(j).cloned(),
        }
    }
}

/// `transformer_layers_per_block`: one depth for every transformer (`1`), one per block
/// (`[1, 2, 10]`), or one per transformer of each block (`[[1, 1], [2, 2], [10, 10]]`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum LayerDepths {
    One(usize),
    Each(Vec<PerBlock<usize>>),
}

impl LayerDepths {
    /// Each block's depths, or `None` when a list has the wrong length.
    pub fn expand(&self, blocks: usize) -> Option<Vec<PerBlock<usize>>> {
        match self {
            LayerDepths::One(v) => Some(vec![PerBlock::One(*v); blocks]),
            LayerDepths::Each(vs) if vs.len() == blocks => Some(vs.clone()),
            LayerDepths::Each(_) => None,
        }
    }
}
