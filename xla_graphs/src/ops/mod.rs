//! Op builders, one family per file, each with the shape rule its ops are checked by.

pub mod collective;
pub mod constant;
pub mod convolution;
pub(crate) mod convolution_grad;
pub mod dot_general;
pub(crate) mod dot_general_grad;
pub mod elementwise;
pub mod gather;
pub(crate) mod gather_grad;
pub mod layout;
pub mod reduce;
pub mod scatter;
pub mod slicing;
