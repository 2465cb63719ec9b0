//! Building blocks the UNet and the VAE share, named as in diffusers.

pub mod attention;
pub mod resnet;
pub mod sampling;
pub mod transformer_2d;

pub use resnet::ResnetBlock2D;
pub use sampling::{Downsample2D, Upsample2D};
