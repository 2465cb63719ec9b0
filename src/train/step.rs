//! The Textual Inversion step on the host: the program traced for a run's model and flags,
//! compiled once for its devices, the rows and moments that stay on the devices between steps,
//! and the latent cache the step reads.

use anyhow::{Context, Result};
use half::bf16;
use xla_graphs::programs::interface::{Arg, Output};
use xla_graphs::programs::train_step::{
    build_encode_moments, build_train_step, EncodeMomentsInputs, LatentSource,
    RowState as DeviceRows, StepOptions, TrainStepConfig, TrainStepInputs, TrainStepOutputs,
};
use xla_graphs::schedulers::NoiseScheduleConfig;
use xla_graphs::DType;

use super::args::TrainArgs;
use super::checkpoint::RowState;
use crate::data::dataset::{Sample, TrainImages};
use crate::model::folder::ModelFolder;
use crate::pjrt::{Client, DeviceBuffer};
use crate::runtime::program::{CompiledProgram, ProgramName};

pub type CompiledStep = CompiledProgram<TrainStepInputs<Arg>, TrainStepOutputs<Output>>;

/// The rows and AdamW state on one device.
pub type Rows = DeviceRows<DeviceBuffer>;

pub const STEP: ProgramName = ProgramName {
    what: "training step",
    out_of_memory: "lower --train-batch-size or --resolution, or use --mixed-precision bf16",
};

pub const ENCODER: ProgramName = ProgramName {
    what: "VAE encoder",
    out_of_memory: "lower --resolution, or use --mixed-precision bf16",
};

/// The step a run of `args` traces, for `images` training images on `devices` devices;
/// `median_norms`: each text encoder's median token norm, for --preserve-embedding-norm.
#[allow(clippy::too_many_arguments)]
pub fn step_config(
    folder: &ModelFolder,
    args: &TrainArgs,
    compute_dtype: DType,
    resolution: usize,
    seq_len: usize,
    images: usize,
    devices: usize,
    median_norms: &[f64],
) -> Result<TrainStepConfig> {
    let latents = if args.no_cache_latents {
        LatentSource::Encode
    } else {
        LatentSource::Cached {
            entries: 2 * images,
        }
    };
    let noise = serde_json::from_value::<NoiseScheduleConfig>(folder.scheduler.clone())
        .context("scheduler/scheduler_config.json has no usable noise schedule")?;
    Ok(TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: folder.text_encoder_2.clone(),
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise,
        compute_dtype,
        vae_dtype: folder.vae_dtype(compute_dtype),
        batch: args.train_batch_size,
        resolution,
        seq_len,
        num_vectors: args.num_vectors,
        num_devices: devices,
        latents,
        adamw: args.adamw.config(),
        gradient_accumulation_steps: args.gradient_accumulation_steps,
        explicit_randomness: false,
        gradient_kernels: args.device.device.gradient_kernels(),
        options: StepOptions {
            snr_gamma: args.snr_gamma,
            noise_offset: args.noise_offset,
            preserve_norm: args.preserve_embedding_norm.then(|| median_norms.to_vec()),
            max_norm: args.max_embedding_norm,
            masked_loss: args.masked_loss,
        },
    })
}

/// Traces and compiles the step for `config.num_devices` devices, with `folder`'s weights.
pub fn compile_step(
    client: &Client,
    folder: &ModelFolder,
    config: &TrainStepConfig,
) -> Result<CompiledStep> {
    let program = build_train_step(config).context("cannot trace the training step")?;
    CompiledProgram::new(client, folder, program, config.num_devices, STEP)
}

/// `rows` and its moments on devices `0..devices`, with an empty gradient accumulator.
pub fn upload_rows(client: &Client, rows: &RowState, devices: usize) -> Result<Vec<Rows>> {
    let n = rows.rows.len() / rows.hidden;
    let dims = [n as i64, rows.hidden as i64];
    let zeros = vec![0f32; rows.rows.len()];
    (0..devices)
        .map(|d| {
            Ok(DeviceRows {
                rows: client.buffer_from_host(&rows.rows, &dims, d)?,
                exp_avg: client.buffer_from_host(&rows.exp_avg, &dims, d)?,
                exp_avg_sq: client.buffer_from_host(&rows.exp_avg_sq, &dims, d)?,
                grad_acc: client.buffer_from_host(&zeros, &dims, d)?,
            })
        })
        .collect()
}

/// One device's rows and moments, read back.
pub fn read_rows(state: &Rows, hidden: usize) -> Result<RowState> {
    Ok(RowState {
        hidden,
        rows: state.rows.to_vec()?,
        exp_avg: state.exp_avg.to_vec()?,
        exp_avg_sq: state.exp_avg_sq.to_vec()?,
    })
}

/// The VAE moments of every (image, flip) pair, entry `2 * image + flip`, encoded one image at a
/// time on device 0, then copied to every device.
pub fn cache_moments(
    client: &Client,
    folder: &ModelFolder,
    images: &TrainImages,
    dtype: DType,
    resolution: usize,
    devices: usize,
) -> Result<Vec<DeviceBuffer>> {
    let program = build_encode_moments(&folder.vae, dtype, 1, resolution)?;
    let encoder = CompiledProgram::new(client, folder, program, 1, ENCODER)?;
    let dims = &encoder.inputs().pixel_values.shape.dims;
    let mut table = Vec::new();
    let mut width = 0;
    for image in 0..images.len() {
        for flip in [false, true] {
            let sample = Sample {
                image,
                template: 0,
                flip,
            };
            let px = pixel_bytes(&images.pixel_values(&[sample]), dtype);
            let input = client.buffer_from_bytes(&px, dtype, dims, 0)?;
            let out = encoder.run(&[EncodeMomentsInputs {
                pixel_values: &input,
            }])?;
            let moments = &out[0].moments;
            width = moments.dims()[1];
            table.extend(moments.to_bytes()?);
        }
    }
    let dims = [2 * images.len() as i64, width];
    (0..devices)
        .map(|d| Ok(client.buffer_from_bytes(&table, dtype, &dims, d)?))
        .collect()
}

/// bf16 pixels as the bytes of the compute dtype.
pub fn pixel_bytes(values: &[bf16], dtype: DType) -> Vec<u8> {
    match dtype {
        DType::BF16 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        _ => values
            .iter()
            .flat_map(|v| v.to_f32().to_le_bytes())
            .collect(),
    }
}
