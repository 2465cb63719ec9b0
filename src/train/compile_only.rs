//! `ti-xla train --compile-only --topology NAME`: every program a training run compiles, built
//! from the model's configs alone (no weights read), compiled for a TPU slice and reported
//! (`runtime::fit_report`).

use anyhow::{Context, Result};
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::programs::train_step::{build_encode_moments, build_train_step, LatentSource};

use super::args::TrainArgs;
use super::step::{step_config, ENCODER, STEP};
use crate::data::image_file::has_image_extension;
use crate::model::folder::ModelFolder;
use crate::model::tokenizers::Tokenizers;
use crate::runtime::device::{DeviceKind, MixedPrecision};
use crate::runtime::fit_report::{self, ProgramToCompile};
use crate::runtime::topology::open_slice;

/// Training images assumed when --train-data-dir holds none (the 3-5 photos a run uses).
const DEFAULT_IMAGES: usize = 5;

pub fn run(args: &TrainArgs) -> Result<()> {
    super::setup::check_flags(args)?;
    let slice = open_slice(&args.device, &args.compile_only)?;
    let folder = args.model.open()?;
    let tokenizers = Tokenizers::open(&folder, args.tokenizer_name.clone())?;
    let resolution = super::setup::training_resolution(args, &folder);
    let unet = UNet2DConditionModel::new(folder.unet.clone())?;
    let multiple = folder.vae.downscale_factor() * unet.size_multiple() as usize;
    anyhow::ensure!(
        resolution.is_multiple_of(multiple),
        "--resolution {resolution} must be a multiple of {multiple} for this model"
    );
    let images = count_images(args);
    let dtype = MixedPrecision::resolve(args.mixed_precision, DeviceKind::Tpu);
    let devices = slice.devices.len();
    eprintln!(
        "compiling the training programs for {} ({devices} devices), {resolution} px, {dtype}, {images} image(s) ...",
        slice.topology.name()
    );
    let build = |batch: usize| {
        let mut args = args.clone();
        args.train_batch_size = batch;
        let config = step_config(
            &folder,
            &args,
            dtype,
            resolution,
            tokenizers.max_length(),
            images,
            devices,
            // The norms' values change neither memory nor cost: no weights are read here.
            &vec![1.0; folder.text_encoders().len()],
        )?;
        programs(&folder, &config)
    };
    let report = fit_report::check(
        &slice,
        args.train_batch_size,
        args.compile_only.batch_search as usize,
        &build,
    )?;
    fit_report::print(
        &report,
        args.compile_only.json,
        "--train-batch-size",
        "lower --train-batch-size or --resolution, or use --mixed-precision bf16",
    )
}

/// Every program a training run compiles: the step on every device and, with the latent
/// cache, the VAE encoder that fills it (on device 0, one image at a time, before the loop).
pub fn programs(
    folder: &ModelFolder,
    config: &xla_graphs::programs::train_step::TrainStepConfig,
) -> Result<Vec<ProgramToCompile>> {
    let step = build_train_step(config).context("cannot trace the training step")?;
    let mut out = vec![ProgramToCompile {
        name: STEP,
        argument_bytes: step.argument_bytes(),
        text: step.text,
        devices: config.num_devices,
        runs_per_step: 1.0,
    }];
    if let LatentSource::Cached { .. } = config.latents {
        let encoder = build_encode_moments(&folder.vae, config.vae_dtype, 1, config.resolution)
            .context("cannot trace the VAE encoder")?;
        out.push(ProgramToCompile {
            name: ENCODER,
            argument_bytes: encoder.argument_bytes(),
            text: encoder.text,
            devices: 1,
            runs_per_step: 0.0,
        });
    }
    Ok(out)
}

/// Images in --train-data-dir, or [`DEFAULT_IMAGES`] when it has none (the latent cache's
/// size depends on it).
fn count_images(args: &TrainArgs) -> usize {
    let count = std::fs::read_dir(&args.train_data_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| has_image_extension(&e.path()))
                .count()
        })
        .unwrap_or(0);
    if count == 0 {
        DEFAULT_IMAGES
    } else {
        count
    }
}
