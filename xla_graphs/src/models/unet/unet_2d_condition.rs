//! `UNet2DConditionModel`: time embedding, conv_in, down blocks, mid block, up blocks with
//! skip connections, and the output norm and conv; predicts the noise (or v) for a latent
//! `sample` at `timestep` given the text encoder's states. Everything is read from the config;
//! weight keys are diffusers' (`down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k...`).

use crate::models::config_value::PerBlock;
use crate::models::modules::{conv2d, group_norm, Activation, Conv2d};
use crate::models::params::Params;
use crate::models::unet::block_settings::{BlockSettings, CrossAttnSettings};
use crate::models::unet::down_blocks::{self, DownBlock2D};
use crate::models::unet::embeddings::{TimestepEmbedding, Timesteps};
use crate::models::unet::mid_block::UNetMidBlock2DCrossAttn;
use crate::models::unet::up_blocks::{self, UpBlock2D};
use crate::models::unet::UNet2DConditionConfig;
use crate::{DType, GraphError, Result, Tensor};

/// The traced UNet for one config, with every block's arguments worked out once.
#[derive(Clone, Debug)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    time_proj: Timesteps,
    time_embedding: TimestepEmbedding,
    /// SDXL's `add_time_proj` and `add_embedding` (`addition_embed_type: "text_time"`).
    text_time: Option<(Timesteps, TimestepEmbedding)>,
    /// `time_embedding_act_fn`, applied to the embedding before the blocks see it.
    time_embed_act: Option<Activation>,
    down_blocks: Vec<DownBlock2D>,
    mid_block: Option<UNetMidBlock2DCrossAttn>,
    up_blocks: Vec<UpBlock2D>,
    act: Activation,
}

fn invalid(reason: String) -> GraphError {
    GraphError::Invalid {
        what: "UNet2DConditionModel",
        reason,
    }
}

fn activation(field: &str, name: &str) -> Result<Activation> {
    Activation::from_name(name).ok_or_else(|| {
        invalid(format!(
            "{field} {name:?} is not supported (silu, gelu, relu)"
        ))
    })
}

impl UNet2DConditionModel {
    /// Checks the config and derives each block's arguments as diffusers' constructor does,
    /// so tracing cannot fail on the config later.
    pub fn new(config: UNet2DConditionConfig) -> Result<UNet2DConditionModel> {
        let c = &config;
        let plan = c.block_plan().map_err(invalid)?;
        if c.only_cross_attention
            .expand(c.block_out_channels.len())
            .is_none_or(|v| v.iter().any(|&o| o))
        {
            return Err(invalid("only_cross_attention is not supported".into()));
        }
        for (field, k) in [
            ("conv_in_kernel", c.conv_in_kernel),
            ("conv_out_kernel", c.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return Err(invalid(format!("{field} {k} must be odd")));
            }
        }
        let act = activation("act_fn", &c.act_fn)?;
        let optional_act = |field: &str, name: &Option<String>| {
            name.as_deref().map(|n| activation(field, n)).transpose()
        };
        let channels: Vec<i64> = c.block_out_channels.iter().map(|&n| n as i64).collect();
        let n = channels.len();
        let time_embed_dim = c.time_embedding_dim.unwrap_or(c.block_out_channels[0] * 4) as i64;
        let settings = BlockSettings {
            temb_channels: time_embed_dim,
            groups: c.norm_num_groups as i64,
            eps: c.norm_eps,
            act,
            output_scale_factor: 1.0,
        };
        let cross = |i: usize, depths: &PerBlock<usize>| CrossAttnSettings {
            heads: plan.heads[i] as i64,
            transformer_layers: depths.clone(),
            cross_attention_dim: plan.cross_attention_dim[i] as i64,
            use_linear_projection: c.use_linear_projection,
            upcast_attention: c.upcast_attention,
        };
        let mut down = Vec::with_capacity(n);
        for (i, kind) in c.down_block_types.iter().enumerate() {
            down.push(DownBlock2D {
                in_channels: if i == 0 { channels[0] } else { channels[i - 1] },
                out_channels: channels[i],
                num_layers: plan.layers_per_block[i],
                cross_attention: down_blocks::has_cross_attention(kind)?
                    .then(|| cross(i, &plan.transformer_layers[i])),
                add_downsample: i + 1 < n,
                downsample_padding: c.downsample_padding as i64,
                settings,
            });
        }
        let mid = match c.mid_block_type.as_deref() {
            Some("UNetMidBlock2DCrossAttn") => Some(UNetMidBlock2DCrossAttn {
                channels: channels[n - 1],
                num_layers: 1,
                cross_attention: cross(n - 1, &plan.transformer_layers[n - 1]),
                settings: BlockSettings {
                    output_scale_factor: c.mid_block_scale_factor,
                    ..settings
                },
            }),
            None => None,
            Some(other) => {
                return Err(invalid(format!(
                    "mid_block_type {other:?} is not supported (UNetMidBlock2DCrossAttn)"
                )))
            }
        };
        // Up block i mirrors down block n-1-i: per-block lists are read reversed.
        let mut up = Vec::with_capacity(n);
        for (i, kind) in c.up_block_types.iter().enumerate() {
            let r = n - 1 - i;
            up.push(UpBlock2D {
                in_channels: channels[r.saturating_sub(1)],
                prev_output_channel: if i == 0 {
                    channels[n - 1]
                } else {
                    channels[r + 1]
                },
                out_channels: channels[r],
                num_layers: plan.layers_per_block[r] + 1,
                cross_attention: up_blocks::has_cross_attention(kind)?
                    .then(|| cross(r, &plan.up_transformer_layers[i])),
                add_upsample: i + 1 < n,
                settings,
            });
        }
        Ok(UNet2DConditionModel {
            time_proj: Timesteps {
                num_channels: c.block_out_channels[0],
                flip_sin_to_cos: c.flip_sin_to_cos,
                downscale_freq_shift: c.freq_shift,
            },
            time_embedding: TimestepEmbedding {
                in_channels: channels[0],
                time_embed_dim,
                act,
                post_act: optional_act("timestep_post_act", &c.timestep_post_act)?,
            },
            text_time: plan.text_time.map(|t| {
                (
                    Timesteps {
                        num_channels: t.time_embed_dim,
                        flip_sin_to_cos: c.flip_sin_to_cos,
                        downscale_freq_shift: c.freq_shift,
                    },
                    // diffusers builds add_embedding with TimestepEmbedding's default silu,
                    // whatever the config's act_fn.
                    TimestepEmbedding {
                        in_channels: t.input_dim as i64,
                        time_embed_dim,
                        act: Activation::Silu,
                        post_act: None,
                    },
                )
            }),
            time_embed_act: optional_act("time_embedding_act_fn", &c.time_embedding_act_fn)?,
            down_blocks: down,
            mid_block: mid,
            up_blocks: up,
            act,
            config,
        })
    }

    /// The factor the latent height and width must be multiples of: diffusers resizes the
    /// upsampled states to the skip's size otherwise, which this UNet does not trace.
    pub fn size_multiple(&self) -> i64 {
        1 << self.up_blocks.iter().filter(|b| b.add_upsample).count()
    }

    /// The predicted noise (or v) `[B, out_channels, H, W]` for `sample` `[B, in_channels, H,
    /// W]`, `timestep` `[B]` or a scalar (any float or integer dtype) and
    /// `encoder_hidden_states` `[B, L, cross_attention_dim]`, in the compute dtype; `p` is the
    /// root view. Activations are tapped as `time_proj`, `time_embedding`, `conv_in`,
    /// `down_blocks.<i>`, `mid_block` and `up_blocks.<i>` (and `add_embedding` with SDXL's
    /// conditioning, which `added` must then hold: see
    /// [`UNet2DConditionConfig::text_time_ids`]).
    pub fn forward(
        &self,
        p: &Params,
        sample: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        added: Option<&TextTimeConditioning>,
    ) -> Result<Tensor> {
        let c = &self.config;
        let dims = sample.dims();
        let multiple = self.size_multiple();
        if dims.len() != 4
            || dims[1] != c.in_channels as i64
            || dims[2] % multiple != 0
            || dims[3] % multiple != 0
        {
            return Err(sample.graph().op_error(
                "UNet2DConditionModel",
                &[sample],
                format!(
                    "sample must be [B, {}, H, W] with H and W multiples of {multiple}",
                    c.in_channels
                ),
            ));
        }
        let b = dims[0];
        let timestep = match timestep.rank() {
            0 => timestep.broadcast_in_dim(&[b], &[])?,
            _ => timestep.clone(),
        };
        if timestep.dims() != [b] {
            return Err(sample.graph().op_error(
                "UNet2DConditionModel",
                &[sample, &timestep],
                format!("timestep must be a scalar or [{b}]"),
            ));
        }
        let dtype = p.dtype();
        let to_compute = |t: &Tensor| match t.dtype() == dtype {
            true => Ok(t.clone()),
            false => t.convert(dtype),
        };
        let context = to_compute(encoder_hidden_states)?;
        let mut sample = to_compute(sample)?;
        if c.center_input_sample {
            sample = sample.mul_scalar(2.0)?.add_scalar(-1.0)?;
        }

        let t_emb = p.scope("time_proj", |p| {
            let t = self.time_proj.forward(&timestep)?;
            p.tap(&t);
            to_compute(&t)
        })?;
        let mut emb = p.scope("time_embedding", |p| {
            let e = self.time_embedding.forward(p, &t_emb)?;
            p.tap(&e);
            Ok::<_, GraphError>(e)
        })?;
        match (&self.text_time, added) {
            (Some((proj, embedding)), Some(added)) => {
                let aug = tapped(p, "add_embedding", |p| {
                    self.aug_embedding(p, proj, embedding, b, added)
                })?;
                emb = emb.add(&aug)?;
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(invalid(
                    "addition_embed_type text_time needs text_embeds and time_ids".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "text_embeds and time_ids given to a UNet without text_time conditioning"
                        .into(),
                ))
            }
        }
        if let Some(act) = self.time_embed_act {
            emb = act.apply(&emb)?;
        }

        let conv_in = Conv2d::new(
            c.in_channels as i64,
            c.block_out_channels[0] as i64,
            c.conv_in_kernel as i64,
        );
        let mut h = conv2d(p, "conv_in", &sample, &conv_in)?;
        p.scope("conv_in", |p| p.tap(&h));
        let mut skips = vec![h.clone()];
        for (i, block) in self.down_blocks.iter().enumerate() {
            // diffusers' down blocks return (output, skip states); the reference taps the first.
            let (out, states) = p.scope(format!("down_blocks.{i}"), |p| {
                let (out, states) = block.forward(p, &h, &emb, &context)?;
                p.tap(&out);
                Ok::<_, GraphError>((out, states))
            })?;
            h = out;
            skips.extend(states);
        }
        if let Some(mid) = &self.mid_block {
            h = tapped(p, "mid_block", |p| mid.forward(p, &h, &emb, &context))?;
        }
        for (i, block) in self.up_blocks.iter().enumerate() {
            let taken = skips.split_off(skips.len() - block.num_layers.min(skips.len()));
            h = tapped(p, &format!("up_blocks.{i}"), |p| {
                block.forward(p, &h, &taken, &emb, &context)
            })?;
        }

        let h = group_norm(p, "conv_norm_out", &h, c.norm_num_groups as i64, c.norm_eps)?;
        let conv_out = Conv2d::new(
            c.block_out_channels[0] as i64,
            c.out_channels as i64,
            c.conv_out_kernel as i64,
        );
        conv2d(p, "conv_out", &self.act.apply(&h)?, &conv_out)
    }
}

impl UNet2DConditionModel {
    /// `add_embedding(concat(text_embeds, add_time_proj(time_ids).reshape(B, -1)))`, in the
    /// compute dtype, as diffusers' `get_aug_embed` for `text_time`; `p` is the view at
    /// `add_embedding`.
    fn aug_embedding(
        &self,
        p: &Params,
        proj: &Timesteps,
        embedding: &TimestepEmbedding,
        b: i64,
        added: &TextTimeConditioning,
    ) -> Result<Tensor> {
        let (text, ids) = (&added.text_embeds, &added.time_ids);
        let tdims = text.dims();
        let idims = ids.dims();
        let per_id = proj.num_channels as i64;
        let width =
            tdims.get(1).copied().unwrap_or(0) + idims.get(1).copied().unwrap_or(0) * per_id;
        if tdims.len() != 2
            || idims.len() != 2
            || tdims[0] != b
            || idims[0] != b
            || width != embedding.in_channels
        {
            return Err(text.graph().op_error(
                "UNet2DConditionModel",
                &[text, ids],
                format!(
                    "text_embeds [{b}, P] and time_ids [{b}, N] must give P + N * {per_id} = {} \
                     (projection_class_embeddings_input_dim)",
                    embedding.in_channels
                ),
            ));
        }
        let n = idims[1];
        let features = proj
            .forward(&ids.reshape(&[b * n])?)?
            .reshape(&[b, n * per_id])?;
        let dtype = p.dtype();
        let text = match text.dtype() == DType::F32 {
            true => text.clone(),
            false => text.convert(DType::F32)?,
        };
        let cat = features.graph().concatenate(&[text, features.clone()], 1)?;
        let cat = match dtype == DType::F32 {
            true => cat,
            false => cat.convert(dtype)?,
        };
        embedding.forward(p, &cat)
    }
}

/// SDXL's added conditioning: text_encoder_2's projected pooled output `text_embeds` `[B, P]`
/// and the time ids `[B, N]` (original height and width, crop top and left, target height and
/// width for SDXL base).
#[derive(Clone, Debug)]
pub struct TextTimeConditioning {
    pub text_embeds: Tensor,
    pub time_ids: Tensor,
}

/// Runs `f` in the view `name` and taps its result there.
fn tapped(p: &Params, name: &str, f: impl FnOnce(&Params) -> Result<Tensor>) -> Result<Tensor> {
    p.scope(name, |p| {
        let out = f(p)?;
        p.tap(&out);
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Graph, Shape};

    /// Three levels, SD 2.x style: per-block heads, linear projections, one layer per block.
    fn tiny() -> UNet2DConditionConfig {
        let mut c = UNet2DConditionConfig::v2_1();
        c.block_out_channels = vec![8, 16, 16];
        c.down_block_types = [
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ]
        .map(String::from)
        .to_vec();
        c.up_block_types = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
            .map(String::from)
            .to_vec();
        c.attention_head_dim = PerBlock::Each(vec![2, 4, 4]);
        c.layers_per_block = PerBlock::One(1);
        c.norm_num_groups = 4;
        c.cross_attention_dim = PerBlock::One(12);
        c
    }

    fn trace(c: UNet2DConditionConfig, dtype: DType, hw: i64) -> Result<(Graph, Params, Tensor)> {
        let g = Graph::new();
        let p = Params::new(&g, dtype);
        let x = p.input("sample", Shape::new(DType::F32, &[2, 4, hw, hw]))?;
        let t = p.input("timestep", Shape::new(DType::I32, &[]))?;
        let ctx = p.input("ctx", Shape::new(DType::F32, &[2, 7, 12]))?;
        p.record_taps();
        let y = UNet2DConditionModel::new(c)?.forward(&p, &x, &t, &ctx, None)?;
        Ok((g, p, y))
    }

    #[test]
    fn binds_diffusers_keys_and_skip_widths() {
        let (g, p, y) = trace(tiny(), DType::F32, 8).unwrap();
        assert_eq!(y.shape(), Shape::new(DType::F32, &[2, 4, 8, 8]));
        let w: Vec<(String, Vec<i64>)> = p
            .weights()
            .into_iter()
            .map(|s| (s.name.clone(), s.checkpoint_dims()))
            .collect();
        let find = |k: &str| w.iter().find(|(n, _)| n == k).map(|(_, d)| d.clone());
        assert_eq!(w[0].0, "time_embedding.linear_1.weight");
        assert_eq!(find("time_embedding.linear_1.weight"), Some(vec![32, 8]));
        assert_eq!(find("conv_in.weight"), Some(vec![8, 4, 3, 3]));
        // Up block 0 concatenates the 16-wide level-2 output with skips of 16, 16, 16.
        assert_eq!(
            find("up_blocks.0.resnets.0.conv1.weight"),
            Some(vec![16, 32, 3, 3])
        );
        // Up block 2's last resnet takes conv_in's 8 channels as its skip.
        assert_eq!(
            find("up_blocks.2.resnets.1.conv1.weight"),
            Some(vec![8, 16, 3, 3])
        );
        let attn = "up_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight";
        assert_eq!(find(attn), Some(vec![16, 16]));
        assert_eq!(
            find("mid_block.resnets.1.time_emb_proj.weight"),
            Some(vec![16, 32])
        );
        assert_eq!(
            find("down_blocks.1.downsamplers.0.conv.weight"),
            Some(vec![16, 16, 3, 3])
        );
        assert_eq!(find("up_blocks.2.upsamplers.0.conv.weight"), None);
        assert_eq!(w.last().unwrap().0, "conv_out.bias");
        let taps: Vec<String> = p.taps().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            taps,
            [
                "time_proj",
                "time_embedding",
                "conv_in",
                "down_blocks.0",
                "down_blocks.1",
                "down_blocks.2",
                "mid_block",
                "up_blocks.0",
                "up_blocks.1",
                "up_blocks.2"
            ]
        );
        assert!(g.to_stablehlo(&[&y]).is_ok());
    }

    #[test]
    fn bf16_keeps_time_features_and_statistics_in_f32() {
        let (g, _, y) = trace(tiny(), DType::BF16, 8).unwrap();
        assert_eq!(y.dtype(), DType::BF16);
        let text = g.to_stablehlo(&[&y]).unwrap();
        assert!(text.contains("tensor<2x4xf32>"), "time features in f32");
        assert!(
            text.contains("tensor<2x4x128xf32>"),
            "group norm statistics in f32"
        );
    }

    #[test]
    fn rejects_what_it_does_not_implement() {
        let err = trace(tiny(), DType::F32, 6).unwrap_err();
        assert!(err.to_string().contains("multiples of 4"), "{err}");
        let mut c = tiny();
        c.down_block_types[2] = "AttnDownBlock2D".into();
        let err = UNet2DConditionModel::new(c).unwrap_err().to_string();
        assert!(err.contains("AttnDownBlock2D"), "{err}");
        let mut c = tiny();
        c.only_cross_attention = PerBlock::One(true);
        assert!(UNet2DConditionModel::new(c).is_err());
        let mut c = tiny();
        c.act_fn = "mish".into();
        let err = UNet2DConditionModel::new(c).unwrap_err().to_string();
        assert!(err.contains("act_fn \"mish\""), "{err}");
        let mut c = tiny();
        c.mid_block_type = None;
        let (_, p, _) = trace(c, DType::F32, 8).unwrap();
        assert!(p.weights().iter().all(|s| !s.name.starts_with("mid_block")));
    }
}
