//! What the blocks of one UNet share: how their resnets are built (time embedding width,
//! norm groups and eps, activation) and how their cross-attention is built (heads, layers,
//! context width, projection kind), so each block type takes them as parameters.

use crate::models::blocks::transformer_2d::Transformer2DModel;
use crate::models::blocks::ResnetBlock2D;
use crate::models::config_value::PerBlock;
use crate::models::modules::Activation;
use crate::{GraphError, Result};

/// The `ResnetBlock2D` arguments every block passes alike.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockSettings {
    /// Width of the time embedding each resnet projects (`temb_channels`).
    pub temb_channels: i64,
    /// `resnet_groups`: the config's `norm_num_groups`, also used by the transformers' norm.
    pub groups: i64,
    /// `resnet_eps`: the config's `norm_eps`.
    pub eps: f64,
    /// `resnet_act_fn`: the config's `act_fn`.
    pub act: Activation,
    /// 1 except in the mid block (`mid_block_scale_factor`).
    pub output_scale_factor: f64,
}

impl BlockSettings {
    pub fn resnet(&self, in_channels: i64, out_channels: i64) -> ResnetBlock2D {
        ResnetBlock2D {
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            act: self.act,
            output_scale_factor: self.output_scale_factor,
            ..ResnetBlock2D::new(in_channels, out_channels)
        }
    }
}

/// The `Transformer2DModel` arguments of one `CrossAttn*` block.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossAttnSettings {
    /// `num_attention_heads` (what SD configs call `attention_head_dim`).
    pub heads: i64,
    /// `transformer_layers_per_block`: BasicTransformerBlocks per Transformer2DModel, one
    /// value for the block or one per transformer in it.
    pub transformer_layers: PerBlock<usize>,
    pub cross_attention_dim: i64,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
}

impl CrossAttnSettings {
    /// The block's `j`-th transformer, after a resnet of `channels` outputs, split into
    /// `heads` heads of `channels / heads` as diffusers' blocks do.
    pub fn transformer(&self, j: usize, channels: i64, groups: i64) -> Result<Transformer2DModel> {
        let num_layers = self.transformer_layers.at(j).ok_or_else(|| {
            GraphError::invalid(
                "UNet2DConditionModel",
                format!(
                    "transformer_layers_per_block lists no depth for transformer {j} of a block"
                ),
            )
        })?;
        Ok(Transformer2DModel {
            in_channels: channels,
            heads: self.heads,
            dim_head: channels / self.heads,
            num_layers,
            cross_attention_dim: self.cross_attention_dim,
            norm_num_groups: groups,
            use_linear_projection: self.use_linear_projection,
            upcast_attention: self.upcast_attention,
        })
    }
}
