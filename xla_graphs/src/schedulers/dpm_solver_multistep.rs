//! DPMSolverMultistepScheduler as DPM-Solver++(2M) (Lu et al. 2022): the model output is turned
//! into a clean-sample prediction x0, and each step is exact in the log-SNR `lambda` for a
//! linear-in-lambda x0, using this step's and the previous step's x0. diffusers' choices kept:
//! first order on the first step and, with `final_sigmas_type: zero` (the default; or
//! `euler_at_final`, or `lower_order_final` under 15 steps), on the last, where the update
//! reduces to x0; timesteps come from `n + 1` points with the last dropped (`linspace`,
//! `leading`), and `lambda_min_clipped` can cut the top of the schedule.
//!
//! State: the previous step's x0.

use super::config::unsupported;
use super::euler::train_sigmas;
use super::karras::{karras_sigmas, sigma_to_t};
use super::spacing::{arange, check_count, check_range, interp, linspace, round};
use super::{
    check_state, Noise, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind,
    StepInputs, StepOutput, TimestepSpacing,
};
use crate::{Result, Tensor};

const SCALARS: &[&str] = &[
    "x0_alpha",
    "x0_sigma",
    "sample_coeff",
    "d0_coeff",
    "d1_coeff",
    "inv_r0",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

#[derive(Clone, Debug)]
pub struct DPMSolverMultistepScheduler {
    train_sigmas: Vec<f64>,
    spacing: TimestepSpacing,
    steps_offset: usize,
    prediction_type: PredictionType,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// The timesteps `set_timesteps` may use: `num_train_timesteps` less the clipped top.
    last_timestep: usize,
    /// `use_karras_sigmas`: the noise levels of `karras::karras_sigmas`.
    karras: bool,
    /// Karras timesteps are rounded, except for the cosine (`squaredcos_cap_v2`) schedule.
    round_timesteps: bool,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
}

/// `(alpha_t, sigma_t)` of the variance-preserving process at Euler noise level `sigma`.
fn alpha_sigma(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = alpha_sigma(sigma);
    a.ln() - s.ln()
}

impl DPMSolverMultistepScheduler {
    pub fn new(
        config: &SchedulerConfig,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Self, SchedulerError> {
        let class = "DPMSolverMultistepScheduler";
        let w = &mut *warnings;
        unsupported(
            w,
            class,
            "algorithm_type",
            &config.algorithm_type,
            "dpmsolver++".into(),
        );
        unsupported(w, class, "thresholding", &config.thresholding, false);
        unsupported(
            w,
            class,
            "use_exponential_sigmas",
            &config.use_exponential_sigmas,
            false,
        );
        unsupported(w, class, "use_beta_sigmas", &config.use_beta_sigmas, false);
        unsupported(w, class, "use_lu_lambdas", &config.use_lu_lambdas, false);
        unsupported(w, class, "use_flow_sigmas", &config.use_flow_sigmas, false);
        if let Some(v) = &config.variance_type {
            w.push(format!(
                "{class}: variance_type = {v:?} is not implemented; ignored"
            ));
        }
        let solver_order = match config.solver_order.unwrap_or(2) {
            o @ (1 | 2) => o,
            o => {
                w.push(format!(
                    "{class}: solver_order = {o} is not implemented; using 2"
                ));
                2
            }
        };
        let solver_type = match config.solver_type.as_deref() {
            None | Some("midpoint") => SolverType::Midpoint,
            Some("heun") => SolverType::Heun,
            Some(other) => {
                w.push(format!(
                    "{class}: solver_type = {other:?} is not implemented; using \"midpoint\""
                ));
                SolverType::Midpoint
            }
        };
        let final_sigma_zero = match config.final_sigmas_type.as_deref() {
            None | Some("zero") => true,
            Some("sigma_min") => false,
            Some(other) => {
                return Err(SchedulerError(format!(
                    "{class}: final_sigmas_type {other:?} is not one of zero, sigma_min"
                )))
            }
        };
        let train_sigmas = train_sigmas(&config.noise)?;
        let train = train_sigmas.len();
        // torch.searchsorted(flip(lambda_t), lambda_min_clipped): lambdas below the floor.
        let floor = config.lambda_min_clipped.unwrap_or(f64::NEG_INFINITY);
        let clipped = train_sigmas.iter().filter(|&&s| lambda(s) < floor).count();
        Ok(DPMSolverMultistepScheduler {
            train_sigmas,
            spacing: config.spacing_or(TimestepSpacing::Linspace),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: config.noise.prediction_type,
            solver_order,
            solver_type,
            lower_order_final: config.lower_order_final.unwrap_or(true),
            euler_at_final: config.euler_at_final.unwrap_or(false),
            final_sigma_zero,
            last_timestep: train - clipped,
            karras: config.use_karras_sigmas.unwrap_or(false),
            round_timesteps: config.noise.beta_schedule != "squaredcos_cap_v2",
            timesteps: Vec::new(),
            sigmas: Vec::new(),
        })
    }

    /// 1 or 2: the order step `i` uses.
    pub fn order_at(&self, i: usize) -> usize {
        let len = self.timesteps.len();
        let final_first_order = i + 1 == len
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || self.final_sigma_zero);
        if self.solver_order == 1 || i == 0 || final_first_order {
            1
        } else {
            2
        }
    }
}

impl Scheduler for DPMSolverMultistepScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::DpmSolverMultistep
    }

    fn set_timesteps(&mut self, n: usize) -> std::result::Result<(), SchedulerError> {
        let train = self.train_sigmas.len();
        check_count(train, n)?;
        let last = self.last_timestep as f64;
        let timesteps: Vec<f64> = match self.spacing {
            TimestepSpacing::Linspace => {
                let mut t: Vec<f64> = linspace(0.0, last - 1.0, n + 1)
                    .into_iter()
                    .map(round)
                    .collect();
                t.reverse();
                t.pop();
                t
            }
            TimestepSpacing::Leading => {
                let ratio = self.last_timestep / (n + 1);
                (1..=n)
                    .rev()
                    .map(|i| (i * ratio + self.steps_offset) as f64)
                    .collect()
            }
            TimestepSpacing::Trailing => arange(last, 0.0, -(train as f64) / n as f64)
                .into_iter()
                .map(|t| round(t) - 1.0)
                .collect(),
        };
        check_range(&timesteps, train)?;
        let (timesteps, mut sigmas) = if self.karras {
            // From the whole schedule, whatever the spacing; timesteps rounded except for the
            // cosine schedule, as diffusers does.
            let sigmas = karras_sigmas(self.train_sigmas[train - 1], self.train_sigmas[0], n);
            let timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &self.train_sigmas))
                .map(|t| if self.round_timesteps { round(t) } else { t })
                .collect();
            (timesteps, sigmas)
        } else {
            let sigmas = timesteps
                .iter()
                .map(|&t| interp(t, &self.train_sigmas))
                .collect();
            (timesteps, sigmas)
        };
        sigmas.push(if self.final_sigma_zero {
            0.0
        } else {
            self.train_sigmas[0]
        });
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn sigmas(&self) -> Option<&[f64]> {
        Some(&self.sigmas)
    }

    fn scalar_names(&self) -> &'static [&'static str] {
        SCALARS
    }

    fn step_scalars(&self, i: usize) -> Vec<f64> {
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[i]);
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[i + 1]);
        // At sigma 0 lambda is +inf, h too, and exp(-h) = 0: the step returns x0.
        let h = lambda(self.sigmas[i + 1]) - lambda(self.sigmas[i]);
        let a = alpha_t * ((-h).exp() - 1.0);
        let (d1_coeff, inv_r0) = match self.order_at(i) {
            1 => (0.0, 0.0),
            _ => {
                let h0 = lambda(self.sigmas[i]) - lambda(self.sigmas[i - 1]);
                let d1 = match self.solver_type {
                    SolverType::Midpoint => -0.5 * a,
                    SolverType::Heun => alpha_t * (((-h).exp() - 1.0) / h + 1.0),
                };
                (d1, h / h0)
            }
        };
        vec![alpha_s0, sigma_s0, sigma_t / sigma_s0, -a, d1_coeff, inv_r0]
    }

    fn num_state(&self) -> usize {
        1
    }

    fn step(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        s: &StepInputs,
        state: &[Tensor],
        _noise: Noise<'_>,
    ) -> Result<StepOutput> {
        check_state(sample, state, 1)?;
        let alpha = s.get("x0_alpha", sample)?;
        let sigma = s.get("x0_sigma", sample)?;
        let x0 = match self.prediction_type {
            PredictionType::Epsilon => sample
                .subtract(&sigma.multiply(model_output)?)?
                .divide(&alpha)?,
            PredictionType::VPrediction => alpha
                .multiply(sample)?
                .subtract(&sigma.multiply(model_output)?)?,
            PredictionType::Sample => model_output.clone(),
        };
        let d1 = x0
            .subtract(&state[0])?
            .multiply(&s.get("inv_r0", sample)?)?;
        let prev_sample = s
            .get("sample_coeff", sample)?
            .multiply(sample)?
            .add(&s.get("d0_coeff", sample)?.multiply(&x0)?)?
            .add(&s.get("d1_coeff", sample)?.multiply(&d1)?)?;
        Ok(StepOutput {
            prev_sample,
            state: vec![x0],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scheduler(json: &str) -> DPMSolverMultistepScheduler {
        let c = SchedulerConfig::from_json(json).unwrap();
        DPMSolverMultistepScheduler::new(&c, &mut Vec::new()).unwrap()
    }

    #[test]
    fn first_and_last_steps_are_first_order() {
        let mut s = scheduler(r#"{"beta_schedule": "scaled_linear", "beta_start": 0.00085}"#);
        s.set_timesteps(20).unwrap();
        let orders: Vec<usize> = (0..20).map(|i| s.order_at(i)).collect();
        assert_eq!(orders[..3], [1, 2, 2]);
        assert_eq!(orders[18..], [2, 1]);
        // The last step lands on sigma 0 and returns x0 exactly.
        let last = s.step_scalars(19);
        assert_eq!(last[2..], [0.0, 1.0, 0.0, 0.0]);
    }

    #[test]
    fn sigma_min_keeps_second_order_to_the_end_from_15_steps() {
        let mut s = scheduler(r#"{"final_sigmas_type": "sigma_min"}"#);
        s.set_timesteps(15).unwrap();
        assert_eq!(s.order_at(14), 2);
        s.set_timesteps(14).unwrap();
        assert_eq!(s.order_at(13), 1);
    }
}
