//! `ti-xla forward`: runs one model component on tensors from a safetensors file and writes
//! its outputs to another, for checking the traced models against diffusers. Each component
//! reads its host inputs and builds its program (`xla_graphs::programs::components`; one file
//! per component); compiling, feeding weights, running and writing are shared.

mod text_encoder;
mod train_step;
mod unet;
mod vae;

use std::path::PathBuf;

use anyhow::{Context, Result};
use xla_graphs::programs::components::ComponentProgram;
use xla_graphs::programs::interface::{Arg, Args};
use xla_graphs::DType;

use crate::io::tensor_file::{write_f32_atomic, F32Tensor, TensorFile};
use crate::model::folder::{ModelArgs, ModelFolder};
use crate::runtime::device::{open_client, DeviceArgs};
use crate::runtime::program::{CompiledProgram, ProgramName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// `input_ids` [B, L] -> `last_hidden_state`, `penultimate_hidden_state` [B, L, D].
    #[value(name = "text_encoder")]
    TextEncoder,
    /// SDXL's second encoder: also `text_embeds` [B, projection_dim].
    #[value(name = "text_encoder_2")]
    TextEncoder2,
    /// `sample`, `timestep`, `encoder_hidden_states` (and for SDXL `text_embeds` [B, P],
    /// `time_ids` [B, 6]) -> `sample`.
    #[value(name = "unet")]
    Unet,
    /// `pixel_values` -> `mean`, `logvar`.
    #[value(name = "vae_encoder")]
    VaeEncoder,
    /// `latents` -> `sample`.
    #[value(name = "vae_decoder")]
    VaeDecoder,
    /// One Textual Inversion step with its random draws given: `pixel_values`, `input_ids`
    /// (holding the placeholder ids), `latent_eps`, `noise`, `timesteps`, `rows` -> `loss`,
    /// `grad_rows`, `rows` (after one AdamW step from zero moments); SDXL also takes
    /// `input_ids_2`, `time_ids` [B, 6], `rows_2` and writes `grad_rows_2`, `rows_2`.
    #[value(name = "train_step")]
    TrainStep,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Unet => "unet",
            Component::VaeEncoder => "vae_encoder",
            Component::VaeDecoder => "vae_decoder",
            Component::TrainStep => "train_step",
        }
    }
}

/// The dtype weights and activations are computed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ComputeDType {
    F32,
    Bf16,
}

impl ComputeDType {
    pub fn dtype(self) -> DType {
        match self {
            ComputeDType::F32 => DType::F32,
            ComputeDType::Bf16 => DType::BF16,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ForwardArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Which component to run.
    #[arg(long, value_enum)]
    pub component: Component,
    /// safetensors file with the component's inputs.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where to write the outputs (float32 safetensors; replaced atomically).
    #[arg(long)]
    pub output: PathBuf,
    /// Compute dtype.
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: ComputeDType,
    /// Also write intermediate activations as `debug.<module path>`, named as in the
    /// reference files of tests/fixtures (e.g. `debug.encoder.layers.0`).
    #[arg(long)]
    pub debug: bool,
    #[command(flatten)]
    pub step: train_step::StepFlags,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// A host array for one input argument of a program.
pub(crate) struct HostInput {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub bytes: Vec<u8>,
}

impl HostInput {
    pub fn f32(dims: &[usize], values: &[f32]) -> HostInput {
        HostInput {
            dtype: DType::F32,
            dims: dims.iter().map(|&d| d as i64).collect(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    let folder = args.model.open()?;
    let inputs = TensorFile::open(&args.inputs)?;
    let (dtype, debug, device) = (args.dtype.dtype(), args.debug, &args.device);
    let outputs = match args.component {
        Component::TrainStep => train_step::run(&folder, &inputs, dtype, &args.step, device)?,
        Component::TextEncoder | Component::TextEncoder2 => {
            let second = args.component == Component::TextEncoder2;
            let (program, host) = text_encoder::prepare(&folder, second, &inputs, dtype, debug)?;
            execute(&folder, device, args.component, program, host)?
        }
        Component::Unet => {
            let (program, host) = unet::prepare(&folder, &inputs, dtype, debug)?;
            execute(&folder, device, args.component, program, host)?
        }
        Component::VaeEncoder => {
            let (program, host) = vae::prepare_encoder(&folder, &inputs, dtype, debug)?;
            execute(&folder, device, args.component, program, host)?
        }
        Component::VaeDecoder => {
            let (program, host) = vae::prepare_decoder(&folder, &inputs, dtype, debug)?;
            execute(&folder, device, args.component, program, host)?
        }
    };
    write_f32_atomic(&args.output, &outputs, None)
        .with_context(|| format!("cannot write the outputs to {}", args.output.display()))
}

/// Compiles for one device, uploads weights and `host` (the program's inputs), runs once,
/// reads every output.
fn execute<I: Args<Arg>, H: Args<HostInput>>(
    folder: &ModelFolder,
    device: &DeviceArgs,
    component: Component,
    program: ComponentProgram<I>,
    host: H,
) -> Result<Vec<F32Tensor>> {
    let client = open_client(device)?;
    let name = ProgramName {
        what: component.name(),
        out_of_memory: "use smaller inputs",
    };
    let compiled = CompiledProgram::new(&client, folder, program, 1, name)?;
    let buffers =
        host.try_map(&mut |_, h| client.buffer_from_bytes(&h.bytes, h.dtype, &h.dims, 0))?;
    let outputs = compiled
        .run(&[buffers.as_refs()])?
        .pop()
        .context("the program returned no outputs")?;
    outputs
        .0
        .into_iter()
        .map(|(name, buffer)| {
            Ok(F32Tensor {
                name,
                shape: buffer.dims().iter().map(|&d| d as usize).collect(),
                values: buffer.to_vec::<f32>()?,
            })
        })
        .collect()
}
