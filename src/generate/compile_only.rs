//! `ti-xla generate --compile-only --topology NAME`: the sampling programs a run compiles,
//! built from the model's configs (no weights read), compiled for a TPU slice and reported
//! (`runtime::fit_report`); a "step" of the report is one whole generation.

use anyhow::Result;
use xla_graphs::programs::sampling::StepNoise;
use xla_graphs::schedulers::{Scheduler, SchedulerKind};

use super::args::GenerateArgs;
use super::{check_flags, encode_prompts, image_size, read_embeddings, scheduler};
use crate::model::folder::ModelFolder;
use crate::runtime::device::{DeviceKind, MixedPrecision};
use crate::runtime::fit_report::{self, ProgramToCompile};
use crate::runtime::topology::open_slice;
use crate::sampling::pipeline::{self, PipelineConfig, DECODE, STEP, TEXT};

pub fn run(args: &GenerateArgs) -> Result<()> {
    check_flags(args)?;
    let slice = open_slice(&args.device, &args.compile_only)?;
    let embeddings = read_embeddings(&args.learned_embeds, &args.token)?;
    let folder = args.model.open()?;
    let prompts = encode_prompts(args, &folder, &embeddings)?;
    let (height, width) = image_size(args, &folder)?;
    let (scheduler, _) = scheduler(args, &folder)?;
    let devices = slice.devices.len();
    let samples = args.num_samples.unwrap_or(devices);
    anyhow::ensure!(samples > 0, "--num-samples must be at least 1");
    let batch = samples.div_ceil(devices);
    let noise = match scheduler.kind() {
        SchedulerKind::EulerAncestral => StepNoise::Keys,
        _ => StepNoise::None,
    };
    let compute_dtype = MixedPrecision::resolve(args.mixed_precision, DeviceKind::Tpu);
    eprintln!(
        "compiling the sampling programs for {} ({devices} devices), {width}x{height}, {compute_dtype} ...",
        slice.topology.name()
    );
    let build = |batch: usize| {
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
        programs(&folder, scheduler.as_ref(), &config)
    };
    let report = fit_report::check(
        &slice,
        batch,
        args.compile_only.batch_search as usize,
        &build,
    )?;
    fit_report::print(
        &report,
        args.compile_only.json,
        "images per device",
        "lower --num-samples, --height and --width",
    )
}

/// Every program a generation compiles: the text encoder once, the denoising step once per
/// timestep, the VAE decoder once.
pub fn programs(
    folder: &ModelFolder,
    scheduler: &dyn Scheduler,
    config: &PipelineConfig,
) -> Result<Vec<ProgramToCompile>> {
    let p = pipeline::programs(folder, scheduler, config)?;
    let steps = scheduler.timesteps().len() as f64;
    Ok(vec![
        ProgramToCompile {
            name: TEXT,
            argument_bytes: p.text.argument_bytes(),
            text: p.text.text,
            devices: config.devices,
            runs_per_step: 1.0,
        },
        ProgramToCompile {
            name: STEP,
            argument_bytes: p.step.argument_bytes(),
            text: p.step.text,
            devices: config.devices,
            runs_per_step: steps,
        },
        ProgramToCompile {
            name: DECODE,
            argument_bytes: p.decode.argument_bytes(),
            text: p.decode.text,
            devices: config.devices,
            runs_per_step: 1.0,
        },
    ])
}
