//! ti-xla: Textual Inversion for Stable Diffusion on XLA. The library holds the host side
//! (plugins and devices, files, data, the training loop); graph code lives in `xla_graphs`.

pub mod rng;
