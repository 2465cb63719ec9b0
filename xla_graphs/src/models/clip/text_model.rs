//! `CLIPTextModel`: embeddings, the causal encoder and the final layer norm; returns the last
//! hidden state `[B, L, D]` that Stable Diffusion conditions on (and the penultimate layer's,
//! which SDXL conditions on). Weight keys are the ones SD checkpoints use (`text_model.*`).

use crate::models::clip::embeddings::{clip_text_embeddings, TOKEN_EMBEDDING};
use crate::models::clip::encoder::{clip_encoder, EncoderDims};
use crate::models::clip::CLIPTextConfig;
use crate::models::modules::{layer_norm, Activation};
use crate::models::params::Params;
use crate::{GraphError, Result, Tensor};

/// The traced text encoder for one config.
#[derive(Clone, Debug)]
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    dims: EncoderDims,
}

impl CLIPTextModel {
    /// Checks the config once, so tracing cannot fail on it later.
    pub fn new(config: CLIPTextConfig) -> Result<CLIPTextModel> {
        let c = &config;
        let activation = Activation::from_name(&c.hidden_act).ok_or_else(|| {
            GraphError::invalid(
                "CLIPTextModel",
                format!(
                    "hidden_act {:?} is not supported (quick_gelu, gelu, gelu_new)",
                    c.hidden_act
                ),
            )
        })?;
        if c.num_attention_heads == 0 || !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(GraphError::invalid(
                "CLIPTextModel",
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    c.hidden_size, c.num_attention_heads
                ),
            ));
        }
        let dims = EncoderDims {
            hidden: c.hidden_size as i64,
            heads: c.num_attention_heads as i64,
            intermediate: c.intermediate_size as i64,
            layer_norm_eps: c.layer_norm_eps,
            activation,
        };
        Ok(CLIPTextModel { config, dims })
    }

    /// Binds the token table `[vocab, D]` in the compute dtype.
    pub fn token_embedding(&self, p: &Params) -> Result<Tensor> {
        p.get(
            TOKEN_EMBEDDING,
            &[self.config.vocab_size as i64, self.dims.hidden],
        )
    }

    /// `last_hidden_state` for integer `input_ids` `[B, L]`, `L <= max_position_embeddings`;
    /// `p` is the root view (keys `text_model.*`).
    pub fn forward(&self, p: &Params, input_ids: &Tensor) -> Result<Tensor> {
        let table = self.token_embedding(p)?;
        self.forward_with_token_embedding(p, input_ids, &table)
    }

    /// `forward` with the token table supplied by the caller (`[V, D]`, any float dtype; a
    /// trainer passes the frozen table with its trainable rows spliced in). Activations are
    /// tapped as `text_model.embeddings` and `text_model.encoder.layers.<i>`.
    pub fn forward_with_token_embedding(
        &self,
        p: &Params,
        input_ids: &Tensor,
        table: &Tensor,
    ) -> Result<Tensor> {
        Ok(self.hidden_states(p, input_ids, table)?.last_hidden_state)
    }

    /// The last hidden state (after the final layer norm) and the penultimate one
    /// (`hidden_states[-2]`: the input of the last layer, without the final norm), with the
    /// token table supplied as in `forward_with_token_embedding`.
    pub fn hidden_states(
        &self,
        p: &Params,
        input_ids: &Tensor,
        table: &Tensor,
    ) -> Result<CLIPTextOutputs> {
        let c = &self.config;
        if c.num_hidden_layers == 0 {
            return Err(GraphError::invalid(
                "CLIPTextModel",
                String::from("num_hidden_layers is 0"),
            ));
        }
        p.scope("text_model", |p| {
            let h = p.scope("embeddings", |p| {
                let h =
                    clip_text_embeddings(p, input_ids, table, c.max_position_embeddings as i64)?;
                p.tap(&h);
                Ok::<_, GraphError>(h)
            })?;
            let mut states = p.scope("encoder", |p| {
                clip_encoder(p, &h, c.num_hidden_layers, &self.dims)
            })?;
            let last = states
                .pop()
                .expect("the encoder returns its input and every layer");
            let penultimate = states.pop().expect("at least one layer");
            Ok(CLIPTextOutputs {
                last_hidden_state: layer_norm(p, "final_layer_norm", &last, c.layer_norm_eps)?,
                penultimate_hidden_state: penultimate,
            })
        })
    }
}

/// What a CLIP text encoder hands the models conditioned on it.
#[derive(Clone, Debug)]
pub struct CLIPTextOutputs {
    /// `[B, L, D]` after the final layer norm (SD 1.x/2.x condition on it).
    pub last_hidden_state: Tensor,
    /// `[B, L, D]`: transformers' `hidden_states[-2]` (SDXL conditions on it).
    pub penultimate_hidden_state: Tensor,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Graph, Shape};
    use std::collections::BTreeSet;

    fn tiny() -> CLIPTextConfig {
        CLIPTextConfig {
            vocab_size: 50,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            max_position_embeddings: 7,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            ..CLIPTextConfig::v1_5()
        }
    }

    #[test]
    fn declares_the_checkpoint_keys_in_order() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let ids = p
            .input("input_ids", Shape::new(DType::I32, &[3, 5]))
            .unwrap();
        let m = CLIPTextModel::new(tiny()).unwrap();
        let y = m.forward(&p, &ids).unwrap();
        assert_eq!(y.shape(), Shape::new(DType::F32, &[3, 5, 8]));
        let specs = p.specs();
        assert_eq!(specs.len(), 1 + 2 + 2 * 16 + 2);
        assert_eq!(specs[1].name, TOKEN_EMBEDDING);
        assert_eq!(specs[1].shape.dims, vec![50, 8]);
        assert_eq!(
            specs[2].name,
            "text_model.embeddings.position_embedding.weight"
        );
        let fc1 = specs
            .iter()
            .find(|s| s.name == "text_model.encoder.layers.1.mlp.fc1.weight")
            .unwrap();
        assert_eq!(fc1.shape.dims, vec![12, 8]);
        assert_eq!(
            specs.last().unwrap().name,
            "text_model.final_layer_norm.bias"
        );
        assert!(g.to_stablehlo(&[&y]).is_ok());
    }

    #[test]
    fn bf16_keeps_scores_in_f32_and_taps_layers() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        p.record_taps();
        let ids = p
            .input("input_ids", Shape::new(DType::I64, &[1, 7]))
            .unwrap();
        let y = CLIPTextModel::new(tiny())
            .unwrap()
            .forward(&p, &ids)
            .unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let taps: Vec<String> = p.taps().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            taps,
            [
                "text_model.embeddings",
                "text_model.encoder.layers.0",
                "text_model.encoder.layers.1"
            ]
        );
        // Every reduce (the layer norms' statistics, the softmax's max and sum over the
        // [B, H, L, L] scores) reads f32.
        let reduced = g.reduce_operands();
        assert!(
            reduced.iter().all(|s| s.dtype == DType::F32),
            "statistics and scores in f32: {reduced:?}"
        );
        let dims: BTreeSet<Vec<i64>> = reduced.iter().map(|s| s.dims.clone()).collect();
        assert_eq!(
            dims,
            BTreeSet::from([vec![1, 7, 8], vec![1, 2, 7, 7]]),
            "layer norm statistics and softmax over the scores"
        );
    }

    #[test]
    fn a_caller_table_in_f32_is_differentiable_under_bf16() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let ids = p
            .input("input_ids", Shape::new(DType::I32, &[2, 7]))
            .unwrap();
        let table = p.input("table", Shape::new(DType::F32, &[50, 8])).unwrap();
        let y = CLIPTextModel::new(tiny())
            .unwrap()
            .forward_with_token_embedding(&p, &ids, &table)
            .unwrap();
        assert!(p.specs().iter().all(|s| s.name != TOKEN_EMBEDDING));
        let loss = y
            .convert(DType::F32)
            .unwrap()
            .square()
            .unwrap()
            .sum_all()
            .unwrap();
        let (_, grads) = crate::value_and_grad(&loss, &[table]).unwrap();
        assert_eq!(grads[0].shape(), Shape::new(DType::F32, &[50, 8]));
        assert!(g.to_stablehlo(&[&loss, &grads[0]]).is_ok());
    }

    #[test]
    fn rejects_bad_configs_and_inputs() {
        let mut c = tiny();
        // transformers' ACT2FN has no such activation.
        c.hidden_act = "not_an_activation".into();
        assert!(CLIPTextModel::new(c)
            .unwrap_err()
            .to_string()
            .contains("not_an_activation"));
        let mut c = tiny();
        c.num_attention_heads = 3;
        assert!(CLIPTextModel::new(c).is_err());
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let ids = p
            .input("input_ids", Shape::new(DType::I32, &[1, 8]))
            .unwrap();
        let err = CLIPTextModel::new(tiny())
            .unwrap()
            .forward(&p, &ids)
            .unwrap_err();
        assert!(
            err.to_string().contains("max_position_embeddings 7"),
            "{err}"
        );
        let f = p.input("floats", Shape::new(DType::F32, &[1, 3])).unwrap();
        assert!(CLIPTextModel::new(tiny()).unwrap().forward(&p, &f).is_err());
    }
}
