//! `forward --component unet`: `sample` [B, C, h, w], `timestep` [B] or a scalar (float or
//! integer) and `encoder_hidden_states` [B, L, D] -> `sample` [B, C_out, h, w].

use anyhow::{bail, Result};
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::programs::components::{build_unet, ComponentProgram, UNetInputs};
use xla_graphs::programs::interface::Arg;
use xla_graphs::DType;

use super::HostInput;
use crate::io::tensor_file::TensorFile;
use crate::model::folder::ModelFolder;

/// The timestep as f32 for each of `batch` samples: floats as given, integers converted as
/// diffusers' `timesteps.float()` does, a scalar repeated.
fn timesteps(inputs: &TensorFile, batch: usize) -> Result<Vec<f32>> {
    let what = format!("timestep [{batch}] or a scalar, float or integer");
    let mut first_error = None;
    for dims in [&[Some(batch)][..], &[]] {
        let values = match inputs.floats("timestep", dims, &what) {
            Ok((_, v)) => Ok(v),
            Err(e) => inputs
                .ints("timestep", dims, &what)
                .map(|(_, v)| v.into_iter().map(|t| t as f32).collect())
                .map_err(|_| e),
        };
        match values {
            Ok(v) if v.len() == 1 => return Ok(vec![v[0]; batch]),
            Ok(v) => return Ok(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(first_error.expect("two shapes were tried"))
}

pub(crate) fn prepare(
    folder: &ModelFolder,
    inputs: &TensorFile,
    dtype: DType,
    debug: bool,
) -> Result<(ComponentProgram<UNetInputs<Arg>>, UNetInputs<HostInput>)> {
    let config = &folder.unet;
    let unet = UNet2DConditionModel::new(config.clone())?;
    let file = inputs.path().display();
    let channels = config.in_channels;
    let multiple = unet.size_multiple() as usize;
    let what = format!("sample [B, {channels}, h, w] of floats, h and w multiples of {multiple}");
    let (sample_shape, sample) =
        inputs.floats("sample", &[None, Some(channels), None, None], &what)?;
    let batch = sample_shape[0];
    if batch == 0
        || sample_shape[2..]
            .iter()
            .any(|&d| d == 0 || d % multiple != 0)
    {
        bail!("sample in {file} has shape {sample_shape:?}; expected {what}");
    }
    let timestep = timesteps(inputs, batch)?;
    let plan = config
        .block_plan()
        .map_err(|e| anyhow::anyhow!("{}: {e}", folder.component("unet").display()))?;
    let cross = plan.cross_attention_dim[0];
    let what = format!("encoder_hidden_states [{batch}, L, {cross}] of floats");
    let (ctx_shape, context) = inputs.floats(
        "encoder_hidden_states",
        &[Some(batch), None, Some(cross)],
        &what,
    )?;
    if ctx_shape[1] == 0 {
        bail!("encoder_hidden_states in {file} has shape {ctx_shape:?}; expected {what}");
    }

    // SDXL's added conditioning, with the widths the UNet's add_embedding takes.
    let text_time = match plan.text_time {
        None => None,
        Some(t) => {
            let what = format!("time_ids [{batch}, N] of floats");
            let (ids_shape, ids) = inputs.floats("time_ids", &[Some(batch), None], &what)?;
            let embeds_dim = t.input_dim.checked_sub(ids_shape[1] * t.time_embed_dim);
            let Some(p) = embeds_dim.filter(|&p| p > 0) else {
                bail!("time_ids in {file} has shape {ids_shape:?}: {} ids of {} features leave no room for text_embeds in the UNet's {}-wide add_embedding", ids_shape[1], t.time_embed_dim, t.input_dim);
            };
            let what = format!("text_embeds [{batch}, {p}] of floats");
            let (embeds_shape, embeds) =
                inputs.floats("text_embeds", &[Some(batch), Some(p)], &what)?;
            Some((embeds_shape, embeds, ids_shape, ids))
        }
    };

    let dims = |d: &[usize]| d.iter().map(|&x| x as i64).collect::<Vec<_>>();
    let program = build_unet(
        config,
        dtype,
        &dims(&sample_shape),
        &dims(&ctx_shape),
        text_time
            .as_ref()
            .map(|(e, _, i, _)| [e[1] as i64, i[1] as i64]),
        debug,
    )?;
    let host = UNetInputs {
        sample: HostInput::f32(&sample_shape, &sample),
        timestep: HostInput::f32(&[batch], &timestep),
        encoder_hidden_states: HostInput::f32(&ctx_shape, &context),
        text_embeds: text_time.as_ref().map(|(s, v, _, _)| HostInput::f32(s, v)),
        time_ids: text_time.as_ref().map(|(_, _, s, v)| HostInput::f32(s, v)),
    };
    Ok((program, host))
}
