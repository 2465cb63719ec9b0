//! `forward --component vae_encoder`: `pixel_values` [B, C, H, W] -> `mean`, `logvar`
//! [B, latent, H / f, W / f]; `--component vae_decoder`: `latents` [B, latent, h, w] (unscaled,
//! as `vae.decode` takes them) -> `sample` [B, C, h * f, w * f].

use anyhow::{bail, Result};
use xla_graphs::programs::components::{
    build_vae_decoder, build_vae_encoder, ComponentProgram, VaeDecoderInputs, VaeEncoderInputs,
};
use xla_graphs::programs::interface::Arg;
use xla_graphs::DType;

use super::HostInput;
use crate::io::tensor_file::TensorFile;
use crate::model::folder::ModelFolder;

pub(crate) fn prepare_encoder(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<(
    ComponentProgram<VaeEncoderInputs<Arg>>,
    VaeEncoderInputs<HostInput>,
)> {
    let config = &folder.vae;
    let pixel_values = image_input(inputs, "pixel_values", config.in_channels)?;
    let program = build_vae_encoder(config, dtype, &pixel_values.dims, debug)?;
    Ok((program, VaeEncoderInputs { pixel_values }))
}

pub(crate) fn prepare_decoder(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<(
    ComponentProgram<VaeDecoderInputs<Arg>>,
    VaeDecoderInputs<HostInput>,
)> {
    let config = &folder.vae;
    let latents = image_input(inputs, "latents", config.latent_channels)?;
    let program = build_vae_decoder(config, dtype, &latents.dims, debug)?;
    Ok((program, VaeDecoderInputs { latents }))
}

/// Reads float `[B, channels, H, W]` input `name` (f32, f16 or bf16 in the file) as f32.
fn image_input(inputs: &TensorFile, name: &str, channels: usize) -> Result<HostInput> {
    let what = format!("{name} [B, {channels}, H, W] of f32, f16 or bf16");
    let (shape, values) = inputs.floats(name, &[None, Some(channels), None, None], &what)?;
    if shape.contains(&0) {
        bail!(
            "{name} in {} has shape {shape:?}; expected {what}",
            inputs.path().display()
        );
    }
    Ok(HostInput::f32(&shape, &values))
}
