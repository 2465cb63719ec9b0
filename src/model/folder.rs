//! Finding and reading a diffusers-layout model folder (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `vae/`, `scheduler/`): a local path, or a Hub repo id, downloaded
//! into the Hugging Face cache by [`crate::model::hub`] (only looked up there with `HF_HUB_OFFLINE`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use xla_graphs::models::clip::CLIPTextConfig;
use xla_graphs::models::unet::UNet2DConditionConfig;
use xla_graphs::models::vae::AutoencoderKLConfig;

use crate::model::{config_limits, hub};

/// A model folder with its component configs parsed.
#[derive(Debug)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub variant: Option<String>,
    pub text_encoder: CLIPTextConfig,
    /// SDXL's `text_encoder_2` (CLIPTextModelWithProjection); its presence makes the folder an
    /// SDXL pipeline.
    pub text_encoder_2: Option<CLIPTextConfig>,
    /// `model_index.json`'s `force_zeros_for_empty_prompt` (SDXL: true unless set false):
    /// without a negative prompt the unconditional embeddings are zeros.
    pub force_zeros_for_empty_prompt: bool,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    /// `scheduler/scheduler_config.json` as written; each scheduler reads its own fields.
    pub scheduler: serde_json::Value,
}

/// The flags that name a model, shared by `train`, `generate` and `forward`.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct ModelArgs {
    /// Diffusers model folder, or a Hub repo id (downloaded into the Hugging Face cache); also
    /// a full pipeline saved by the trainer, whose tokenizer knows the learned tokens.
    #[arg(
        long = "pretrained-model-name-or-path",
        alias = "pretrained_model_name_or_path",
        visible_alias = "model-dir",
        alias = "model_dir",
        alias = "model",
        value_name = "MODEL"
    )]
    pub pretrained_model_name_or_path: String,
    /// Hub revision (branch, tag or commit) of the model.
    #[arg(long)]
    pub revision: Option<String>,
    /// Weight file variant, e.g. fp16 for `*.fp16.safetensors`.
    #[arg(long)]
    pub variant: Option<String>,
}

impl ModelArgs {
    /// The model as a user would name it: a Hub repo id as given, a folder by its last
    /// component (`./models/sd15/` is `sd15`).
    pub fn display_name(&self) -> String {
        let name = self.pretrained_model_name_or_path.trim_end_matches('/');
        if Path::new(name).is_dir() {
            if let Some(last) = Path::new(name).file_name() {
                return last.to_string_lossy().into_owned();
            }
        }
        name.to_string()
    }

    /// `ModelFolder::open` on these flags.
    pub fn open(&self) -> Result<ModelFolder> {
        ModelFolder::open(
            &self.pretrained_model_name_or_path,
            self.revision.as_deref(),
            self.variant.as_deref(),
        )
    }
}

/// Reads and parses one JSON config, naming the file and the field on error.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))
}

impl ModelFolder {
    /// Opens `name_or_path`: a folder, or a Hub repo id (`org/name`) at `revision` (default
    /// `main`), whose files (the `variant` weights) are downloaded into the Hugging Face cache
    /// when missing there; with `HF_HUB_OFFLINE` set, the cache alone is used.
    pub fn open(name_or_path: &str, revision: Option<&str>, variant: Option<&str>) -> Result<Self> {
        let root = resolve(name_or_path, revision, variant)?;
        if !root.join("unet").is_dir() || !root.join("text_encoder").is_dir() {
            bail!(
                "{} is not a diffusers model folder (it needs model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/)",
                root.display()
            );
        }
        let text_encoder_2: Option<CLIPTextConfig> = match root.join("text_encoder_2").is_dir() {
            true => Some(read_config(&root.join("text_encoder_2/config.json"))?),
            false => None,
        };
        let index: serde_json::Value = match root.join("model_index.json").is_file() {
            true => read_config(&root.join("model_index.json"))?,
            false => serde_json::Value::Null,
        };
        let force_zeros_for_empty_prompt = text_encoder_2.is_some()
            && index["force_zeros_for_empty_prompt"]
                .as_bool()
                .unwrap_or(true);
        if text_encoder_2.is_some() && !root.join("tokenizer_2").is_dir() {
            bail!(
                "{} has text_encoder_2/ but no tokenizer_2/: an SDXL folder needs both",
                root.display()
            );
        }
        let text_encoder: CLIPTextConfig = read_config(&root.join("text_encoder/config.json"))?;
        let unet: UNet2DConditionConfig = read_config(&root.join("unet/config.json"))?;
        let vae: AutoencoderKLConfig = read_config(&root.join("vae/config.json"))?;
        config_limits::check_clip(&root.join("text_encoder/config.json"), &text_encoder)?;
        if let Some(c) = &text_encoder_2 {
            config_limits::check_clip(&root.join("text_encoder_2/config.json"), c)?;
        }
        config_limits::check_unet(&root.join("unet/config.json"), &unet)?;
        config_limits::check_vae(&root.join("vae/config.json"), &vae)?;
        Ok(ModelFolder {
            text_encoder,
            text_encoder_2,
            force_zeros_for_empty_prompt,
            unet,
            vae,
            scheduler: read_config(&root.join("scheduler/scheduler_config.json"))?,
            variant: variant.map(str::to_string),
            root,
        })
    }

    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// An SDXL pipeline (two text encoders, text-time conditioning).
    pub fn is_sdxl(&self) -> bool {
        self.text_encoder_2.is_some()
    }

    /// The text encoders' configs, in the learned rows' column order.
    pub fn text_encoders(&self) -> Vec<&CLIPTextConfig> {
        std::iter::once(&self.text_encoder)
            .chain(&self.text_encoder_2)
            .collect()
    }

    /// Each text encoder's hidden size: the column split of the learned rows.
    pub fn row_widths(&self) -> Vec<usize> {
        self.text_encoders().iter().map(|c| c.hidden_size).collect()
    }

    /// The learned rows' width: every text encoder's hidden size together.
    pub fn row_width(&self) -> usize {
        self.row_widths().iter().sum()
    }

    /// SDXL's `[text_embeds width, time ids per sample]`; an error when the UNet does not
    /// take text-time conditioning as this pipeline's second encoder needs it.
    pub fn text_time(&self) -> Result<Option<[usize; 2]>> {
        let Some(e) = &self.text_encoder_2 else {
            return Ok(None);
        };
        match self.unet.text_time_ids(e.projection_dim) {
            Some(6) => Ok(Some([e.projection_dim, 6])),
            Some(n) => bail!(
                "{}: the UNet takes {n} time ids per sample; ti-xla supports SDXL's 6 (original size, crop, target size), not a refiner's aesthetic score",
                self.root.display()
            ),
            None => bail!(
                "{}: an SDXL UNet needs addition_embed_type \"text_time\" whose projection_class_embeddings_input_dim is text_encoder_2's projection_dim ({}) plus 6 x addition_time_embed_dim",
                self.root.display(),
                e.projection_dim
            ),
        }
    }

    /// The VAE's dtype for a run in `compute`: f32 for an SDXL VAE with `force_upcast` (as
    /// diffusers' SDXL pipelines upcast it), else the compute dtype.
    pub fn vae_dtype(&self, compute: xla_graphs::DType) -> xla_graphs::DType {
        match self.is_sdxl() && self.vae.force_upcast {
            true => xla_graphs::DType::F32,
            false => compute,
        }
    }

    /// The image size the model was trained at (the UNet's `sample_size` in pixels: 1024 for
    /// SDXL base, 512 for SD 1.5), if the config says.
    pub fn native_resolution(&self) -> Option<usize> {
        self.unet
            .sample_size
            .map(|s| s * self.vae.downscale_factor())
    }
}

fn resolve(name_or_path: &str, revision: Option<&str>, variant: Option<&str>) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let looks_like_repo =
        name_or_path.split('/').count() == 2 && !name_or_path.starts_with(['.', '/']);
    if !looks_like_repo {
        bail!("model folder {name_or_path} does not exist; pass a diffusers folder or a Hub repo id such as runwayml/stable-diffusion-v1-5");
    }
    let revision = revision.unwrap_or("main");
    if !hub::offline() {
        return hub::download(name_or_path, revision, variant);
    }
    if let Some(snapshot) = hub::cached_snapshot(name_or_path, revision) {
        let what = format!(
            "HF_HUB_OFFLINE is set and the cached copy of {name_or_path} at revision {revision}"
        );
        hub::check_snapshot(&snapshot, variant, &what)
            .map_err(|e| anyhow::anyhow!("{e:#}; download it again without HF_HUB_OFFLINE"))?;
        return Ok(snapshot);
    }
    bail!(
        "HF_HUB_OFFLINE is set and {name_or_path} is not in the local Hugging Face cache at revision {revision}; fetch it first with `huggingface-cli download {name_or_path}` (or pass a local folder)"
    )
}
