//! AdamW inside the step program, as `torch.optim.AdamW` updates a parameter (and as
//! `optax.adamw`, which is the same arithmetic): decoupled weight decay on the old value, then
//! the bias-corrected Adam step. The rows and both moments stay on the device (donated); the
//! learning rate and the 1-based step count come in as f32 scalars each step.

use crate::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub epsilon: f64,
}

impl Default for AdamWConfig {
    /// The reference trainers' defaults.
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            weight_decay: 1e-2,
            epsilon: 1e-8,
        }
    }
}

/// Parameters and moments after one update.
pub struct AdamWState {
    pub params: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
}

/// One AdamW update of `params` with gradient `grad`; `lr` and `step` are f32 scalars
/// (`step` counts updates from 1, as torch's bias correction does).
pub fn adamw_update(
    params: &Tensor,
    exp_avg: &Tensor,
    exp_avg_sq: &Tensor,
    grad: &Tensor,
    lr: &Tensor,
    step: &Tensor,
    cfg: &AdamWConfig,
) -> Result<AdamWState> {
    let g = params.graph();
    let dims = params.dims();
    let dtype = params.dtype();
    let exp_avg = exp_avg
        .mul_scalar(cfg.beta1)?
        .add(&grad.mul_scalar(1.0 - cfg.beta1)?)?;
    let exp_avg_sq = exp_avg_sq
        .mul_scalar(cfg.beta2)?
        .add(&grad.square()?.mul_scalar(1.0 - cfg.beta2)?)?;
    let one = g.scalar(1.0, dtype)?;
    let bias_correction = |beta: f64| one.subtract(&g.scalar(beta, dtype)?.power(step)?);
    let bc1 = bias_correction(cfg.beta1)?;
    let bc2 = bias_correction(cfg.beta2)?;
    // torch: denom = sqrt(v) / sqrt(bc2) + eps; param -= (lr / bc1) * m / denom.
    let denom = exp_avg_sq
        .sqrt()?
        .divide(&bc2.sqrt()?.broadcast_to(&dims)?)?
        .add_scalar(cfg.epsilon)?;
    let decay = one.subtract(&lr.mul_scalar(cfg.weight_decay)?)?;
    let step_size = lr.divide(&bc1)?;
    let params = params.multiply(&decay.broadcast_to(&dims)?)?.subtract(
        &exp_avg
            .divide(&denom)?
            .multiply(&step_size.broadcast_to(&dims)?)?,
    )?;
    Ok(AdamWState {
        params,
        exp_avg,
        exp_avg_sq,
    })
}
