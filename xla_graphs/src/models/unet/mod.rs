//! `UNet2DConditionModel`: config, time embedding, down / mid / up blocks and the model.

pub mod block_settings;
pub mod config;
pub mod down_blocks;
pub mod embeddings;
pub mod mid_block;
pub mod unet_2d_condition;
pub mod up_blocks;

pub use config::UNet2DConditionConfig;
pub use unet_2d_condition::{TextTimeConditioning, UNet2DConditionModel};
