//! The UNet's time conditioning: `Timesteps` (sinusoidal features of the timestep, as
//! diffusers' `get_timestep_embedding` computes them) and `TimestepEmbedding` (linear_1, act,
//! linear_2).

use crate::models::modules::{linear, Activation};
use crate::models::params::Params;
use crate::{DType, GraphError, Result, Tensor};

/// `get_timestep_embedding`'s `max_period`.
const MAX_PERIOD: f64 = 10000.0;

/// diffusers' `Timesteps(num_channels, flip_sin_to_cos, downscale_freq_shift)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timesteps {
    pub num_channels: usize,
    pub flip_sin_to_cos: bool,
    pub downscale_freq_shift: f64,
}

impl Timesteps {
    /// The frequencies `exp(-ln(max_period) * i / (half - shift))`, rounded as torch computes
    /// them in f32: the product and quotient in f32, then exp (correctly rounded here; torch's
    /// vectorised exp is off by an ulp on ~1% of entries). At t = 999 an ulp of a frequency
    /// moves a sine by up to 6e-5, so an f64 table would not match diffusers.
    pub fn frequencies(&self) -> Vec<f32> {
        let half = self.num_channels / 2;
        let scale = -(MAX_PERIOD.ln()) as f32;
        let denominator = (half as f64 - self.downscale_freq_shift) as f32;
        (0..half)
            .map(|i| {
                let exponent = scale * i as f32 / denominator;
                (exponent as f64).exp() as f32
            })
            .collect()
    }

    /// `timesteps` `[B]` (any float or integer dtype) -> `[B, num_channels]` in f32, whatever
    /// the compute dtype: diffusers always computes these in f32.
    pub fn forward(&self, timesteps: &Tensor) -> Result<Tensor> {
        if timesteps.rank() != 1 {
            return Err(timesteps.graph().op_error(
                "Timesteps",
                &[timesteps],
                "timesteps must be one-dimensional [B]".into(),
            ));
        }
        if self.num_channels < 2 {
            return Err(GraphError::invalid(
                "Timesteps",
                format!("num_channels {} leaves no frequencies", self.num_channels),
            ));
        }
        let g = timesteps.graph();
        let b = timesteps.dims()[0];
        let half = (self.num_channels / 2) as i64;
        let t = match timesteps.dtype() {
            DType::F32 => timesteps.clone(),
            _ => timesteps.convert(DType::F32)?,
        };
        let freqs = g
            .constant_vec(&[half], self.frequencies())?
            .broadcast_in_dim(&[b, half], &[1])?;
        let args = t.broadcast_in_dim(&[b, half], &[0])?.multiply(&freqs)?;
        let (sin, cos) = (args.sine()?, args.cosine()?);
        let halves = if self.flip_sin_to_cos {
            [cos, sin]
        } else {
            [sin, cos]
        };
        let emb = g.concatenate(&halves, 1)?;
        if self.num_channels % 2 == 1 {
            let zero = g.scalar(0.0, DType::F32)?;
            return emb.pad(&zero, &[0, 0], &[0, 1], &[0, 0]);
        }
        Ok(emb)
    }
}

/// diffusers' `TimestepEmbedding(in_channels, time_embed_dim, act_fn, post_act_fn)` without
/// `cond_proj` (no SD config sets `time_cond_proj_dim`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimestepEmbedding {
    pub in_channels: i64,
    pub time_embed_dim: i64,
    pub act: Activation,
    pub post_act: Option<Activation>,
}

impl TimestepEmbedding {
    /// `[B, in_channels]` -> `[B, time_embed_dim]`; `p` is the view at `time_embedding`.
    pub fn forward(&self, p: &Params, sample: &Tensor) -> Result<Tensor> {
        let h = linear(
            p,
            "linear_1",
            sample,
            self.in_channels,
            self.time_embed_dim,
            true,
        )?;
        let h = linear(
            p,
            "linear_2",
            &self.act.apply(&h)?,
            self.time_embed_dim,
            self.time_embed_dim,
            true,
        )?;
        match self.post_act {
            Some(act) => act.apply(&h),
            None => Ok(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, Shape};

    #[test]
    fn frequencies_follow_get_timestep_embedding() {
        let t = Timesteps {
            num_channels: 8,
            flip_sin_to_cos: true,
            downscale_freq_shift: 0.0,
        };
        let f = t.frequencies();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0], 1.0);
        // exp(-ln(10000) * 2 / 4) = 10000^-0.5
        assert!((f[2] as f64 - 0.01).abs() < 1e-9, "{f:?}");
        let shifted = Timesteps {
            downscale_freq_shift: 1.0,
            ..t
        };
        // half - shift = 3: the last frequency reaches 1 / max_period.
        assert!((shifted.frequencies()[3] as f64 - 1e-4).abs() < 1e-10);
    }

    #[test]
    fn features_are_f32_and_odd_widths_are_padded() {
        let g = Graph::new();
        let ts = g.parameter("t", Shape::new(DType::I32, &[3])).unwrap();
        let t = Timesteps {
            num_channels: 7,
            flip_sin_to_cos: false,
            downscale_freq_shift: 1.0,
        };
        let y = t.forward(&ts).unwrap();
        assert_eq!(y.shape(), Shape::new(DType::F32, &[3, 7]));
        let p = Params::new(&g, DType::BF16);
        let e = TimestepEmbedding {
            in_channels: 7,
            time_embed_dim: 12,
            act: Activation::Silu,
            post_act: None,
        };
        let emb = p
            .scope("time_embedding", |p| {
                e.forward(p, &y.convert(DType::BF16).unwrap())
            })
            .unwrap();
        assert_eq!(emb.shape(), Shape::new(DType::BF16, &[3, 12]));
        let names: Vec<String> = p.weights().into_iter().map(|s| s.name).collect();
        assert_eq!(names[0], "time_embedding.linear_1.weight");
        assert_eq!(names[3], "time_embedding.linear_2.bias");
        let bad = g.parameter("t2", Shape::new(DType::F32, &[3, 1])).unwrap();
        assert!(t.forward(&bad).is_err());
    }
}
