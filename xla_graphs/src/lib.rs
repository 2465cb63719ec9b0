//! xla_graphs: the pure-Rust half of ti-xla. Models are traced into a graph of StableHLO
//! operations, differentiated in reverse mode and printed as StableHLO text for a PJRT plugin
//! to compile. No FFI, no file or network I/O lives here.

pub mod dtype;
pub mod models;

pub use dtype::DType;
