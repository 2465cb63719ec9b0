//! The Textual Inversion step, one program for every device (one replica each): the frozen
//! CLIP, UNet (and, without the latent cache, VAE) weights as replicated arguments; the batch
//! and a PRNG key per device; the trainable embedding rows, their AdamW moments and a gradient
//! accumulator donated so they stay on the device.
//!
//! Randomness: the host hands every device the step's key and the global indices of its
//! samples; each sample draws from `fold_in(key, index)` (see `per_sample_draws`), so a run does
//! not depend on the number of devices.
//! Gradients and the loss are averaged over devices with an all_reduce; the update runs when
//! `apply` is 1 (the last micro-step of a gradient-accumulation window) and otherwise only adds
//! the scaled gradient to the accumulator.

use crate::models::clip::{CLIPTextConfig, CLIPTextModel};
use crate::models::params::{ParamSpec, Params};
use crate::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::optim::{adamw_update, AdamWConfig};
use crate::schedulers::{add_noise, training_target, NoiseScheduleConfig};
use crate::{
    random, value_and_grad, ArgAttrs, ComparisonDirection, DType, Graph, GraphError, Result, Shape,
    Tensor,
};

/// Where the step gets its latent distribution from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatentSource {
    /// A device-resident table of VAE moments `[entries, 2 * latent_channels, h, w]`
    /// (one per image and flip, computed once) indexed per sample.
    Cached { entries: usize },
    /// Run the VAE encoder on the batch's pixels every step.
    Encode,
}

#[derive(Clone, Debug)]
pub struct TrainStepConfig {
    pub text_encoder: CLIPTextConfig,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub noise: NoiseScheduleConfig,
    /// dtype of frozen weights and activations (f32, or bf16 for mixed precision); the rows,
    /// moments, sampling arithmetic and loss are always f32.
    pub compute_dtype: DType,
    /// Samples per device.
    pub batch: usize,
    pub resolution: usize,
    pub seq_len: usize,
    pub num_vectors: usize,
    pub num_devices: usize,
    pub latents: LatentSource,
    pub adamw: AdamWConfig,
    pub gradient_accumulation_steps: usize,
    /// Take the latent sampling noise, the diffusion noise and the timesteps as inputs
    /// (`latent_eps`, `noise`, `timesteps`) instead of drawing them from `key`: the same step,
    /// checkable against any reference (`ti-xla forward --component train_step`).
    pub explicit_randomness: bool,
    /// Bind each UNet conv kernel a second time, reversed for the input gradient
    /// (`Params::with_reversed_kernels`): XLA's CPU backend otherwise copies every kernel the
    /// gradient passes through on every step. Costs a second copy of those kernels in memory;
    /// GPU backends fold the reversal into their backward-data convolution, so leave it off
    /// there.
    pub reversed_kernels: bool,
}

/// The printed program and what its arguments are.
pub struct TrainStepProgram {
    pub text: String,
    /// Every argument in order: frozen weights by checkpoint key, then the per-step inputs
    /// named in `INPUTS`.
    pub args: Vec<ParamSpec>,
}

/// Key prefixes of the three models' weights in the program.
pub const TEXT_ENCODER: &str = "text_encoder";
pub const UNET: &str = "unet";
pub const VAE: &str = "vae";

/// Outputs, in order. The first four alias the inputs of the same names.
pub const OUTPUTS: [&str; 5] = ["rows", "exp_avg", "exp_avg_sq", "grad_acc", "loss"];

pub fn build_train_step(c: &TrainStepConfig) -> Result<TrainStepProgram> {
    let g = Graph::new();
    let p = Params::new(&g, c.compute_dtype);
    let clip = CLIPTextModel::new(c.text_encoder.clone())?;
    let unet = UNet2DConditionModel::new(c.unet.clone())?;
    let vae = AutoencoderKL::new(c.vae.clone())?;
    let alphas_cumprod = c
        .noise
        .alphas_cumprod()
        .map_err(|reason| GraphError::invalid("noise schedule", reason))?;
    let (b, n, d) = (
        c.batch as i64,
        c.num_vectors as i64,
        c.text_encoder.hidden_size as i64,
    );
    let f = c.vae.downscale_factor() as i64;
    let (ch, h) = (c.vae.latent_channels as i64, c.resolution as i64 / f);
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims);

    // Weights first (declared as the models trace), then the per-step inputs.
    // Each model binds its weights under its component name (`unet.conv_in.weight`), so the
    // host can feed each from its own folder.
    let frozen_table = p.scope(TEXT_ENCODER, |p| clip.token_embedding(p))?;
    let (mean, logvar) = match c.latents {
        LatentSource::Encode => {
            let pixels = Shape::new(
                c.compute_dtype,
                &[
                    b,
                    c.vae.in_channels as i64,
                    c.resolution as i64,
                    c.resolution as i64,
                ],
            );
            let pixel_values = p.input("pixel_values", pixels)?;
            let (mean, logvar) = p.scope(VAE, |p| vae.encode(p, &pixel_values))?;
            (mean.convert(DType::F32)?, logvar.convert(DType::F32)?)
        }
        LatentSource::Cached { entries } => {
            let table = p.input(
                "moment_table",
                Shape::new(c.compute_dtype, &[entries as i64, 2 * ch * h * h]),
            )?;
            let index = p.input("moment_index", Shape::new(DType::I32, &[b]))?;
            let moments =
                table
                    .take_rows(&index)?
                    .convert(DType::F32)?
                    .reshape(&[b, 2 * ch, h, h])?;
            (
                moments.slice_axis(1, 0, ch)?,
                moments.slice_axis(1, ch, 2 * ch)?,
            )
        }
    };
    let input_ids = p.input("input_ids", Shape::new(DType::I32, &[b, c.seq_len as i64]))?;
    let rows = p.input("rows", f32s(&[n, d]))?;
    let exp_avg = p.input("exp_avg", f32s(&[n, d]))?;
    let exp_avg_sq = p.input("exp_avg_sq", f32s(&[n, d]))?;
    let grad_acc = p.input("grad_acc", f32s(&[n, d]))?;
    let lr = p.input("lr", f32s(&[]))?;
    let step = p.input("step", f32s(&[]))?;
    let apply = p.input("apply", f32s(&[]))?;
    for (i, t) in [&rows, &exp_avg, &exp_avg_sq, &grad_acc]
        .into_iter()
        .enumerate()
    {
        g.set_arg_attrs(
            t,
            ArgAttrs {
                aliasing_output: Some(i),
                sharding: None,
            },
        )?;
    }

    let (eps, noise, timesteps) = if c.explicit_randomness {
        (
            p.input("latent_eps", f32s(&[b, ch, h, h]))?,
            p.input("noise", f32s(&[b, ch, h, h]))?,
            p.input("timesteps", Shape::new(DType::I32, &[b]))?,
        )
    } else {
        let key = p.input("key", Shape::new(DType::U32, &[2]))?;
        let index = p.input("sample_index", Shape::new(DType::I32, &[b]))?;
        per_sample_draws(&key, &index, [ch, h], c.noise.num_train_timesteps as i32)?
    };
    let latents = mean
        .add(&logvar.mul_scalar(0.5)?.exponential()?.multiply(&eps)?)?
        .mul_scalar(c.vae.scaling_factor)?;
    let noisy = add_noise(&alphas_cumprod, &latents, &noise, &timesteps)?;
    let target = training_target(
        c.noise.prediction_type,
        &alphas_cumprod,
        &latents,
        &noise,
        &timesteps,
    )?;

    // The placeholder tokens are the last `n` ids, appended after the frozen vocabulary.
    let table = g.concatenate(&[frozen_table, rows.convert(c.compute_dtype)?], 0)?;
    let encoder_hidden_states = p.scope(TEXT_ENCODER, |p| {
        clip.forward_with_token_embedding(p, &input_ids, &table)
    })?;
    let noisy = noisy.convert(c.compute_dtype)?;
    let unet_params = if c.reversed_kernels {
        p.with_reversed_kernels()
    } else {
        p.clone()
    };
    let pred = unet_params.scope(UNET, |p| {
        unet.forward(p, &noisy, &timesteps, &encoder_hidden_states)
    })?;
    let diff = pred.convert(DType::F32)?.subtract(&target)?;
    let count = diff.dims().iter().product::<i64>() as f64;
    let loss = diff.square()?.sum_all()?.mul_scalar(1.0 / count)?;
    let (loss, grads) = value_and_grad(&loss, std::slice::from_ref(&rows))?;
    let (loss, grad) = mean_over_devices(&loss, &grads[0], c.num_devices)?;

    let grad_total = grad_acc.add(&grad.mul_scalar(1.0 / c.gradient_accumulation_steps as f64)?)?;
    let updated = adamw_update(
        &rows,
        &exp_avg,
        &exp_avg_sq,
        &grad_total,
        &lr,
        &step,
        &c.adamw,
    )?;
    let on = apply
        .compare(&g.scalar(0.5, DType::F32)?, ComparisonDirection::Gt)?
        .broadcast_to(&[n, d])?;
    let choose = |a: &Tensor, b: &Tensor| on.select(a, b);
    let outputs = [
        choose(&updated.params, &rows)?,
        choose(&updated.exp_avg, &exp_avg)?,
        choose(&updated.exp_avg_sq, &exp_avg_sq)?,
        choose(&grad_total.zeros_like()?, &grad_total)?,
        loss,
    ];
    let text = g.to_stablehlo(&outputs.iter().collect::<Vec<_>>())?;
    Ok(TrainStepProgram {
        text,
        args: p.specs(),
    })
}

/// Each sample's latent noise, diffusion noise and timestep from its own key,
/// `fold_in(step_key, global sample index)`: the numbers then do not depend on how the batch is
/// split over devices, so N devices reproduce one device's run. Within a sample the draws follow
/// the Flax trainer's order (latent noise from the key in NHWC order, then
/// `noise_key, timestep_key = split(key)`).
fn per_sample_draws(
    key: &Tensor,
    index: &Tensor,
    [ch, h]: [i64; 2],
    timesteps: i32,
) -> Result<(Tensor, Tensor, Tensor)> {
    let g = key.graph();
    let b = index.dims()[0];
    let (mut eps, mut noise, mut t) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..b {
        let k = random::fold_in(key, &index.slice_axis(0, i, i + 1)?.reshape(&[])?)?;
        eps.push(random::normal(&k, &[1, h, h, ch], DType::F32)?.transpose(&[0, 3, 1, 2])?);
        let keys = random::split_keys(&k, 2)?;
        noise.push(random::normal(&keys[0], &[1, ch, h, h], DType::F32)?);
        t.push(random::randint(&keys[1], &[1], 0, timesteps)?);
    }
    Ok((
        g.concatenate(&eps, 0)?,
        g.concatenate(&noise, 0)?,
        g.concatenate(&t, 0)?,
    ))
}

/// Sum over the replicas divided by their number (the reference's `pmean`).
fn mean_over_devices(loss: &Tensor, grad: &Tensor, devices: usize) -> Result<(Tensor, Tensor)> {
    if devices <= 1 {
        return Ok((loss.clone(), grad.clone()));
    }
    let group = vec![(0..devices as i64).collect::<Vec<_>>()];
    let inv = 1.0 / devices as f64;
    Ok((
        loss.all_reduce_sum(&group)?.mul_scalar(inv)?,
        grad.all_reduce_sum(&group)?.mul_scalar(inv)?,
    ))
}

/// The VAE moments `[B, 2 * latent_channels, h * w]` flattened per sample, for the latent
/// cache: arguments are the VAE weights then `pixel_values`.
pub fn build_encode_moments(
    vae: &AutoencoderKLConfig,
    dtype: DType,
    batch: usize,
    resolution: usize,
) -> Result<TrainStepProgram> {
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let model = AutoencoderKL::new(vae.clone())?;
    let pixels = Shape::new(
        dtype,
        &[
            batch as i64,
            vae.in_channels as i64,
            resolution as i64,
            resolution as i64,
        ],
    );
    let pixel_values = p.input("pixel_values", pixels)?;
    let (mean, logvar) = model.encode(&p, &pixel_values)?;
    let moments = g.concatenate(&[mean, logvar], 1)?;
    let dims = moments.dims();
    let flat = moments.reshape(&[dims[0], dims[1] * dims[2] * dims[3]])?;
    Ok(TrainStepProgram {
        text: g.to_stablehlo(&[&flat])?,
        args: p.specs(),
    })
}
