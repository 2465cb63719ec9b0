//! `forward --component text_encoder` (or SDXL's `text_encoder_2`): `input_ids` [B, L] ->
//! `last_hidden_state` and `penultimate_hidden_state` [B, L, D], and for the encoder with a
//! projection `text_embeds` [B, projection_dim].

use anyhow::{bail, Result};
use xla_graphs::programs::components::{build_text_encoder, ComponentProgram, TextEncoderInputs};
use xla_graphs::programs::interface::{Arg, TEXT_ENCODER, TEXT_ENCODER_2};
use xla_graphs::DType;

use super::HostInput;
use crate::io::tensor_file::TensorFile;
use crate::model::folder::ModelFolder;

pub(crate) fn prepare(
    folder: &ModelFolder,
    second: bool,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<(
    ComponentProgram<TextEncoderInputs<Arg>>,
    TextEncoderInputs<HostInput>,
)> {
    let config = match (second, &folder.text_encoder_2) {
        (false, _) => &folder.text_encoder,
        (true, Some(c)) => c,
        (true, None) => bail!(
            "{} has no text_encoder_2/ (only SDXL models do): use --component text_encoder",
            folder.root.display()
        ),
    };
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
    let prefix = if second { TEXT_ENCODER_2 } else { TEXT_ENCODER };
    let program = build_text_encoder(config, prefix, second, dtype, dims, debug)?;
    let ids = HostInput {
        dtype: DType::I32,
        dims: dims.to_vec(),
        bytes: ids
            .iter()
            .flat_map(|&id| (id as i32).to_le_bytes())
            .collect(),
    };
    Ok((program, TextEncoderInputs { input_ids: ids }))
}
