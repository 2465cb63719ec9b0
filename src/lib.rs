//! ti-xla: Textual Inversion for Stable Diffusion on XLA. The library holds the host side
//! (plugins and devices, files, data, the training loop); graph code lives in `xla_graphs`.

pub mod atomic_file;
pub mod cli;
pub mod data;
pub mod device;
pub mod export;
pub mod full_pipeline;
pub mod generate;
pub mod hub;
pub mod model_folder;
pub mod model_weights;
pub mod pjrt;
pub mod rng;
pub mod tensor_file;
#[doc(hidden)]
pub mod testing;
pub mod tokenizer;
pub mod train;
pub mod weights;
