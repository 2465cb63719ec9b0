//! diffusers' `ResnetBlock2D` (`time_embedding_norm="default"`), shared by the UNet and the VAE:
//! norm1, act, conv1, plus the projected time embedding, norm2, act, conv2, and a 1x1
//! shortcut when the channel count changes; the sum is divided by `output_scale_factor`.

use crate::models::modules::{conv2d, group_norm, linear, Activation, Conv2d};
use crate::models::params::Params;
use crate::{GraphError, Result, Tensor};

/// One block's settings, named as diffusers' constructor arguments.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ResnetBlock2D {
    pub in_channels: i64,
    pub out_channels: i64,
    /// Width of the time embedding the block projects and adds (`temb_channels`); `None`
    /// binds no `time_emb_proj` (the VAE).
    pub temb_channels: Option<i64>,
    /// `groups` for norm1; norm2 uses `groups_out`, which diffusers defaults to `groups`.
    pub groups: i64,
    pub groups_out: Option<i64>,
    pub eps: f64,
    pub act: Activation,
    pub output_scale_factor: f64,
}

impl ResnetBlock2D {
    /// diffusers' defaults: no time embedding, 32 groups, eps 1e-6, silu, scale 1.
    pub fn new(in_channels: i64, out_channels: i64) -> ResnetBlock2D {
        ResnetBlock2D {
            in_channels,
            out_channels,
            temb_channels: None,
            groups: 32,
            groups_out: None,
            eps: 1e-6,
            act: Activation::Silu,
            output_scale_factor: 1.0,
        }
    }

    /// `x` `[B, in_channels, H, W]` -> `[B, out_channels, H, W]`; `p` is the block's view
    /// (`...resnets.<i>`). `temb` `[B, temb_channels]` is required exactly when
    /// `temb_channels` is set.
    pub fn forward(&self, p: &Params, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let (cin, cout) = (self.in_channels, self.out_channels);
        let h = group_norm(p, "norm1", x, self.groups, self.eps)?;
        let h = conv2d(p, "conv1", &self.act.apply(&h)?, &Conv2d::new(cin, cout, 3))?;
        let h = match (self.temb_channels, temb) {
            (Some(tc), Some(t)) => {
                let t = linear(p, "time_emb_proj", &self.act.apply(t)?, tc, cout, true)?;
                h.add(&t.broadcast_in_dim(&h.dims(), &[0, 1])?)?
            }
            (None, None) => h,
            (want, got) => {
                return Err(GraphError::invalid(
                    "ResnetBlock2D",
                    format!(
                        "{}: temb_channels is {want:?} but a time embedding was {}given",
                        p.prefix(),
                        if got.is_some() { "" } else { "not " }
                    ),
                ))
            }
        };
        let groups_out = self.groups_out.unwrap_or(self.groups);
        let h = group_norm(p, "norm2", &h, groups_out, self.eps)?;
        let h = conv2d(
            p,
            "conv2",
            &self.act.apply(&h)?,
            &Conv2d::new(cout, cout, 3),
        )?;
        let shortcut = if cin != cout {
            conv2d(p, "conv_shortcut", x, &Conv2d::new(cin, cout, 1))?
        } else {
            x.clone()
        };
        let y = shortcut.add(&h)?;
        if self.output_scale_factor == 1.0 {
            Ok(y)
        } else {
            y.mul_scalar(1.0 / self.output_scale_factor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Graph, Shape};

    #[test]
    fn binds_diffusers_keys_with_a_shortcut_and_time_embedding() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let x = p.input("x", Shape::new(DType::F32, &[2, 4, 6, 6])).unwrap();
        let temb = p.input("temb", Shape::new(DType::F32, &[2, 10])).unwrap();
        let block = ResnetBlock2D {
            temb_channels: Some(10),
            groups: 2,
            ..ResnetBlock2D::new(4, 8)
        };
        let y = p
            .scope("resnets.0", |p| block.forward(p, &x, Some(&temb)))
            .unwrap();
        assert_eq!(y.shape(), Shape::new(DType::F32, &[2, 8, 6, 6]));
        let weights: Vec<(String, Vec<i64>)> = p
            .weights()
            .into_iter()
            .map(|s| (s.name.clone(), s.checkpoint_dims()))
            .collect();
        let expect = [
            ("resnets.0.norm1.weight", vec![4]),
            ("resnets.0.norm1.bias", vec![4]),
            ("resnets.0.conv1.weight", vec![8, 4, 3, 3]),
            ("resnets.0.conv1.bias", vec![8]),
            ("resnets.0.time_emb_proj.weight", vec![8, 10]),
            ("resnets.0.time_emb_proj.bias", vec![8]),
            ("resnets.0.norm2.weight", vec![8]),
            ("resnets.0.norm2.bias", vec![8]),
            ("resnets.0.conv2.weight", vec![8, 8, 3, 3]),
            ("resnets.0.conv2.bias", vec![8]),
            ("resnets.0.conv_shortcut.weight", vec![8, 4, 1, 1]),
            ("resnets.0.conv_shortcut.bias", vec![8]),
        ];
        let expect: Vec<(String, Vec<i64>)> = expect
            .into_iter()
            .map(|(k, d)| (k.to_string(), d))
            .collect();
        assert_eq!(weights, expect);
        assert!(g.to_stablehlo(&[&y]).is_ok());
    }

    #[test]
    fn same_width_has_no_shortcut_and_a_missing_temb_is_an_error() {
        let g = Graph::new();
        let p = Params::new(&g, DType::BF16);
        let x = p
            .input("x", Shape::new(DType::BF16, &[1, 4, 3, 3]))
            .unwrap();
        let block = ResnetBlock2D {
            groups: 4,
            output_scale_factor: 2.0,
            ..ResnetBlock2D::new(4, 4)
        };
        let y = block.forward(&p, &x, None).unwrap();
        assert_eq!(y.shape(), x.shape());
        assert!(p.weights().iter().all(|s| !s.name.contains("shortcut")));
        let with_temb = ResnetBlock2D {
            temb_channels: Some(3),
            ..block
        };
        let err = p
            .scope("mid_block.resnets.1", |p| with_temb.forward(p, &x, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mid_block.resnets.1"), "{err}");
    }
}
