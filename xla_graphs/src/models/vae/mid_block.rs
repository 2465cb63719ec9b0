//! diffusers' `UNetMidBlock2D` as the VAE builds it: a resnet, then (when
//! `mid_block_add_attention`) single-head self-attention over the pixels with a group norm in
//! front and the input added back, then a second resnet. No time embedding.

use crate::models::blocks::attention::{attention, AttentionConfig};
use crate::models::blocks::ResnetBlock2D;
use crate::models::params::Params;
use crate::{Result, Tensor};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UNetMidBlock2D {
    pub channels: i64,
    pub resnet: ResnetBlock2D,
    pub add_attention: bool,
}

impl UNetMidBlock2D {
    /// The Encoder's and Decoder's mid block: `resnet` sets groups, eps and activation.
    pub fn new(channels: i64, resnet: ResnetBlock2D, add_attention: bool) -> UNetMidBlock2D {
        UNetMidBlock2D {
            channels,
            resnet: ResnetBlock2D {
                in_channels: channels,
                out_channels: channels,
                ..resnet
            },
            add_attention,
        }
    }

    fn attention_config(&self) -> AttentionConfig {
        // The VAE passes attention_head_dim = channels, so heads = channels / channels = 1.
        AttentionConfig {
            bias: true,
            norm_num_groups: Some(self.resnet.groups),
            eps: self.resnet.eps,
            residual_connection: true,
            rescale_output_factor: self.resnet.output_scale_factor,
            ..AttentionConfig::new(self.channels, 1, self.channels)
        }
    }

    /// `[B, C, H, W] -> [B, C, H, W]`; `p` is the view at `...mid_block`.
    pub fn forward(&self, p: &Params, x: &Tensor) -> Result<Tensor> {
        let h = p.scope("resnets.0", |p| self.resnet.forward(p, x, None))?;
        let h = if self.add_attention {
            let c = self.attention_config();
            p.scope("attentions.0", |p| attention(p, &h, None, &c))?
        } else {
            h
        };
        p.scope("resnets.1", |p| self.resnet.forward(p, &h, None))
    }
}
