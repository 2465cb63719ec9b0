//! Optimizers that run inside the compiled step.

pub mod adamw;

pub use adamw::{adamw_update, AdamWConfig, AdamWState};
