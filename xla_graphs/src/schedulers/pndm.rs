//! PNDMScheduler in its PLMS form (`skip_prk_steps`, SD 1.5's default): the linear multistep
//! update of Liu et al. 2022, eq. 9, with diffusers' warm-up. Its quirks, all kept:
//! - the second timestep is listed twice (`timesteps()` has one entry more than inference
//!   steps); the first step is plain Euler to `t - ratio`, the second re-evaluates at that point
//!   and steps again from the *first* sample, from `t + ratio` to `t`, with the mean of both
//!   model outputs, and its model output never enters the history;
//! - `ratio` is always `num_train_timesteps // num_inference_steps`, whatever the spacing;
//! - past the start, `alphas_cumprod[0]` (or 1 with `set_alpha_to_one`) stands in for the
//!   alpha of a negative timestep;
//! - `rescale_betas_zero_snr` is not a PNDM option, so it is ignored.
//!
//! State: the three previous model outputs in the history (`ets`, newest first) and the sample
//! of the first step.

use super::config::unsupported;
use super::spacing::integer_timesteps;
use super::{
    check_state, Noise, PredictionType, Scheduler, SchedulerConfig, SchedulerError, SchedulerKind,
    StepInputs, StepOutput, TimestepSpacing,
};
use crate::{Result, Tensor};

const SCALARS: &[&str] = &[
    "sample_coeff",
    "model_coeff",
    "sqrt_alpha_prod_t",
    "sqrt_beta_prod_t",
    "w_model_output",
    "w_ets_1",
    "w_ets_2",
    "w_ets_3",
    "from_first_sample",
    "push_ets",
    "keep_sample",
];

#[derive(Clone, Debug)]
pub struct PNDMScheduler {
    alphas_cumprod: Vec<f64>,
    final_alpha_cumprod: f64,
    spacing: TimestepSpacing,
    steps_offset: usize,
    prediction_type: PredictionType,
    num_inference_steps: usize,
    timesteps: Vec<f64>,
    alphas: Vec<[f64; 2]>,
}

impl PNDMScheduler {
    pub fn new(
        config: &SchedulerConfig,
        warnings: &mut Vec<String>,
    ) -> std::result::Result<Self, SchedulerError> {
        let class = "PNDMScheduler";
        // diffusers' default is the Runge-Kutta warm-up; only PLMS is implemented.
        if config.skip_prk_steps != Some(true) {
            warnings.push(format!(
                "{class}: skip_prk_steps is not set; the Runge-Kutta warm-up is not \
                 implemented, sampling with PLMS steps from the start (skip_prk_steps = true)"
            ));
        }
        if config.noise.prediction_type == PredictionType::Sample {
            return Err(SchedulerError(format!(
                "{class} supports prediction_type epsilon or v_prediction, not sample"
            )));
        }
        unsupported(warnings, class, "thresholding", &config.thresholding, false);
        let mut noise = config.noise.clone();
        noise.rescale_betas_zero_snr = false;
        let alphas_cumprod = noise.alphas_cumprod().map_err(SchedulerError)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(false) {
            1.0
        } else {
            alphas_cumprod[0]
        };
        Ok(PNDMScheduler {
            alphas_cumprod,
            final_alpha_cumprod,
            spacing: config.spacing_or(TimestepSpacing::Leading),
            steps_offset: config.steps_offset.unwrap_or(0),
            prediction_type: config.noise.prediction_type,
            num_inference_steps: 0,
            timesteps: Vec::new(),
            alphas: Vec::new(),
        })
    }

    /// The ets weights of step `counter`: on the model output, then on the history.
    fn weights(counter: usize) -> [f64; 4] {
        match counter.min(4) {
            0 => [1.0, 0.0, 0.0, 0.0],
            1 => [0.5, 0.5, 0.0, 0.0],
            2 => [1.5, -0.5, 0.0, 0.0],
            3 => [23.0 / 12.0, -16.0 / 12.0, 5.0 / 12.0, 0.0],
            _ => [55.0 / 24.0, -59.0 / 24.0, 37.0 / 24.0, -9.0 / 24.0],
        }
    }
}

impl Scheduler for PNDMScheduler {
    fn kind(&self) -> SchedulerKind {
        SchedulerKind::Pndm
    }

    fn set_timesteps(&mut self, n: usize) -> std::result::Result<(), SchedulerError> {
        let train = self.alphas_cumprod.len();
        let desc = integer_timesteps(self.spacing, train, n, self.steps_offset)?;
        // diffusers: concat(t[:-1], t[-2:-1], t[-1:]) of the ascending list, reversed.
        let mut timesteps = vec![desc[0]];
        if n > 1 {
            timesteps.push(desc[1]);
        }
        timesteps.extend_from_slice(&desc[1..]);
        let ratio = (train / n) as i64;
        let alpha = |t: i64| -> std::result::Result<f64, SchedulerError> {
            match t {
                t if t < 0 => Ok(self.final_alpha_cumprod),
                t => self.alphas_cumprod.get(t as usize).copied().ok_or_else(|| {
                    SchedulerError(format!(
                        "PNDMScheduler: timestep {t} is past the {train} training steps"
                    ))
                }),
            }
        };
        let alphas = timesteps
            .iter()
            .enumerate()
            .map(|(counter, &t)| {
                let t = t as i64;
                let (from, to) = if counter == 1 {
                    (t + ratio, t)
                } else {
                    (t, t - ratio)
                };
                Ok([alpha(from)?, alpha(to)?])
            })
            .collect::<std::result::Result<Vec<_>, SchedulerError>>()?;
        self.num_inference_steps = n;
        self.timesteps = timesteps;
        self.alphas = alphas;
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

    fn step_scalars(&self, counter: usize) -> Vec<f64> {
        let [a_t, a_prev] = self.alphas[counter];
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let w = Self::weights(counter);
        vec![
            (a_prev / a_t).sqrt(),
            (a_prev - a_t) / denom,
            a_t.sqrt(),
            b_t.sqrt(),
            w[0],
            w[1],
            w[2],
            w[3],
            flag(counter == 1),
            flag(counter != 1),
            flag(counter != 0),
        ]
    }

    fn num_state(&self) -> usize {
        4
    }

    fn step(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        s: &StepInputs,
        state: &[Tensor],
        _noise: Noise<'_>,
    ) -> Result<StepOutput> {
        check_state(sample, state, 4)?;
        let (ets, first_sample) = (&state[..3], &state[3]);
        let x = s.flag("from_first_sample")?.select(first_sample, sample)?;
        let mut combined = s
            .get("w_model_output", model_output)?
            .multiply(model_output)?;
        for (i, e) in ets.iter().enumerate() {
            let w = s.get(["w_ets_1", "w_ets_2", "w_ets_3"][i], e)?;
            combined = combined.add(&w.multiply(e)?)?;
        }
        if self.prediction_type == PredictionType::VPrediction {
            combined = s
                .get("sqrt_alpha_prod_t", &combined)?
                .multiply(&combined)?
                .add(&s.get("sqrt_beta_prod_t", &x)?.multiply(&x)?)?;
        }
        let prev_sample = s
            .get("sample_coeff", &x)?
            .multiply(&x)?
            .subtract(&s.get("model_coeff", &combined)?.multiply(&combined)?)?;
        let push = s.flag("push_ets")?;
        let state = vec![
            push.select(model_output, &ets[0])?,
            push.select(&ets[0], &ets[1])?,
            push.select(&ets[1], &ets[2])?,
            s.flag("keep_sample")?.select(first_sample, sample)?,
        ];
        Ok(StepOutput { prev_sample, state })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json(
            r#"{"_class_name": "PNDMScheduler", "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012, "skip_prk_steps": true,
                "steps_offset": 1, "set_alpha_to_one": false}"#,
        )
        .unwrap()
    }

    #[test]
    fn second_timestep_repeats_and_steps_back_from_the_first() {
        let mut s = PNDMScheduler::new(&sd15(), &mut Vec::new()).unwrap();
        s.set_timesteps(50).unwrap();
        assert_eq!(s.timesteps().len(), 51);
        assert_eq!(s.timesteps()[..4], [981.0, 961.0, 961.0, 941.0]);
        let acp = &s.alphas_cumprod;
        assert_eq!(s.alphas[0], [acp[981], acp[961]]);
        assert_eq!(s.alphas[1], [acp[981], acp[961]]);
        assert_eq!(s.alphas[2], [acp[961], acp[941]]);
        assert_eq!(s.alphas[50], [acp[1], acp[0]]);
        let flags = |i: usize| s.step_scalars(i)[8..].to_vec();
        assert_eq!(flags(0), [0.0, 1.0, 0.0]);
        assert_eq!(flags(1), [1.0, 0.0, 1.0]);
        assert_eq!(flags(2), [0.0, 1.0, 1.0]);
    }

    #[test]
    fn sample_prediction_is_refused_and_prk_warns() {
        let mut c = sd15();
        c.noise.prediction_type = PredictionType::Sample;
        assert!(PNDMScheduler::new(&c, &mut Vec::new()).is_err());
        let mut c = sd15();
        c.skip_prk_steps = None;
        let mut warnings = Vec::new();
        PNDMScheduler::new(&c, &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1);
    }
}
