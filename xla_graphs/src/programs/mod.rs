//! Whole programs the host compiles: each builds a graph from model configs and returns the
//! printed module with the meaning of every argument.

pub mod sampling;
pub mod train_step;
