//! `train_settings.json`: what a run was asked to do and what it resolved (size, devices, steps,
//! learning rate, precision), written into the output folder when training starts, so that
//! `ti-xla push OUTPUT_DIR` can describe the run in a model card long after it ended. No
//! token is ever in it: the Hub flags are not part of the record.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::args::TrainArgs;
use super::setup::RunPlan;
use crate::io::atomic_file::write_atomic;

pub const FILE: &str = "train_settings.json";

/// The settings a model card needs, plus every flag as given (`args`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunSettings {
    pub ti_xla_version: String,
    /// `--pretrained-model-name-or-path` as given: a Hub repo id or a local folder.
    pub pretrained_model_name_or_path: String,
    /// The base model's Hub repo id when it has one: as given, or read off a Hugging Face cache
    /// snapshot folder (`models--org--name/snapshots/...`).
    pub base_model: Option<String>,
    pub revision: Option<String>,
    pub variant: Option<String>,
    /// Whether the model is SDXL (two text encoders).
    pub sdxl: bool,
    pub placeholder_token: String,
    pub initializer_token: String,
    pub num_vectors: usize,
    pub learnable_property: String,
    pub resolution: usize,
    pub train_batch_size: usize,
    pub devices: usize,
    pub gradient_accumulation_steps: usize,
    pub max_train_steps: usize,
    /// The learning rate after `--scale-lr`.
    pub learning_rate: f64,
    pub lr_scheduler: String,
    pub lr_warmup_steps: usize,
    pub seed: u64,
    /// The compute dtype the step ran in (f32, bf16).
    pub compute_dtype: String,
    pub validation_prompt: Option<String>,
    pub save_as_full_pipeline: bool,
    /// Every flag of the run (local paths included: this file is not pushed).
    pub args: serde_json::Value,
}

impl RunSettings {
    pub fn new(args: &TrainArgs, run: &RunPlan, devices: usize) -> Result<RunSettings> {
        let enum_name = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        Ok(RunSettings {
            ti_xla_version: env!("CARGO_PKG_VERSION").to_string(),
            pretrained_model_name_or_path: args.model.pretrained_model_name_or_path.clone(),
            base_model: hub_repo_id(&args.model.pretrained_model_name_or_path, &run.folder.root),
            revision: args.model.revision.clone(),
            variant: args.model.variant.clone(),
            sdxl: run.folder.text_encoder_2.is_some(),
            placeholder_token: args.placeholder_token.clone(),
            initializer_token: args.initializer_token.clone(),
            num_vectors: args.num_vectors,
            learnable_property: enum_name(serde_json::to_value(args.learnable_property)?),
            resolution: run.resolution,
            train_batch_size: args.train_batch_size,
            devices,
            gradient_accumulation_steps: args.gradient_accumulation_steps,
            max_train_steps: run.total_steps,
            learning_rate: run.schedule.base_lr,
            lr_scheduler: enum_name(serde_json::to_value(args.lr_scheduler)?),
            lr_warmup_steps: args.lr_warmup_steps,
            seed: args.seed,
            compute_dtype: run.compute_dtype.to_string(),
            validation_prompt: args.validation_prompt.clone(),
            save_as_full_pipeline: args.save_as_full_pipeline,
            args: serde_json::to_value(args)?,
        })
    }

    /// Writes `train_settings.json` into `out` (atomically).
    pub fn write(&self, out: &Path) -> Result<()> {
        write_atomic(
            &out.join(FILE),
            serde_json::to_string_pretty(self)?.as_bytes(),
        )
    }

    /// Reads the settings a run wrote into `out`.
    pub fn read(out: &Path) -> Result<RunSettings> {
        let path = out.join(FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {} ({} is not a ti-xla training output folder, or its run predates {FILE})",
                path.display(),
                out.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{} is damaged", path.display()))
    }
}

/// The Hub repo id of a model given as `given` that opened as the folder `root`: `given`
/// itself when it is not a local folder (it was downloaded), else the id a Hugging Face cache
/// snapshot folder (`.../models--org--name/snapshots/<commit>`) stands for, else none.
pub fn hub_repo_id(given: &str, root: &Path) -> Option<String> {
    if !Path::new(given).exists() {
        return Some(given.to_string());
    }
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let parts: Vec<String> = root
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    parts.windows(3).rev().find_map(|w| {
        let id = w[0].strip_prefix("models--")?;
        (w[1] == "snapshots" && !w[2].is_empty()).then(|| id.replacen("--", "/", 1))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_model_ids_come_from_repo_ids_and_cache_snapshots() {
        let here = std::env::temp_dir();
        assert_eq!(
            hub_repo_id("org/model", &here).as_deref(),
            Some("org/model")
        );
        let snapshot = here.join("ti-xla-settings-test/hub/models--org--my-model/snapshots/abc");
        std::fs::create_dir_all(&snapshot).unwrap();
        let given = snapshot.to_string_lossy().into_owned();
        assert_eq!(
            hub_repo_id(&given, &snapshot).as_deref(),
            Some("org/my-model")
        );
        assert_eq!(hub_repo_id(&here.to_string_lossy(), &here), None);
    }
}
