//! Bounds on the model configs a folder may declare, checked when it is opened: every size
//! positive where it divides or counts, and none beyond what any real model uses by orders of
//! magnitude, so that a hostile or mistyped `config.json` (`norm_num_groups: 0`,
//! `num_hidden_layers: 100000000`, a 4-billion-channel block) is one line naming the field,
//! not a division by zero, an allocation abort or an hours-long trace.

use std::path::Path;

use anyhow::{bail, Result};
use xla_graphs::models::clip::CLIPTextConfig;
use xla_graphs::models::config_value::{LayerDepths, PerBlock};
use xla_graphs::models::unet::UNet2DConditionConfig;
use xla_graphs::models::vae::AutoencoderKLConfig;

/// Widths (channels, hidden sizes): SDXL's largest is 1280 (5120 in an MLP).
const MAX_WIDTH: usize = 1 << 16;
/// Layer counts, heads, groups, blocks.
const MAX_COUNT: usize = 1024;
const MAX_VOCAB: usize = 1 << 22;

fn check(file: &Path, field: &str, v: usize, min: usize, max: usize) -> Result<()> {
    if v < min || v > max {
        bail!(
            "{}: {field} is {v}; it must be between {min} and {max}",
            file.display()
        );
    }
    Ok(())
}

fn each(values: &PerBlock<usize>) -> Vec<usize> {
    match values {
        PerBlock::One(v) => vec![*v],
        PerBlock::Each(vs) => vs.clone(),
    }
}

pub fn check_clip(file: &Path, c: &CLIPTextConfig) -> Result<()> {
    check(file, "vocab_size", c.vocab_size, 1, MAX_VOCAB)?;
    check(file, "hidden_size", c.hidden_size, 1, MAX_WIDTH)?;
    check(
        file,
        "intermediate_size",
        c.intermediate_size,
        1,
        4 * MAX_WIDTH,
    )?;
    check(file, "num_hidden_layers", c.num_hidden_layers, 1, MAX_COUNT)?;
    check(
        file,
        "num_attention_heads",
        c.num_attention_heads,
        1,
        MAX_COUNT,
    )?;
    check(
        file,
        "max_position_embeddings",
        c.max_position_embeddings,
        1,
        1 << 16,
    )?;
    check(file, "projection_dim", c.projection_dim, 1, MAX_WIDTH)
}

pub fn check_unet(file: &Path, c: &UNet2DConditionConfig) -> Result<()> {
    check(
        file,
        "block_out_channels (blocks)",
        c.block_out_channels.len(),
        1,
        16,
    )?;
    for &ch in &c.block_out_channels {
        check(file, "block_out_channels", ch, 1, MAX_WIDTH)?;
    }
    check(file, "in_channels", c.in_channels, 1, MAX_COUNT)?;
    check(file, "out_channels", c.out_channels, 1, MAX_COUNT)?;
    check(file, "norm_num_groups", c.norm_num_groups, 1, MAX_COUNT)?;
    for v in each(&c.layers_per_block) {
        check(file, "layers_per_block", v, 1, MAX_COUNT)?;
    }
    for v in each(&c.cross_attention_dim) {
        check(file, "cross_attention_dim", v, 1, MAX_WIDTH)?;
    }
    for v in each(&c.attention_head_dim) {
        check(file, "attention_head_dim", v, 1, MAX_WIDTH)?;
    }
    if let Some(h) = &c.num_attention_heads {
        for v in each(h) {
            check(file, "num_attention_heads", v, 1, MAX_COUNT)?;
        }
    }
    let depths: Vec<usize> = match &c.transformer_layers_per_block {
        LayerDepths::One(v) => vec![*v],
        LayerDepths::Each(blocks) => blocks.iter().flat_map(each).collect(),
    };
    for v in depths {
        check(file, "transformer_layers_per_block", v, 1, MAX_COUNT)?;
    }
    for (field, v) in [
        ("sample_size", c.sample_size),
        ("time_embedding_dim", c.time_embedding_dim),
        ("addition_time_embed_dim", c.addition_time_embed_dim),
        (
            "projection_class_embeddings_input_dim",
            c.projection_class_embeddings_input_dim,
        ),
    ] {
        if let Some(v) = v {
            check(file, field, v, 1, MAX_WIDTH)?;
        }
    }
    check(file, "conv_in_kernel", c.conv_in_kernel, 1, 15)?;
    check(file, "conv_out_kernel", c.conv_out_kernel, 1, 15)
}

pub fn check_vae(file: &Path, c: &AutoencoderKLConfig) -> Result<()> {
    check(
        file,
        "block_out_channels (blocks)",
        c.block_out_channels.len(),
        1,
        16,
    )?;
    for &ch in &c.block_out_channels {
        check(file, "block_out_channels", ch, 1, MAX_WIDTH)?;
    }
    check(file, "in_channels", c.in_channels, 1, MAX_COUNT)?;
    check(file, "out_channels", c.out_channels, 1, MAX_COUNT)?;
    check(file, "latent_channels", c.latent_channels, 1, MAX_COUNT)?;
    check(file, "layers_per_block", c.layers_per_block, 1, MAX_COUNT)?;
    check(file, "norm_num_groups", c.norm_num_groups, 1, MAX_COUNT)?;
    if !(c.scaling_factor.is_finite() && c.scaling_factor > 0.0) {
        bail!(
            "{}: scaling_factor is {}; it must be a positive number",
            file.display(),
            c.scaling_factor
        );
    }
    Ok(())
}
