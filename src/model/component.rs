//! The parts of a diffusers pipeline whose weights programs take: each knows its folder, its
//! weight file stem and the key prefix programs bind its weights under, and opens and uploads
//! its weights. A program names each model it uses by that prefix
//! (`xla_graphs::programs::interface::MODELS`), so one upload serves every program.

use std::path::Path;

use anyhow::{bail, Result};
use xla_graphs::models::params::{ParamKind, ParamSpec};
use xla_graphs::programs::interface::{self, Program};

use crate::io::weights::{component_files, WeightFiles};
use crate::model::folder::ModelFolder;
use crate::pjrt::Client;
use crate::runtime::device_weights::{ComponentWeights, DeviceWeights};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// `text_encoder/model.safetensors` (CLIPTextModel).
    TextEncoder,
    /// SDXL's `text_encoder_2/model.safetensors` (CLIPTextModelWithProjection).
    TextEncoder2,
    /// `unet/diffusion_pytorch_model.safetensors` (UNet2DConditionModel).
    Unet,
    /// `vae/diffusion_pytorch_model.safetensors` (AutoencoderKL).
    Vae,
}

impl Component {
    pub const ALL: [Component; 4] = [
        Component::TextEncoder,
        Component::TextEncoder2,
        Component::Unet,
        Component::Vae,
    ];

    /// The text encoders, in the order their widths make up the learned rows.
    pub const TEXT_ENCODERS: [Component; 2] = [Component::TextEncoder, Component::TextEncoder2];

    /// The component's folder in the pipeline, which is also the key prefix programs bind its
    /// weights under.
    pub fn folder_name(self) -> &'static str {
        match self {
            Component::TextEncoder => interface::TEXT_ENCODER,
            Component::TextEncoder2 => interface::TEXT_ENCODER_2,
            Component::Unet => interface::UNET,
            Component::Vae => interface::VAE,
        }
    }

    /// The weight file's name without `.safetensors` (and without a variant).
    pub fn file_stem(self) -> &'static str {
        match self {
            Component::TextEncoder | Component::TextEncoder2 => "model",
            Component::Unet | Component::Vae => "diffusion_pytorch_model",
        }
    }

    pub fn from_prefix(prefix: &str) -> Option<Component> {
        Component::ALL
            .into_iter()
            .find(|c| c.folder_name() == prefix)
    }

    /// The component's weight files in `folder` (one file, or the shards of an index), in the
    /// folder's variant.
    pub fn open(self, folder: &ModelFolder) -> Result<WeightFiles> {
        self.open_in(&folder.root, folder.variant.as_deref())
    }

    /// `open` for the pipeline folder `root`, weight variant `variant`.
    pub fn open_in(self, root: &Path, variant: Option<&str>) -> Result<WeightFiles> {
        let dir = root.join(self.folder_name());
        WeightFiles::open(&component_files(&dir, self.file_stem(), variant)?)
    }
}

/// Every frozen weight `program` takes, each model's from its own folder, checked against its
/// checkpoint (whole, for a model the program uses part of), on devices `0..devices`.
pub fn upload_weights<I, O>(
    client: &Client,
    folder: &ModelFolder,
    program: &Program<I, O>,
    devices: usize,
) -> Result<DeviceWeights> {
    let mut used: Vec<Component> = Vec::new();
    for spec in &program.weights {
        let prefix = spec.name.split('.').next().unwrap_or_default();
        let Some(component) = Component::from_prefix(prefix) else {
            bail!(
                "the program's weight {} belongs to no model component",
                spec.name
            );
        };
        if !used.contains(&component) {
            used.push(component);
        }
    }
    let files = used
        .iter()
        .map(|c| c.open(folder))
        .collect::<Result<Vec<_>>>()?;
    let parts: Vec<ComponentWeights<'_>> = used
        .iter()
        .zip(&files)
        .map(|(c, files)| ComponentWeights {
            prefix: c.folder_name(),
            files,
            whole: program
                .whole_models
                .iter()
                .find(|(m, _)| *m == c.folder_name())
                .map(|(_, specs)| specs.as_slice()),
        })
        .collect();
    let specs: Vec<ParamSpec> = program
        .weights
        .iter()
        .filter(|s| s.kind == ParamKind::Weight)
        .cloned()
        .collect();
    DeviceWeights::upload_components(client, &parts, &specs, devices)
}
