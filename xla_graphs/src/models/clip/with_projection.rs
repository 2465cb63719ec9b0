//! `CLIPTextModelWithProjection` (SDXL's `text_encoder_2`): the text model, its pooled output
//! (one position per sequence, as transformers' `CLIPTextTransformer` picks it) and
//! `text_projection` (a bias-free linear, key `text_projection.weight`) giving `text_embeds`.

use crate::models::clip::CLIPTextModel;
use crate::models::modules::linear;
use crate::models::params::Params;
use crate::{ComparisonDirection, DType, GraphError, Result, Tensor};

/// transformers' legacy `eos_token_id` (older configs, all SD and SDXL ones): the pooled
/// position is then the argmax of the ids, not the first end-of-text token.
pub const LEGACY_EOS_TOKEN_ID: i64 = 2;

/// The position pooled in each row of `input_ids` `[B, L]` (an integer dtype): the first
/// largest id when `eos_token_id` is the legacy 2, else the first `eos_token_id` (position 0
/// when a row has none, as torch's argmax of an all-false row). Returns `[B]` i32.
pub fn pooled_positions(input_ids: &Tensor, eos_token_id: i64) -> Result<Tensor> {
    let g = input_ids.graph();
    let dims = input_ids.dims();
    if dims.len() != 2 || !input_ids.dtype().is_integer() {
        return Err(g.op_error(
            "CLIPTextTransformer pooling",
            &[input_ids],
            "input_ids must be integer [B, L]".into(),
        ));
    }
    let ids = input_ids.convert(DType::I64)?;
    let target = match eos_token_id {
        LEGACY_EOS_TOKEN_ID => ids.reduce_max(&[1])?.broadcast_in_dim(&dims, &[0])?,
        id => g.scalar(id as f64, DType::I64)?.broadcast_to(&dims)?,
    };
    let hit = ids.compare(&target, ComparisonDirection::Eq)?;
    let position = g.iota(crate::Shape::new(DType::I32, &dims), 1)?;
    let past_end = g.scalar(dims[1] as f64, DType::I32)?.broadcast_to(&dims)?;
    let first = hit.select(&position, &past_end)?.reduce_min(&[1])?;
    let none = first.compare(
        &g.scalar(dims[1] as f64, DType::I32)?
            .broadcast_to(&[dims[0]])?,
        ComparisonDirection::Eq,
    )?;
    none.select(&first.zeros_like()?, &first)
}

/// `hidden` `[B, L, D]` at each row's `positions` `[B]` -> `[B, D]` (a one-hot contraction, so
/// the gradient reaches only the pooled positions).
pub fn pool(hidden: &Tensor, positions: &Tensor) -> Result<Tensor> {
    let g = hidden.graph();
    let dims = hidden.dims();
    let (b, l) = (dims[0], dims[1]);
    let at = g
        .iota(crate::Shape::new(DType::I32, &[b, l]), 1)?
        .compare(
            &positions.broadcast_in_dim(&[b, l], &[0])?,
            ComparisonDirection::Eq,
        )?
        .convert(hidden.dtype())?
        .broadcast_in_dim(&dims, &[0, 1])?;
    hidden.multiply(&at)?.reduce_sum(&[1])
}

/// The text model with its projection.
#[derive(Clone, Debug)]
pub struct CLIPTextModelWithProjection {
    pub text_model: CLIPTextModel,
}

impl CLIPTextModelWithProjection {
    pub fn new(text_model: CLIPTextModel) -> Result<Self> {
        if text_model.config.projection_dim == 0 {
            return Err(GraphError::invalid(
                "CLIPTextModelWithProjection",
                String::from("projection_dim is 0"),
            ));
        }
        Ok(CLIPTextModelWithProjection { text_model })
    }

    /// `text_embeds` `[B, projection_dim]`: `last_hidden_state` `[B, L, D]` pooled at the
    /// position the config's rule picks in `input_ids`, through `text_projection`; `p` is the
    /// root view.
    pub fn text_embeds(
        &self,
        p: &Params,
        input_ids: &Tensor,
        last_hidden_state: &Tensor,
    ) -> Result<Tensor> {
        let c = &self.text_model.config;
        let positions = pooled_positions(input_ids, c.eos_token_id)?;
        let pooled = pool(last_hidden_state, &positions)?;
        linear(
            p,
            "text_projection",
            &pooled,
            c.hidden_size as i64,
            c.projection_dim as i64,
            false,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::clip::CLIPTextConfig;
    use crate::{Graph, Shape};

    #[test]
    fn binds_the_projection_without_bias() {
        let config = CLIPTextConfig {
            vocab_size: 50,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 7,
            projection_dim: 6,
            ..CLIPTextConfig::v1_5()
        };
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let ids = p
            .input("input_ids", Shape::new(DType::I32, &[3, 7]))
            .unwrap();
        let m = CLIPTextModelWithProjection::new(CLIPTextModel::new(config).unwrap()).unwrap();
        let table = m.text_model.token_embedding(&p).unwrap();
        let out = m.text_model.hidden_states(&p, &ids, &table).unwrap();
        let e = m.text_embeds(&p, &ids, &out.last_hidden_state).unwrap();
        assert_eq!(e.shape(), Shape::new(DType::F32, &[3, 6]));
        let specs = p.weights();
        let proj: Vec<_> = specs
            .iter()
            .filter(|s| s.name.starts_with("text_projection"))
            .collect();
        assert_eq!(proj.len(), 1);
        assert_eq!(proj[0].name, "text_projection.weight");
        assert_eq!(proj[0].checkpoint_dims(), vec![6, 8]);
        assert!(g.to_stablehlo(&[&e, &out.penultimate_hidden_state]).is_ok());
    }
}
