//! `CLIPTextEmbeddings`: token rows looked up by id plus learned absolute positions. The token
//! table is an argument rather than a weight bound here, because the trainer splices its
//! trainable rows into it before the lookup.

use crate::models::params::Params;
use crate::{GraphError, Result, Tensor};

/// The token table's checkpoint key under the text model's root.
pub const TOKEN_EMBEDDING: &str = "text_model.embeddings.token_embedding.weight";

/// Rows of `table` (`[vocab, D]`) for integer `input_ids` (`[B, L]`) -> `[B, L, D]`.
pub fn embed_tokens(table: &Tensor, input_ids: &Tensor) -> Result<Tensor> {
    if table.rank() != 2 || input_ids.rank() != 2 || !input_ids.dtype().is_integer() {
        return Err(GraphError::invalid(
            "embed_tokens",
            format!(
                "needs a [vocab, D] table and integer [B, L] ids, got {} and {}",
                table.shape(),
                input_ids.shape()
            ),
        ));
    }
    table.take_rows(input_ids)
}

/// `inputs_embeds + position_embedding.weight[:L]` with the token rows from `table`, in the
/// compute dtype; `p` is the view at `text_model.embeddings`.
pub fn clip_text_embeddings(
    p: &Params,
    input_ids: &Tensor,
    table: &Tensor,
    max_position_embeddings: i64,
) -> Result<Tensor> {
    let tokens = embed_tokens(table, input_ids)?;
    let dims = tokens.dims();
    let (len, hidden) = (dims[1], dims[2]);
    if len > max_position_embeddings {
        return Err(GraphError::invalid(
            "clip_text_embeddings",
            format!(
                "sequence length {len} exceeds max_position_embeddings {max_position_embeddings}"
            ),
        ));
    }
    // A trainer may keep the table in f32 while the encoder runs in bf16.
    let tokens = if tokens.dtype() == p.dtype() {
        tokens
    } else {
        tokens.convert(p.dtype())?
    };
    let positions = p
        .get(
            "position_embedding.weight",
            &[max_position_embeddings, hidden],
        )?
        .slice_axis(0, 0, len)?
        .broadcast_in_dim(&dims, &[1, 2])?;
    tokens.add(&positions)
}
