//! xla_graphs: the pure-Rust half of ti-xla. Models are traced into a graph of StableHLO
//! operations, differentiated in reverse mode and printed as StableHLO text for a PJRT plugin
//! to compile. No FFI, no file or network I/O lives here.
//!
//! ```
//! use xla_graphs::{Graph, Shape, DType, value_and_grad};
//! let g = Graph::new();
//! let x = g.parameter("x", Shape::new(DType::F32, &[3])).unwrap();
//! let loss = x.square().unwrap().sum_all().unwrap();
//! let (loss, grads) = value_and_grad(&loss, &[x]).unwrap();
//! let text = g.to_stablehlo(&[&loss, &grads[0]]).unwrap();
//! assert!(text.contains("func.func public @main"));
//! ```

pub mod autodiff;
pub mod dtype;
pub mod error;
mod graph;
mod infer;
pub mod literal;
pub mod models;
pub mod nn;
pub mod op;
pub mod ops;
pub mod optim;
pub mod print;
pub mod programs;
pub mod random;
pub mod schedulers;
pub mod shape;

pub use autodiff::{value_and_grad, vjp};
pub use dtype::DType;
pub use error::{GraphError, Result};
pub use graph::{ArgAttrs, Graph, ScopeGuard, Tensor, ValueId};
pub use literal::{Literal, LiteralData, NativeType};
pub use op::{BinaryOp, CompareType, ComparisonDirection, Op, Precision, ReduceKind, UnaryOp};
pub use ops::convolution::{ConvDimensionNumbers, Convolution};
pub use ops::dot_general::{DotDimensionNumbers, DotGeneral};
pub use ops::gather::{Gather, GatherDimensionNumbers};
pub use ops::scatter::{Scatter, ScatterDimensionNumbers};
pub use print::ModuleOptions;
pub use shape::Shape;
