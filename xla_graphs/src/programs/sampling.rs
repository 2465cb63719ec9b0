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

use crate::models::clip::{CLIPTextConfig, CLIPTextModel};
use crate::models::params::{ParamSpec, Params};
use crate::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::schedulers::{Noise, Scheduler};
use crate::{DType, Graph, GraphError, Result, Shape};

/// A printed program and what each of its arguments is.
pub struct SamplingProgram {
    pub text: String,
    /// Every argument in order: weights by checkpoint key, inputs by the names below.
    pub args: Vec<ParamSpec>,
}

/// The text program's inputs: `input_ids` `[2, L]` i32 (negative prompt first) and, with learned
/// rows, `rows` `[n, D]` f32. Output: the encoder states `[2, L, D]` in the compute dtype.
pub fn build_text_encode(
    config: &CLIPTextConfig,
    dtype: DType,
    seq_len: usize,
    num_rows: usize,
) -> Result<SamplingProgram> {
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let clip = CLIPTextModel::new(config.clone())?;
    let ids = p.input("input_ids", Shape::new(DType::I32, &[2, seq_len as i64]))?;
    let table = clip.token_embedding(&p)?;
    // The learned tokens' ids follow the vocabulary, so their rows go after the table's.
    let table = if num_rows > 0 {
        let d = config.hidden_size as i64;
        let rows = p.input("rows", Shape::new(DType::F32, &[num_rows as i64, d]))?;
        g.concatenate(&[table, rows.convert(dtype)?], 0)?
    } else {
        table
    };
    let states = clip.forward_with_token_embedding(&p, &ids, &table)?;
    Ok(SamplingProgram {
        text: g.to_stablehlo(&[&states])?,
        args: p.specs(),
    })
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
    /// Tables set for the run's step count; only the traced update is used here.
    pub scheduler: &'a dyn Scheduler,
    pub noise: StepNoise,
}

/// The step's outputs: the next latents, then the scheduler's state tensors.
pub const STEP_LATENTS: usize = 0;

/// Inputs: `latents` `[B, C, h, w]` f32, `context` `[2, L, D]` (the text program's output),
/// `timestep` f32 scalar (the UNet's), `scalars` `[K]` f32 (`step_scalars(i)`),
/// `guidance_scale` f32 scalar, `state0..` (`num_state()` latent-shaped f32), then `keys` or
/// `noise` as `noise` says. Outputs: the next latents, then the state to feed back.
pub fn build_denoise_step(c: &DenoiseStepConfig<'_>) -> Result<SamplingProgram> {
    let g = Graph::new();
    let p = Params::new(&g, c.compute_dtype);
    let unet = UNet2DConditionModel::new(c.unet.clone())?;
    let s = c.scheduler;
    let (b, l, d) = (c.batch as i64, c.seq_len as i64, c.context_dim as i64);
    let [h, w] = c.latent_size.map(|x| x as i64);
    let dims = [b, c.unet.in_channels as i64, h, w];
    let f32s = |dims: &[i64]| Shape::new(DType::F32, dims);

    let latents = p.input("latents", f32s(&dims))?;
    let context = p.input("context", Shape::new(c.compute_dtype, &[2, l, d]))?;
    let timestep = p.input("timestep", f32s(&[]))?;
    let scalars = p.input("scalars", f32s(&[s.scalar_names().len() as i64]))?;
    let guidance = p.input("guidance_scale", f32s(&[]))?;
    let state = (0..s.num_state())
        .map(|i| p.input(&format!("state{i}"), f32s(&dims)))
        .collect::<Result<Vec<_>>>()?;
    let noise_input = match c.noise {
        StepNoise::None => None,
        StepNoise::Keys => Some(p.input("keys", Shape::new(DType::U32, &[b, 2]))?),
        StepNoise::Normals => Some(p.input("noise", f32s(&dims))?),
    };

    let step_inputs = s.step_inputs(&scalars)?;
    let model_input = s.scale_model_input(&latents, &step_inputs)?;
    let both = g
        .concatenate(&[model_input.clone(), model_input], 0)?
        .convert(c.compute_dtype)?;
    // Each prompt's states repeated per sample: the unconditional half first, as diffusers
    // concatenates [negative, positive].
    let context = context
        .broadcast_in_dim(&[2, b, l, d], &[0, 2, 3])?
        .reshape(&[2 * b, l, d])?;
    let pred = unet
        .forward(&p, &both, &timestep, &context)?
        .convert(DType::F32)?;
    let uncond = pred.slice_axis(0, 0, b)?;
    let cond = pred.slice_axis(0, b, 2 * b)?;
    let guided = uncond.add(
        &guidance
            .broadcast_to(&dims)?
            .multiply(&cond.subtract(&uncond)?)?,
    )?;
    let noise = match (c.noise, &noise_input) {
        (StepNoise::Keys, Some(k)) => Noise::Key(k),
        (StepNoise::Normals, Some(z)) => Noise::Normals(z),
        _ => Noise::None,
    };
    let out = s.step(&guided, &latents, &step_inputs, &state, noise)?;
    let mut outputs = vec![&out.prev_sample];
    outputs.extend(out.state.iter());
    Ok(SamplingProgram {
        text: g.to_stablehlo(&outputs)?,
        args: p.specs(),
    })
}

/// Input: `latents` `[B, C, h, w]` f32 as the sampler leaves them (scaled). Output: images
/// `[B, out_channels, h * f, w * f]` f32 in [0, 1], `clip(decode(latents / scaling_factor) / 2
/// + 0.5)` as diffusers' image processor gives them before quantising.
pub fn build_vae_decode(
    config: &AutoencoderKLConfig,
    dtype: DType,
    batch: usize,
    latent_size: [usize; 2],
) -> Result<SamplingProgram> {
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
    let latents = p.input("latents", Shape::new(DType::F32, &dims))?;
    let sf = g.splat(config.scaling_factor, DType::F32, &dims)?;
    let z = latents.divide(&sf)?.convert(dtype)?;
    let image = vae.decode(&p, &z)?.convert(DType::F32)?;
    let zero = g.scalar(0.0, DType::F32)?;
    let one = g.scalar(1.0, DType::F32)?;
    let image = image.mul_scalar(0.5)?.add_scalar(0.5)?.clamp(&zero, &one)?;
    Ok(SamplingProgram {
        text: g.to_stablehlo(&[&image])?,
        args: p.specs(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::params::ParamKind;
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
                scheduler: s.as_ref(),
                noise,
            })
            .unwrap();
            let inputs: Vec<&str> = program
                .args
                .iter()
                .filter(|a| a.kind == ParamKind::Input)
                .map(|a| a.name.as_str())
                .collect();
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
        let names = |n| {
            build_text_encode(&clip, DType::F32, 6, n)
                .unwrap()
                .args
                .into_iter()
                .filter(|a| a.kind == ParamKind::Input)
                .map(|a| a.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), ["input_ids"]);
        assert_eq!(names(2), ["input_ids", "rows"]);
    }
}
