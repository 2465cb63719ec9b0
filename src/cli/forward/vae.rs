//! `forward --component vae_encoder`: `pixel_values` [B, C, H, W] -> `mean`, `logvar`
//! [B, latent, H / f, W / f]; `--component vae_decoder`: `latents` [B, latent, h, w] (unscaled,
//! as `vae.decode` takes them) -> `sample` [B, C, h * f, w * f].

use anyhow::{bail, Result};
use xla_graphs::models::params::{ParamKind, Params};
use xla_graphs::models::vae::AutoencoderKL;
use xla_graphs::{DType, Graph, Shape, Tensor};

use super::{HostInput, Prepared};
use crate::model_folder::ModelFolder;
use crate::tensor_file::TensorFile;

const WEIGHTS: (&str, &str) = ("vae", "diffusion_pytorch_model");

pub(crate) fn prepare_encoder(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<Prepared> {
    let model = AutoencoderKL::new(folder.vae.clone())?;
    let (p, pixel_values, host) =
        image_input(inputs, "pixel_values", model.config.in_channels, dtype)?;
    if debug {
        p.record_taps();
    }
    let (mean, logvar) = model.encode(&p, &pixel_values)?;
    let outputs = vec![("mean".to_string(), mean), ("logvar".to_string(), logvar)];
    part_of(
        &model,
        Prepared::new(&p, with_taps(&p, outputs), vec![host], WEIGHTS)?,
    )
}

pub(crate) fn prepare_decoder(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<Prepared> {
    let model = AutoencoderKL::new(folder.vae.clone())?;
    let (p, latents, host) = image_input(inputs, "latents", model.config.latent_channels, dtype)?;
    if debug {
        p.record_taps();
    }
    let sample = model.decode(&p, &latents)?;
    let outputs = vec![("sample".to_string(), sample)];
    part_of(
        &model,
        Prepared::new(&p, with_taps(&p, outputs), vec![host], WEIGHTS)?,
    )
}

/// Marks `prepared` as using half of the VAE's checkpoint, which is checked whole.
fn part_of(model: &AutoencoderKL, prepared: Prepared) -> Result<Prepared> {
    let dtype = prepared
        .specs
        .iter()
        .find(|s| s.kind == ParamKind::Weight)
        .map_or(DType::F32, |s| s.shape.dtype);
    Ok(Prepared {
        checkpoint: Some(model.weight_specs(dtype)?),
        ..prepared
    })
}

/// Reads float `[B, channels, H, W]` input `name` (f32, f16 or bf16 in the file), declares it
/// as an f32 argument and returns it in the compute dtype.
fn image_input(
    inputs: &TensorFile,
    name: &str,
    channels: usize,
    dtype: DType,
) -> Result<(Params, Tensor, HostInput)> {
    let what = format!("{name} [B, {channels}, H, W] of f32, f16 or bf16");
    let (shape, values) = inputs.floats(name, &[None, Some(channels), None, None], &what)?;
    if shape.contains(&0) {
        bail!(
            "{name} in {} has shape {shape:?}; expected {what}",
            inputs.path().display()
        );
    }
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    let g = Graph::new();
    let p = Params::new(&g, dtype);
    let x = p.input(name, Shape::new(DType::F32, &dims))?;
    let x = if dtype == DType::F32 {
        x
    } else {
        x.convert(dtype)?
    };
    let host = HostInput {
        dtype: DType::F32,
        dims,
        bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok((p, x, host))
}

/// Appends the tapped activations as `debug.<module path>`: the VAE's paths are already the
/// reference's names.
fn with_taps(p: &Params, mut outputs: Vec<(String, Tensor)>) -> Vec<(String, Tensor)> {
    outputs.extend(
        p.taps()
            .into_iter()
            .map(|(path, t)| (format!("debug.{path}"), t)),
    );
    outputs
}
