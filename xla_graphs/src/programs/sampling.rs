//! The three programs `ti-xla generate` (and validation during training) runs, each compiled
//! once with one replica per device:
//!
//! - text encoding: the negative (or empty) prompt and the prompt, `[2, L]` ids, with learned
//!   rows appended after the frozen vocabulary; the same on every device, so its output stays
//!   there for the step to read;
//! - one denoising step: the UNet on the unconditional and conditional halves in one batch,
//!   classifier-free guidance, then the scheduler's update with the step's scalars and state as
//!   inputs, so the same program serves every step;
//! - VAE decode of the final latents to images in [0, 1].
//!
//! Latents, guidance and the scheduler arithmetic are f32 whatever the compute dtype, as
//! diffusers keeps them in the pipeline's dtype (f32 unless loaded in half precision).

use crate::models::clip::CLIPTextConfig;
use crate::models::params::Params;
use crate::models::unet::{TextTimeConditioning, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::programs::conditioning::TextEncoders;
use crate::programs::interface::{declare, finish, Arg, Output, Program, Traced, UNET, VAE};
use crate::schedulers::{Noise, Scheduler};
use crate::{DType, Graph, GraphError, Result, Tensor};

crate::program_args! {
    /// The text program's inputs: the negative (or empty) prompt and the prompt.
    pub struct TextEncodeInputs<T> {
        /// `[2, L]` i32, the negative prompt first.
        pub input_ids: T,
        /// `[2, L]` i32: the same from SDXL's second tokenizer.
        pub input_ids_2: Option<T>,
        /// `[n, D]` f32 learned rows, appended to the token table (absent without any); `D`
        /// spans both encoders' tables for SDXL (see `programs::conditioning`).
        pub rows: Option<T>,
    }
}

crate::program_args! {
    pub struct TextEncodeOutputs<T> {
        /// `[2, L, D]` encoder states in the compute dtype.
        pub context: T,
        /// `[2, P]` SDXL's pooled `text_embeds`, in the compute dtype.
        pub text_embeds: Option<T>,
    }
}

pub type TextEncode = Program<TextEncodeInputs<Arg>, TextEncodeOutputs<Output>>;

/// The text program of one pipeline.
#[derive(Clone, Debug)]
pub struct TextEncodeConfig {
    pub text_encoder: CLIPTextConfig,
    /// SDXL's second encoder.
    pub text_encoder_2: Option<CLIPTextConfig>,
    pub dtype: DType,
    pub seq_len: usize,
    /// Learned rows appended to the tables (0 for none).
    pub num_rows: usize,
    /// The negative half is zeros instead of the encoded ids: SDXL without a negative prompt
    /// when the pipeline sets `force_zeros_for_empty_prompt`.
    pub zero_negative: bool,
}

pub fn build_text_encode(c: &TextEncodeConfig) -> Result<TextEncode> {
    let g = Graph::new();
    let p = Params::new(&g, c.dtype);
    let encoders = TextEncoders::new(&c.text_encoder, c.text_encoder_2.as_ref())?;
    let ids = || Arg::replicated(DType::I32, &[2, c.seq_len as i64]);
    let d = encoders.row_width() as i64;
    let decl = TextEncodeInputs {
        input_ids: ids(),
        input_ids_2: c.text_encoder_2.as_ref().map(|_| ids()),
        rows: (c.num_rows > 0).then(|| Arg::replicated(DType::F32, &[c.num_rows as i64, d])),
    };
    let x = declare(&p, &decl)?;
    let cond = encoders.encode(&p, &x.input_ids, x.input_ids_2.as_ref(), x.rows.as_ref())?;
    let negative_zeroed = |t: Tensor| -> Result<Tensor> {
        if !c.zero_negative {
            return Ok(t);
        }
        let positive = t.slice_axis(0, 1, 2)?;
        g.concatenate(&[positive.zeros_like()?, positive], 0)
    };
    let outputs = TextEncodeOutputs {
        context: Traced::replicated(negative_zeroed(cond.context)?),
        text_embeds: cond
            .text_embeds
            .map(|t| negative_zeroed(t).map(Traced::replicated))
            .transpose()?,
    };
    finish(&p, decl, outputs)
}

/// How the ancestral update gets its noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepNoise {
    /// The scheduler is deterministic: no noise input.
    None,
    /// `keys` `[B, 2]` u32, one threefry key per sample for this step.
    Keys,
    /// `noise` `[B, C, h, w]` f32 standard normals (to replay a reference's draws).
    Normals,
}

pub struct DenoiseStepConfig<'a> {
    pub unet: UNet2DConditionConfig,
    pub compute_dtype: DType,
    /// Samples per device.
    pub batch: usize,
    /// Latent height and width.
    pub latent_size: [usize; 2],
    pub seq_len: usize,
    /// The text encoder's hidden size (the UNet's cross-attention width).
    pub context_dim: usize,
    /// SDXL: the pooled `text_embeds` width and the time ids per sample.
    pub text_time: Option<[usize; 2]>,
    /// Tables set for the run's step count; only the traced update is used here.
    pub scheduler: &'a dyn Scheduler,
    pub noise: StepNoise,
}

crate::program_args! {
    /// One denoising step's inputs.
    pub struct DenoiseInputs<T> {
        /// `[B, C, h, w]` f32.
        pub latents: T,
        /// `[2, L, D]` in the compute dtype: the text program's output.
        pub context: T,
        /// SDXL: `[2, P]` pooled embeddings (compute dtype, the text program's) and `[2, N]`
        /// f32 time ids, the negative prompt's first.
        pub text_embeds: Option<T>,
        pub time_ids: Option<T>,
        /// f32 scalar: the UNet's timestep.
        pub timestep: T,
        /// `[K]` f32: the scheduler's `step_scalars(i)`.
        pub scalars: T,
        /// f32 scalar.
        pub guidance_scale: T,
        /// The scheduler's state (`num_state()` latent-shaped f32), fed back each step.
        pub state: Vec<T>,
        /// `[B, 2]` u32 keys or `[B, C, h, w]` normals, as `StepNoise` says.
        pub keys: Option<T>,
        pub noise: Option<T>,
    }
}

crate::program_args! {
    /// The next latents and the scheduler state to feed back.
    pub struct DenoiseOutputs<T> {
        pub latents: T,
        pub state: Vec<T>,
    }
}

pub type DenoiseStep = Program<DenoiseInputs<Arg>, DenoiseOutputs<Output>>;

pub fn build_denoise_step(c: &DenoiseStepConfig<'_>) -> Result<DenoiseStep> {
    let g = Graph::new();
    let p = Params::new(&g, c.compute_dtype);
    let unet = UNet2DConditionModel::new(c.unet.clone())?;
    let s = c.scheduler;
    let (b, l, d) = (c.batch as i64, c.seq_len as i64, c.context_dim as i64);
    let [h, w] = c.latent_size.map(|x| x as i64);
    let dims = [b, c.unet.in_channels as i64, h, w];
    let scalar = || Arg::replicated(DType::F32, &[]);
    let decl = DenoiseInputs {
        latents: Arg::sharded(DType::F32, &dims),
        context: Arg::replicated(c.compute_dtype, &[2, l, d]),
        text_embeds: c
            .text_time
            .map(|[e, _]| Arg::replicated(c.compute_dtype, &[2, e as i64])),
        time_ids: c
            .text_time
            .map(|[_, n]| Arg::replicated(DType::F32, &[2, n as i64])),
        timestep: scalar(),
        scalars: Arg::replicated(DType::F32, &[s.scalar_names().len() as i64]),
        guidance_scale: scalar(),
        state: (0..s.num_state())
            .map(|_| Arg::sharded(DType::F32, &dims))
            .collect(),
        keys: (c.noise == StepNoise::Keys).then(|| Arg::sharded(DType::U32, &[b, 2])),
        noise: (c.noise == StepNoise::Normals).then(|| Arg::sharded(DType::F32, &dims)),
    };
    let x = declare(&p, &decl)?;

    let step_inputs = s.step_inputs(&x.scalars)?;
    let model_input = s.scale_model_input(&x.latents, &step_inputs)?;
    let both = g
        .concatenate(&[model_input.clone(), model_input], 0)?
        .convert(c.compute_dtype)?;
    // Each prompt's states repeated per sample: the unconditional half first, as diffusers
    // concatenates [negative, positive].
    let per_sample = |t: &Tensor| -> Result<Tensor> {
        let mut dims = t.dims();
        let rest: Vec<usize> = (2..dims.len() + 1).collect();
        dims.insert(1, b);
        let map: Vec<usize> = std::iter::once(0).chain(rest).collect();
        let spread = t.broadcast_in_dim(&dims, &map)?;
        dims.remove(1);
        dims[0] = 2 * b;
        spread.reshape(&dims)
    };
    let context = per_sample(&x.context)?;
    let added = match (&x.text_embeds, &x.time_ids) {
        (Some(e), Some(t)) => Some(TextTimeConditioning {
            text_embeds: per_sample(e)?,
            time_ids: per_sample(t)?,
        }),
        _ => None,
    };
    let pred = p
        .scope(UNET, |p| {
            unet.forward(p, &both, &x.timestep, &context, added.as_ref())
        })?
        .convert(DType::F32)?;
    let uncond = pred.slice_axis(0, 0, b)?;
    let cond = pred.slice_axis(0, b, 2 * b)?;
    let guided = uncond.add(
        &x.guidance_scale
            .broadcast_to(&dims)?
            .multiply(&cond.subtract(&uncond)?)?,
    )?;
    let noise = match (&x.keys, &x.noise) {
        (Some(k), _) => Noise::Key(k),
        (_, Some(z)) => Noise::Normals(z),
        _ => Noise::None,
    };
    let out = s.step(&guided, &x.latents, &step_inputs, &x.state, noise)?;
    let outputs = DenoiseOutputs {
        latents: Traced::sharded(out.prev_sample),
        state: out.state.into_iter().map(Traced::sharded).collect(),
    };
    finish(&p, decl, outputs)
}

crate::program_args! {
    /// `[B, C, h, w]` f32 latents as the sampler leaves them (scaled).
    pub struct VaeDecodeInputs<T> { pub latents: T }
}

crate::program_args! {
    /// `[B, out_channels, h * f, w * f]` f32 images in [0, 1].
    pub struct VaeDecodeOutputs<T> { pub images: T }
}

pub type VaeDecode = Program<VaeDecodeInputs<Arg>, VaeDecodeOutputs<Output>>;

/// `clip(decode(latents / scaling_factor) / 2 + 0.5)`, as diffusers' image processor gives the
/// images before quantising.
pub fn build_vae_decode(
    config: &AutoencoderKLConfig,
    dtype: DType,
    batch: usize,
    latent_size: [usize; 2],
) -> Result<VaeDecode> {
    if config.scaling_factor == 0.0 {
        return Err(GraphError::invalid(
            "vae decode",
            "scaling_factor is 0".to_string(),
        ));
    }
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let vae = AutoencoderKL::new(config.clone())?;
    let [h, w] = latent_size.map(|x| x as i64);
    let dims = [batch as i64, config.latent_channels as i64, h, w];
    let decl = VaeDecodeInputs {
        latents: Arg::sharded(DType::F32, &dims),
    };
    let x = declare(&p, &decl)?;
    let sf = g.splat(config.scaling_factor, DType::F32, &dims)?;
    let z = x.latents.divide(&sf)?.convert(dtype)?;
    let image = p.scope(VAE, |p| vae.decode(p, &z))?.convert(DType::F32)?;
    let zero = g.scalar(0.0, DType::F32)?;
    let one = g.scalar(1.0, DType::F32)?;
    let image = image.mul_scalar(0.5)?.add_scalar(0.5)?.clamp(&zero, &one)?;
    let outputs = VaeDecodeOutputs {
        images: Traced::sharded(image),
    };
    Ok(finish(&p, decl, outputs)?.using_part_of(VAE, vae.weight_specs(dtype)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::programs::interface::Args;
    use crate::schedulers::{build_scheduler, SchedulerConfig, SchedulerKind};

    fn tiny_unet() -> UNet2DConditionConfig {
        serde_json::from_str(
            r#"{"block_out_channels": [8, 16], "down_block_types": ["CrossAttnDownBlock2D",
                "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                "layers_per_block": 1, "norm_num_groups": 2, "cross_attention_dim": 6,
                "attention_head_dim": 2, "sample_size": 4}"#,
        )
        .unwrap()
    }

    #[test]
    fn step_inputs_follow_the_scheduler() {
        let config = SchedulerConfig::from_json(r#"{"_class_name": "PNDMScheduler"}"#).unwrap();
        for (kind, noise, extra) in [
            (
                SchedulerKind::Pndm,
                StepNoise::None,
                &["state0", "state1", "state2", "state3"][..],
            ),
            (SchedulerKind::Ddim, StepNoise::None, &[]),
            (SchedulerKind::EulerAncestral, StepNoise::Keys, &["keys"]),
            (
                SchedulerKind::EulerAncestral,
                StepNoise::Normals,
                &["noise"],
            ),
        ] {
            let (mut s, _) = build_scheduler(&config, Some(kind)).unwrap();
            s.set_timesteps(3).unwrap();
            let program = build_denoise_step(&DenoiseStepConfig {
                unet: tiny_unet(),
                compute_dtype: DType::F32,
                batch: 3,
                latent_size: [4, 2],
                seq_len: 5,
                context_dim: 6,
                text_time: None,
                scheduler: s.as_ref(),
                noise,
            })
            .unwrap();
            let inputs = program.inputs.names();
            let mut want = vec![
                "latents",
                "context",
                "timestep",
                "scalars",
                "guidance_scale",
            ];
            want.extend(extra);
            assert_eq!(inputs, want, "{kind:?}");
            let outputs = 1 + s.num_state();
            assert!(program.text.matches("tensor<3x4x4x2xf32>").count() >= outputs);
        }
    }

    #[test]
    fn text_program_takes_rows_only_when_there_are_some() {
        let clip: CLIPTextConfig = serde_json::from_str(
            r#"{"vocab_size": 10, "hidden_size": 4, "intermediate_size": 8,
                "num_hidden_layers": 1, "num_attention_heads": 2,
                "max_position_embeddings": 6}"#,
        )
        .unwrap();
        let names = |num_rows| {
            build_text_encode(&TextEncodeConfig {
                text_encoder: clip.clone(),
                text_encoder_2: None,
                dtype: DType::F32,
                seq_len: 6,
                num_rows,
                zero_negative: false,
            })
            .unwrap()
            .inputs
            .names()
        };
        assert_eq!(names(0), ["input_ids"]);
        assert_eq!(names(2), ["input_ids", "rows"]);
    }
}
