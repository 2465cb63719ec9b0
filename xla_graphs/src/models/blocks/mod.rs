//! Building blocks the UNet and the VAE share, named as in diffusers.

pub mod resnet;
pub mod sampling;

pub use resnet::ResnetBlock2D;
pub use sampling::{Downsample2D, Upsample2D};
