//! Running programs: choosing devices and the compute dtype, frozen weights on the devices,
//! a compiled program called with its typed inputs and outputs, and `--compile-only`'s
//! ahead-of-time compiles for a named TPU slice.

pub mod device;
pub mod device_weights;
pub mod fit_report;
pub mod program;
pub mod topology;
