//! `ti-xla forward`: runs one model component on tensors from a safetensors file and writes
//! its outputs to another, for checking the traced models against diffusers. Each component
//! prepares a program, its declared arguments and its host inputs (one file per component);
//! compiling, feeding weights, running and writing are shared.

mod text_encoder;
mod train_step;
mod unet;
mod vae;

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use xla_graphs::models::params::{ParamSpec, Params};
use xla_graphs::{DType, Tensor};

use crate::device::{open_client, DeviceArgs};
use crate::model_folder::{ModelArgs, ModelFolder};
use crate::model_weights::DeviceWeights;
use crate::pjrt::CompileOptions;
use crate::tensor_file::{write_f32_atomic, F32Tensor, TensorFile};
use crate::weights::{component_files, WeightFiles};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Component {
    /// `input_ids` [B, L] -> `last_hidden_state` [B, L, D].
    #[value(name = "text_encoder")]
    TextEncoder,
    /// `sample`, `timestep`, `encoder_hidden_states` -> `sample`.
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
    /// `grad_rows`, `rows` (after one AdamW step from zero moments).
    #[value(name = "train_step")]
    TrainStep,
}

impl Component {
    pub fn name(self) -> &'static str {
        match self {
            Component::TextEncoder => "text_encoder",
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

/// What a component hands to the shared runner.
pub(crate) struct Prepared {
    /// StableHLO text; every output is f32.
    pub program: String,
    /// Every argument of the program, as the component's `Params` declared them.
    pub specs: Vec<ParamSpec>,
    /// Host values of the non-weight arguments, in argument order.
    pub inputs: Vec<HostInput>,
    /// Output names, in program output order.
    pub outputs: Vec<String>,
    /// The component folder and weight file stem (`text_encoder`, `model`).
    pub weights: (&'static str, &'static str),
    /// Every argument of the whole model when the program uses part of its checkpoint (the
    /// VAE's encoder or decoder): the files are checked against these.
    pub checkpoint: Option<Vec<ParamSpec>>,
}

impl Prepared {
    /// Prints the program computing `outputs` (converted to f32) from the arguments `p`
    /// declared; `inputs` feed p's inputs in order.
    pub fn new(
        p: &Params,
        outputs: Vec<(String, Tensor)>,
        inputs: Vec<HostInput>,
        weights: (&'static str, &'static str),
    ) -> Result<Prepared> {
        let tensors = outputs
            .iter()
            .map(|(_, t)| match t.dtype() {
                DType::F32 => Ok(t.clone()),
                _ => t.convert(DType::F32),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared {
            program: p
                .graph()
                .to_stablehlo(&tensors.iter().collect::<Vec<_>>())?,
            specs: p.specs(),
            inputs,
            outputs: outputs.into_iter().map(|(name, _)| name).collect(),
            weights,
            checkpoint: None,
        })
    }
}

pub fn run(args: &ForwardArgs) -> Result<()> {
    let folder = args.model.open()?;
    let inputs = TensorFile::open(&args.inputs)?;
    let dtype = args.dtype.dtype();
    if args.component == Component::TrainStep {
        let outputs = train_step::run(&folder, &inputs, dtype, &args.step, &args.device)?;
        return write_f32_atomic(&args.output, &outputs, None)
            .with_context(|| format!("cannot write the outputs to {}", args.output.display()));
    }
    let prepared = match args.component {
        Component::TextEncoder => text_encoder::prepare(&folder, &inputs, dtype, args.debug)?,
        Component::Unet => unet::prepare(&folder, &inputs, dtype, args.debug)?,
        Component::VaeEncoder => vae::prepare_encoder(&folder, &inputs, dtype, args.debug)?,
        Component::VaeDecoder => vae::prepare_decoder(&folder, &inputs, dtype, args.debug)?,
        Component::TrainStep => unreachable!("handled above"),
    };
    let outputs = execute(&folder, &args.device, args.component, &prepared)?;
    write_f32_atomic(&args.output, &outputs, None)
        .with_context(|| format!("cannot write the outputs to {}", args.output.display()))
}

/// Compiles for one device, uploads weights and inputs, runs once, reads every output.
fn execute(
    folder: &ModelFolder,
    device: &DeviceArgs,
    component: Component,
    prepared: &Prepared,
) -> Result<Vec<F32Tensor>> {
    let (dir, stem) = prepared.weights;
    let files = WeightFiles::open(&component_files(
        &folder.component(dir),
        stem,
        folder.variant.as_deref(),
    )?)?;
    let client = open_client(device)?;
    let exe = client
        .compile(&prepared.program, &CompileOptions::replicated(1))
        .with_context(|| format!("cannot compile the {} program", component.name()))?;
    let weights = match &prepared.checkpoint {
        Some(model) => DeviceWeights::upload_part(
            &client,
            &files,
            &prepared.specs,
            model,
            1,
            component.name(),
        )?,
        None => DeviceWeights::upload(&client, &files, &prepared.specs, 1, component.name())?,
    };
    let inputs = prepared
        .inputs
        .iter()
        .map(|h| client.buffer_from_bytes(&h.bytes, h.dtype, &h.dims, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let args = weights.arguments(&[inputs.iter().collect()])?;
    let mut results = exe.execute(&args)?;
    let results = results.pop().context("the program returned no outputs")?;
    if results.len() != prepared.outputs.len() {
        bail!(
            "the {} program returned {} outputs, expected {}",
            component.name(),
            results.len(),
            prepared.outputs.len()
        );
    }
    prepared
        .outputs
        .iter()
        .zip(results)
        .map(|(name, buffer)| {
            Ok(F32Tensor {
                name: name.clone(),
                shape: buffer.dims().iter().map(|&d| d as usize).collect(),
                values: buffer.to_vec::<f32>()?,
            })
        })
        .collect()
}
