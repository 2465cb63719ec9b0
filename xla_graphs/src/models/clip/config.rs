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
        }
    }
}
