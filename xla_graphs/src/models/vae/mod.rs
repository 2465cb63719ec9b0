//! `AutoencoderKL`: config, the encoder and decoder stacks, their shared mid block, and the
//! model that joins them with quant_conv / post_quant_conv.

pub mod autoencoder_kl;
pub mod config;
pub mod decoder;
pub mod encoder;
pub mod mid_block;

pub use autoencoder_kl::AutoencoderKL;
pub use config::AutoencoderKLConfig;
