//! The VAE's `Encoder`: conv_in, `DownEncoderBlock2D`s (resnets, then a stride-2 conv on all
//! but the last), the mid block, group norm, silu and conv_out to the latent moments.

use crate::models::blocks::{Downsample2D, ResnetBlock2D};
use crate::models::modules::{conv2d, group_norm, Conv2d};
use crate::models::params::Params;
use crate::models::vae::mid_block::UNetMidBlock2D;
use crate::{nn, GraphError, Result, Tensor};

/// Sizes from `AutoencoderKLConfig`, checked by `AutoencoderKL::new`.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoder {
    pub in_channels: i64,
    /// Channels of conv_out: `2 * latent_channels` (mean and logvar, `double_z`).
    pub out_channels: i64,
    pub block_out_channels: Vec<i64>,
    pub layers_per_block: usize,
    /// Groups, eps and activation of every resnet (its channel counts are set per use).
    pub resnet: ResnetBlock2D,
    pub mid_block_add_attention: bool,
}

impl Encoder {
    /// `[B, in_channels, H, W]` -> `[B, out_channels, H / 2^(n-1), W / 2^(n-1)]`; `p` is the
    /// view at `encoder`. Taps each `down_blocks.<i>`, `mid_block` and the output.
    pub fn forward(&self, p: &Params, x: &Tensor) -> Result<Tensor> {
        let last = *self.block_out_channels.last().ok_or_else(|| {
            GraphError::invalid("Encoder", "block_out_channels is empty".to_string())
        })?;
        let mut channels = self.block_out_channels[0];
        let mut h = conv2d(p, "conv_in", x, &Conv2d::new(self.in_channels, channels, 3))?;
        for (i, &out) in self.block_out_channels.iter().enumerate() {
            let add_downsample = i + 1 < self.block_out_channels.len();
            h = p.scope(format!("down_blocks.{i}"), |p| {
                let h = self.down_encoder_block(p, &h, channels, out, add_downsample)?;
                p.tap(&h);
                Ok::<_, GraphError>(h)
            })?;
            channels = out;
        }
        let mid = UNetMidBlock2D::new(last, self.resnet, self.mid_block_add_attention);
        h = p.scope("mid_block", |p| {
            let h = mid.forward(p, &h)?;
            p.tap(&h);
            Ok::<_, GraphError>(h)
        })?;
        // diffusers' conv_act is nn.SiLU() whatever act_fn says.
        let h = group_norm(p, "conv_norm_out", &h, self.resnet.groups, self.resnet.eps)?;
        let h = conv2d(
            p,
            "conv_out",
            &nn::silu(&h)?,
            &Conv2d::new(last, self.out_channels, 3),
        )?;
        p.tap(&h);
        Ok(h)
    }

    /// `DownEncoderBlock2D` at `p` (`...down_blocks.<i>`).
    fn down_encoder_block(
        &self,
        p: &Params,
        x: &Tensor,
        in_channels: i64,
        out_channels: i64,
        add_downsample: bool,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for j in 0..self.layers_per_block {
            let resnet = ResnetBlock2D {
                in_channels: if j == 0 { in_channels } else { out_channels },
                out_channels,
                ..self.resnet
            };
            h = p.scope(format!("resnets.{j}"), |p| resnet.forward(p, &h, None))?;
        }
        if add_downsample {
            let down = Downsample2D {
                channels: out_channels,
                out_channels,
                padding: 0,
            };
            h = p.scope("downsamplers.0", |p| down.forward(p, &h))?;
        }
        Ok(h)
    }
}
