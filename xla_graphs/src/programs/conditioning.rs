//! What the UNet is conditioned on, from the prompt's token ids: SD 1.x/2.x use one CLIP text
//! encoder's last hidden state; SDXL concatenates (over the last axis) both encoders'
//! penultimate hidden states and adds `text_encoder_2`'s projected pooled output
//! (`text_embeds`). Learned rows come as one `[n, D1 (+ D2)]` tensor: its first `D1` columns
//! are the rows of the first encoder's table, the rest the second's, each appended after its
//! frozen vocabulary (the placeholder tokens get the ids after it in both tokenizers). AdamW is
//! elementwise, so one update of the joined rows is the two updates of diffusers' SDXL script.

use crate::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection};
use crate::models::params::Params;
use crate::programs::interface::{TEXT_ENCODER, TEXT_ENCODER_2};
use crate::{DType, GraphError, Result, Tensor};

/// The text encoders of one pipeline.
#[derive(Clone, Debug)]
pub struct TextEncoders {
    pub text_encoder: CLIPTextModel,
    /// SDXL's `text_encoder_2`.
    pub text_encoder_2: Option<CLIPTextModelWithProjection>,
}

/// The UNet's text conditioning.
#[derive(Clone, Debug)]
pub struct Conditioning {
    /// `encoder_hidden_states` `[B, L, D1 (+ D2)]` in the compute dtype.
    pub context: Tensor,
    /// SDXL's `text_embeds` `[B, projection_dim]` in the compute dtype.
    pub text_embeds: Option<Tensor>,
}

impl TextEncoders {
    pub fn new(
        text_encoder: &CLIPTextConfig,
        text_encoder_2: Option<&CLIPTextConfig>,
    ) -> Result<TextEncoders> {
        let text_encoder_2 = text_encoder_2
            .map(|c| CLIPTextModelWithProjection::new(CLIPTextModel::new(c.clone())?))
            .transpose()?;
        if let Some(e) = &text_encoder_2 {
            if e.text_model.config.max_position_embeddings != text_encoder.max_position_embeddings {
                return Err(GraphError::invalid(
                    "text encoders",
                    format!(
                        "text_encoder has {} positions, text_encoder_2 {}: SDXL needs them equal",
                        text_encoder.max_position_embeddings,
                        e.text_model.config.max_position_embeddings
                    ),
                ));
            }
        }
        Ok(TextEncoders {
            text_encoder: CLIPTextModel::new(text_encoder.clone())?,
            text_encoder_2,
        })
    }

    /// Each encoder's hidden width, in order: the column split of the learned rows.
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(&self.text_encoder)
            .chain(self.text_encoder_2.as_ref().map(|e| &e.text_model))
            .map(|m| m.config.hidden_size)
            .collect()
    }

    /// Columns of the learned rows: every encoder's width together.
    pub fn row_width(&self) -> usize {
        self.widths().iter().sum()
    }

    /// The width of `encoder_hidden_states` (the UNet's `cross_attention_dim`).
    pub fn context_dim(&self) -> usize {
        self.row_width()
    }

    /// `text_embeds`' width (`projection_dim` of `text_encoder_2`).
    pub fn text_embeds_dim(&self) -> Option<usize> {
        self.text_encoder_2
            .as_ref()
            .map(|e| e.text_model.config.projection_dim)
    }

    /// The conditioning for `input_ids` `[B, L]` (and SDXL's `input_ids_2` from the second
    /// tokenizer), the learned `rows` `[n, row_width]` (any float dtype) appended to the
    /// tables; `p` is the root view (weights under `text_encoder.` and `text_encoder_2.`).
    pub fn encode(
        &self,
        p: &Params,
        input_ids: &Tensor,
        input_ids_2: Option<&Tensor>,
        rows: Option<&Tensor>,
    ) -> Result<Conditioning> {
        let widths = self.widths();
        let rows_of = |i: usize| -> Result<Option<Tensor>> {
            let Some(rows) = rows else { return Ok(None) };
            let start: usize = widths[..i].iter().sum();
            let part = match widths.len() {
                1 => rows.clone(),
                _ => rows.slice_axis(1, start as i64, (start + widths[i]) as i64)?,
            };
            Ok(Some(part))
        };
        let table = |p: &Params, model: &CLIPTextModel, rows: Option<Tensor>| {
            let table = model.token_embedding(p)?;
            match rows {
                Some(r) => table
                    .graph()
                    .concatenate(&[table.clone(), r.convert(p.dtype())?], 0),
                None => Ok(table),
            }
        };
        let first = p.scope(TEXT_ENCODER, |p| {
            let t = table(p, &self.text_encoder, rows_of(0)?)?;
            self.text_encoder.hidden_states(p, input_ids, &t)
        })?;
        let Some(second) = &self.text_encoder_2 else {
            return Ok(Conditioning {
                context: first.last_hidden_state,
                text_embeds: None,
            });
        };
        let ids_2 = input_ids_2.ok_or_else(|| {
            GraphError::invalid("text encoders", "SDXL needs input_ids_2".to_string())
        })?;
        let (out, text_embeds) = p.scope(TEXT_ENCODER_2, |p| {
            let t = table(p, &second.text_model, rows_of(1)?)?;
            let out = second.text_model.hidden_states(p, ids_2, &t)?;
            let embeds = second.text_embeds(p, ids_2, &out.last_hidden_state)?;
            Ok::<_, GraphError>((out, embeds))
        })?;
        let g = input_ids.graph();
        let context = g.concatenate(
            &[first.penultimate_hidden_state, out.penultimate_hidden_state],
            2,
        )?;
        Ok(Conditioning {
            context,
            text_embeds: Some(text_embeds),
        })
    }
}

/// `t` in `dtype`, with no convert when it is already.
pub fn in_dtype(t: &Tensor, dtype: DType) -> Result<Tensor> {
    match t.dtype() == dtype {
        true => Ok(t.clone()),
        false => t.convert(dtype),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, Shape};

    fn clip(hidden: usize, projection_dim: usize) -> CLIPTextConfig {
        CLIPTextConfig {
            vocab_size: 30,
            hidden_size: hidden,
            intermediate_size: 2 * hidden,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 5,
            projection_dim,
            ..CLIPTextConfig::v1_5()
        }
    }

    #[test]
    fn sdxl_conditioning_joins_both_encoders_and_splits_the_rows() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let encoders = TextEncoders::new(&clip(4, 3), Some(&clip(6, 5))).unwrap();
        assert_eq!(encoders.widths(), [4, 6]);
        assert_eq!(encoders.text_embeds_dim(), Some(5));
        let ids = p.input("ids", Shape::new(DType::I32, &[2, 5])).unwrap();
        let ids_2 = p.input("ids_2", Shape::new(DType::I32, &[2, 5])).unwrap();
        let rows = p.input("rows", Shape::new(DType::F32, &[3, 10])).unwrap();
        let c = encoders
            .encode(&p, &ids, Some(&ids_2), Some(&rows))
            .unwrap();
        assert_eq!(c.context.dims(), [2, 5, 10]);
        assert_eq!(c.text_embeds.as_ref().unwrap().dims(), [2, 5]);
        let weights = p.weights();
        let find = |k: &str| {
            weights
                .iter()
                .find(|s| s.name == k)
                .map(|s| s.checkpoint_dims())
        };
        assert_eq!(
            find("text_encoder_2.text_projection.weight"),
            Some(vec![5, 6])
        );
        assert_eq!(
            find("text_encoder.text_model.embeddings.token_embedding.weight"),
            Some(vec![30, 4])
        );
        assert_eq!(
            find("text_encoder_2.text_model.embeddings.token_embedding.weight"),
            Some(vec![30, 6])
        );
        // Only the second encoder is a CLIPTextModelWithProjection.
        assert!(find("text_encoder.text_projection.weight").is_none());
        let text = g
            .to_stablehlo(&[&c.context, c.text_embeds.as_ref().unwrap()])
            .unwrap();
        // Each table gains the rows' own columns: [30 + 3, 4] and [30 + 3, 6].
        assert!(text.contains("tensor<33x4xf32>"), "first table");
        assert!(text.contains("tensor<33x6xf32>"), "second table");
        // Without a second encoder the context is the last hidden state.
        let sd = TextEncoders::new(&clip(4, 3), None).unwrap();
        let rows_sd = p.input("rows_sd", Shape::new(DType::F32, &[3, 4])).unwrap();
        let c = sd.encode(&p, &ids, None, Some(&rows_sd)).unwrap();
        assert_eq!(c.context.dims(), [2, 5, 4]);
        assert!(c.text_embeds.is_none());
    }
}
