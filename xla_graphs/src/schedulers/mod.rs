//! Diffusion schedules: the training noise schedule (and, later, the sampling schedulers, one
//! per file), their tables computed in f64 on the host.

pub mod noise_schedule;

pub use noise_schedule::{add_noise, training_target, NoiseScheduleConfig, PredictionType};
