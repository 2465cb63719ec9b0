//! EulerDiscreteScheduler (Karras et al. 2022, Algorithm 2 without churn): the sample lives at
//! noise level sigma (`x = x0 + sigma * eps`), the UNet sees it divided by `sqrt(sigma^2 + 1)`,
//! and each step follows the derivative `(x - x0) / sigma` to the next sigma. Also the sigma
//! tables and the update shared with Euler ancestral and DPM-Solver++.
//!
//! diffusers details kept: timesteps are float32 (linspace ones are not rounded: 832.5 is a
//! timestep), sigmas are interpolated linearly in the timestep, `init_noise_sigma` is
//! `sqrt(sigma_max^2 + 1)` for `leading` spacing but `sigma_max` otherwise, and zero-SNR
//! schedules replace the last cumulative alpha (exactly 0) by 2^-24 so sigma stays finite.

use super::config::unsupported;
use super::karras::{karras_sigmas, sigma_to_t};
use super::spacing::{float32_timesteps, interp};
use super::{
    Noise, NoiseScheduleConfig, PredictionType, Scheduler, SchedulerConfig, SchedulerError,
    SchedulerKind, StepInputs, StepOutput, TimestepSpacing,
};
use crate::{Result, Tensor};

const SCALARS: &[&str] = &["input_divisor", "sigma", "dt", "c_skip", "c_out"];

/// `sqrt((1 - acp) / acp)` for every training timestep, ascending in t.
pub(crate) fn train_sigmas(
    noise: &NoiseScheduleConfig,
) -> std::result::Result<Vec<f64>, SchedulerError> {
    let mut acp = noise.alphas_cumprod().map_err(SchedulerError)?;
    if noise.rescale_betas_zero_snr {
        if let Some(last) = acp.last_mut() {
            *last = 2f64.powi(-24);
        }
    }
    Ok(acp.iter().map(|a| ((1.0 - a) / a).sqrt()).collect())
}

pub(crate) fn init_noise_sigma(sigmas: &[f64], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0.0, f64::max);
    match spacing {
        TimestepSpacing::Leading => (max * max + 1.0).sqrt(),
        _ => max,
    }
}

/// Input divisor and the x0 coefficients of the v-prediction at noise level `sigma`.
pub(crate) fn sigma_scalars(sigma: f64) -> [f64; 4] {
    let s2 = sigma * sigma + 1.0;
    [s2.sqrt(), sigma, 1.0 / s2, -sigma / s2.sqrt()]
}

/// `sample / sqrt(sigma^2 + 1)`.
pub(crate) fn scale_by_sigma(sample: &Tensor, s: &StepInputs) -> Result<Tensor> {
    sample.divide(&s.get("input_divisor", sample)?)
}

/// The Euler move `x + (x - x0) / sigma * dt`, with x0 as diffusers' Euler schedulers
/// predict it.
pub(crate) fn euler_update(
    prediction_type: PredictionType,
    model_output: &Tensor,
    sample: &Tensor,
    s: &StepInputs,
) -> Result<Tensor> {
    let sigma = s.get("sigma", sample)?;
    let x0 = match prediction_type {
        PredictionType::Epsilon => sample.subtract(&sigma.multiply(model_output)?)?,
        PredictionType::VPrediction => model_output
            .multiply(&s.get("c_out", sample)?)?
            .add(&sample.multiply(&s.get("c_skip", sample)?)?)?,
        PredictionType::Sample => model_output.clone(),
    };
    let derivative = sample.subtract(&x0)?.divide(&sigma)?;
    sample.add(&derivative.multiply(&s.get("dt", sample)?)?)
}

#[derive(Clone, Debug)]
pub struct EulerDiscreteScheduler {
    train_sigmas: Vec<f64>,
    spacing: TimestepSpacing,
    steps_offset: usize,
    prediction_type: PredictionType,
    final_sigma: f64,
    /// `use_karras_sigmas`, with the config's bounds if it sets them.
    karras: Option<KarrasBounds>,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

/// `sigma_min` / `sigma_max` of Euler's Karras levels; unset ones are the spaced schedule's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct KarrasBounds {
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
}

impl EulerDiscreteScheduler {
    pub fn new(
        config: &SchedulerConfig,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Self, SchedulerError> {
        let class = "EulerDiscreteScheduler";
        let w = &mut *warnings;
        unsupported(
            w,
            class,
            "interpolation_type",
            &config.interpolation_type,
            "linear".into(),
        );
        unsupported(
            w,
            class,
            "use_exponential_sigmas",
            &config.use_exponential_sigmas,
            false,
        );
        unsupported(w, class, "use_beta_sigmas", &config.use_beta_sigmas, false);
        unsupported(
            w,
            class,
            "timestep_type",
            &config.timestep_type,
            "discrete".into(),
        );
        let train_sigmas = train_sigmas(&config.noise)?;
        let final_sigma = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => 0.0,
            Some("sigma_min") => train_sigmas[0],
            Some(other) => {
                return Err(SchedulerError(format!(
                    "{class}: final_sigmas_type {other:?} is not one of zero, sigma_min"
                )))
            }
        };
        Ok(EulerDiscreteScheduler {
            train_sigmas,
            spacing: config.spacing_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: config.noise.prediction_type,
            final_sigma,
            karras: config
                .use_karras_sigmas
                .unwrap_or(false)
                .then_some(KarrasBounds {
                    sigma_min: config.sigma_min,
                    sigma_max: config.sigma_max,
                }),
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }
}

/// Timesteps and the sigmas at them (plus `final_sigma`), as both Euler schedulers set them;
/// with `karras`, the sigmas spaced between the spaced schedule's ends (or the given bounds)
/// and their fractional timesteps instead.
pub(crate) fn euler_tables(
    train_sigmas: &[f64],
    spacing: TimestepSpacing,
    n: usize,
    steps_offset: usize,
    final_sigma: f64,
    karras: Option<KarrasBounds>,
) -> std::result::Result<(Vec<f64>, Vec<f64>), SchedulerError> {
    let mut timesteps = float32_timesteps(spacing, train_sigmas.len(), n, steps_offset)?;
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| interp(t, train_sigmas)).collect();
    if let Some(b) = karras {
        let max = b.sigma_max.unwrap_or(sigmas[0]);
        let min = b.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
        sigmas = karras_sigmas(max, min, n);
        timesteps = sigmas
            .iter()
            .map(|&s| sigma_to_t(s, train_sigmas))
            .collect();
    }
    sigmas.push(final_sigma);
    Ok((timesteps, sigmas))
}

impl Scheduler for EulerDiscreteScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Euler
    }

    fn set_timesteps(&mut self, n: usize) -> std::result::Result<(), SchedulerError> {
        (self.timesteps, self.sigmas) = euler_tables(
            &self.train_sigmas,
            self.spacing,
            n,
            self.steps_offset,
            self.final_sigma,
            self.karras,
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
        vec![divisor, sigma, self.sigmas[i + 1] - sigma, c_skip, c_out]
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
        _noise: Noise<'_>,
    ) -> Result<StepOutput> {
        Ok(StepOutput {
            prev_sample: euler_update(self.prediction_type, model_output, sample, s)?,
            state: Vec::new(),
        })
    }
}
