//! `forward --component train_step`: one Textual Inversion step with its random draws given as
//! inputs, so the step can be checked against any reference trainer.

use std::collections::HashMap;

use anyhow::{bail, Result};
use xla_graphs::programs::train_step::{LatentSource, TrainStepConfig};
use xla_graphs::DType;

use crate::device::{open_client, DeviceArgs, DeviceKind};
use crate::model_folder::ModelFolder;
use crate::pjrt::DeviceBuffer;
use crate::tensor_file::{F32Tensor, TensorFile};
use crate::train::args::AdamWArgs;
use crate::train::step::CompiledStep;

/// The step's hyper-parameters (used by `--component train_step` only).
#[derive(Debug, Clone, clap::Args)]
pub struct StepFlags {
    /// The placeholder token the rows belong to (its ids follow the vocabulary).
    #[arg(
        long = "placeholder-token",
        alias = "placeholder_token",
        default_value = "<placeholder>"
    )]
    pub placeholder_token: String,
    #[arg(
        long = "learning-rate",
        alias = "learning_rate",
        default_value_t = 1e-4
    )]
    pub learning_rate: f64,
    #[command(flatten)]
    pub adamw: AdamWArgs,
}

pub(crate) fn run(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    flags: &StepFlags,
    device: &DeviceArgs,
) -> Result<Vec<F32Tensor>> {
    let vocab = folder.text_encoder.vocab_size;
    let hidden = folder.text_encoder.hidden_size;
    let (rows_shape, rows) =
        inputs.floats("rows", &[None, Some(hidden)], "f32 [num_vectors, hidden]")?;
    let n = rows_shape[0];
    let (px_shape, pixels) = inputs.floats(
        "pixel_values",
        &[None, Some(folder.vae.in_channels), None, None],
        "[B, 3, H, W] in [-1, 1]",
    )?;
    let (b, res) = (px_shape[0], px_shape[2]);
    if px_shape[3] != res {
        bail!("pixel_values must be square, got {px_shape:?}");
    }
    let latent = [
        b,
        folder.vae.latent_channels,
        res / folder.vae.downscale_factor(),
        res / folder.vae.downscale_factor(),
    ];
    let latent_dims = latent.map(Some);
    let (_, ids) = inputs.ints("input_ids", &[Some(b), Some(77)], "[B, 77] token ids")?;
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= vocab + n) {
        bail!("input_ids holds {bad}, outside the vocabulary and the {n} placeholder id(s) {vocab}..{}", vocab + n);
    }
    let (_, eps) = inputs.floats(
        "latent_eps",
        &latent_dims,
        "[B, C, h, w] latent sampling noise",
    )?;
    let (_, noise) = inputs.floats("noise", &latent_dims, "[B, C, h, w] diffusion noise")?;
    let (_, timesteps) = inputs.ints("timesteps", &[Some(b)], "[B] integer timesteps")?;
    let config = TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise: serde_json::from_value(folder.scheduler.clone())?,
        compute_dtype: dtype,
        batch: b,
        resolution: res,
        seq_len: 77,
        num_vectors: n,
        num_devices: 1,
        latents: LatentSource::Encode,
        adamw: flags.adamw.config(),
        gradient_accumulation_steps: 1,
        explicit_randomness: true,
        reversed_kernels: device.device == DeviceKind::Cpu,
    };
    let client = open_client(device)?;
    let step = CompiledStep::new(&client, folder, config)?;
    let px_bytes: Vec<u8> = match dtype {
        DType::BF16 => pixels
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => pixels.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let ids: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    let timesteps: Vec<i32> = timesteps.iter().map(|&t| t as i32).collect();
    let latent_i64 = latent.map(|d| d as i64);
    let rows_dims = [n as i64, hidden as i64];
    let zeros = vec![0f32; rows.len()];
    // Run twice from the same state: with apply = 0 the accumulator returns the gradient, with
    // apply = 1 the rows come back updated.
    let mut outs = Vec::new();
    for apply in [0f32, 1.0] {
        let up = |v: &[f32], dims: &[i64]| client.buffer_from_host(v, dims, 0);
        let bufs: Vec<(&str, DeviceBuffer)> = vec![
            (
                "pixel_values",
                client.buffer_from_bytes(
                    &px_bytes,
                    dtype,
                    &[b as i64, 3, res as i64, res as i64],
                    0,
                )?,
            ),
            (
                "input_ids",
                client.buffer_from_host(&ids, &[b as i64, 77], 0)?,
            ),
            ("latent_eps", up(&eps, &latent_i64)?),
            ("noise", up(&noise, &latent_i64)?),
            (
                "timesteps",
                client.buffer_from_host(&timesteps, &[b as i64], 0)?,
            ),
            ("rows", up(&rows, &rows_dims)?),
            ("exp_avg", up(&zeros, &rows_dims)?),
            ("exp_avg_sq", up(&zeros, &rows_dims)?),
            ("grad_acc", up(&zeros, &rows_dims)?),
            ("lr", up(&[flags.learning_rate as f32], &[])?),
            ("step", up(&[1.0], &[])?),
            ("apply", up(&[apply], &[])?),
        ];
        let named: HashMap<&str, &DeviceBuffer> = bufs.iter().map(|(k, v)| (*k, v)).collect();
        outs.push(step.run(&[named])?.remove(0));
    }
    let tensor = |name: &str, shape: Vec<usize>, buf: &DeviceBuffer| -> Result<F32Tensor> {
        Ok(F32Tensor {
            name: name.into(),
            shape,
            values: buf.to_vec::<f32>()?,
        })
    };
    Ok(vec![
        tensor("loss", vec![], &outs[0][4])?,
        tensor("grad_rows", rows_shape.clone(), &outs[0][3])?,
        tensor("rows", rows_shape, &outs[1][0])?,
    ])
}
