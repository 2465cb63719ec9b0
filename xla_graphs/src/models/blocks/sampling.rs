//! diffusers' `Downsample2D` and `Upsample2D` with `use_conv=True` (the only form Stable
//! Diffusion uses); each binds its conv at `<view>.conv`, where the view is
//! `...downsamplers.0` or `...upsamplers.0`.

use crate::models::modules::{conv2d, Conv2d};
use crate::models::params::Params;
use crate::{nn, Result, Tensor};

/// A 3x3 stride-2 conv halving H and W.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Downsample2D {
    pub channels: i64,
    pub out_channels: i64,
    /// The conv's `padding`: the UNet's `downsample_padding` (1). diffusers' VAE encoder
    /// passes 0, and then Downsample2D pads right and bottom by one first, so an even size
    /// halves exactly rather than rounding down.
    pub padding: i64,
}

impl Downsample2D {
    /// `[B, channels, H, W]` -> `[B, out_channels, H', W']`.
    pub fn forward(&self, p: &Params, x: &Tensor) -> Result<Tensor> {
        let pad = match self.padding {
            0 => (0, 1),
            n => (n, n),
        };
        let c = Conv2d {
            stride: 2,
            padding: [pad; 2],
            ..Conv2d::new(self.channels, self.out_channels, 3)
        };
        conv2d(p, "conv", x, &c)
    }
}

/// Nearest-neighbour 2x, then a 3x3 conv.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upsample2D {
    pub channels: i64,
    pub out_channels: i64,
}

impl Upsample2D {
    /// `[B, channels, H, W]` -> `[B, out_channels, 2H, 2W]`.
    pub fn forward(&self, p: &Params, x: &Tensor) -> Result<Tensor> {
        let up = nn::upsample_nearest_2x(x)?;
        conv2d(
            p,
            "conv",
            &up,
            &Conv2d::new(self.channels, self.out_channels, 3),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DType, Graph, Shape};

    #[test]
    fn shapes_and_keys_follow_diffusers() {
        let g = Graph::new();
        let p = Params::new(&g, DType::F32);
        let x = p.input("x", Shape::new(DType::F32, &[2, 4, 8, 8])).unwrap();
        let vae = Downsample2D {
            channels: 4,
            out_channels: 4,
            padding: 0,
        };
        let unet = Downsample2D { padding: 1, ..vae };
        let a = p
            .scope("down_blocks.0.downsamplers.0", |p| vae.forward(p, &x))
            .unwrap();
        let b = p
            .scope("down_blocks.1.downsamplers.0", |p| unet.forward(p, &x))
            .unwrap();
        assert_eq!(a.dims(), vec![2, 4, 4, 4]);
        assert_eq!(b.dims(), vec![2, 4, 4, 4]);
        let up = Upsample2D {
            channels: 4,
            out_channels: 6,
        };
        let u = p
            .scope("up_blocks.0.upsamplers.0", |p| up.forward(p, &a))
            .unwrap();
        assert_eq!(u.dims(), vec![2, 6, 8, 8]);
        let names: Vec<String> = p.weights().into_iter().map(|s| s.name).collect();
        assert_eq!(names[0], "down_blocks.0.downsamplers.0.conv.weight");
        assert_eq!(names[4], "up_blocks.0.upsamplers.0.conv.weight");
        // diffusers on an odd size: the (0, 1) pad then no padding gives (9 + 1 - 3) / 2 + 1.
        let odd = p
            .input("odd", Shape::new(DType::F32, &[1, 4, 9, 9]))
            .unwrap();
        assert_eq!(vae.forward(&p, &odd).unwrap().dims(), vec![1, 4, 4, 4]);
    }
}
