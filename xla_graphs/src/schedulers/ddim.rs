//! DDIMScheduler with eta 0 (Song et al. 2021, eq. 12), as diffusers steps it: the previous
//! timestep is always `t - num_train_timesteps // num_inference_steps` whatever the spacing,
//! a negative one takes `alphas_cumprod[0]` or 1 (`set_alpha_to_one`, the class default), and
//! `clip_sample` (also on by default) clamps the predicted clean sample but not the noise
//! derived from the model output.

use super::config::unsupported;
use super::spacing::integer_timesteps;
use super::{
    Noise, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind, StepInputs,
    StepOutput, TimestepSpacing,
};
use crate::{Result, Tensor};

const SCALARS: &[&str] = &[
    "sqrt_alpha_prod_t",
    "sqrt_beta_prod_t",
    "sqrt_alpha_prod_t_prev",
    "sqrt_beta_prod_t_prev",
];

#[derive(Clone, Debug)]
pub struct DDIMScheduler {
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    spacing: TimestepSpacing,
    steps_offset: usize,
    prediction_type: PredictionType,
    /// `clip_sample_range` when `clip_sample` is on.
    clip: Option<f64>,
    timesteps: Vec<f64>,
    alphas: Vec<[f64; 2]>,
}

impl DDIMScheduler {
    pub fn new(
        config: &SchedulerConfig,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Self, SchedulerError> {
        unsupported(
            warnings,
            "DDIMScheduler",
            "thresholding",
            &config.thresholding,
            false,
        );
        let alphas_cumprod = config.noise.alphas_cumprod().map_err(SchedulerError)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(DDIMScheduler {
            alphas_cumprod,
            final_alpha_cumprod,
            spacing: config.spacing_or(TimestepSpacing::Leading),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: config.noise.prediction_type,
            clip: config
                .clip_sample
                .unwrap_or(true)
                .then(|| config.clip_sample_range.unwrap_or(1.0)),
            timesteps: Vec::new(),
            alphas: Vec::new(),
        })
    }
}

impl Scheduler for DDIMScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Ddim
    }

    fn set_timesteps(&mut self, n: usize) -> std::result::Result<(), SchedulerError> {
        let train = self.alphas_cumprod.len();
        let timesteps = integer_timesteps(self.spacing, train, n, self.steps_offset)?;
        let ratio = (train / n) as i64;
        let alpha = |t: i64| {
            if t < 0 {
                self.final_alpha_cumprod
            } else {
                self.alphas_cumprod[t as usize]
            }
        };
        self.alphas = timesteps
            .iter()
            .map(|&t| [alpha(t as i64), alpha(t as i64 - ratio)])
            .collect();
        self.timesteps = timesteps;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn alphas(&self) -> Option<&[[f64; 2]]> {
        Some(&self.alphas)
    }

    fn scalar_names(&self) -> &'static [&'static str] {
        SCALARS
    }

    fn step_scalars(&self, i: usize) -> Vec<f64> {
        let [a_t, a_prev] = self.alphas[i];
        vec![
            a_t.sqrt(),
            (1.0 - a_t).sqrt(),
            a_prev.sqrt(),
            (1.0 - a_prev).sqrt(),
        ]
    }

    fn step(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        s: &StepInputs,
        _state: &[Tensor],
        _noise: Noise<'_>,
    ) -> Result<StepOutput> {
        let sqrt_a = s.get("sqrt_alpha_prod_t", sample)?;
        let sqrt_b = s.get("sqrt_beta_prod_t", sample)?;
        let (x0, eps) = match self.prediction_type {
            PredictionType::Epsilon => (
                sample
                    .subtract(&sqrt_b.multiply(model_output)?)?
                    .divide(&sqrt_a)?,
                model_output.clone(),
            ),
            PredictionType::Sample => (
                model_output.clone(),
                sample
                    .subtract(&sqrt_a.multiply(model_output)?)?
                    .divide(&sqrt_b)?,
            ),
            PredictionType::VPrediction => (
                sqrt_a
                    .multiply(sample)?
                    .subtract(&sqrt_b.multiply(model_output)?)?,
                sqrt_a
                    .multiply(model_output)?
                    .add(&sqrt_b.multiply(sample)?)?,
            ),
        };
        let x0 = match self.clip {
            Some(r) => x0.clamp(
                &x0.graph().scalar(-r, x0.dtype())?,
                &x0.graph().scalar(r, x0.dtype())?,
            )?,
            None => x0,
        };
        let prev_sample = s
            .get("sqrt_alpha_prod_t_prev", &x0)?
            .multiply(&x0)?
            .add(&s.get("sqrt_beta_prod_t_prev", &eps)?.multiply(&eps)?)?;
        Ok(StepOutput {
            prev_sample,
            state: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_defaults_apply_only_to_missing_fields() {
        let c = SchedulerConfig::from_json(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
        let mut s = DDIMScheduler::new(&c, &mut Vec::new()).unwrap();
        assert_eq!(s.clip, Some(1.0));
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[..2], [900.0, 800.0]);
        assert_eq!(s.alphas[9][1], 1.0);
        let c = SchedulerConfig::from_json(
            r#"{"clip_sample": false, "set_alpha_to_one": false, "steps_offset": 1}"#,
        )
        .unwrap();
        let mut s = DDIMScheduler::new(&c, &mut Vec::new()).unwrap();
        assert_eq!(s.clip, None);
        s.set_timesteps(10).unwrap();
        assert_eq!(s.timesteps()[9], 1.0);
        assert_eq!(s.alphas[9][1], s.alphas_cumprod[0]);
    }
}
