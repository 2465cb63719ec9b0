//! Validation images during training (`--validation-prompt`): every `--validation-steps`
//! optimizer steps the current rows go through `ti-xla generate`'s pipeline, compiled once at
//! the start for the training devices, into `output-dir/validation/step-N/`. As diffusers'
//! `textual_inversion.py` validates: DPM-Solver++ 2M built from the model's scheduler config,
//! 25 steps, guidance 7.5, the empty negative prompt, the pipeline's default size, and the same
//! starting latents (from `--seed`) every time, so the images show what the rows changed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xla_graphs::programs::sampling::StepNoise;
use xla_graphs::schedulers::{build_scheduler, SchedulerConfig, SchedulerKind};

use super::args::TrainArgs;
use super::setup::RunPlan;
use crate::model::embeddings::expand_prompt;
use crate::pjrt::Client;
use crate::rng::Key;
use crate::sampling::images::{to_rgb8, write_images, ImageSettings};
use crate::sampling::pipeline::{NoiseFeed, Pipeline, PipelineConfig, SampleRequest};

const SCHEDULER: SchedulerKind = SchedulerKind::DpmSolverMultistep;
const STEPS: usize = 25;
const GUIDANCE: f64 = 7.5;

pub struct Validation {
    pipeline: Pipeline,
    input_ids: Vec<Vec<i32>>,
    latents: Vec<f32>,
    every: usize,
    count: usize,
    settings: ImageSettings,
}

impl Validation {
    /// Compiles the sampling programs when `--validation-prompt` is given.
    pub fn new(
        client: &Client,
        run: &RunPlan,
        args: &TrainArgs,
        devices: usize,
    ) -> Result<Option<Validation>> {
        let Some(prompt) = &args.validation_prompt else {
            return Ok(None);
        };
        if args.num_validation_images == 0 || args.validation_steps == 0 {
            bail!("--num-validation-images and --validation-steps must be at least 1");
        }
        let folder = &run.folder;
        let f = folder.vae.downscale_factor();
        let size = folder.unet.sample_size.map_or(run.resolution, |s| s * f);
        let config = SchedulerConfig::from_json(&folder.scheduler.to_string())?;
        let (mut scheduler, _) = build_scheduler(&config, Some(SCHEDULER))?;
        scheduler.set_timesteps(STEPS)?;
        let tokenizers = &run.tokenizers;
        let mut input_ids = vec![Vec::new(); tokenizers.all.len()];
        for text in ["", prompt.as_str()] {
            let text = expand_prompt(tokenizers.first(), text)?;
            for (all, ids) in input_ids.iter_mut().zip(tokenizers.encode(&text)?) {
                all.extend(ids);
            }
        }
        let count = args.num_validation_images;
        let devices = devices.min(count);
        let batch = count.div_ceil(devices);
        eprintln!("compiling the validation programs (cached after the first run) ...");
        let pipeline = Pipeline::new(
            client,
            folder,
            scheduler,
            PipelineConfig {
                compute_dtype: run.compute_dtype,
                devices,
                batch,
                height: size,
                width: size,
                seq_len: tokenizers.max_length(),
                num_rows: args.num_vectors,
                noise: StepNoise::None,
                // diffusers' validation passes no negative prompt.
                zero_negative: folder.force_zeros_for_empty_prompt,
            },
        )
        .context("cannot prepare the validation images")?;
        // The starting latents `ti-xla generate --seed` draws, so its images can be remade.
        let seed = Key::from_seed(args.seed);
        let n = pipeline.latent_len();
        let mut latents: Vec<f32> = (0..count)
            .flat_map(|i| seed.fold_in(i as u32).split(2)[0].normal_f32(n))
            .collect();
        latents.resize(pipeline.slots() * n, 0.0);
        Ok(Some(Validation {
            pipeline,
            input_ids,
            latents,
            every: args.validation_steps,
            count,
            settings: ImageSettings {
                prompt: prompt.clone(),
                negative_prompt: String::new(),
                seed: args.seed,
                steps: STEPS,
                guidance_scale: GUIDANCE,
                scheduler: SCHEDULER.cli_name().to_string(),
                model: args.model.pretrained_model_name_or_path.clone(),
                width: size,
                height: size,
            },
        }))
    }

    /// Whether images are due after optimizer step `step` (1-based).
    pub fn due(&self, step: usize) -> bool {
        step.is_multiple_of(self.every)
    }

    /// Makes the images with `rows` into `out/validation/step-{step}/`; returns that folder.
    pub fn run(&self, client: &Client, step: usize, rows: &[f32], out: &Path) -> Result<PathBuf> {
        let samples = self.pipeline.sample(
            client,
            &SampleRequest {
                input_ids: &self.input_ids,
                rows,
                latents: &self.latents,
                guidance_scale: GUIDANCE,
                noise: NoiseFeed::None,
            },
            &mut |_| {},
        )?;
        let (w, h) = (self.settings.width, self.settings.height);
        let images: Vec<_> = samples
            .images
            .chunks_exact(3 * w * h)
            .take(self.count)
            .map(|chw| to_rgb8(chw, w, h))
            .collect();
        let dir = step_dir(out, step);
        write_images(&dir, &images, &self.settings)?;
        Ok(dir)
    }
}

fn step_dir(out: &Path, step: usize) -> PathBuf {
    out.join("validation").join(format!("step-{step}"))
}

/// The steps (1-based) with validation images in `out`, for the loss plot; a resumed run's
/// earlier ones included.
pub fn marks(out: &Path) -> Vec<u64> {
    let mut marks: Vec<u64> = std::fs::read_dir(out.join("validation"))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name();
            name.to_str()?.strip_prefix("step-")?.parse().ok()
        })
        .collect();
    marks.sort_unstable();
    marks
}
