//! The PJRT runtime: a thin, safe layer over the PJRT C API (the only `unsafe` code in
//! ti-xla). One file per concern: plugins, clients, compile options, buffers, executables,
//! events, errors, the compile cache, and ahead-of-time compiles for a named topology.

pub(crate) mod ffi;

mod buffer;
mod cache;
mod client;
mod compile_options;
mod error;
mod event;
mod executable;
pub(crate) mod plugin;
mod program_code;
mod quiet;
mod topology;

pub use buffer::{DeviceBuffer, HostElement};
pub use cache::{CacheOutcome, CompileCache};
pub use client::{Client, DeviceInfo, NamedValue};
pub use compile_options::CompileOptions;
pub use error::{PjrtError, Result};
pub use executable::LoadedExecutable;
pub use plugin::Plugin;
pub use quiet::QuietStderr;
pub use topology::{CompiledStats, CostAnalysis, MemoryStats, Topology, TopologyDevice};
