//! Pushing a training output folder to a Hub model repo: the files ti-xla wrote there that a
//! user of the embedding wants (`learned_embeds.safetensors`, `learned_embeds-steps-N`, the
//! validation images, `loss.png`, the full pipeline when one was saved) and a model card made
//! from `train_settings.json`, in one commit, into a repo created when missing. A push only
//! reads the folder: the card goes up from memory, and a failed push leaves every local file as
//! it was and says how to retry (`ti-xla push OUTPUT_DIR --hub-model-id ...`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::args::HubArgs;
use super::commit::{commit, PushFile, Source};
use super::http::HubClient;
use super::model_card::{model_card, CardContents};
use super::repo::{ensure_repo, repo_id, whoami};
use crate::io::output_dir::{resolve, written_by_ti_xla};
use crate::model::hub;
use crate::train::settings::RunSettings;

/// The token a push uses: `--hub-token`, else `HF_TOKEN` or the login token (as downloads
/// read it); refuses to go on without one, or with `HF_HUB_OFFLINE` set.
pub fn push_token(args: &HubArgs) -> Result<String> {
    if hub::offline() {
        bail!("HF_HUB_OFFLINE is set, so ti-xla does not reach the Hub: unset it to push");
    }
    let token = args
        .hub_token
        .clone()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .or_else(hub::token);
    match token {
        Some(t) => Ok(t),
        None => bail!(
            "pushing to the Hub needs a token with write access: run `huggingface-cli login`, set HF_TOKEN, or pass --hub-token"
        ),
    }
}

/// Pushes `out` to the Hub; returns the repo's URL. The error of a failed push says how to
/// retry it.
pub fn push(out: &Path, args: &HubArgs) -> Result<String> {
    let folder_name = resolve(out)?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let retry_id = args.hub_model_id.clone().unwrap_or(folder_name.clone());
    push_inner(out, args, &folder_name).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}; nothing in {} was changed: retry with `ti-xla push {} --hub-model-id {}`",
            out.display(),
            shell_word(&out.display().to_string()),
            shell_word(&retry_id)
        )
    })
}

/// `word` as a shell reads it back: as is when plain, else in single quotes.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

fn push_inner(out: &Path, args: &HubArgs, folder_name: &str) -> Result<String> {
    let settings = RunSettings::read(out)?;
    let token = push_token(args)?;
    let files = pushed_files(out)?;
    if !files.iter().any(|f| f.starts_with("learned_embeds")) {
        bail!(
            "{} holds no learned_embeds*.safetensors written by ti-xla: nothing to push yet",
            out.display()
        );
    }
    let client = HubClient::new(&hub::endpoint(), &token);
    let user = whoami(&client)?;
    let id = repo_id(args.hub_model_id.as_deref(), folder_name, &user)?;
    let card = model_card(&CardContents {
        repo_id: &id,
        settings: &settings,
        validation: latest_validation(&files),
        loss_plot: files.iter().any(|f| f == "loss.png"),
        full_pipeline: files.iter().any(|f| f == "model_index.json"),
    });
    if ensure_repo(&client, &id, args.hub_private)? {
        let visibility = if args.hub_private {
            "private"
        } else {
            "public"
        };
        eprintln!(
            "created the {visibility} model repo {}/{id}",
            client.endpoint
        );
    }
    let mut commit_files: Vec<PushFile> = files
        .iter()
        .map(|rel| PushFile {
            path_in_repo: rel.clone(),
            source: Source::File(out.join(rel)),
        })
        .collect();
    commit_files.push(PushFile {
        path_in_repo: "README.md".into(),
        source: Source::Bytes(card.into_bytes()),
    });
    let newest = files
        .iter()
        .filter_map(|f| steps_of(f))
        .max()
        .map_or(String::new(), |s| format!(" (step {s})"));
    commit(
        &client,
        &id,
        &commit_files,
        &format!("Upload learned embeddings{newest} with ti-xla"),
    )?;
    let url = format!("{}/{id}", client.endpoint);
    eprintln!("pushed to {url}");
    Ok(url)
}

/// The step of `learned_embeds-steps-N.safetensors`.
fn steps_of(name: &str) -> Option<usize> {
    name.strip_prefix("learned_embeds-steps-")?
        .strip_suffix(".safetensors")?
        .parse()
        .ok()
}

/// The files of `out` that go up, as `/`-separated paths relative to it, sorted: only what
/// the folder's manifest lists as ti-xla's, and of that the embeddings, validation images, loss
/// plot and, when a full pipeline was saved, its files (not checkpoints, logs or settings).
pub fn pushed_files(out: &Path) -> Result<Vec<String>> {
    let listed = written_by_ti_xla(out)?;
    let pipeline: BTreeSet<String> = if listed.contains(Path::new("model_index.json")) {
        pipeline_folders(&out.join("model_index.json"))
    } else {
        BTreeSet::new()
    };
    let mut files: Vec<String> = listed
        .iter()
        .filter(|rel| out.join(rel).is_file())
        .filter_map(|rel| {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_str().map(str::to_string))
                .collect::<Option<_>>()?;
            let top = parts.first()?.as_str();
            let wanted = match parts.len() {
                1 => {
                    top == "learned_embeds.safetensors"
                        || steps_of(top).is_some()
                        || top == "loss.png"
                        || (top == "model_index.json" && !pipeline.is_empty())
                }
                _ => top == "validation" || pipeline.contains(top),
            };
            wanted.then(|| parts.join("/"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The component folders `model_index.json` names (`tokenizer`, `text_encoder`, `unet`, ...).
fn pipeline_folders(model_index: &PathBuf) -> BTreeSet<String> {
    let Ok(text) = std::fs::read_to_string(model_index) else {
        return BTreeSet::new();
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str(&text) else {
        return BTreeSet::new();
    };
    map.into_iter()
        .filter(|(k, v)| !k.starts_with('_') && v.is_array())
        .map(|(k, _)| k)
        .filter(|k| k != "validation" && !k.starts_with("checkpoint-"))
        .collect()
}

/// The images of the newest `validation/step-N/` (not its grid), for the card.
fn latest_validation(files: &[String]) -> Option<(usize, Vec<String>)> {
    let step_of = |f: &String| -> Option<usize> {
        f.strip_prefix("validation/step-")?
            .split('/')
            .next()?
            .parse()
            .ok()
    };
    let step = files.iter().filter_map(step_of).max()?;
    let images: Vec<String> = files
        .iter()
        .filter(|f| step_of(f) == Some(step) && f.ends_with(".png") && !f.ends_with("/grid.png"))
        .cloned()
        .collect();
    Some((step, images))
}

/// `--push-every-save`: pushes after a `learned_embeds-steps-N` save; a failure is a warning
/// (returned as its line), since the push at the end of training sends everything again.
pub fn push_during_training(out: &Path, args: &HubArgs) -> Option<String> {
    push(out, args)
        .err()
        .map(|e| format!("warning: {e:#} (training goes on; the push at the end sends everything)"))
}
