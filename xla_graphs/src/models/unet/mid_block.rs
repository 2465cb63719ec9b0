//! `UNetMidBlock2DCrossAttn`: a resnet, then for each layer a Transformer2DModel and another
//! resnet, at the lowest resolution.

use crate::models::params::Params;
use crate::models::unet::block_settings::{BlockSettings, CrossAttnSettings};
use crate::{Result, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct UNetMidBlock2DCrossAttn {
    /// `in_channels` (= out channels): the last entry of `block_out_channels`.
    pub channels: i64,
    /// Transformer + resnet pairs after the first resnet (diffusers' UNet passes 1).
    pub num_layers: usize,
    pub cross_attention: CrossAttnSettings,
    /// Its `output_scale_factor` is the config's `mid_block_scale_factor`.
    pub settings: BlockSettings,
}

impl UNetMidBlock2DCrossAttn {
    /// `[B, channels, H, W]` -> same shape; `p` is the view at `mid_block`.
    pub fn forward(
        &self,
        p: &Params,
        x: &Tensor,
        temb: &Tensor,
        context: &Tensor,
    ) -> Result<Tensor> {
        let c = self.channels;
        let resnet = self.settings.resnet(c, c);
        let mut h = p.scope("resnets.0", |p| resnet.forward(p, x, Some(temb)))?;
        for i in 0..self.num_layers {
            let transformer = self
                .cross_attention
                .transformer(i, c, self.settings.groups)?;
            h = p.scope(format!("attentions.{i}"), |p| {
                transformer.forward(p, &h, context)
            })?;
            let name = format!("resnets.{}", i + 1);
            h = p.scope(name, |p| resnet.forward(p, &h, Some(temb)))?;
        }
        Ok(h)
    }
}
