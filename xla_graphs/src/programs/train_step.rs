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

use crate::models::clip::CLIPTextConfig;
use crate::models::params::{GradientKernels, Params};
use crate::models::unet::{TextTimeConditioning, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::optim::{adamw_update, AdamWConfig};
use crate::programs::conditioning::{Conditioning, TextEncoders};
use crate::programs::interface::{declare, finish, Arg, Output, Program, Traced, UNET, VAE};
use crate::schedulers::{
    add_noise, min_snr_weights, per_timestep, training_target, NoiseScheduleConfig,
};
use crate::{
    random, value_and_grad, ComparisonDirection, DType, Graph, GraphError, Result, Tensor,
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
    /// SDXL's `text_encoder_2` (with its projection): the rows then span both tables.
    pub text_encoder_2: Option<CLIPTextConfig>,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    pub noise: NoiseScheduleConfig,
    /// dtype of frozen weights and activations (f32, or bf16 for mixed precision); the rows,
    /// moments, sampling arithmetic and loss are always f32.
    pub compute_dtype: DType,
    /// The VAE's dtype (and the pixels' and cached moments'): the compute dtype, or f32 for
    /// an SDXL VAE that asks for `force_upcast`.
    pub vae_dtype: DType,
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
    /// How the UNet's conv kernels are bound for the input gradient through them.
    pub gradient_kernels: GradientKernels,
    /// Training options beyond the diffusers step (all off by default).
    pub options: StepOptions,
}

/// What the best embedding trainers add to the diffusers step; the default is the diffusers
/// step exactly.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOptions {
    /// Min-SNR-gamma loss weighting (diffusers' `--snr_gamma`): each sample's mean squared
    /// error weighted by `schedulers::min_snr_weights` of its timestep.
    pub snr_gamma: Option<f64>,
    /// diffusers' `--noise_offset`: the diffusion noise plus this times a standard normal draw
    /// per sample and latent channel (0: off).
    pub noise_offset: f64,
    /// After each update, every learned row's part of each text encoder's table rescaled to
    /// that table's norm (one per encoder, in row order; OneTrainer's preserve-norm uses the
    /// vocabulary's median row norm).
    pub preserve_norm: Option<Vec<f64>>,
    /// After each update (and the rescaling), each row part clamped to at most this norm.
    pub max_norm: Option<f64>,
    /// Weigh each latent pixel's squared error by the `loss_mask` input (kohya's masked
    /// loss: the mean over all elements of the weighted errors).
    pub masked_loss: bool,
}

crate::program_args! {
    /// The trainable rows and their AdamW state, donated to the step and returned updated:
    /// they stay on the devices for the whole run.
    pub struct RowState<T> {
        /// The learned embedding rows `[num_vectors, D]` f32 (`D`: the text encoders' widths
        /// together, see `programs::conditioning`).
        pub rows: T,
        pub exp_avg: T,
        pub exp_avg_sq: T,
        /// The gradient summed over a gradient-accumulation window so far.
        pub grad_acc: T,
    }
}

crate::program_args! {
    /// The step's run-time inputs.
    pub struct TrainStepInputs<T> {
        /// `[B, C, H, W]` pixels in [-1, 1], compute dtype (`LatentSource::Encode`).
        pub pixel_values: Option<T>,
        /// `[entries, 2 * C * h * w]` VAE moments, compute dtype (`LatentSource::Cached`).
        pub moment_table: Option<T>,
        /// `[B]` i32: each sample's entry in the moment table.
        pub moment_index: Option<T>,
        /// `[B, L]` i32 token ids of the captions.
        pub input_ids: T,
        /// `[B, L]` i32: the same captions from SDXL's second tokenizer.
        pub input_ids_2: Option<T>,
        /// `[B, N]` f32: SDXL's time ids per sample (original height and width, crop top and
        /// left, target height and width).
        pub time_ids: Option<T>,
        pub state: RowState<T>,
        /// f32 scalars: the learning rate, the 1-based optimizer step, and 1 on the last
        /// micro-step of an accumulation window (else 0).
        pub lr: T,
        pub step: T,
        pub apply: T,
        /// `[2]` u32: the step's key (drawn randomness).
        pub key: Option<T>,
        /// `[B]` i32: the global index of each sample in the step's batch.
        pub sample_index: Option<T>,
        /// Given randomness (`explicit_randomness`): `[B, C, h, w]` f32 latent and diffusion
        /// noise, `[B]` i32 timesteps.
        pub latent_eps: Option<T>,
        pub noise: Option<T>,
        pub timesteps: Option<T>,
        /// Given `[B, C, 1, 1]` f32 noise-offset draws (with `noise_offset` set).
        pub offset_noise: Option<T>,
        /// `[B, 1, h, w]` f32 per-pixel loss weights (with `masked_loss`).
        pub loss_mask: Option<T>,
    }
}

crate::program_args! {
    /// The step's outputs: the state for the next step, and the loss averaged over devices.
    pub struct TrainStepOutputs<T> {
        pub state: RowState<T>,
        pub loss: T,
    }
}

/// The compiled-to-be training step.
pub type TrainStep = Program<TrainStepInputs<Arg>, TrainStepOutputs<Output>>;

impl TrainStepConfig {
    /// The text encoders' widths, in the learned rows' column order.
    pub fn row_widths(&self) -> Vec<usize> {
        std::iter::once(&self.text_encoder)
            .chain(&self.text_encoder_2)
            .map(|c| c.hidden_size)
            .collect()
    }

    /// SDXL's time ids per sample (`None` for SD 1.x/2.x, or when the UNet's widths do not
    /// fit text_encoder_2's projection).
    pub fn time_ids(&self) -> Option<usize> {
        let e = self.text_encoder_2.as_ref()?;
        self.unet.text_time_ids(e.projection_dim)
    }

    /// Samples per device, learned rows, their width, latent channels and latent size.
    fn dims(&self) -> [i64; 5] {
        let f = self.vae.downscale_factor();
        [
            self.batch,
            self.num_vectors,
            self.row_widths().iter().sum(),
            self.vae.latent_channels,
            self.resolution / f,
        ]
        .map(|x| x as i64)
    }

    /// The inputs the step takes for this configuration.
    pub fn inputs(&self) -> TrainStepInputs<Arg> {
        let [b, n, d, ch, h] = self.dims();
        let r = self.resolution as i64;
        let cached = match self.latents {
            LatentSource::Cached { entries } => Some(entries as i64),
            LatentSource::Encode => None,
        };
        let explicit = self.explicit_randomness;
        let row = || Arg::replicated(DType::F32, &[n, d]).donated();
        let scalar = || Arg::replicated(DType::F32, &[]);
        let noise = || Arg::sharded(DType::F32, &[b, ch, h, h]);
        let ids = || Arg::sharded(DType::I32, &[b, self.seq_len as i64]);
        TrainStepInputs {
            pixel_values: cached
                .is_none()
                .then(|| Arg::sharded(self.vae_dtype, &[b, self.vae.in_channels as i64, r, r])),
            moment_table: cached.map(|e| Arg::replicated(self.vae_dtype, &[e, 2 * ch * h * h])),
            moment_index: cached.map(|_| Arg::sharded(DType::I32, &[b])),
            input_ids: ids(),
            input_ids_2: self.text_encoder_2.as_ref().map(|_| ids()),
            time_ids: self
                .time_ids()
                .map(|n| Arg::sharded(DType::F32, &[b, n as i64])),
            state: RowState {
                rows: row(),
                exp_avg: row(),
                exp_avg_sq: row(),
                grad_acc: row(),
            },
            lr: scalar(),
            step: scalar(),
            apply: scalar(),
            key: (!explicit).then(|| Arg::replicated(DType::U32, &[2])),
            sample_index: (!explicit).then(|| Arg::sharded(DType::I32, &[b])),
            latent_eps: explicit.then(noise),
            noise: explicit.then(noise),
            timesteps: explicit.then(|| Arg::sharded(DType::I32, &[b])),
            offset_noise: (explicit && self.options.noise_offset != 0.0)
                .then(|| Arg::sharded(DType::F32, &[b, ch, 1, 1])),
            loss_mask: self
                .options
                .masked_loss
                .then(|| Arg::sharded(DType::F32, &[b, 1, h, h])),
        }
    }
}

pub fn build_train_step(c: &TrainStepConfig) -> Result<TrainStep> {
    let g = Graph::new();
    let p = Params::new(&g, c.compute_dtype);
    let encoders = TextEncoders::new(&c.text_encoder, c.text_encoder_2.as_ref())?;
    let unet = UNet2DConditionModel::new(c.unet.clone())?;
    let vae = AutoencoderKL::new(c.vae.clone())?;
    let alphas_cumprod = c
        .noise
        .alphas_cumprod()
        .map_err(|reason| GraphError::invalid("noise schedule", reason))?;
    let [b, _, _, ch, h] = c.dims();
    let decl = c.inputs();
    let x = declare(&p, &decl)?;

    if c.text_encoder_2.is_some() && c.time_ids().is_none() {
        return Err(GraphError::invalid(
            "train step",
            "an SDXL model's UNet needs addition_embed_type text_time, with \
             projection_class_embeddings_input_dim = text_encoder_2's projection_dim + \
             N * addition_time_embed_dim"
                .to_string(),
        ));
    }
    // Each model binds its weights under its component name (`unet.conv_in.weight`), so the
    // host can feed each from its own folder.
    let (mean, logvar) = latent_moments(&p.with_dtype(c.vae_dtype), &vae, &x, [b, ch, h])?;
    let s = &x.state;
    let offset = c.options.noise_offset;
    let (eps, noise, timesteps, offset_noise) = draws(
        &x,
        [ch, h],
        c.noise.num_train_timesteps as i32,
        offset != 0.0,
    )?;
    // diffusers: `noise += noise_offset * randn((B, C, 1, 1))`.
    let noise = match offset_noise {
        Some(o) => noise.add(&o.mul_scalar(offset)?.broadcast_to(&noise.dims())?)?,
        None => noise,
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
    let Conditioning {
        context,
        text_embeds,
    } = encoders.encode(&p, &x.input_ids, x.input_ids_2.as_ref(), Some(&s.rows))?;
    let added = match (text_embeds, &x.time_ids) {
        (Some(text_embeds), Some(time_ids)) => Some(TextTimeConditioning {
            text_embeds,
            time_ids: time_ids.clone(),
        }),
        _ => None,
    };
    let noisy = noisy.convert(c.compute_dtype)?;
    let unet_params = p.with_gradient_kernels(c.gradient_kernels);
    let pred = unet_params.scope(UNET, |p| {
        unet.forward(p, &noisy, &timesteps, &context, added.as_ref())
    })?;
    let diff = pred.convert(DType::F32)?.subtract(&target)?;
    let count = diff.dims().iter().product::<i64>() as f64;
    let squared = match &x.loss_mask {
        Some(mask) => diff.square()?.multiply(&mask.broadcast_to(&diff.dims())?)?,
        None if c.options.masked_loss => return Err(missing("loss_mask")),
        None => diff.square()?,
    };
    let loss = match c.options.snr_gamma {
        None => squared.sum_all()?.mul_scalar(1.0 / count)?,
        // Each sample's mean over (C, h, w), weighted by its timestep's weight, then the mean
        // over the batch (diffusers' order of reduction).
        Some(gamma) => {
            let weights = min_snr_weights(c.noise.prediction_type, &alphas_cumprod, gamma);
            squared
                .reduce_sum(&[1, 2, 3])?
                .mul_scalar(b as f64 / count)?
                .multiply(&per_timestep(&weights, &timesteps)?)?
                .sum_all()?
                .mul_scalar(1.0 / b as f64)?
        }
    };
    let (loss, grads) = value_and_grad(&loss, std::slice::from_ref(&s.rows))?;
    let (loss, grad) = mean_over_devices(&loss, &grads[0], c.num_devices)?;

    let outputs = TrainStepOutputs {
        state: update(c, s, &grad, &x.lr, &x.step, &x.apply)?,
        loss: Traced::replicated(loss),
    };
    let program = finish(&p, decl, outputs)?;
    Ok(match c.latents {
        LatentSource::Encode => program.using_part_of(VAE, vae.weight_specs(c.vae_dtype)?),
        LatentSource::Cached { .. } => program,
    })
}

fn missing(what: &str) -> GraphError {
    GraphError::invalid("train step", format!("no {what} input"))
}

/// The latent distribution's mean and log-variance `[B, C, h, w]` in f32: from the VAE
/// encoder on the pixels, or looked up in the moment table.
fn latent_moments(
    p: &Params,
    vae: &AutoencoderKL,
    x: &TrainStepInputs<Tensor>,
    [b, ch, h]: [i64; 3],
) -> Result<(Tensor, Tensor)> {
    match (&x.pixel_values, &x.moment_table, &x.moment_index) {
        (Some(pixel_values), _, _) => {
            let (mean, logvar) = p.scope(VAE, |p| vae.encode(p, pixel_values))?;
            Ok((mean.convert(DType::F32)?, logvar.convert(DType::F32)?))
        }
        (None, Some(table), Some(index)) => {
            let moments =
                table
                    .take_rows(index)?
                    .convert(DType::F32)?
                    .reshape(&[b, 2 * ch, h, h])?;
            Ok((
                moments.slice_axis(1, 0, ch)?,
                moments.slice_axis(1, ch, 2 * ch)?,
            ))
        }
        _ => Err(missing("latent")),
    }
}

/// The latent sampling noise, the diffusion noise, the timesteps and (with `offset`) the
/// noise-offset draws: given, or drawn.
fn draws(
    x: &TrainStepInputs<Tensor>,
    [ch, h]: [i64; 2],
    timesteps: i32,
    offset: bool,
) -> Result<Draws> {
    match (&x.latent_eps, &x.noise, &x.timesteps) {
        (Some(eps), Some(noise), Some(t)) => {
            let offset_noise = match offset {
                true => Some(
                    x.offset_noise
                        .clone()
                        .ok_or_else(|| missing("offset_noise"))?,
                ),
                false => None,
            };
            Ok((eps.clone(), noise.clone(), t.clone(), offset_noise))
        }
        _ => {
            let key = x.key.as_ref().ok_or_else(|| missing("key"))?;
            let index = x
                .sample_index
                .as_ref()
                .ok_or_else(|| missing("sample_index"))?;
            per_sample_draws(key, index, [ch, h], timesteps, offset)
        }
    }
}

type Draws = (Tensor, Tensor, Tensor, Option<Tensor>);

/// The state after a micro-step: the gradient added to the accumulator, and with `apply` set,
/// the AdamW update of the rows from the accumulated gradient (which is then cleared).
fn update(
    c: &TrainStepConfig,
    s: &RowState<Tensor>,
    grad: &Tensor,
    lr: &Tensor,
    step: &Tensor,
    apply: &Tensor,
) -> Result<RowState<Traced>> {
    let g = grad.graph();
    let grad_total = s
        .grad_acc
        .add(&grad.mul_scalar(1.0 / c.gradient_accumulation_steps as f64)?)?;
    let updated = adamw_update(
        &s.rows,
        &s.exp_avg,
        &s.exp_avg_sq,
        &grad_total,
        lr,
        step,
        &c.adamw,
    )?;
    let on = apply
        .compare(&g.scalar(0.5, DType::F32)?, ComparisonDirection::Gt)?
        .broadcast_to(&s.rows.dims())?;
    let choose = |a: &Tensor, b: &Tensor| on.select(a, b).map(Traced::replicated);
    let rows = row_norms(c, &updated.params)?;
    Ok(RowState {
        rows: choose(&rows, &s.rows)?,
        exp_avg: choose(&updated.exp_avg, &s.exp_avg)?,
        exp_avg_sq: choose(&updated.exp_avg_sq, &s.exp_avg_sq)?,
        grad_acc: choose(&grad_total.zeros_like()?, &grad_total)?,
    })
}

/// The updated rows with `preserve_norm` and `max_norm` applied to each text encoder's part of
/// every row.
fn row_norms(c: &TrainStepConfig, rows: &Tensor) -> Result<Tensor> {
    let o = &c.options;
    if o.preserve_norm.is_none() && o.max_norm.is_none() {
        return Ok(rows.clone());
    }
    let g = rows.graph();
    let widths = c.row_widths();
    if let Some(t) = &o.preserve_norm {
        if t.len() != widths.len() {
            return Err(GraphError::invalid(
                "train step",
                format!(
                    "{} preserve_norm targets for {} text encoders",
                    t.len(),
                    widths.len()
                ),
            ));
        }
    }
    let n = rows.dims()[0];
    let splat = |v: f64| g.scalar(v, DType::F32)?.broadcast_to(&[n]);
    let mut parts = Vec::new();
    let mut start = 0;
    for (e, &w) in widths.iter().enumerate() {
        let part = rows.slice_axis(1, start as i64, (start + w) as i64)?;
        start += w;
        // Row norms, kept away from 0 so that a zero row stays zero.
        let norm = part
            .square()?
            .reduce_sum(&[1])?
            .sqrt()?
            .maximum(&splat(1e-12)?)?;
        let (mut scale, mut after) = (splat(1.0)?, norm.clone());
        if let Some(targets) = &o.preserve_norm {
            scale = splat(targets[e])?.divide(&norm)?;
            after = splat(targets[e])?;
        }
        if let Some(max) = o.max_norm {
            let clamp = splat(max)?.divide(&after.maximum(&splat(max)?)?)?;
            scale = scale.multiply(&clamp)?;
        }
        let scale = scale.reshape(&[n, 1])?.broadcast_to(&[n, w as i64])?;
        parts.push(part.multiply(&scale)?);
    }
    g.concatenate(&parts, 1)
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
    offset: bool,
) -> Result<Draws> {
    let g = key.graph();
    let b = index.dims()[0];
    let (mut eps, mut noise, mut t, mut off) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..b {
        let k = random::fold_in(key, &index.slice_axis(0, i, i + 1)?.reshape(&[])?)?;
        eps.push(random::normal(&k, &[1, h, h, ch], DType::F32)?.transpose(&[0, 3, 1, 2])?);
        let keys = random::split_keys(&k, 2)?;
        noise.push(random::normal(&keys[0], &[1, ch, h, h], DType::F32)?);
        t.push(random::randint(&keys[1], &[1], 0, timesteps)?);
        if offset {
            // A key of its own, so the other draws stay those of a run without the offset.
            let k = random::fold_in_const(&k, OFFSET_KEY)?;
            off.push(random::normal(&k, &[1, ch, 1, 1], DType::F32)?);
        }
    }
    Ok((
        g.concatenate(&eps, 0)?,
        g.concatenate(&noise, 0)?,
        g.concatenate(&t, 0)?,
        offset.then(|| g.concatenate(&off, 0)).transpose()?,
    ))
}

/// `fold_in` data of the noise-offset key ("off" in ASCII).
const OFFSET_KEY: u32 = 0x6f_66_66;

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

crate::program_args! {
    /// The latent cache program's input: `[B, C, H, W]` pixels in the compute dtype.
    pub struct EncodeMomentsInputs<T> { pub pixel_values: T }
}

crate::program_args! {
    /// Its output: the VAE moments `[B, 2 * latent_channels * h * w]`, mean then log-variance,
    /// flattened per sample.
    pub struct EncodeMomentsOutputs<T> { pub moments: T }
}

pub type EncodeMoments = Program<EncodeMomentsInputs<Arg>, EncodeMomentsOutputs<Output>>;

/// The VAE moments of a batch of images, for the latent cache (the VAE's encoder alone).
pub fn build_encode_moments(
    vae: &AutoencoderKLConfig,
    dtype: DType,
    batch: usize,
    resolution: usize,
) -> Result<EncodeMoments> {
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let model = AutoencoderKL::new(vae.clone())?;
    let r = resolution as i64;
    let decl = EncodeMomentsInputs {
        pixel_values: Arg::sharded(dtype, &[batch as i64, vae.in_channels as i64, r, r]),
    };
    let x = declare(&p, &decl)?;
    let (mean, logvar) = p.scope(VAE, |p| model.encode(p, &x.pixel_values))?;
    let moments = g.concatenate(&[mean, logvar], 1)?;
    let dims = moments.dims();
    let flat = moments.reshape(&[dims[0], dims[1] * dims[2] * dims[3]])?;
    let outputs = EncodeMomentsOutputs {
        moments: Traced::sharded(flat),
    };
    Ok(finish(&p, decl, outputs)?.using_part_of(VAE, model.weight_specs(dtype)?))
}
