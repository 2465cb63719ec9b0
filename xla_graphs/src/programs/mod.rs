//! Whole programs the host compiles: each builds a graph from model configs and returns a
//! [`interface::Program`]: the printed module with its weights and its typed inputs and outputs.

pub mod components;
pub mod conditioning;
pub mod interface;
pub mod sampling;
pub mod train_step;

pub use interface::{Arg, Args, Named, Output, Placement, Program, Traced};
