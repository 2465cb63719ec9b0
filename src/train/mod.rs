//! Training Textual Inversion: flags, run planning, the compiled step, the host loop,
//! checkpoints, progress reporting and validation images.

pub mod args;
pub mod checkpoint;
pub mod compile_only;
pub mod loss_plot;
pub mod lr_schedule;
pub mod progress;
pub mod settings;
pub mod setup;
pub mod step;
pub mod trainer;
pub mod validation;
