//! The compiled Textual Inversion step on the host side: builds the program for a model folder,
//! compiles it once for every device, uploads the frozen weights of each model from its own
//! folder (replicated), and runs it with the per-step inputs named as the program declares them.

use std::collections::HashMap;

use anyhow::{Context, Result};
use xla_graphs::models::params::{ParamKind, ParamSpec};
use xla_graphs::models::vae::AutoencoderKL;
use xla_graphs::programs::train_step::{
    build_train_step, LatentSource, TrainStepConfig, TEXT_ENCODER, UNET, VAE,
};

use crate::model_folder::ModelFolder;
use crate::model_weights::{ComponentWeights, DeviceWeights};
use crate::pjrt::{Client, CompileOptions, DeviceBuffer, LoadedExecutable};
use crate::weights::{component_files, WeightFiles};

/// A model component's weight files.
pub fn open_component(folder: &ModelFolder, dir: &str, stem: &str) -> Result<WeightFiles> {
    WeightFiles::open(&component_files(
        &folder.component(dir),
        stem,
        folder.variant.as_deref(),
    )?)
}

pub struct CompiledStep {
    exe: LoadedExecutable,
    weights: DeviceWeights,
    /// The non-weight arguments in argument order.
    inputs: Vec<ParamSpec>,
    pub config: TrainStepConfig,
}

impl CompiledStep {
    pub fn new(client: &Client, folder: &ModelFolder, config: TrainStepConfig) -> Result<Self> {
        let program = build_train_step(&config).context("cannot trace the training step")?;
        let devices = config.num_devices;
        let exe = client
            .compile(&program.text, &CompileOptions::replicated(devices))
            .context("cannot compile the training step")?;
        let text_encoder = open_component(folder, "text_encoder", "model")?;
        let unet = open_component(folder, "unet", "diffusion_pytorch_model")?;
        let mut components = vec![
            ComponentWeights {
                prefix: TEXT_ENCODER,
                files: &text_encoder,
                whole: None,
            },
            ComponentWeights {
                prefix: UNET,
                files: &unet,
                whole: None,
            },
        ];
        let (vae, vae_specs);
        if config.latents == LatentSource::Encode {
            vae = open_component(folder, "vae", "diffusion_pytorch_model")?;
            vae_specs =
                AutoencoderKL::new(config.vae.clone())?.weight_specs(config.compute_dtype)?;
            components.push(ComponentWeights {
                prefix: VAE,
                files: &vae,
                whole: Some(&vae_specs),
            });
        }
        let weights =
            DeviceWeights::upload_components(client, &components, &program.args, devices)?;
        let inputs = program
            .args
            .iter()
            .filter(|s| s.kind == ParamKind::Input)
            .cloned()
            .collect();
        Ok(CompiledStep {
            exe,
            weights,
            inputs,
            config,
        })
    }

    /// The per-step inputs the program takes, in argument order.
    pub fn input_specs(&self) -> &[ParamSpec] {
        &self.inputs
    }

    /// Runs one step; `inputs[d]` maps every input name to device d's buffer. Returns each
    /// device's outputs in `train_step::OUTPUTS` order; donated inputs are consumed.
    pub fn run(&self, inputs: &[HashMap<&str, &DeviceBuffer>]) -> Result<Vec<Vec<DeviceBuffer>>> {
        let args = self
            .weights
            .named_arguments(&self.inputs, inputs, "training step")?;
        self.exe.execute(&args).map_err(|e| {
            if e.is_out_of_memory() {
                anyhow::anyhow!("the device ran out of memory in the training step: lower --train-batch-size or --resolution, or use --mixed-precision bf16 ({e})")
            } else {
                anyhow::Error::new(e).context("the training step failed")
            }
        })
    }
}
