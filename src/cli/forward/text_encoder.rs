//! `forward --component text_encoder`: `input_ids` [B, L] -> `last_hidden_state` [B, L, D].

use anyhow::{bail, Result};
use xla_graphs::models::clip::CLIPTextModel;
use xla_graphs::models::params::Params;
use xla_graphs::{DType, Graph, Shape};

use super::{HostInput, Prepared};
use crate::model_folder::ModelFolder;
use crate::tensor_file::TensorFile;

pub(crate) fn prepare(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<Prepared> {
    let config = &folder.text_encoder;
    let max_len = config.max_position_embeddings;
    let what = format!("input_ids [B, L] of i32 or i64 with 1 <= L <= {max_len}");
    let (shape, ids) = inputs.ints("input_ids", &[None, None], &what)?;
    if shape[0] == 0 || shape[1] == 0 || shape[1] > max_len {
        bail!(
            "input_ids in {} has shape {shape:?}; expected {what}",
            inputs.path().display()
        );
    }
    let vocab = config.vocab_size as i64;
    if let Some(bad) = ids.iter().find(|&&id| !(0..vocab).contains(&id)) {
        // The gather would clamp it silently; transformers raises an index error.
        bail!(
            "input_ids in {} holds token id {bad}, outside the text encoder's vocabulary of {vocab}",
            inputs.path().display()
        );
    }
    let dims = [shape[0] as i64, shape[1] as i64];
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let input_ids = p.input("input_ids", Shape::new(DType::I32, &dims))?;
    if debug {
        p.record_taps();
    }
    let hidden = CLIPTextModel::new(config.clone())?.forward(&p, &input_ids)?;
    let mut outputs = vec![("last_hidden_state".to_string(), hidden)];
    // transformers names submodules from inside CLIPTextModel.text_model.
    outputs.extend(p.taps().into_iter().map(|(path, t)| {
        let name = path.strip_prefix("text_model.").unwrap_or(&path);
        (format!("debug.{name}"), t)
    }));
    let ids = HostInput {
        dtype: DType::I32,
        dims: dims.to_vec(),
        bytes: ids
            .iter()
            .flat_map(|&id| (id as i32).to_le_bytes())
            .collect(),
    };
    Prepared::new(&p, outputs, vec![ids], ("text_encoder", "model"))
}
