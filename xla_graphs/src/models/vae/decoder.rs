//! The VAE's `Decoder`: conv_in, the mid block, `UpDecoderBlock2D`s over the reversed
//! `block_out_channels` (one resnet more than the encoder's blocks, then nearest 2x and a conv
//! on all but the last), group norm, silu and conv_out to image channels.

use crate::models::blocks::{ResnetBlock2D, Upsample2D};
use crate::models::modules::{conv2d, group_norm, Conv2d};
use crate::models::params::Params;
use crate::models::vae::mid_block::UNetMidBlock2D;
use crate::{nn, GraphError, Result, Tensor};

/// Sizes from `AutoencoderKLConfig`, checked by `AutoencoderKL::new`.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoder {
    /// `latent_channels`.
    pub in_channels: i64,
    pub out_channels: i64,
    /// As the config lists them (encoder order); the decoder walks them reversed.
    pub block_out_channels: Vec<i64>,
    /// The config's `layers_per_block`; each up block has one resnet more.
    pub layers_per_block: usize,
    pub resnet: ResnetBlock2D,
    pub mid_block_add_attention: bool,
}

impl Decoder {
    /// `[B, in_channels, h, w]` -> `[B, out_channels, h * 2^(n-1), w * 2^(n-1)]`; `p` is the
    /// view at `decoder`. Taps `mid_block` and each `up_blocks.<i>`.
    pub fn forward(&self, p: &Params, z: &Tensor) -> Result<Tensor> {
        let reversed: Vec<i64> = self.block_out_channels.iter().rev().copied().collect();
        let (Some(&top), Some(&bottom)) = (reversed.first(), reversed.last()) else {
            return Err(GraphError::invalid(
                "Decoder",
                "block_out_channels is empty".to_string(),
            ));
        };
        let h = conv2d(p, "conv_in", z, &Conv2d::new(self.in_channels, top, 3))?;
        let mid = UNetMidBlock2D::new(top, self.resnet, self.mid_block_add_attention);
        let mut h = p.scope("mid_block", |p| {
            let h = mid.forward(p, &h)?;
            p.tap(&h);
            Ok::<_, GraphError>(h)
        })?;
        let mut channels = top;
        for (i, &out) in reversed.iter().enumerate() {
            let add_upsample = i + 1 < reversed.len();
            h = p.scope(format!("up_blocks.{i}"), |p| {
                let h = self.up_decoder_block(p, &h, channels, out, add_upsample)?;
                p.tap(&h);
                Ok::<_, GraphError>(h)
            })?;
            channels = out;
        }
        // diffusers' conv_act is nn.SiLU() whatever act_fn says.
        let h = group_norm(p, "conv_norm_out", &h, self.resnet.groups, self.resnet.eps)?;
        conv2d(
            p,
            "conv_out",
            &nn::silu(&h)?,
            &Conv2d::new(bottom, self.out_channels, 3),
        )
    }

    /// `UpDecoderBlock2D` at `p` (`...up_blocks.<i>`).
    fn up_decoder_block(
        &self,
        p: &Params,
        x: &Tensor,
        in_channels: i64,
        out_channels: i64,
        add_upsample: bool,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for j in 0..=self.layers_per_block {
            let resnet = ResnetBlock2D {
                in_channels: if j == 0 { in_channels } else { out_channels },
                out_channels,
                ..self.resnet
            };
            h = p.scope(format!("resnets.{j}"), |p| resnet.forward(p, &h, None))?;
        }
        if add_upsample {
            let up = Upsample2D {
                channels: out_channels,
                out_channels,
            };
            h = p.scope("upsamplers.0", |p| up.forward(p, &h))?;
        }
        Ok(h)
    }
}
