//! One model component alone, for parity runs against diffusers (`ti-xla forward`): the CLIP
//! text encoder, the UNet, the VAE's encoder or decoder. Every output is f32; with `debug` the
//! activations the models tap are outputs too, named `debug.<module path>` as the reference
//! files name them.

use crate::models::clip::{CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection};
use crate::models::params::Params;
use crate::models::unet::{TextTimeConditioning, UNet2DConditionConfig, UNet2DConditionModel};
use crate::models::vae::{AutoencoderKL, AutoencoderKLConfig};
use crate::programs::interface::{declare, finish, Arg, Named, Output, Program, Traced, UNET, VAE};
use crate::{DType, Graph, Result, Tensor};

crate::program_args! {
    /// `[B, L]` i32 token ids.
    pub struct TextEncoderInputs<T> { pub input_ids: T }
}

crate::program_args! {
    /// `[B, C, h, w]` f32 latents, `[B]` f32 timesteps, `[B, L, D]` f32 encoder states; with
    /// SDXL's conditioning `[B, P]` f32 `text_embeds` and `[B, N]` f32 `time_ids`.
    pub struct UNetInputs<T> {
        pub sample: T,
        pub timestep: T,
        pub encoder_hidden_states: T,
        pub text_embeds: Option<T>,
        pub time_ids: Option<T>,
    }
}

crate::program_args! {
    /// `[B, C, H, W]` f32 pixels in [-1, 1].
    pub struct VaeEncoderInputs<T> { pub pixel_values: T }
}

crate::program_args! {
    /// `[B, latent_channels, h, w]` f32 latents, unscaled (as `vae.decode` takes them).
    pub struct VaeDecoderInputs<T> { pub latents: T }
}

/// A component program: typed inputs, outputs named at build time (the debug taps vary).
pub type ComponentProgram<I> = Program<I, Named<Output>>;

/// `input_ids` -> `last_hidden_state` and `penultimate_hidden_state` [B, L, D], and for a
/// `CLIPTextModelWithProjection` (`with_projection`) `text_embeds` [B, projection_dim]; the
/// weights are bound under `prefix` (`text_encoder` or `text_encoder_2`).
pub fn build_text_encoder(
    config: &CLIPTextConfig,
    prefix: &str,
    with_projection: bool,
    dtype: DType,
    dims: [i64; 2],
    debug: bool,
) -> Result<ComponentProgram<TextEncoderInputs<Arg>>> {
    let p = params(dtype, debug);
    let decl = TextEncoderInputs {
        input_ids: Arg::sharded(DType::I32, &dims),
    };
    let x = declare(&p, &decl)?;
    let clip = CLIPTextModel::new(config.clone())?;
    let projection = with_projection
        .then(|| CLIPTextModelWithProjection::new(clip.clone()))
        .transpose()?;
    let mut outputs = p.scope(prefix, |p| {
        let table = clip.token_embedding(p)?;
        let out = clip.hidden_states(p, &x.input_ids, &table)?;
        let mut outputs = vec![
            ("last_hidden_state", out.last_hidden_state.clone()),
            ("penultimate_hidden_state", out.penultimate_hidden_state),
        ];
        if let Some(m) = &projection {
            let e = m.text_embeds(p, &x.input_ids, &out.last_hidden_state)?;
            outputs.push(("text_embeds", e));
        }
        Ok::<_, crate::GraphError>(outputs)
    })?;
    // transformers names submodules from inside CLIPTextModel.text_model.
    let outputs = with_taps(
        &p,
        std::mem::take(&mut outputs),
        &format!("{prefix}.text_model"),
    )?;
    finish(&p, decl, outputs)
}

/// `sample`, `timestep`, `encoder_hidden_states` (and SDXL's `text_embeds` `[B, P]`, `time_ids`
/// `[B, N]` when `text_time` gives `[P, N]`) -> `sample` [B, C_out, h, w].
pub fn build_unet(
    config: &UNet2DConditionConfig,
    dtype: DType,
    sample: &[i64],
    encoder_hidden_states: &[i64],
    text_time: Option<[i64; 2]>,
    debug: bool,
) -> Result<ComponentProgram<UNetInputs<Arg>>> {
    let p = params(dtype, debug);
    let b = sample[0];
    let decl = UNetInputs {
        sample: Arg::sharded(DType::F32, sample),
        timestep: Arg::sharded(DType::F32, &sample[..1]),
        encoder_hidden_states: Arg::sharded(DType::F32, encoder_hidden_states),
        text_embeds: text_time.map(|[e, _]| Arg::sharded(DType::F32, &[b, e])),
        time_ids: text_time.map(|[_, n]| Arg::sharded(DType::F32, &[b, n])),
    };
    let x = declare(&p, &decl)?;
    let unet = UNet2DConditionModel::new(config.clone())?;
    let added = match (&x.text_embeds, &x.time_ids) {
        (Some(e), Some(t)) => Some(TextTimeConditioning {
            text_embeds: e.clone(),
            time_ids: t.clone(),
        }),
        _ => None,
    };
    let out = p.scope(UNET, |p| {
        unet.forward(
            p,
            &x.sample,
            &x.timestep,
            &x.encoder_hidden_states,
            added.as_ref(),
        )
    })?;
    let outputs = with_taps(&p, vec![("sample", out)], UNET)?;
    finish(&p, decl, outputs)
}

/// `pixel_values` -> `mean`, `logvar` [B, latent_channels, H / f, W / f].
pub fn build_vae_encoder(
    config: &AutoencoderKLConfig,
    dtype: DType,
    dims: &[i64],
    debug: bool,
) -> Result<ComponentProgram<VaeEncoderInputs<Arg>>> {
    let p = params(dtype, debug);
    let decl = VaeEncoderInputs {
        pixel_values: Arg::sharded(DType::F32, dims),
    };
    let x = declare(&p, &decl)?;
    let model = AutoencoderKL::new(config.clone())?;
    let pixels = in_dtype(&x.pixel_values, dtype)?;
    let (mean, logvar) = p.scope(VAE, |p| model.encode(p, &pixels))?;
    let outputs = with_taps(&p, vec![("mean", mean), ("logvar", logvar)], VAE)?;
    Ok(finish(&p, decl, outputs)?.using_part_of(VAE, model.weight_specs(dtype)?))
}

/// `latents` -> `sample` [B, C, h * f, w * f].
pub fn build_vae_decoder(
    config: &AutoencoderKLConfig,
    dtype: DType,
    dims: &[i64],
    debug: bool,
) -> Result<ComponentProgram<VaeDecoderInputs<Arg>>> {
    let p = params(dtype, debug);
    let decl = VaeDecoderInputs {
        latents: Arg::sharded(DType::F32, dims),
    };
    let x = declare(&p, &decl)?;
    let model = AutoencoderKL::new(config.clone())?;
    let latents = in_dtype(&x.latents, dtype)?;
    let sample = p.scope(VAE, |p| model.decode(p, &latents))?;
    let outputs = with_taps(&p, vec![("sample", sample)], VAE)?;
    Ok(finish(&p, decl, outputs)?.using_part_of(VAE, model.weight_specs(dtype)?))
}

fn params(dtype: DType, debug: bool) -> Params {
    let p = Params::new(&Graph::new(), dtype);
    if debug {
        p.record_taps();
    }
    p
}

/// `x` in `dtype`, with no convert when it is already.
fn in_dtype(x: &Tensor, dtype: DType) -> Result<Tensor> {
    if x.dtype() == dtype {
        Ok(x.clone())
    } else {
        x.convert(dtype)
    }
}

/// The outputs in f32, then each tapped activation as `debug.<path>`, its path taken relative
/// to `root` (the module the reference names its activations from).
fn with_taps(p: &Params, outputs: Vec<(&str, Tensor)>, root: &str) -> Result<Named<Traced>> {
    let taps = p.taps().into_iter().map(|(path, t)| {
        let name = path
            .strip_prefix(root)
            .map_or(path.as_str(), |rest| rest.trim_start_matches('.'));
        (format!("debug.{name}"), t)
    });
    let all = outputs
        .into_iter()
        .map(|(name, t)| (name.to_string(), t))
        .chain(taps)
        .map(|(name, t)| Ok((name, Traced::sharded(in_dtype(&t, DType::F32)?))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Named(all))
}
