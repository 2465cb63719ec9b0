//! The CLIP text encoder (`CLIPTextModel`).

pub mod config;

pub use config::CLIPTextConfig;
