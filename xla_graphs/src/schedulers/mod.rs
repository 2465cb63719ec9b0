//! Diffusion schedules: the training noise schedule and the sampling schedulers, one per file,
//! their tables computed in f64 on the host and their updates traced into the graph.

pub mod config;
pub mod ddim;
pub mod dpm_solver_multistep;
pub mod euler;
pub mod euler_ancestral;
mod karras;
pub mod noise_schedule;
pub mod pndm;
pub mod scheduler;
pub mod spacing;

pub use config::{build_scheduler, SchedulerConfig, SchedulerKind};
pub use ddim::DDIMScheduler;
pub use dpm_solver_multistep::DPMSolverMultistepScheduler;
pub use euler::EulerDiscreteScheduler;
pub use euler_ancestral::EulerAncestralDiscreteScheduler;
pub use noise_schedule::{
    add_noise, min_snr_weights, per_timestep, training_target, NoiseScheduleConfig, PredictionType,
};
pub use pndm::PNDMScheduler;
pub use scheduler::{Noise, Scheduler, SchedulerError, StepInputs, StepOutput};
pub use spacing::TimestepSpacing;

pub(crate) use scheduler::check_state;
