//! `UNet2DConditionModel`.

pub mod config;

pub use config::UNet2DConditionConfig;
