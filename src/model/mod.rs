//! A diffusers model: its folder (local or from the Hub), its components (text encoder, UNet,
//! VAE) and their weights, the tokenizer, learned embeddings, and the full pipeline the trainer
//! can save.

pub mod component;
pub mod config_limits;
pub mod embeddings;
pub mod folder;
pub mod full_pipeline;
pub mod hub;
pub mod tokenizer;
pub mod tokenizers;
