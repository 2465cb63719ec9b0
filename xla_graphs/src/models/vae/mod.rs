//! `AutoencoderKL`.

pub mod config;

pub use config::AutoencoderKLConfig;
