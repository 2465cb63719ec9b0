//! Stable Diffusion's models, traced: names, structure and config fields follow diffusers.

pub mod blocks;
pub mod clip;
pub mod config_value;
pub mod modules;
pub mod params;
pub mod unet;
pub mod vae;
