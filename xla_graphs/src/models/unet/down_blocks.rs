//! The UNet's encoder half: `DownBlock2D` (resnets, then a stride-2 downsampler) and
//! `CrossAttnDownBlock2D` (a Transformer2DModel after each resnet), one type with the
//! cross-attention as a parameter. Each block returns its output and the states it leaves for
//! the skip connections: every resnet's (or transformer's) output, then the downsampled one.

use crate::models::blocks::Downsample2D;
use crate::models::params::Params;
use crate::models::unet::block_settings::{BlockSettings, CrossAttnSettings};
use crate::{GraphError, Result, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct DownBlock2D {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Resnets in the block (`layers_per_block`).
    pub num_layers: usize,
    /// `Some` makes it a `CrossAttnDownBlock2D`.
    pub cross_attention: Option<CrossAttnSettings>,
    /// Every block but the last halves the resolution.
    pub add_downsample: bool,
    pub downsample_padding: i64,
    pub settings: BlockSettings,
}

impl DownBlock2D {
    /// `x` `[B, in_channels, H, W]` -> (`[B, out_channels, H', W']`, skip states); `p` is the
    /// block's view (`down_blocks.<i>`), `temb` `[B, temb_channels]`, `context` the text
    /// encoder's states `[B, L, cross_attention_dim]` (unused without cross-attention).
    pub fn forward(
        &self,
        p: &Params,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut h = x.clone();
        let mut skips = Vec::with_capacity(self.num_layers + 1);
        for i in 0..self.num_layers {
            let cin = if i == 0 {
                self.in_channels
            } else {
                self.out_channels
            };
            let resnet = self.settings.resnet(cin, self.out_channels);
            h = p.scope(format!("resnets.{i}"), |p| {
                resnet.forward(p, &h, Some(temb))
            })?;
            if let Some(ca) = &self.cross_attention {
                let t = ca.transformer(i, self.out_channels, self.settings.groups)?;
                h = p.scope(format!("attentions.{i}"), |p| t.forward(p, &h, context))?;
            }
            skips.push(h.clone());
        }
        if self.add_downsample {
            let down = Downsample2D {
                channels: self.out_channels,
                out_channels: self.out_channels,
                padding: self.downsample_padding,
            };
            h = p.scope("downsamplers.0", |p| down.forward(p, &h))?;
            skips.push(h.clone());
        }
        Ok((h, skips))
    }
}

/// Fails unless `name` is a down block type this UNet implements; `true` for the
/// cross-attention one.
pub fn has_cross_attention(name: &str) -> Result<bool> {
    match name {
        "CrossAttnDownBlock2D" => Ok(true),
        "DownBlock2D" => Ok(false),
        other => Err(GraphError::Invalid {
            what: "UNet2DConditionModel",
            reason: format!(
                "down block type {other:?} is not supported (CrossAttnDownBlock2D, DownBlock2D)"
            ),
        }),
    }
}
