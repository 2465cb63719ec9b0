//! The CLIP text encoder (`CLIPTextModel`): config, embeddings, encoder layers and the model.

pub mod config;
pub mod embeddings;
pub mod encoder;
pub mod text_model;
pub mod with_projection;

pub use config::CLIPTextConfig;
pub use text_model::{CLIPTextModel, CLIPTextOutputs};
pub use with_projection::CLIPTextModelWithProjection;
