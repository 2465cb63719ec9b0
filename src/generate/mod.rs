//! `ti-xla generate`: images from a prompt with learned tokens, as diffusers'
//! `StableDiffusionPipeline` makes them, spread over the devices. Everything the user passes is
//! checked before anything is compiled; each sample's starting latents (and Euler ancestral's
//! noise) come from its own key, `fold_in(key(seed), sample index)`, so a seed gives the same
//! images on any number of devices.

pub mod args;
pub mod compile_only;
pub mod progress;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::programs::sampling::StepNoise;
use xla_graphs::schedulers::{build_scheduler, Scheduler, SchedulerConfig, SchedulerKind};

use self::args::GenerateArgs;
use self::progress::StepProgress;
use crate::io::tensor_file::{write_f32_atomic, F32Tensor, TensorFile};
use crate::model::embeddings::{
    add_to_tokenizer, expand_prompt, read_embeddings, LearnedEmbedding,
};
use crate::model::folder::ModelFolder;
use crate::model::tokenizers::Tokenizers;
use crate::rng::Key;
use crate::runtime::device::MixedPrecision;
use crate::runtime::device::{open_client, resolve_devices};
use crate::sampling::images::{
    check_outputs, grid_path, sample_path, to_rgb8, write_images, ImageSettings,
};
use crate::sampling::pipeline::{
    NoiseFeed, Pipeline, PipelineConfig, SampleRequest, SampleTimes, Samples,
};

/// What a finished run wrote.
pub struct GenerateOutcome {
    /// The sample PNGs, then the grid.
    pub images: Vec<PathBuf>,
    pub devices: usize,
}

/// Starting latents (and noise) given with `--latents`.
struct GivenLatents {
    samples: usize,
    latents: Vec<f32>,
    /// Per step, every sample's normals.
    noise: Option<Vec<Vec<f32>>>,
}

pub fn generate(args: &GenerateArgs) -> Result<GenerateOutcome> {
    let started = Instant::now();
    check_flags(args)?;
    let embeddings = read_embeddings(&args.learned_embeds, &args.token)?;
    let folder = args.model.open()?;
    let prompts = encode_prompts(args, &folder, &embeddings)?;
    let (height, width) = image_size(args, &folder)?;
    let (scheduler, scheduler_name) = scheduler(args, &folder)?;
    let steps = scheduler.timesteps().len();
    let f = folder.vae.downscale_factor();
    let latent_len = folder.unet.in_channels * (height / f) * (width / f);
    let given = args
        .latents
        .as_deref()
        .map(|p| read_latents(p, latent_len))
        .transpose()?;

    let client = open_client(&args.device)?;
    let available = resolve_devices(&client, args.num_devices, args.device.device)?;
    let samples = sample_count(given.as_ref(), args.num_samples, available)?;
    crate::io::output_dir::check_outside(&args.output_dir, &folder.root, "--output-dir")?;
    if let Some(path) = &args.save_tensors {
        check_save_tensors(path, args, &folder)?;
    }
    let _lock = crate::io::output_dir::OutputLock::acquire(&args.output_dir)?;
    check_outputs(&args.output_dir, samples, args.overwrite)?;
    // --overwrite replaces only images ti-xla wrote there.
    let targets: Vec<PathBuf> = (0..samples)
        .map(|i| sample_path(Path::new(""), i))
        .chain([grid_path(Path::new(""))])
        .collect();
    crate::io::output_dir::check_replaceable(&args.output_dir, &targets)?;
    // Fewer samples than devices: idle devices would only compute padding.
    let devices = available.min(samples);
    let batch = samples.div_ceil(devices);
    let draws = Draws::new(args.seed, devices * batch, latent_len, samples, given);
    let (noise, feed) = draws.feed(scheduler.kind(), steps)?;
    let compute_dtype = MixedPrecision::resolve(args.mixed_precision, args.device.device);

    eprintln!(
        "generating {samples} image(s) of {width}x{height} on {devices} {} device(s), {} {} steps, {compute_dtype}",
        args.device.device.name(),
        args.num_inference_steps,
        scheduler_name
    );
    eprintln!("compiling the sampling programs (cached after the first run) ...");
    let config = PipelineConfig {
        compute_dtype,
        devices,
        batch,
        height,
        width,
        seq_len: prompts.seq_len,
        num_rows: prompts.num_rows,
        noise,
        zero_negative: prompts.zero_negative,
    };
    let pipeline = Pipeline::new(&client, &folder, scheduler, config)?;
    let startup = started.elapsed();
    let progress = StepProgress::new(steps);
    let sampling_started = Instant::now();
    let request = SampleRequest {
        input_ids: &prompts.input_ids,
        rows: &prompts.rows,
        latents: &draws.latents,
        guidance_scale: args.guidance_scale,
        noise: feed,
    };
    let out = pipeline.sample(&client, &request, &mut |i| progress.step(i))?;
    let sampling = sampling_started.elapsed().as_secs_f64();
    progress.finish();

    let settings = ImageSettings {
        prompt: args.prompt.clone(),
        negative_prompt: prompts.negative_prompt,
        seed: args.seed,
        steps: args.num_inference_steps,
        guidance_scale: args.guidance_scale,
        scheduler: scheduler_name,
        model: args.model.pretrained_model_name_or_path.clone(),
        width,
        height,
    };
    let written = write_outputs(args, &folder, &settings, samples, &out)?;
    crate::io::output_dir::record(&args.output_dir, &targets)?;
    print_timing(
        startup,
        sampling,
        samples,
        args.num_inference_steps,
        steps,
        &out.times,
    );
    Ok(GenerateOutcome {
        images: written,
        devices,
    })
}

/// `--save-tensors` replaces its file: never one of the inputs (a model file, an embedding,
/// `--latents`).
fn check_save_tensors(path: &Path, args: &GenerateArgs, folder: &ModelFolder) -> Result<()> {
    crate::io::output_dir::check_outside(path, &folder.root, "--save-tensors")?;
    let inputs = args.learned_embeds.iter().chain(args.latents.as_ref());
    for input in inputs {
        if crate::io::output_dir::same_file(path, input) {
            bail!(
                "--save-tensors {} is the input file {}; choose another path for the tensors",
                path.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// `--num-samples`, the number `--latents` holds, or one per device.
fn sample_count(
    given: Option<&GivenLatents>,
    flag: Option<usize>,
    devices: usize,
) -> Result<usize> {
    Ok(match (given, flag) {
        (Some(g), Some(k)) if g.samples != k => bail!(
            "--latents holds {} sample(s) but --num-samples is {k}",
            g.samples
        ),
        (Some(g), _) => g.samples,
        (None, k) => k.unwrap_or(devices),
    })
}

/// The flags checked before anything is read.
fn check_flags(args: &GenerateArgs) -> Result<()> {
    if args.num_inference_steps == 0 {
        bail!("--num-inference-steps must be at least 1");
    }
    if !(args.guidance_scale as f32).is_finite() {
        bail!("--guidance-scale must be a number that fits in f32 (7.5 is usual)");
    }
    if let Some(n) = args.num_samples {
        if n == 0 || n > crate::train::setup::MAX_IMAGES {
            bail!(
                "--num-samples {n} must be between 1 and {}",
                crate::train::setup::MAX_IMAGES
            );
        }
    }
    if !args.token.is_empty() && args.learned_embeds.is_empty() {
        bail!("--token names the tokens of --learned-embeds files, and none was given");
    }
    Ok(())
}

/// The prompts as token ids, with the learned tokens added to the tokenizers.
struct Prompts {
    /// Per tokenizer, `[2, seq_len]`: the negative (or empty) prompt, then the prompt.
    input_ids: Vec<Vec<i32>>,
    /// No negative prompt on an SDXL model that zeros it (`force_zeros_for_empty_prompt`).
    zero_negative: bool,
    negative_prompt: String,
    /// The learned rows, `[num_rows, hidden]`.
    rows: Vec<f32>,
    num_rows: usize,
    seq_len: usize,
}

fn encode_prompts(
    args: &GenerateArgs,
    folder: &ModelFolder,
    embeddings: &[LearnedEmbedding],
) -> Result<Prompts> {
    let mut tokenizers = Tokenizers::open(folder, None)?;
    let widths = folder.row_widths();
    let rows = add_to_tokenizer(&mut tokenizers, embeddings, &widths)?;
    // diffusers' `negative_prompt=None`: the empty prompt, or zeros for SDXL.
    let zero_negative = args.negative_prompt.is_none() && folder.force_zeros_for_empty_prompt;
    let negative_prompt = args.negative_prompt.clone().unwrap_or_default();
    let mut input_ids = vec![Vec::new(); tokenizers.all.len()];
    for text in [&negative_prompt, &args.prompt] {
        let text = expand_prompt(tokenizers.first(), text)?;
        for (all, ids) in input_ids.iter_mut().zip(tokenizers.encode(&text)?) {
            all.extend(ids);
        }
    }
    let hidden: usize = widths.iter().sum();
    Ok(Prompts {
        input_ids,
        zero_negative,
        negative_prompt,
        num_rows: rows.len() / hidden,
        rows,
        seq_len: tokenizers.max_length(),
    })
}

/// The model's scheduler (or `--scheduler`) with its timesteps set, and its name for the PNGs.
fn scheduler(args: &GenerateArgs, folder: &ModelFolder) -> Result<(Box<dyn Scheduler>, String)> {
    let mut config = SchedulerConfig::from_json(&folder.scheduler.to_string())?;
    if args.karras_sigmas {
        config.use_karras_sigmas = Some(true);
    }
    let (mut scheduler, warnings) = build_scheduler(&config, args.scheduler)?;
    let kind = scheduler.kind();
    let karras = config.use_karras_sigmas == Some(true)
        && matches!(
            kind,
            SchedulerKind::Euler | SchedulerKind::DpmSolverMultistep
        );
    if args.karras_sigmas && !karras {
        bail!(
            "--karras-sigmas works with --scheduler dpmpp-2m or euler, not {}",
            kind.cli_name()
        );
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    scheduler.set_timesteps(args.num_inference_steps)?;
    let name = if karras {
        format!("{} karras", kind.cli_name())
    } else {
        kind.cli_name().to_string()
    };
    Ok((scheduler, name))
}

/// Every sample slot's starting latents and Euler ancestral's noise: each sample's from its
/// own key, `fold_in(key(seed), index)`, or as `--latents` gives them; padding slots are zero.
struct Draws {
    latents: Vec<f32>,
    noise_keys: Vec<Key>,
    normals: Option<Vec<Vec<f32>>>,
}

impl Draws {
    fn new(
        seed: u64,
        slots: usize,
        latent_len: usize,
        samples: usize,
        given: Option<GivenLatents>,
    ) -> Draws {
        let seed_key = Key::from_seed(seed);
        let sample_keys: Vec<[Key; 2]> = (0..slots)
            .map(|i| {
                let k = seed_key.fold_in(i as u32).split(2);
                [k[0], k[1]]
            })
            .collect();
        let (latents, noise) = match given {
            Some(g) => (g.latents, g.noise),
            None => {
                let latents = sample_keys[..samples]
                    .iter()
                    .flat_map(|[k, _]| k.normal_f32(latent_len))
                    .collect();
                (latents, None)
            }
        };
        let pad = |mut v: Vec<f32>| {
            v.resize(slots * latent_len, 0.0);
            v
        };
        Draws {
            latents: pad(latents),
            noise_keys: sample_keys.iter().map(|[_, k]| *k).collect(),
            normals: noise.map(|steps| steps.into_iter().map(pad).collect()),
        }
    }

    /// How the denoising step takes its noise for `kind`, and the feed for it.
    fn feed(&self, kind: SchedulerKind, steps: usize) -> Result<(StepNoise, NoiseFeed<'_>)> {
        Ok(match (kind, &self.normals) {
            (SchedulerKind::EulerAncestral, Some(n)) => {
                if n.len() < steps {
                    bail!(
                        "--latents holds noise for {} steps; this run takes {steps}",
                        n.len()
                    );
                }
                (StepNoise::Normals, NoiseFeed::Normals(n))
            }
            (SchedulerKind::EulerAncestral, None) => {
                (StepNoise::Keys, NoiseFeed::Keys(&self.noise_keys))
            }
            _ => (StepNoise::None, NoiseFeed::None),
        })
    }
}

/// The PNGs (and `--save-tensors`) of the first `samples` slots; returns the PNG paths.
fn write_outputs(
    args: &GenerateArgs,
    folder: &ModelFolder,
    settings: &ImageSettings,
    samples: usize,
    out: &Samples,
) -> Result<Vec<PathBuf>> {
    let (height, width) = (settings.height, settings.width);
    let plane = 3 * height * width;
    let images: Vec<_> = out.images[..samples * plane]
        .chunks_exact(plane)
        .map(|chw| to_rgb8(chw, width, height))
        .collect();
    let written = write_images(&args.output_dir, &images, settings)?;
    if let Some(path) = &args.save_tensors {
        let (c, f) = (folder.unet.in_channels, folder.vae.downscale_factor());
        let latent_len = c * (height / f) * (width / f);
        let tensors = [
            F32Tensor {
                name: "images".into(),
                shape: vec![samples, 3, height, width],
                values: out.images[..samples * plane].to_vec(),
            },
            F32Tensor {
                name: "latents".into(),
                shape: vec![samples, c, height / f, width / f],
                values: out.latents[..samples * latent_len].to_vec(),
            },
        ];
        write_f32_atomic(path, &tensors, None)?;
    }
    Ok(written)
}

/// The run's timing line. PNDM runs the UNet once more than --num-inference-steps (as
/// diffusers does): the denoising time is split over the runs.
fn print_timing(
    startup: std::time::Duration,
    sampling: f64,
    samples: usize,
    inference_steps: usize,
    runs: usize,
    t: &SampleTimes,
) {
    eprintln!(
        "timing: start-up {} s, sampling {} s for {samples} image(s) x {inference_steps} steps \
         ({} s/image; text {} s, denoise {} s = {runs} x {} s, decode {} s)",
        secs(startup.as_secs_f64()),
        secs(sampling),
        secs(sampling / samples as f64),
        secs(t.text.as_secs_f64()),
        secs(t.denoise.as_secs_f64()),
        secs(t.denoise.as_secs_f64() / runs as f64),
        secs(t.decode.as_secs_f64()),
    );
}

/// Seconds to three significant digits (`0.0812`, `4.56`, `912`).
fn secs(s: f64) -> String {
    let decimals = if s > 0.0 {
        (2 - s.log10().floor() as i32).clamp(0, 4) as usize
    } else {
        1
    };
    format!("{s:.decimals$}")
}

/// `--height`/`--width`, or diffusers' default (the UNet's sample_size in pixels), checked
/// against the multiple the VAE and UNet need.
fn image_size(args: &GenerateArgs, folder: &ModelFolder) -> Result<(usize, usize)> {
    let f = folder.vae.downscale_factor();
    let unet = UNet2DConditionModel::new(folder.unet.clone())?;
    let multiple = f * unet.size_multiple() as usize;
    let default = folder.unet.sample_size.map(|s| s * f);
    let height = args
        .height
        .or(default)
        .or(args.width)
        .context("the UNet config has no sample_size: pass --height and --width")?;
    let width = args.width.or(args.height).unwrap_or(height);
    for (flag, v) in [("--height", height), ("--width", width)] {
        if v > crate::train::setup::MAX_RESOLUTION {
            bail!(
                "{flag} {v} is larger than ti-xla makes images ({} px)",
                crate::train::setup::MAX_RESOLUTION
            );
        }
        if v == 0 || v % multiple != 0 {
            bail!("{flag} {v} must be a positive multiple of {multiple} for this model");
        }
    }
    Ok((height, width))
}

/// `--latents FILE`: `latents` [K, C, h, w] and optional `noise` [steps, K, C, h, w].
fn read_latents(path: &Path, latent_len: usize) -> Result<GivenLatents> {
    let file = TensorFile::open(path)?;
    let (shape, latents) = file.floats(
        "latents",
        &[None, None, None, None],
        "latents [samples, C, h, w]",
    )?;
    let samples = shape[0];
    if samples == 0 || shape[1..].iter().product::<usize>() != latent_len {
        bail!(
            "latents in {} has shape {shape:?}, which does not fit {latent_len} values per sample at this size",
            path.display()
        );
    }
    let bytes = std::fs::read(path)?;
    let has_noise = safetensors::SafeTensors::deserialize(&bytes)?
        .names()
        .contains(&"noise");
    let noise = if has_noise {
        let (nshape, values) = file.floats(
            "noise",
            &[None, Some(samples), None, None, None],
            "noise [steps, samples, C, h, w]",
        )?;
        if nshape[2..].iter().product::<usize>() != latent_len {
            bail!(
                "noise in {} has shape {nshape:?}; its samples must be shaped as the latents",
                path.display()
            );
        }
        let per_step = samples * latent_len;
        Some(values.chunks_exact(per_step).map(<[f32]>::to_vec).collect())
    } else {
        None
    };
    Ok(GivenLatents {
        samples,
        latents,
        noise,
    })
}
