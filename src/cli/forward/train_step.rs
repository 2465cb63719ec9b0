//! `forward --component train_step`: one Textual Inversion step with its random draws given as
//! inputs, so the step can be checked against any reference trainer.

use anyhow::{bail, Result};
use xla_graphs::programs::interface::Args;
use xla_graphs::programs::train_step::{
    LatentSource, TrainStepConfig, TrainStepInputs, TrainStepOutputs,
};
use xla_graphs::DType;

use crate::io::learned_embeds::split_columns;
use crate::io::tensor_file::{F32Tensor, TensorFile};
use crate::model::folder::ModelFolder;
use crate::pjrt::{Client, DeviceBuffer};
use crate::runtime::device::{open_client, DeviceArgs};
use crate::train::args::AdamWArgs;
use crate::train::checkpoint::RowState;
use crate::train::step::{compile_step, upload_rows, CompiledStep};

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

/// The step's inputs as the file holds them, checked.
struct StepFile {
    /// `[n, D]`, SDXL's `rows` and `rows_2` side by side (`D = D1 + D2`).
    rows_shape: Vec<usize>,
    rows: Vec<f32>,
    /// Each text encoder's part of a row.
    widths: Vec<usize>,
    /// SDXL: `input_ids_2` and `time_ids` [B, 6].
    ids_2: Option<Vec<i32>>,
    time_ids: Option<Vec<f32>>,
    /// `[B, 3, H, W]`.
    px_shape: Vec<usize>,
    pixels: Vec<f32>,
    ids: Vec<i32>,
    /// `[B, C, h, w]`.
    latent: [usize; 4],
    eps: Vec<f32>,
    noise: Vec<f32>,
    timesteps: Vec<i32>,
}

fn read(folder: &ModelFolder, inputs: &TensorFile) -> Result<StepFile> {
    let vocab = folder.text_encoder.vocab_size;
    let hidden = folder.text_encoder.hidden_size;
    let (mut rows_shape, mut rows) =
        inputs.floats("rows", &[None, Some(hidden)], "f32 [num_vectors, hidden]")?;
    let n = rows_shape[0];
    let widths = folder.row_widths();
    if let Some(&d2) = widths.get(1) {
        let (_, rows_2) = inputs.floats(
            "rows_2",
            &[Some(n), Some(d2)],
            "f32 [num_vectors, text_encoder_2 hidden]",
        )?;
        rows = rows
            .chunks_exact(hidden)
            .zip(rows_2.chunks_exact(d2))
            .flat_map(|(a, b)| a.iter().chain(b).copied())
            .collect();
        rows_shape[1] += d2;
    }
    let (px_shape, pixels) = inputs.floats(
        "pixel_values",
        &[None, Some(folder.vae.in_channels), None, None],
        "[B, 3, H, W] in [-1, 1]",
    )?;
    let (b, res) = (px_shape[0], px_shape[2]);
    if px_shape[3] != res {
        bail!("pixel_values must be square, got {px_shape:?}");
    }
    let f = folder.vae.downscale_factor();
    let latent = [b, folder.vae.latent_channels, res / f, res / f];
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
    let (ids_2, time_ids) = match (&folder.text_encoder_2, folder.text_time()?) {
        (Some(c2), Some([_, k])) => {
            let (_, ids_2) =
                inputs.ints("input_ids_2", &[Some(b), Some(77)], "[B, 77] token ids")?;
            let vocab_2 = c2.vocab_size;
            if let Some(bad) = ids_2.iter().find(|&&i| i < 0 || i as usize >= vocab_2 + n) {
                bail!("input_ids_2 holds {bad}, outside the vocabulary and the {n} placeholder id(s) {vocab_2}..{}", vocab_2 + n);
            }
            let (_, t) = inputs.floats(
                "time_ids",
                &[Some(b), Some(k)],
                "[B, 6] original size, crop top left, target size",
            )?;
            (Some(ids_2.iter().map(|&i| i as i32).collect()), Some(t))
        }
        _ => (None, None),
    };
    Ok(StepFile {
        rows_shape,
        rows,
        widths,
        ids_2,
        time_ids,
        px_shape,
        pixels,
        ids: ids.iter().map(|&i| i as i32).collect(),
        latent,
        eps,
        noise,
        timesteps: timesteps.iter().map(|&t| t as i32).collect(),
    })
}

pub(crate) fn run(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    flags: &StepFlags,
    device: &DeviceArgs,
) -> Result<Vec<F32Tensor>> {
    let file = read(folder, inputs)?;
    let config = TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: folder.text_encoder_2.clone(),
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise: serde_json::from_value(folder.scheduler.clone())?,
        compute_dtype: dtype,
        vae_dtype: folder.vae_dtype(dtype),
        batch: file.px_shape[0],
        resolution: file.px_shape[2],
        seq_len: 77,
        num_vectors: file.rows_shape[0],
        num_devices: 1,
        latents: LatentSource::Encode,
        adamw: flags.adamw.config(),
        gradient_accumulation_steps: 1,
        explicit_randomness: true,
        gradient_kernels: device.device.gradient_kernels(),
        options: Default::default(),
    };
    let client = open_client(device)?;
    let step = compile_step(&client, folder, &config)?;
    let outs = run_twice(
        &client,
        &step,
        &file,
        folder.vae_dtype(dtype),
        flags.learning_rate,
    )?;
    let n = file.rows_shape[0];
    // Each `[n, D]` output as one tensor per text encoder: `name`, `name_2`.
    let per_encoder = |name: &str, buf: &DeviceBuffer| -> Result<Vec<F32Tensor>> {
        let parts = split_columns(&buf.to_vec::<f32>()?, &file.widths);
        Ok(parts
            .into_iter()
            .zip(&file.widths)
            .enumerate()
            .map(|(i, (values, &w))| F32Tensor {
                name: if i == 0 {
                    name.into()
                } else {
                    format!("{name}_{}", i + 1)
                },
                shape: vec![n, w],
                values,
            })
            .collect())
    };
    let mut tensors = vec![F32Tensor {
        name: "loss".into(),
        shape: vec![],
        values: outs[0].loss.to_vec::<f32>()?,
    }];
    tensors.extend(per_encoder("grad_rows", &outs[0].state.grad_acc)?);
    tensors.extend(per_encoder("rows", &outs[1].state.rows)?);
    Ok(tensors)
}

/// Runs the step twice from the same state: with apply = 0 the accumulator returns the
/// gradient, with apply = 1 the rows come back updated.
fn run_twice(
    client: &Client,
    step: &CompiledStep,
    file: &StepFile,
    dtype: DType,
    learning_rate: f64,
) -> Result<Vec<TrainStepOutputs<DeviceBuffer>>> {
    let hidden = file.rows_shape[1];
    let px_bytes: Vec<u8> = match dtype {
        DType::BF16 => file
            .pixels
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect(),
        _ => file.pixels.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    let b = file.px_shape[0] as i64;
    let latent = file.latent.map(|d| d as i64);
    let px_dims: Vec<i64> = file.px_shape.iter().map(|&d| d as i64).collect();
    let up = |v: &[f32], dims: &[i64]| client.buffer_from_host(v, dims, 0);
    let pixel_values = client.buffer_from_bytes(&px_bytes, dtype, &px_dims, 0)?;
    let input_ids = client.buffer_from_host(&file.ids, &[b, 77], 0)?;
    let input_ids_2 = file
        .ids_2
        .as_ref()
        .map(|ids| client.buffer_from_host(ids, &[b, 77], 0))
        .transpose()?;
    let time_ids = file
        .time_ids
        .as_ref()
        .map(|t| up(t, &[b, t.len() as i64 / b]))
        .transpose()?;
    let eps = up(&file.eps, &latent)?;
    let noise = up(&file.noise, &latent)?;
    let timesteps = client.buffer_from_host(&file.timesteps, &[b], 0)?;
    let (lr, step_number) = (up(&[learning_rate as f32], &[])?, up(&[1.0], &[])?);
    let zeros = vec![0f32; file.rows.len()];
    let mut outs = Vec::new();
    for apply in [0f32, 1.0] {
        let start = RowState {
            hidden,
            rows: file.rows.clone(),
            exp_avg: zeros.clone(),
            exp_avg_sq: zeros.clone(),
        };
        let state = upload_rows(client, &start, 1)?;
        let apply = up(&[apply], &[])?;
        let inputs = TrainStepInputs {
            pixel_values: Some(&pixel_values),
            moment_table: None,
            moment_index: None,
            input_ids: &input_ids,
            input_ids_2: input_ids_2.as_ref(),
            time_ids: time_ids.as_ref(),
            state: state[0].as_refs(),
            lr: &lr,
            step: &step_number,
            apply: &apply,
            key: None,
            sample_index: None,
            latent_eps: Some(&eps),
            noise: Some(&noise),
            timesteps: Some(&timesteps),
            offset_noise: None,
            loss_mask: None,
        };
        outs.push(step.run(&[inputs])?.remove(0));
    }
    Ok(outs)
}
