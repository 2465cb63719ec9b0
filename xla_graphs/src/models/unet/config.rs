//! `UNet2DConditionModel`'s config, as diffusers writes it to `unet/config.json`, with
//! diffusers' defaults for fields older files leave out.

use serde::Deserialize;

use crate::models::config_value::{LayerDepths, PerBlock};

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    pub down_block_types: Vec<String>,
    #[serde(default = "default_mid_block_type")]
    pub mid_block_type: Option<String>,
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: PerBlock<usize>,
    #[serde(default = "one")]
    pub downsample_padding: usize,
    #[serde(default = "one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "silu")]
    pub act_fn: String,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "eps")]
    pub norm_eps: f64,
    #[serde(default = "default_cross_attention_dim")]
    pub cross_attention_dim: PerBlock<usize>,
    #[serde(default = "one_per_block")]
    pub transformer_layers_per_block: LayerDepths,
    /// The up blocks' depths when `transformer_layers_per_block` lists depths per transformer
    /// (diffusers requires it then); otherwise the up blocks read the down blocks' reversed.
    #[serde(default)]
    pub reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    /// Despite its name, diffusers reads this as the number of heads when
    /// `num_attention_heads` is absent (true of every SD 1.x/2.x config).
    #[serde(default = "eight")]
    pub attention_head_dim: PerBlock<usize>,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock<usize>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "three")]
    pub conv_in_kernel: usize,
    #[serde(default = "three")]
    pub conv_out_kernel: usize,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "default_shift")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<usize>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub only_cross_attention: PerBlock<bool>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<usize>,
    /// `"text_time"` (SDXL): the pooled text embedding and the time ids, through
    /// `add_time_proj` and `add_embedding`, are added to the time embedding.
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    /// Width of `add_time_proj`'s sinusoidal features of each time id (SDXL: 256).
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// `add_embedding`'s input width: the pooled text embedding plus every time id's features.
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
    #[serde(default)]
    pub encoder_hid_dim: Option<usize>,
    #[serde(default)]
    pub attention_type: Option<String>,
    #[serde(default)]
    pub sample_size: Option<usize>,
}

impl Default for PerBlock<bool> {
    fn default() -> Self {
        PerBlock::One(false)
    }
}

fn one() -> usize {
    1
}
fn one_f() -> f64 {
    1.0
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn two() -> PerBlock<usize> {
    PerBlock::One(2)
}
fn eight() -> PerBlock<usize> {
    PerBlock::One(8)
}
fn one_per_block() -> LayerDepths {
    LayerDepths::One(1)
}
fn default_cross_attention_dim() -> PerBlock<usize> {
    PerBlock::One(1280)
}
fn eps() -> f64 {
    1e-5
}
fn yes() -> bool {
    true
}
fn silu() -> String {
    "silu".into()
}
fn positional() -> String {
    "positional".into()
}
fn default_shift() -> String {
    "default".into()
}
fn default_mid_block_type() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}

/// The per-block values the model is built from, checked once.
#[derive(Clone, Debug, PartialEq)]
pub struct UNetBlockPlan {
    pub heads: Vec<usize>,
    pub cross_attention_dim: Vec<usize>,
    /// Transformer depths of each down block (one value, or one per transformer).
    pub transformer_layers: Vec<PerBlock<usize>>,
    /// The same for each up block, in up-block order.
    pub up_transformer_layers: Vec<PerBlock<usize>>,
    pub layers_per_block: Vec<usize>,
    /// `Some` for SDXL's `text_time` conditioning.
    pub text_time: Option<TextTimePlan>,
}

/// The widths of SDXL's added conditioning (`addition_embed_type: "text_time"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextTimePlan {
    /// `addition_time_embed_dim`: sinusoidal features per time id.
    pub time_embed_dim: usize,
    /// `projection_class_embeddings_input_dim`: `add_embedding`'s input width.
    pub input_dim: usize,
}

impl UNet2DConditionConfig {
    /// SD 1.5 (`runwayml/stable-diffusion-v1-5/unet/config.json`).
    pub fn v1_5() -> Self {
        let json = r#"{
            "act_fn": "silu", "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
            "center_input_sample": false, "cross_attention_dim": 768,
            "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
            "downsample_padding": 1, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4,
            "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
            "out_channels": 4, "sample_size": 64,
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
        }"#;
        serde_json::from_str(json).expect("the SD 1.5 UNet config parses")
    }

    /// SD 2.1 (`stabilityai/stable-diffusion-2-1/unet/config.json`).
    pub fn v2_1() -> Self {
        let mut c = Self::v1_5();
        c.attention_head_dim = PerBlock::Each(vec![5, 10, 20, 20]);
        c.cross_attention_dim = PerBlock::One(1024);
        c.use_linear_projection = true;
        c.upcast_attention = true;
        c.sample_size = Some(96);
        c
    }

    /// How many time ids each sample needs for a `text_embeds` width (6 for SDXL base: the
    /// original size, the crop's top left, the target size): `add_embedding`'s input less the
    /// text width, over the features per id. `None` without text-time conditioning or when
    /// the widths do not divide.
    pub fn text_time_ids(&self, text_embeds_dim: usize) -> Option<usize> {
        let plan = self.block_plan().ok()?.text_time?;
        let rest = plan.input_dim.checked_sub(text_embeds_dim)?;
        (rest % plan.time_embed_dim == 0).then_some(rest / plan.time_embed_dim)
    }

    /// Expands per-block fields and rejects configurations this UNet does not implement,
    /// naming the field, so an unsupported model fails before any tracing.
    pub fn block_plan(&self) -> Result<UNetBlockPlan, String> {
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("unet config: block_out_channels is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "unet config: {} down_block_types and {} up_block_types for {} block_out_channels",
                self.down_block_types.len(),
                self.up_block_types.len(),
                n
            ));
        }
        let unsupported = [
            ("class_embed_type", self.class_embed_type.is_some()),
            (
                "addition_embed_type other than text_time",
                self.addition_embed_type
                    .as_deref()
                    .is_some_and(|t| t != "text_time"),
            ),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            (
                "time_embedding_type != positional",
                self.time_embedding_type != "positional",
            ),
            (
                "resnet_time_scale_shift != default",
                self.resnet_time_scale_shift != "default",
            ),
            (
                "attention_type != default",
                self.attention_type
                    .as_deref()
                    .is_some_and(|t| t != "default"),
            ),
        ];
        if let Some((field, _)) = unsupported.iter().find(|(_, on)| *on) {
            return Err(format!(
                "unet config: {field} is not supported by ti-xla's UNet"
            ));
        }
        let expand = |name: &str, v: &PerBlock<usize>| {
            v.expand(n)
                .ok_or_else(|| format!("unet config: {name} must have one entry per block ({n})"))
        };
        let heads = match &self.num_attention_heads {
            Some(h) => expand("num_attention_heads", h)?,
            None => expand("attention_head_dim", &self.attention_head_dim)?,
        };
        for (i, (&h, &c)) in heads.iter().zip(&self.block_out_channels).enumerate() {
            if h == 0 || c % h != 0 {
                return Err(format!(
                    "unet config: block {i} has {c} channels, not divisible into {h} heads"
                ));
            }
            if self.norm_num_groups == 0 || c % self.norm_num_groups != 0 {
                return Err(format!(
                    "unet config: block {i} has {c} channels, not divisible into {} norm groups",
                    self.norm_num_groups
                ));
            }
        }
        let per_block = || {
            format!("unet config: transformer_layers_per_block must have one entry per block ({n})")
        };
        let transformer_layers = self
            .transformer_layers_per_block
            .expand(n)
            .ok_or_else(per_block)?;
        let up_transformer_layers = match &self.reverse_transformer_layers_per_block {
            Some(r) if r.len() == n => r.clone(),
            Some(_) => {
                return Err(format!(
                    "unet config: reverse_transformer_layers_per_block must have one entry per block ({n})"
                ))
            }
            None if transformer_layers
                .iter()
                .any(|d| matches!(d, PerBlock::Each(_))) =>
            {
                return Err("unet config: transformer_layers_per_block lists depths per transformer, \
                     which needs reverse_transformer_layers_per_block (as diffusers requires)"
                    .into())
            }
            None => transformer_layers.iter().rev().cloned().collect(),
        };
        let text_time =
            match self.addition_embed_type.as_deref() {
                Some("text_time") => match (
                    self.addition_time_embed_dim,
                    self.projection_class_embeddings_input_dim,
                ) {
                    (Some(time_embed_dim), Some(input_dim)) if time_embed_dim > 0 => {
                        Some(TextTimePlan {
                            time_embed_dim,
                            input_dim,
                        })
                    }
                    _ => return Err(
                        "unet config: addition_embed_type text_time needs addition_time_embed_dim \
                         and projection_class_embeddings_input_dim"
                            .into(),
                    ),
                },
                _ => None,
            };
        Ok(UNetBlockPlan {
            heads,
            cross_attention_dim: expand("cross_attention_dim", &self.cross_attention_dim)?,
            transformer_layers,
            up_transformer_layers,
            layers_per_block: expand("layers_per_block", &self.layers_per_block)?,
            text_time,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_configs_expand_to_heads_per_block() {
        let p = UNet2DConditionConfig::v1_5().block_plan().unwrap();
        assert_eq!(p.heads, vec![8; 4]);
        assert_eq!(p.cross_attention_dim, vec![768; 4]);
        let p = UNet2DConditionConfig::v2_1().block_plan().unwrap();
        assert_eq!(p.heads, vec![5, 10, 20, 20]);
    }

    #[test]
    fn unsupported_and_inconsistent_configs_name_the_field() {
        let mut c = UNet2DConditionConfig::v1_5();
        c.class_embed_type = Some("timestep".into());
        assert!(c.block_plan().unwrap_err().contains("class_embed_type"));
        let mut c = UNet2DConditionConfig::v1_5();
        c.attention_head_dim = PerBlock::Each(vec![8, 8]);
        assert!(c.block_plan().unwrap_err().contains("attention_head_dim"));
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let err = serde_json::from_str::<UNet2DConditionConfig>(
            r#"{"down_block_types": [], "up_block_types": []}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("block_out_channels"), "{err}");
    }
}
