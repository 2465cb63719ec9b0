//! `--save-as-full-pipeline`: a diffusers folder that knows the new tokens. Every file of the
//! base model is copied, except that each text encoder's token table (SDXL: both) gains its
//! part of the learned rows after the vocabulary (`vocab_size` grows to match) and each
//! tokenizer lists the new tokens
//! (`added_tokens_decoder` in `tokenizer_config.json`, `added_tokens.json`, and `added_tokens`
//! of a `tokenizer.json`), as `pipeline.save_pretrained` writes them after training.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xla_graphs::DType;

use crate::io::learned_embeds::split_columns;
use crate::io::tensor_file::{write_f32_atomic, F32Tensor};
use crate::model::component::Component;

const TOKEN_TABLE: &str = "text_model.embeddings.token_embedding.weight";

/// The trained tokens: their names, each text encoder's id of the first (the rest follow)
/// and their rows, `[n, sum(widths)]` with each encoder's part side by side.
#[derive(Clone, Copy)]
pub struct LearnedTokens<'a> {
    pub names: &'a [String],
    pub first_ids: &'a [usize],
    pub rows: &'a [f32],
    pub widths: &'a [usize],
}

/// The tokenizer folders of a pipeline, in text-encoder order.
const TOKENIZERS: [&str; 2] = ["tokenizer", "tokenizer_2"];

/// Writes the pipeline into `out` (created; files already there are replaced); `tokenizers`
/// are the tokenizer folders the run used, one per text encoder.
pub fn save_full_pipeline(
    model: &Path,
    tokenizers: &[&Path],
    variant: Option<&str>,
    out: &Path,
    learned: &LearnedTokens<'_>,
) -> Result<()> {
    let LearnedTokens {
        names: tokens,
        first_ids,
        rows,
        widths,
    } = *learned;
    let hidden: usize = widths.iter().sum();
    if rows.len() != tokens.len() * hidden
        || first_ids.len() != widths.len()
        || tokenizers.len() != widths.len()
    {
        bail!(
            "{} learned values for {} token(s) of widths {widths:?}",
            rows.len(),
            tokens.len()
        );
    }
    let encoders = &Component::TEXT_ENCODERS[..widths.len()];
    copy_tree(model, out, &|rel: &Path| {
        // Rewritten below; other variants' weight files would disagree with the new table.
        encoders.iter().any(|c| rel.starts_with(c.folder_name()))
            && rel
                .extension()
                .is_some_and(|e| e == "safetensors" || e == "bin" || e == "json")
    })?;
    let parts = split_columns(rows, widths);
    for (i, &component) in encoders.iter().enumerate() {
        let dir = out.join(component.folder_name());
        write_text_encoder(
            model,
            component,
            variant,
            &dir,
            first_ids[i],
            &parts[i],
            widths[i],
        )?;
        let tokenizer_out = out.join(TOKENIZERS[i]);
        copy_tree(tokenizers[i], &tokenizer_out, &|_| false)?;
        write_tokenizer(tokenizers[i], &tokenizer_out, tokens, first_ids[i])?;
    }
    drop_absent_components(out)
}

/// Marks the components that `model_index.json` lists but the folder lacks as absent
/// (`[null, null]`), as diffusers writes a pipeline saved without them: a model downloaded from
/// the Hub holds only what ti-xla reads (no `safety_checker/`, `feature_extractor/`), and
/// diffusers could not load the saved pipeline otherwise.
fn drop_absent_components(out: &Path) -> Result<()> {
    let path = out.join("model_index.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut index: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    let Some(entries) = index.as_object_mut() else {
        return Ok(());
    };
    let mut changed = false;
    for (name, entry) in entries.iter_mut() {
        let listed = entry
            .as_array()
            .is_some_and(|a| a.len() == 2 && !a[0].is_null());
        if listed && !name.starts_with('_') && !out.join(name).is_dir() {
            *entry = json!([null, null]);
            changed = true;
        }
    }
    if changed {
        crate::io::atomic_file::write_atomic(
            &path,
            serde_json::to_string_pretty(&index)?.as_bytes(),
        )?;
    }
    Ok(())
}

/// Copies `from` into `to`, skipping files for which `skip(relative path)` holds.
fn copy_tree(from: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    fn walk(root: &Path, dir: &Path, to: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
        for entry in
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            let rel = path.strip_prefix(root).expect("inside the root");
            let name = rel.to_string_lossy();
            if name.starts_with('.') || name.contains("/.") {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, to, skip)?;
            } else if !skip(rel) {
                let target = to.join(rel);
                // A copy onto its own source would truncate it.
                if crate::io::output_dir::same_file(&path, &target) {
                    bail!(
                        "{} is the model's own file {}: choose an output folder outside the model",
                        target.display(),
                        path.display()
                    );
                }
                std::fs::create_dir_all(target.parent().expect("a file has a parent"))?;
                std::fs::copy(&path, &target).with_context(|| {
                    format!("cannot copy {} to {}", path.display(), target.display())
                })?;
            }
        }
        Ok(())
    }
    walk(from, from, to, skip)
}

fn write_text_encoder(
    model: &Path,
    component: Component,
    variant: Option<&str>,
    out: &Path,
    first_id: usize,
    rows: &[f32],
    hidden: usize,
) -> Result<()> {
    let dir = model.join(component.folder_name());
    let files = component.open_in(model, variant)?;
    let to_f32 = |b: Vec<u8>| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let mut tensors = Vec::new();
    for name in files.names() {
        let shape = files.shape(name).expect("listed").to_vec();
        // Integer buffers (the legacy position_ids) are not weights; transformers rebuilds them.
        let Ok(bytes) = files.read_as(name, DType::F32) else {
            continue;
        };
        let mut values = to_f32(bytes);
        let mut shape = shape;
        if name == TOKEN_TABLE {
            if shape != [first_id, hidden] {
                bail!("the token table is {shape:?}, expected [{first_id}, {hidden}]");
            }
            values.extend_from_slice(rows);
            shape[0] += rows.len() / hidden;
        }
        tensors.push(F32Tensor {
            name: name.to_string(),
            shape,
            values,
        });
    }
    std::fs::create_dir_all(out)?;
    write_f32_atomic(
        &out.join("model.safetensors"),
        &tensors,
        Some([("format".to_string(), "pt".to_string())].into()),
    )?;
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    config["vocab_size"] = json!(first_id + rows.len() / hidden);
    crate::io::atomic_file::write_atomic(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)?.as_bytes(),
    )
}

fn write_tokenizer(from: &Path, out: &Path, tokens: &[String], first_id: usize) -> Result<()> {
    let read = |name: &str| -> Result<Option<Value>> {
        let p = from.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        Ok(Some(
            serde_json::from_str(&std::fs::read_to_string(&p)?)
                .with_context(|| format!("{} is not JSON", p.display()))?,
        ))
    };
    let write = |name: &str, v: &Value| {
        crate::io::atomic_file::write_atomic(
            &out.join(name),
            serde_json::to_string_pretty(v)?.as_bytes(),
        )
    };
    let entry = |t: &str| json!({"content": t, "lstrip": false, "normalized": true, "rstrip": false, "single_word": false, "special": false});
    let mut config = read("tokenizer_config.json")?.unwrap_or_else(|| json!({}));
    if !config["added_tokens_decoder"].is_object() {
        config["added_tokens_decoder"] = json!({});
    }
    let mut added = read("added_tokens.json")?.unwrap_or_else(|| json!({}));
    for (i, t) in tokens.iter().enumerate() {
        config["added_tokens_decoder"][(first_id + i).to_string()] = entry(t);
        added[t] = json!(first_id + i);
    }
    write("tokenizer_config.json", &config)?;
    write("added_tokens.json", &added)?;
    if let Some(mut tj) = read("tokenizer.json")? {
        let list = tj["added_tokens"]
            .as_array_mut()
            .context("tokenizer.json has no added_tokens list")?;
        for (i, t) in tokens.iter().enumerate() {
            let mut e = entry(t);
            e["id"] = json!(first_id + i);
            list.push(e);
        }
        write("tokenizer.json", &tj)?;
    }
    Ok(())
}
