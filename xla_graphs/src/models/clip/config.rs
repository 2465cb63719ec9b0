//! `CLIPTextConfig`, as transformers writes it to `text_encoder/config.json`.

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct CLIPTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    /// `quick_gelu` (SD 1.x, OpenAI CLIP) or `gelu` (SD 2.x, OpenCLIP).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// `text_projection`'s output width (used by `CLIPTextModelWithProjection` only).
    #[serde(default = "default_projection_dim")]
    pub projection_dim: usize,
    /// Where the pooled output is read: with the legacy id 2 (SD and SDXL configs) at the
    /// largest token id, else at the first `eos_token_id`.
    #[serde(default = "default_eos_token_id")]
    pub eos_token_id: i64,
}

fn default_projection_dim() -> usize {
    512
}

fn default_eos_token_id() -> i64 {
    49407
}

fn default_hidden_act() -> String {
    "quick_gelu".into()
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

impl CLIPTextConfig {
    /// SD 1.x: openai/clip-vit-large-patch14 (`runwayml/stable-diffusion-v1-5/text_encoder/config.json`).
    pub fn v1_5() -> Self {
        CLIPTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 768,
            eos_token_id: 2,
        }
    }

    /// SD 2.x: OpenCLIP ViT-H/14 (`stabilityai/stable-diffusion-2-1/text_encoder/config.json`).
    pub fn v2_1() -> Self {
        CLIPTextConfig {
            vocab_size: 49408,
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 512,
            eos_token_id: 2,
        }
    }

    /// SDXL base's `text_encoder_2`: OpenCLIP ViT-bigG/14 with its projection
    /// (`stabilityai/stable-diffusion-xl-base-1.0/text_encoder_2/config.json`); its
    /// `text_encoder` is [`Self::v1_5`]'s CLIP ViT-L.
    pub fn sdxl_text_encoder_2() -> Self {
        CLIPTextConfig {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
            projection_dim: 1280,
            eos_token_id: 2,
        }
    }
}
