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
