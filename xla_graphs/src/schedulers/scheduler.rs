//! The sampling-scheduler contract. A scheduler keeps its tables on the host (f64) and traces
//! one update into a graph; everything that changes from step to step comes in as inputs, so the
//! generate command compiles one denoising-step program and runs it for every step index:
//!
//! - `scalars`: a `[K]` f32 vector, `step_scalars(i)` for step `i`, laid out as
//!   `scalar_names()` says;
//! - `state`: `num_state()` sample-shaped tensors a multistep method carries (PNDM's earlier
//!   model outputs, DPM-Solver++'s previous prediction), zeros before the first step, fed back
//!   from the step's outputs after it;
//! - noise, for the ancestral sampler only, drawn in the program from a threefry key or passed in.
//!
//! ```
//! use xla_graphs::schedulers::{build_scheduler, Noise, SchedulerConfig, SchedulerKind};
//! use xla_graphs::{DType, Graph, Shape};
//! let config = SchedulerConfig::from_json(r#"{"_class_name": "PNDMScheduler",
//!     "beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012,
//!     "skip_prk_steps": true, "steps_offset": 1}"#).unwrap();
//! let (mut scheduler, warnings) = build_scheduler(&config, Some(SchedulerKind::Euler)).unwrap();
//! assert!(warnings.is_empty());
//! scheduler.set_timesteps(20).unwrap();
//! let g = Graph::new();
//! let dims = [1, 4, 8, 8];
//! let sample = g.parameter("sample", Shape::new(DType::F32, &dims)).unwrap();
//! let model_output = g.parameter("model_output", Shape::new(DType::F32, &dims)).unwrap();
//! let k = scheduler.scalar_names().len() as i64;
//! let scalars = g.parameter("scalars", Shape::new(DType::F32, &[k])).unwrap();
//! let scalars = scheduler.step_inputs(&scalars).unwrap();
//! let unet_input = scheduler.scale_model_input(&sample, &scalars).unwrap();
//! let out = scheduler.step(&model_output, &sample, &scalars, &[], Noise::None).unwrap();
//! assert_eq!(scheduler.step_scalars(0).len(), k as usize);
//! let text = g.to_stablehlo(&[&unet_input, &out.prev_sample]).unwrap();
//! assert!(text.contains("func.func public @main"));
//! ```

use crate::{random, DType, GraphError, Result, Tensor};

use super::SchedulerKind;

/// A scheduler configuration or schedule that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SchedulerError(pub String);

/// Noise for the ancestral update.
#[derive(Clone, Copy, Debug)]
pub enum Noise<'a> {
    /// For the deterministic schedulers.
    None,
    /// A threefry key, `[2]` u32 for the whole sample or `[B, 2]` u32, one key per sample so a
    /// sample's noise does not depend on how samples are batched; drawn with
    /// `random::normal` (f32) over the sample's (per-sample) shape.
    Key(&'a Tensor),
    /// Standard normals of the sample's shape.
    Normals(&'a Tensor),
}

/// The update's results: the next sample and the state to carry into the next step.
pub struct StepOutput {
    pub prev_sample: Tensor,
    pub state: Vec<Tensor>,
}

/// The traced `[K]` scalar vector of one step, read by name.
pub struct StepInputs {
    scalars: Tensor,
    names: &'static [&'static str],
}

impl StepInputs {
    pub fn new(scalars: &Tensor, names: &'static [&'static str]) -> Result<StepInputs> {
        if scalars.dims() != [names.len() as i64] || !scalars.dtype().is_float() {
            return Err(scalars.graph().op_error(
                "scheduler.step_inputs",
                &[scalars],
                format!(
                    "expected a float [{}] vector ({})",
                    names.len(),
                    names.join(", ")
                ),
            ));
        }
        Ok(StepInputs {
            scalars: scalars.clone(),
            names,
        })
    }

    /// The named scalar in `like`'s dtype, broadcast to its shape.
    pub fn get(&self, name: &str, like: &Tensor) -> Result<Tensor> {
        let i = self.names.iter().position(|n| *n == name).ok_or_else(|| {
            self.scalars.graph().op_error(
                "scheduler.step_inputs",
                &[&self.scalars],
                format!("no step scalar {name:?} among {:?}", self.names),
            )
        })? as i64;
        self.scalars
            .slice_axis(0, i, i + 1)?
            .reshape(&[])?
            .convert(like.dtype())?
            .broadcast_to(&like.dims())
    }

    /// A 0/1 flag as a scalar predicate for `select`.
    pub fn flag(&self, name: &str) -> Result<Tensor> {
        let g = self.scalars.graph();
        let one = g.scalar(1.0, self.scalars.dtype())?;
        let v = self.get(name, &one)?;
        v.compare(&one.mul_scalar(0.5)?, crate::ComparisonDirection::Gt)
    }
}

pub trait Scheduler: std::fmt::Debug + Send + Sync {
    fn kind(&self) -> SchedulerKind;

    /// Rebuilds the host tables for `num_inference_steps`.
    fn set_timesteps(
        &mut self,
        num_inference_steps: usize,
    ) -> std::result::Result<(), SchedulerError>;

    /// The UNet's timestep at each denoising step; one step per entry (PNDM has one more entry
    /// than inference steps).
    fn timesteps(&self) -> &[f64];

    /// The standard deviation of the starting latents: `N(0, 1) * init_noise_sigma`.
    fn init_noise_sigma(&self) -> f64;

    /// The noise level of each timestep and the one after the last (Euler and DPM-Solver++).
    fn sigmas(&self) -> Option<&[f64]> {
        None
    }

    /// `(alpha_prod_t, alpha_prod_t_prev)` used by each step (PNDM and DDIM).
    fn alphas(&self) -> Option<&[[f64; 2]]> {
        None
    }

    /// Names of the per-step scalars, in the order of `step_scalars`.
    fn scalar_names(&self) -> &'static [&'static str];

    /// The scalar input of step `step_index` (an index into `timesteps()`), computed in f64.
    fn step_scalars(&self, step_index: usize) -> Vec<f64>;

    /// Sample-shaped state tensors the step carries, zeros before the first step.
    fn num_state(&self) -> usize {
        0
    }

    /// Wraps the traced scalar vector so the update can read it by name.
    fn step_inputs(&self, scalars: &Tensor) -> Result<StepInputs> {
        StepInputs::new(scalars, self.scalar_names())
    }

    /// The UNet's input at this step (diffusers' `scale_model_input`).
    fn scale_model_input(&self, sample: &Tensor, _scalars: &StepInputs) -> Result<Tensor> {
        Ok(sample.clone())
    }

    /// Traces one update (diffusers' `step`); `state` has `num_state()` tensors.
    fn step(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        scalars: &StepInputs,
        state: &[Tensor],
        noise: Noise<'_>,
    ) -> Result<StepOutput>;
}

/// Errors unless `state` has `n` tensors shaped like `sample`.
pub(crate) fn check_state(sample: &Tensor, state: &[Tensor], n: usize) -> Result<()> {
    if state.len() != n || state.iter().any(|s| s.shape() != sample.shape()) {
        let mut operands = vec![sample];
        operands.extend(state);
        return Err(sample.graph().op_error(
            "scheduler.step",
            &operands,
            format!("expected {n} state tensors shaped like the sample"),
        ));
    }
    Ok(())
}

/// Standard normals for the sample from `noise`, in the sample's dtype.
pub(crate) fn draw(noise: Noise<'_>, sample: &Tensor) -> Result<Tensor> {
    let dims = sample.dims();
    let g = sample.graph();
    let normals = match noise {
        Noise::Normals(z) => z.clone(),
        Noise::Key(key) if key.dims() == [2] => random::normal(key, &dims, DType::F32)?,
        Noise::Key(keys) if keys.rank() == 2 && keys.dims() == [dims[0], 2] => {
            let rows = (0..dims[0])
                .map(|b| {
                    let key = keys.slice_axis(0, b, b + 1)?.reshape(&[2])?;
                    let mut one = dims.clone();
                    one[0] = 1;
                    random::normal(&key, &one[1..], DType::F32)?.reshape(&one)
                })
                .collect::<Result<Vec<_>>>()?;
            g.concatenate(&rows, 0)?
        }
        Noise::Key(key) => {
            return Err(g.op_error(
                "scheduler.noise",
                &[key, sample],
                "the key must be [2] or [batch, 2] u32".into(),
            ))
        }
        Noise::None => {
            return Err(GraphError::Invalid {
                what: "scheduler.step",
                reason: "this scheduler needs noise: pass a key or normals".into(),
            })
        }
    };
    if normals.dims() != dims {
        return Err(g.op_error(
            "scheduler.noise",
            &[&normals, sample],
            "the noise must be shaped like the sample".into(),
        ));
    }
    normals.convert(sample.dtype())
}
