//! Finding and reading a diffusers-layout model folder (`model_index.json`, `tokenizer/`,
//! `text_encoder/`, `unet/`, `vae/`, `scheduler/`): a local path, or a Hub repo id already in
//! the Hugging Face cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use xla_graphs::models::clip::CLIPTextConfig;
use xla_graphs::models::unet::UNet2DConditionConfig;
use xla_graphs::models::vae::AutoencoderKLConfig;

/// A model folder with its component configs parsed.
#[derive(Debug)]
pub struct ModelFolder {
    pub root: PathBuf,
    pub variant: Option<String>,
    pub text_encoder: CLIPTextConfig,
    pub unet: UNet2DConditionConfig,
    pub vae: AutoencoderKLConfig,
    /// `scheduler/scheduler_config.json` as written; each scheduler reads its own fields.
    pub scheduler: serde_json::Value,
}

/// Reads and parses one JSON config, naming the file and the field on error.
pub fn read_config<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a valid config", path.display()))
}

impl ModelFolder {
    /// Opens `name_or_path`: a folder, or a Hub repo id (`org/name`) found in the local
    /// Hugging Face cache at `revision` (default `main`).
    pub fn open(name_or_path: &str, revision: Option<&str>, variant: Option<&str>) -> Result<Self> {
        let root = resolve(name_or_path, revision)?;
        if !root.join("unet").is_dir() || !root.join("text_encoder").is_dir() {
            bail!(
                "{} is not a diffusers model folder (it needs model_index.json, tokenizer/, text_encoder/, unet/, vae/, scheduler/)",
                root.display()
            );
        }
        Ok(ModelFolder {
            text_encoder: read_config(&root.join("text_encoder/config.json"))?,
            unet: read_config(&root.join("unet/config.json"))?,
            vae: read_config(&root.join("vae/config.json"))?,
            scheduler: read_config(&root.join("scheduler/scheduler_config.json"))?,
            variant: variant.map(str::to_string),
            root,
        })
    }

    pub fn component(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, `$HF_HOME/hub` or `~/.cache/huggingface/hub`.
fn hub_cache() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

fn resolve(name_or_path: &str, revision: Option<&str>) -> Result<PathBuf> {
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
    let repo = hub_cache()
        .map(|c| c.join(format!("models--{}", name_or_path.replace('/', "--"))))
        .filter(|r| r.is_dir());
    if let Some(repo) = repo {
        // A branch or tag name maps to a commit through refs/; a commit hash is used as is.
        let commit = std::fs::read_to_string(repo.join("refs").join(revision))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| revision.to_string());
        let snapshot = repo.join("snapshots").join(commit);
        if snapshot.is_dir() {
            return Ok(snapshot);
        }
    }
    let offline = std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| !v.is_empty() && v != "0");
    let why = if offline {
        "HF_HUB_OFFLINE is set and it is"
    } else {
        "it is"
    };
    bail!(
        "{why} not in the local Hugging Face cache at revision {revision}; fetch it first with `huggingface-cli download {name_or_path}` (or pass a local folder)"
    )
}
