//! Images from prompts, as diffusers' `StableDiffusionPipeline` makes them: the compiled
//! pipeline (`pipeline`) and the PNGs it writes (`images`), shared by `ti-xla generate` and the
//! trainer's validation images.

pub mod images;
pub mod pipeline;
