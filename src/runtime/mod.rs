//! Running programs: choosing devices and the compute dtype, frozen weights on the devices,
//! and a compiled program called with its typed inputs and outputs.

pub mod device;
pub mod device_weights;
pub mod program;
