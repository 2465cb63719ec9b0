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
            if e.text_model.config.max_position_embeddings
                != text_encoder.max_position_embeddings
            {
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
            &[
                first.penultimate_hidden_state,
                out.penultimate_hidden_state,
            ],
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
