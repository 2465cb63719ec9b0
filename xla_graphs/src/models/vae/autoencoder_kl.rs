//! `AutoencoderKL`: `encode` gives the mean and log-variance of the latent distribution
//! (diffusers' `DiagonalGaussianDistribution`, before sampling or scaling), `decode` maps
//! unscaled latents back to images. Weight keys are the ones in `vae/` checkpoints.

use crate::models::blocks::ResnetBlock2D;
use crate::models::modules::{conv2d, Activation, Conv2d};
use crate::models::params::{ParamSpec, Params};
use crate::models::vae::decoder::Decoder;
use crate::models::vae::encoder::Encoder;
use crate::models::vae::AutoencoderKLConfig;
use crate::{DType, Graph, GraphError, Result, Shape, Tensor};

/// diffusers builds every VAE norm with this eps (not a config field).
const RESNET_EPS: f64 = 1e-6;
/// `DiagonalGaussianDistribution` clamps the log-variance to this range.
const LOGVAR_RANGE: (f64, f64) = (-30.0, 20.0);

/// The traced VAE for one config.
#[derive(Clone, Debug)]
pub struct AutoencoderKL {
    pub config: AutoencoderKLConfig,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl AutoencoderKL {
    /// Checks the config once, so tracing cannot fail on it later.
    pub fn new(config: AutoencoderKLConfig) -> Result<AutoencoderKL> {
        let c = &config;
        let bad = |reason: String| Err(GraphError::invalid("AutoencoderKL", reason));
        // diffusers' get_activation knows mish too; no SD VAE uses it.
        let act = match c.act_fn.as_str() {
            "silu" | "swish" | "gelu" | "relu" => Activation::from_name(&c.act_fn),
            _ => None,
        };
        let Some(act) = act else {
            return bad(format!(
                "act_fn {:?} is not supported (silu, swish, gelu, relu)",
                c.act_fn
            ));
        };
        let n = c.block_out_channels.len();
        if n == 0 || c.down_block_types.len() != n || c.up_block_types.len() != n {
            return bad(format!(
                "block_out_channels, down_block_types and up_block_types need one entry per \
                 level, got {}, {} and {}",
                n,
                c.down_block_types.len(),
                c.up_block_types.len()
            ));
        }
        if let Some(t) = c
            .down_block_types
            .iter()
            .find(|t| *t != "DownEncoderBlock2D")
        {
            return bad(format!(
                "down block type {t:?} is not supported (DownEncoderBlock2D)"
            ));
        }
        if let Some(t) = c.up_block_types.iter().find(|t| *t != "UpDecoderBlock2D") {
            return bad(format!(
                "up block type {t:?} is not supported (UpDecoderBlock2D)"
            ));
        }
        let groups = c.norm_num_groups;
        if groups == 0
            || c.block_out_channels
                .iter()
                .any(|&ch| ch == 0 || ch % groups != 0)
        {
            return bad(format!(
                "block_out_channels {:?} are not all divisible by norm_num_groups {groups}",
                c.block_out_channels
            ));
        }
        if c.in_channels == 0 || c.out_channels == 0 || c.latent_channels == 0 {
            return bad("in_channels, out_channels and latent_channels must be positive".into());
        }
        let resnet = ResnetBlock2D {
            groups: groups as i64,
            eps: RESNET_EPS,
            act,
            ..ResnetBlock2D::new(0, 0)
        };
        let channels: Vec<i64> = c.block_out_channels.iter().map(|&ch| ch as i64).collect();
        let encoder = Encoder {
            in_channels: c.in_channels as i64,
            out_channels: 2 * c.latent_channels as i64,
            block_out_channels: channels.clone(),
            layers_per_block: c.layers_per_block,
            resnet,
            mid_block_add_attention: c.mid_block_add_attention,
        };
        let decoder = Decoder {
            in_channels: c.latent_channels as i64,
            out_channels: c.out_channels as i64,
            block_out_channels: channels,
            layers_per_block: c.layers_per_block,
            resnet,
            mid_block_add_attention: c.mid_block_add_attention,
        };
        Ok(AutoencoderKL {
            config,
            encoder,
            decoder,
        })
    }

    /// `(mean, logvar)`, each `[B, latent_channels, H / f, W / f]` with `f` the
    /// `downscale_factor`, for `pixel_values` `[B, in_channels, H, W]` in [-1, 1]; `p` is the
    /// root view. Taps `encoder.down_blocks.<i>`, `encoder.mid_block` and `encoder`.
    pub fn encode(&self, p: &Params, pixel_values: &Tensor) -> Result<(Tensor, Tensor)> {
        let c = &self.config;
        check_nchw(pixel_values, c.in_channels, "pixel_values")?;
        let h = p.scope("encoder", |p| self.encoder.forward(p, pixel_values))?;
        let moments = if c.use_quant_conv {
            let ch = self.encoder.out_channels;
            conv2d(p, "quant_conv", &h, &Conv2d::new(ch, ch, 1))?
        } else {
            h
        };
        let latent = c.latent_channels as i64;
        let mean = moments.slice_axis(1, 0, latent)?;
        let logvar = moments.slice_axis(1, latent, 2 * latent)?;
        let g = p.graph();
        let (lo, hi) = LOGVAR_RANGE;
        let logvar = logvar.clamp(
            &g.scalar(lo, logvar.dtype())?,
            &g.scalar(hi, logvar.dtype())?,
        )?;
        Ok((mean, logvar))
    }

    /// `[B, latent_channels, h, w]` latents as `vae.decode` takes them (already divided by
    /// `scaling_factor`) -> images `[B, out_channels, h * f, w * f]`; `p` is the root view.
    /// Taps `post_quant_conv`, `decoder.mid_block` and `decoder.up_blocks.<i>`.
    pub fn decode(&self, p: &Params, latents: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        check_nchw(latents, c.latent_channels, "latents")?;
        let z = if c.use_post_quant_conv {
            let ch = c.latent_channels as i64;
            let z = conv2d(p, "post_quant_conv", latents, &Conv2d::new(ch, ch, 1))?;
            p.scope("post_quant_conv", |p| p.tap(&z));
            z
        } else {
            latents.clone()
        };
        p.scope("decoder", |p| self.decoder.forward(p, &z))
    }
}

impl AutoencoderKL {
    /// Every weight of the whole VAE (encoder, decoder and both quant convs) as one binding in
    /// `dtype` declares them, traced on a throwaway graph: what a checkpoint must hold when a
    /// program uses only one half.
    pub fn weight_specs(&self, dtype: DType) -> Result<Vec<ParamSpec>> {
        let g = Graph::new();
        let p = Params::new(&g, dtype);
        let f = self.config.downscale_factor() as i64;
        let image = Shape::new(dtype, &[1, self.config.in_channels as i64, f, f]);
        let latent = Shape::new(dtype, &[1, self.config.latent_channels as i64, 1, 1]);
        self.encode(&p, &p.input("pixel_values", image)?)?;
        self.decode(&p, &p.input("latents", latent)?)?;
        Ok(p.weights())
    }
}

fn check_nchw(x: &Tensor, channels: usize, name: &str) -> Result<()> {
    let d = x.dims();
    if d.len() != 4 || d[1] != channels as i64 || !x.dtype().is_float() {
        return Err(GraphError::invalid(
            "AutoencoderKL",
            format!(
                "{name} must be float [B, {channels}, H, W], got {}",
                x.shape()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> AutoencoderKLConfig {
        AutoencoderKLConfig {
            block_out_channels: vec![4, 6],
            down_block_types: vec!["DownEncoderBlock2D".into(); 2],
            up_block_types: vec!["UpDecoderBlock2D".into(); 2],
            layers_per_block: 1,
            norm_num_groups: 2,
            latent_channels: 3,
            ..AutoencoderKLConfig::v1_5()
        }
    }

    #[test]
    fn encode_and_decode_follow_the_config() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        p.record_taps();
        let vae = AutoencoderKL::new(tiny()).unwrap();
        let x = p
            .input("pixel_values", Shape::new(DType::BF16, &[2, 3, 10, 12]))
            .unwrap();
        let (mean, logvar) = vae.encode(&p, &x).unwrap();
        assert_eq!(mean.shape(), Shape::new(DType::BF16, &[2, 3, 5, 6]));
        assert_eq!(logvar.dims(), mean.dims());
        let y = vae.decode(&p, &mean).unwrap();
        assert_eq!(y.shape(), Shape::new(DType::BF16, &[2, 3, 10, 12]));
        let taps: Vec<String> = p.taps().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            taps,
            [
                "encoder.down_blocks.0",
                "encoder.down_blocks.1",
                "encoder.mid_block",
                "encoder",
                "post_quant_conv",
                "decoder.mid_block",
                "decoder.up_blocks.0",
                "decoder.up_blocks.1",
            ]
        );
        let specs = vae.weight_specs(DType::BF16).unwrap();
        assert_eq!(specs.len(), p.weights().len());
        let find = |k: &str| {
            specs
                .iter()
                .find(|s| s.name == k)
                .map(|s| s.checkpoint_dims())
        };
        assert_eq!(find("quant_conv.weight"), Some(vec![6, 6, 1, 1]));
        assert_eq!(find("encoder.conv_out.weight"), Some(vec![6, 6, 3, 3]));
        assert_eq!(
            find("encoder.down_blocks.1.resnets.0.conv_shortcut.weight"),
            Some(vec![6, 4, 1, 1])
        );
        assert_eq!(
            find("decoder.up_blocks.1.resnets.1.conv2.weight"),
            Some(vec![4, 4, 3, 3])
        );
        assert_eq!(
            find("decoder.up_blocks.0.upsamplers.0.conv.weight"),
            Some(vec![6, 6, 3, 3])
        );
        assert_eq!(find("decoder.up_blocks.1.upsamplers.0.conv.weight"), None);
        assert_eq!(
            find("decoder.mid_block.attentions.0.to_q.bias"),
            Some(vec![6])
        );
        assert!(g.to_stablehlo(&[&logvar, &y]).is_ok());
    }

    #[test]
    fn optional_parts_leave_their_weights_out() {
        let c = AutoencoderKLConfig {
            use_quant_conv: false,
            use_post_quant_conv: false,
            mid_block_add_attention: false,
            ..tiny()
        };
        let specs = AutoencoderKL::new(c)
            .unwrap()
            .weight_specs(DType::F32)
            .unwrap();
        assert!(specs
            .iter()
            .all(|s| !s.name.contains("quant_conv") && !s.name.contains("attentions")));
        assert!(specs
            .iter()
            .any(|s| s.name == "decoder.mid_block.resnets.1.conv1.weight"));
    }

    #[test]
    fn rejects_bad_configs_and_inputs() {
        let err = |c: AutoencoderKLConfig| AutoencoderKL::new(c).unwrap_err().to_string();
        assert!(err(AutoencoderKLConfig {
            act_fn: "mish".into(),
            ..tiny()
        })
        .contains("mish"));
        assert!(err(AutoencoderKLConfig {
            norm_num_groups: 4,
            ..tiny()
        })
        .contains("[4, 6]"));
        let mut c = tiny();
        c.up_block_types[1] = "AttnUpDecoderBlock2D".into();
        assert!(err(c).contains("AttnUpDecoderBlock2D"));
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let z = p
            .input("latents", Shape::new(DType::F32, &[1, 4, 8, 8]))
            .unwrap();
        let e = AutoencoderKL::new(tiny())
            .unwrap()
            .decode(&p, &z)
            .unwrap_err();
        assert!(
            e.to_string().contains("latents must be float [B, 3, H, W]"),
            "{e}"
        );
    }
}
