//! Resumable checkpoints: `checkpoint-N/` holds the trainable rows and both AdamW moments
//! (`state.safetensors`) and where the run stands (`trainer_state.json`: the step, the epoch
//! and position in its data order, the PRNG key, and the settings that must not
//! change on resume). Written to a temporary folder and renamed, so a checkpoint is whole or
//! absent; pruned to `--checkpoints-total-limit`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::io::tensor_file::{write_f32_atomic, F32Tensor, TensorFile};

/// Where a run stands between two optimizer steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    pub epoch: u64,
    /// Samples of the epoch's order already consumed.
    pub position: usize,
    /// The run's PRNG key after the last step (each step splits off its own).
    pub key: [u32; 2],
    /// Settings that decide the data order and the numbers; a resume must match them.
    pub fingerprint: HashMap<String, String>,
}

/// The optimizer's tensors, each [num_vectors, hidden], f32.
#[derive(Clone, Debug, PartialEq)]
pub struct RowState {
    pub hidden: usize,
    pub rows: Vec<f32>,
    pub exp_avg: Vec<f32>,
    pub exp_avg_sq: Vec<f32>,
}

const STATE_FILE: &str = "state.safetensors";
const TRAINER_FILE: &str = "trainer_state.json";

pub fn checkpoint_dir(output_dir: &Path, step: usize) -> PathBuf {
    output_dir.join(format!("checkpoint-{step}"))
}

/// The steps of the complete checkpoints in `output_dir`, ascending.
pub fn list_checkpoints(output_dir: &Path) -> Vec<(usize, PathBuf)> {
    let mut found: Vec<(usize, PathBuf)> = std::fs::read_dir(output_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("checkpoint-")?.parse().ok()?;
            let dir = e.path();
            (dir.join(STATE_FILE).is_file() && dir.join(TRAINER_FILE).is_file())
                .then_some((step, dir))
        })
        .collect();
    found.sort();
    found
}

pub fn save(
    output_dir: &Path,
    state: &TrainerState,
    rows: &RowState,
    limit: Option<usize>,
    owned: &dyn Fn(&Path) -> bool,
) -> Result<PathBuf> {
    let dir = checkpoint_dir(output_dir, state.step);
    let tmp = output_dir.join(format!(
        ".checkpoint-{}.tmp-{}",
        state.step,
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let n = rows.rows.len() / rows.hidden.max(1);
    let tensor = |name: &str, values: &[f32]| F32Tensor {
        name: name.into(),
        shape: vec![n, rows.hidden],
        values: values.to_vec(),
    };
    write_f32_atomic(
        &tmp.join(STATE_FILE),
        &[
            tensor("rows", &rows.rows),
            tensor("exp_avg", &rows.exp_avg),
            tensor("exp_avg_sq", &rows.exp_avg_sq),
        ],
        None,
    )?;
    crate::io::atomic_file::write_atomic(
        &tmp.join(TRAINER_FILE),
        serde_json::to_string_pretty(state)?.as_bytes(),
    )?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot replace {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("cannot move the checkpoint to {}", dir.display()))?;
    if let Some(limit) = limit {
        // Only ti-xla's checkpoints count and go (`owned`: relative to the output folder).
        let all: Vec<(usize, PathBuf)> = list_checkpoints(output_dir)
            .into_iter()
            .filter(|(_, d)| d.strip_prefix(output_dir).is_ok_and(owned))
            .collect();
        for (_, old) in all.iter().take(all.len().saturating_sub(limit.max(1))) {
            std::fs::remove_dir_all(old)
                .with_context(|| format!("cannot remove old checkpoint {}", old.display()))?;
        }
    }
    Ok(dir)
}

/// Finds the checkpoint `spec` names: a folder, or `latest` among `output_dir`'s.
pub fn resolve(output_dir: &Path, spec: &str) -> Result<PathBuf> {
    if spec == "latest" {
        return list_checkpoints(output_dir)
            .pop()
            .map(|(_, dir)| dir)
            .with_context(|| {
                format!(
                    "--resume-from-checkpoint latest: no checkpoint-N/ in {}",
                    output_dir.display()
                )
            });
    }
    let dir = PathBuf::from(spec);
    let dir = if dir.is_dir() {
        dir
    } else {
        output_dir.join(spec)
    };
    if !dir.join(STATE_FILE).is_file() || !dir.join(TRAINER_FILE).is_file() {
        bail!("{spec} is not a checkpoint folder (it needs {STATE_FILE} and {TRAINER_FILE})");
    }
    Ok(dir)
}

pub fn load(dir: &Path) -> Result<(TrainerState, RowState)> {
    let text = std::fs::read_to_string(dir.join(TRAINER_FILE))?;
    let state: TrainerState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a ti-xla trainer state",
            dir.join(TRAINER_FILE).display()
        )
    })?;
    let file = TensorFile::open(&dir.join(STATE_FILE))?;
    let what = "f32 [num_vectors, hidden]";
    let (shape, rows) = file.floats("rows", &[None, None], what)?;
    let (_, exp_avg) = file.floats("exp_avg", &[Some(shape[0]), Some(shape[1])], what)?;
    let (_, exp_avg_sq) = file.floats("exp_avg_sq", &[Some(shape[0]), Some(shape[1])], what)?;
    Ok((
        state,
        RowState {
            hidden: shape[1],
            rows,
            exp_avg,
            exp_avg_sq,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_pruning() {
        let out = std::env::temp_dir().join(format!("ti-xla-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).unwrap();
        let rows = RowState {
            hidden: 3,
            rows: vec![0.5, -1.0, 2.0, 1e-7, 3.0, -0.25],
            exp_avg: vec![0.1; 6],
            exp_avg_sq: vec![0.01; 6],
        };
        for step in [2, 4, 6] {
            let state = TrainerState {
                step,
                epoch: 1,
                position: 8,
                key: [1, 2],
                fingerprint: HashMap::from([("seed".into(), "42".into())]),
            };
            save(&out, &state, &rows, Some(2), &|_| true).unwrap();
        }
        let steps: Vec<usize> = list_checkpoints(&out).iter().map(|c| c.0).collect();
        assert_eq!(steps, vec![4, 6], "pruned to the newest two");
        let (state, back) = load(&resolve(&out, "latest").unwrap()).unwrap();
        assert_eq!(state.step, 6);
        assert_eq!(state.key, [1, 2]);
        assert_eq!(back, rows);
        assert!(resolve(&out, "checkpoint-2").is_err());
        std::fs::remove_dir_all(&out).unwrap();
    }
}
