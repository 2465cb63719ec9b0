//! Training Textual Inversion: schedules, the step program's host loop, checkpoints.

pub mod lr_schedule;
pub mod step;
