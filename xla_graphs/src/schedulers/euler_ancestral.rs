//! EulerAncestralDiscreteScheduler: an Euler move down to `sigma_down`, then fresh noise of
//! standard deviation `sigma_up` (`sigma_up^2 + sigma_down^2 = sigma_next^2`), so each step
//! lands on the next noise level with part of its noise new. Tables as Euler's (final sigma
//! always 0). The noise comes from a threefry key in the program (or is passed in), not from
//! torch's generator, so only the deterministic part can equal diffusers' draw for draw.
//! diffusers refuses `prediction_type: sample` here; it is allowed (x0 is the model output,
//! as in Euler).

use super::euler::{
    euler_tables, euler_update, init_noise_sigma, scale_by_sigma, sigma_scalars, train_sigmas,
};
use super::scheduler::draw;
use super::{
    Noise, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, StepInputs,
    StepOutput, TimestepSpacing,
};
use crate::{Result, Tensor};

const SCALARS: &[&str] = &[
    "input_divisor",
    "sigma",
    "dt",
    "c_skip",
    "c_out",
    "sigma_up",
];

#[derive(Clone, Debug)]
pub struct EulerAncestralDiscreteScheduler {
    train_sigmas: Vec<f64>,
    spacing: TimestepSpacing,
    steps_offset: usize,
    prediction_type: PredictionType,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

impl EulerAncestralDiscreteScheduler {
    pub fn new(
        config: &SchedulerConfig,
        _warnings: &mut Vec<String>,
    ) -> std::result::Result<Self, SchedulerError> {
        Ok(EulerAncestralDiscreteScheduler {
            train_sigmas: train_sigmas(&config.noise)?,
            spacing: config.spacing_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: config.noise.prediction_type,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// `(sigma_up, sigma_down)` of the move from `from` to `to`.
    pub fn ancestral_sigmas(from: f64, to: f64) -> (f64, f64) {
        let up = (to * to * (from * from - to * to) / (from * from)).sqrt();
        (up, (to * to - up * up).sqrt())
    }
}

impl Scheduler for EulerAncestralDiscreteScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::EulerAncestral
    }

    fn set_timesteps(&mut self, n: usize) -> std::result::Result<(), SchedulerError> {
        (self.timesteps, self.sigmas) = euler_tables(
            &self.train_sigmas,
            self.spacing,
            n,
            self.steps_offset,
            0.0,
            None,
        )?;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        init_noise_sigma(&self.sigmas, self.spacing)
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn scalar_names(&self) -> &'static [&'static str] {
        SCALARS
    }

    fn step_scalars(&self, i: usize) -> Vec<f64> {
        let [divisor, sigma, c_skip, c_out] = sigma_scalars(self.sigmas[i]);
        let (up, down) = Self::ancestral_sigmas(sigma, self.sigmas[i + 1]);
        vec![divisor, sigma, down - sigma, c_skip, c_out, up]
    }

    fn scale_model_input(&self, sample: &Tensor, s: &StepInputs) -> Result<Tensor> {
        scale_by_sigma(sample, s)
    }

    fn step(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        s: &StepInputs,
        _state: &[Tensor],
        noise: Noise<'_>,
    ) -> Result<StepOutput> {
        let moved = euler_update(self.prediction_type, model_output, sample, s)?;
        let noise = draw(noise, sample)?;
        Ok(StepOutput {
            prev_sample: moved.add(&noise.multiply(&s.get("sigma_up", sample)?)?)?,
            state: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestral_sigmas_split_the_next_level() {
        let (up, down) = EulerAncestralDiscreteScheduler::ancestral_sigmas(3.0, 2.0);
        assert!((up * up + down * down - 4.0).abs() < 1e-12);
        assert_eq!(
            EulerAncestralDiscreteScheduler::ancestral_sigmas(3.0, 0.0),
            (0.0, 0.0)
        );
    }
}
