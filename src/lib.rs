//! ti-xla: Textual Inversion for Stable Diffusion on XLA. The library holds the host side;
//! graph code lives in `xla_graphs`.
//!
//! - `pjrt`: the only unsafe code, a thin binding of the PJRT C API;
//! - `runtime`: devices, weights on the devices, and compiled programs run with typed inputs;
//! - `model`: a diffusers model folder, its components, tokenizer and learned embeddings;
//! - `io`: the file formats (safetensors weights and tensors, embeddings, pickles, atomic writes);
//! - `data`: training images and captions;
//! - `sampling`: the image pipeline `generate` and validation share;
//! - `hub`: pushing results to a Hugging Face Hub model repo;
//! - `train`, `generate`, `cli`: the commands.

pub mod cli;
pub mod data;
pub mod generate;
pub mod hub;
pub mod io;
pub mod model;
pub mod pjrt;
pub mod rng;
pub mod runtime;
pub mod sampling;
pub mod signals;
#[doc(hidden)]
pub mod testing;
pub mod train;
