//! Composite layers built from primitive ops; their gradients come from the primitives' rules.

pub mod activations;
pub mod attention;
pub mod linear;
pub mod norm;
pub mod reduce;
pub mod upsample;

pub use activations::{gelu, gelu_tanh, quick_gelu, silu, softmax, softmax_terms};
pub use attention::{multi_head_attention, AttentionOptions, Normalize, ScaleAt};
pub use linear::{conv2d, linear, Conv2dOptions};
pub use norm::{group_norm, layer_norm};
pub use reduce::{expand_reduced, mean, variance};
pub use upsample::upsample_nearest_2x;
