//! The diffusion noise schedule every scheduler shares: betas from `scheduler_config.json`
//! (read as diffusers' DDPMScheduler reads any scheduler config, with its defaults), the
//! cumulative alphas in f64 on the host, and, in the graph, `add_noise` and the training target
//! for each `prediction_type`.

use serde::Deserialize;

use crate::{DType, Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum PredictionType {
    #[serde(rename = "epsilon")]
    Epsilon,
    #[serde(rename = "v_prediction")]
    VPrediction,
    #[serde(rename = "sample")]
    Sample,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NoiseScheduleConfig {
    #[serde(default = "default_timesteps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: PredictionType,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
}

fn default_timesteps() -> usize {
    1000
}
fn default_beta_start() -> f64 {
    1e-4
}
fn default_beta_end() -> f64 {
    0.02
}
fn default_beta_schedule() -> String {
    "linear".into()
}
fn default_prediction_type() -> PredictionType {
    PredictionType::Epsilon
}

impl NoiseScheduleConfig {
    /// SD 1.x/2.x: scaled_linear 0.00085..0.012 over 1000 steps.
    pub fn stable_diffusion(prediction_type: PredictionType) -> Self {
        NoiseScheduleConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear".into(),
            trained_betas: None,
            prediction_type,
            rescale_betas_zero_snr: false,
        }
    }

    pub fn betas(&self) -> std::result::Result<Vec<f64>, String> {
        let t = self.num_train_timesteps;
        let linspace = |a: f64, b: f64| -> Vec<f64> {
            (0..t)
                .map(|i| {
                    if t == 1 {
                        a
                    } else {
                        a + (b - a) * i as f64 / (t - 1) as f64
                    }
                })
                .collect()
        };
        let mut betas = match (&self.trained_betas, self.beta_schedule.as_str()) {
            (Some(b), _) => b.clone(),
            (None, "linear") => linspace(self.beta_start, self.beta_end),
            (None, "scaled_linear") => linspace(self.beta_start.sqrt(), self.beta_end.sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
            (None, "squaredcos_cap_v2") => {
                let alpha_bar = |x: f64| {
                    ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2)
                        .cos()
                        .powi(2)
                };
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                    })
                    .collect()
            }
            (None, other) => return Err(format!("beta_schedule {other:?} is not supported")),
        };
        if betas.len() != t {
            return Err(format!(
                "trained_betas has {} entries for {t} timesteps",
                betas.len()
            ));
        }
        if self.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        Ok(betas)
    }

    /// Cumulative products of 1 - beta, in f64.
    pub fn alphas_cumprod(&self) -> std::result::Result<Vec<f64>, String> {
        let mut acc = 1.0;
        Ok(self
            .betas()?
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect())
    }
}

/// Lin et al. 2023 (diffusers' `rescale_zero_terminal_snr`): shift and scale sqrt(alpha_bar)
/// so the last timestep has zero signal.
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_bar: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_bar[0], *sqrt_bar.last().unwrap_or(&0.0));
    for s in &mut sqrt_bar {
        *s = (*s - last) * first / (first - last);
    }
    let bar: Vec<f64> = sqrt_bar.iter().map(|s| s * s).collect();
    let mut out = vec![1.0 - bar[0]];
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

/// `table[timesteps]` broadcast over a [B, ...] tensor of `like`'s shape and dtype.
fn per_sample(table: &[f64], timesteps: &Tensor, like: &Tensor) -> Result<Tensor> {
    let g = like.graph();
    let column = g
        .constant_f64(DType::F32, &[table.len() as i64, 1], table)?
        .take_rows(timesteps)?;
    let dims = like.dims();
    let b = dims.first().copied().unwrap_or(1);
    column
        .reshape(&[b])?
        .convert(like.dtype())?
        .broadcast_in_dim(&dims, &[0])
}

/// `sqrt(acp_t) x0 + sqrt(1 - acp_t) noise` per sample (diffusers' `add_noise`).
pub fn add_noise(
    alphas_cumprod: &[f64],
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    let (signal, sigma) = split_scales(alphas_cumprod);
    per_sample(&signal, timesteps, x0)?
        .multiply(x0)?
        .add(&per_sample(&sigma, timesteps, noise)?.multiply(noise)?)
}

/// What the UNet is trained to predict: the noise, the velocity
/// `sqrt(acp_t) noise - sqrt(1 - acp_t) x0`, or the clean sample.
pub fn training_target(
    prediction_type: PredictionType,
    alphas_cumprod: &[f64],
    x0: &Tensor,
    noise: &Tensor,
    timesteps: &Tensor,
) -> Result<Tensor> {
    match prediction_type {
        PredictionType::Epsilon => Ok(noise.clone()),
        PredictionType::Sample => Ok(x0.clone()),
        PredictionType::VPrediction => {
            let (signal, sigma) = split_scales(alphas_cumprod);
            per_sample(&signal, timesteps, noise)?
                .multiply(noise)?
                .subtract(&per_sample(&sigma, timesteps, x0)?.multiply(x0)?)
        }
    }
}

/// Min-SNR-gamma loss weights per timestep, as diffusers' trainers compute them
/// (`compute_snr`, then `min(snr, gamma)`, divided by `snr` for epsilon and by `snr + 1` for
/// v-prediction; a sample-predicting model keeps `min(snr, gamma)`).
pub fn min_snr_weights(
    prediction_type: PredictionType,
    alphas_cumprod: &[f64],
    gamma: f64,
) -> Vec<f64> {
    alphas_cumprod
        .iter()
        .map(|a| {
            let snr = a / (1.0 - a);
            let w = snr.min(gamma);
            match prediction_type {
                PredictionType::Epsilon => w / snr,
                PredictionType::VPrediction => w / (snr + 1.0),
                PredictionType::Sample => w,
            }
        })
        .collect()
}

/// `table[timesteps]` as a `[B]` f32 tensor (one value per sample).
pub fn per_timestep(table: &[f64], timesteps: &Tensor) -> Result<Tensor> {
    let b = timesteps.dims().first().copied().unwrap_or(1);
    let like = timesteps.graph().splat(0.0, DType::F32, &[b])?;
    per_sample(table, timesteps, &like)
}

fn split_scales(alphas_cumprod: &[f64]) -> (Vec<f64>, Vec<f64>) {
    alphas_cumprod
        .iter()
        .map(|a| (a.sqrt(), (1.0 - a).sqrt()))
        .unzip()
}
