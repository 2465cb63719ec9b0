//! The UNet's decoder half: `UpBlock2D` and `CrossAttnUpBlock2D` (one type, cross-attention
//! as a parameter). Each resnet first concatenates, along the channels, the next skip state
//! the down blocks left (taken from the end); the block then doubles the resolution.

use crate::models::blocks::Upsample2D;
use crate::models::params::Params;
use crate::models::unet::block_settings::{BlockSettings, CrossAttnSettings};
use crate::{GraphError, Result, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct UpBlock2D {
    /// Channels of the down block this mirrors' input (`in_channels`): the width of the last
    /// skip state this block takes.
    pub in_channels: i64,
    /// Channels of the block below's output (`prev_output_channel`).
    pub prev_output_channel: i64,
    pub out_channels: i64,
    /// Resnets in the block (`layers_per_block + 1`).
    pub num_layers: usize,
    /// `Some` makes it a `CrossAttnUpBlock2D`.
    pub cross_attention: Option<CrossAttnSettings>,
    /// Every block but the last doubles the resolution.
    pub add_upsample: bool,
    pub settings: BlockSettings,
}

impl UpBlock2D {
    /// `x` `[B, prev_output_channel, H, W]` and the `num_layers` skip states it consumes
    /// (`skips`, oldest first; the last is concatenated first) -> `[B, out_channels, H', W']`;
    /// `p` is the block's view (`up_blocks.<i>`).
    pub fn forward(
        &self,
        p: &Params,
        x: &Tensor,
        skips: &[Tensor],
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        if skips.len() != self.num_layers {
            return Err(GraphError::Invalid {
                what: "UpBlock2D",
                reason: format!(
                    "{}: {} skip states for {} resnets",
                    p.prefix(),
                    skips.len(),
                    self.num_layers
                ),
            });
        }
        let g = x.graph();
        let mut h = x.clone();
        for (i, skip) in skips.iter().rev().enumerate() {
            let skip_channels = if i + 1 == self.num_layers {
                self.in_channels
            } else {
                self.out_channels
            };
            let h_channels = if i == 0 {
                self.prev_output_channel
            } else {
                self.out_channels
            };
            let resnet = self
                .settings
                .resnet(h_channels + skip_channels, self.out_channels);
            h = p.scope(format!("resnets.{i}"), |p| {
                let cat = g.concatenate(&[h.clone(), skip.clone()], 1)?;
                resnet.forward(p, &cat, Some(temb))
            })?;
            if let Some(ca) = &self.cross_attention {
                let t = ca.transformer(i, self.out_channels, self.settings.groups)?;
                h = p.scope(format!("attentions.{i}"), |p| t.forward(p, &h, context))?;
            }
        }
        if self.add_upsample {
            let up = Upsample2D {
                channels: self.out_channels,
                out_channels: self.out_channels,
            };
            h = p.scope("upsamplers.0", |p| up.forward(p, &h))?;
        }
        Ok(h)
    }
}

/// Fails unless `name` is an up block type this UNet implements; `true` for the
/// cross-attention one.
pub fn has_cross_attention(name: &str) -> Result<bool> {
    match name {
        "CrossAttnUpBlock2D" => Ok(true),
        "UpBlock2D" => Ok(false),
        other => Err(GraphError::Invalid {
            what: "UNet2DConditionModel",
            reason: format!(
                "up block type {other:?} is not supported (CrossAttnUpBlock2D, UpBlock2D)"
            ),
        }),
    }
}
