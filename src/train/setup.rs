//! Everything a run needs before its first step: the model folder and tokenizer with the new
//! tokens, the starting rows, the training images, the device set, the step count and the
//! learning-rate schedule, each checked with an error that says what to change.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::DType;

use super::args::TrainArgs;
use super::lr_schedule::LrSchedule;
use crate::data::captions::{caption_path, Captions};
use crate::data::dataset::TrainImages;
use crate::data::loss_masks::{is_mask_file, LossMasks};
use crate::model::component::Component;
use crate::model::folder::ModelFolder;
use crate::model::tokenizer::placeholder_token_names;
use crate::model::tokenizers::Tokenizers;
use crate::runtime::device::{DeviceKind, MixedPrecision};

pub struct RunPlan {
    pub folder: ModelFolder,
    /// One per text encoder, with the placeholder tokens added.
    pub tokenizers: Tokenizers,
    /// The placeholder string as prompts use it: "P" or "P P_1 P_2".
    pub placeholder_text: String,
    pub placeholder_ids: Vec<u32>,
    /// `num_vectors` copies of the initializer's row, row-major (SDXL: each row the
    /// initializer's row of the first table, then of the second).
    pub initial_rows: Vec<f32>,
    /// The rows' width: the text encoders' hidden sizes together.
    pub hidden: usize,
    /// With --preserve-embedding-norm: each text encoder's median token-embedding norm.
    pub median_norms: Vec<f64>,
    /// Training image size: `--resolution`, else the model's (SDXL) or 512 (SD 1.x/2.x).
    pub resolution: usize,
    pub images: TrainImages,
    pub captions: Captions,
    /// With --masked-loss, each image's latent-size loss weights.
    pub masks: Option<LossMasks>,
    pub compute_dtype: DType,
    pub batches_per_epoch: usize,
    pub total_steps: usize,
    pub schedule: LrSchedule,
}

pub fn plan(args: &TrainArgs, devices: usize) -> Result<RunPlan> {
    check_flags(args)?;
    let folder = args.model.open()?;
    crate::io::output_dir::check_outside(&args.output_dir, &folder.root, "--output-dir")?;
    if let Some(logs) = args.tensorboard_dir() {
        crate::io::output_dir::check_outside(&logs, &folder.root, "--logging-dir")?;
    }
    folder.text_time()?;
    let mut tokenizers = Tokenizers::open(&folder, args.tokenizer_name.clone())?;
    // The step appends the trainable rows after the frozen tables, so the new ids must follow.
    let placeholder_ids =
        tokenizers.add_placeholder_tokens(&args.placeholder_token, args.num_vectors, 0)?;
    let initializer = tokenizers.encode_initializer(&args.initializer_token)?;
    let mut row = Vec::new();
    let mut median_norms = Vec::new();
    for ((component, config), id) in Component::TEXT_ENCODERS
        .into_iter()
        .zip(folder.text_encoders())
        .zip(initializer)
    {
        let table = token_table(&folder, component)?;
        row.extend(initializer_row(&table, id as usize, config.hidden_size)?);
        if args.preserve_embedding_norm {
            median_norms.push(median_row_norm(&table, config.hidden_size));
        }
    }
    let hidden = folder.row_width();
    let initial_rows = row.repeat(args.num_vectors);
    let resolution = training_resolution(args, &folder);

    let images = load_images(args, resolution)?;
    let masks = match args.masked_loss {
        true => {
            let factor = folder.vae.downscale_factor();
            let masks = LossMasks::load(&images.paths, resolution, args.center_crop, factor)?;
            eprintln!(
                "masked loss: {} of {} image(s) have a mask (alpha or .mask.png), the others count everywhere",
                masks.masked,
                images.len()
            );
            Some(masks)
        }
        false => None,
    };
    let captions = Captions::load(
        args.learnable_property,
        args.templates.as_deref(),
        &images.paths,
        args.caption_extension.as_deref(),
        args.caption_dropout_rate,
    )?;
    if args.caption_extension.is_some() {
        eprintln!(
            "captions: {} of {} image(s) have their own, the others use the templates",
            captions.captioned(),
            images.len()
        );
    }
    let unet = UNet2DConditionModel::new(folder.unet.clone())?;
    let multiple = folder.vae.downscale_factor() * unet.size_multiple() as usize;
    if !resolution.is_multiple_of(multiple) {
        bail!("--resolution {resolution} must be a multiple of {multiple} for this model");
    }
    let compute_dtype = MixedPrecision::resolve(args.mixed_precision, args.device.device);
    if compute_dtype == DType::BF16 && args.device.device == DeviceKind::Cpu {
        // Refused before compiling: the CPU backend rejects the step's bf16 gradient products
        // ("Unsupported element type for DotThunk") after a long compile.
        bail!("--mixed-precision bf16 cannot train on the CPU plugin (XLA's CPU backend lacks the bf16 matrix products of the backward pass); use --mixed-precision no on a CPU, bf16 on a GPU or TPU");
    }
    let samples = images
        .len()
        .checked_mul(args.repeats)
        .filter(|&n| n <= MAX_EPOCH_SAMPLES)
        .with_context(|| {
            format!(
                "{} image(s) x --repeats {} is more than {MAX_EPOCH_SAMPLES} samples per epoch: lower --repeats (and use --max-train-steps for a long run)",
                images.len(),
                args.repeats
            )
        })?;
    let global = args
        .train_batch_size
        .checked_mul(devices)
        .context("--train-batch-size x devices overflows")?;
    let batches_per_epoch = samples / global;
    if batches_per_epoch == 0 {
        bail!(
            "{} image(s) x {} repeats = {samples} samples, fewer than one batch of {global} ({} per device x {devices} devices): raise --repeats or lower --train-batch-size",
            images.len(),
            args.repeats,
            args.train_batch_size
        );
    }
    let updates_per_epoch = batches_per_epoch.div_ceil(args.gradient_accumulation_steps);
    let total_steps = if args.max_train_steps > 0 {
        args.max_train_steps
    } else {
        args.num_train_epochs
            .checked_mul(updates_per_epoch)
            .context("--num-train-epochs is too large: pass --max-train-steps instead")?
    };
    let scale = if args.scale_lr && !args.no_scale_lr {
        (global * args.gradient_accumulation_steps) as f64
    } else {
        1.0
    };
    let schedule = LrSchedule {
        kind: args.lr_scheduler,
        base_lr: args.learning_rate * scale,
        warmup_steps: args.lr_warmup_steps as u64,
        total_steps: total_steps as u64,
        num_cycles: args.lr_num_cycles as u64,
    };
    Ok(RunPlan {
        folder,
        tokenizers,
        placeholder_text: placeholder_token_names(&args.placeholder_token, args.num_vectors)
            .join(" "),
        placeholder_ids,
        initial_rows,
        hidden,
        median_norms,
        resolution,
        images,
        captions,
        masks,
        compute_dtype,
        batches_per_epoch,
        total_steps,
        schedule,
    })
}

/// Samples one epoch may hold (its shuffled order is kept in memory).
const MAX_EPOCH_SAMPLES: usize = 10_000_000;
/// Samples per device per step, micro-steps per update, vectors per token: far past any real
/// run, so that a mistyped number is an error instead of hours of work or an allocation abort.
const MAX_BATCH: usize = 4096;
const MAX_ACCUMULATION: usize = 10_000;
const MAX_VECTORS: usize = 1024;
/// Validation images per validation run (each is a full sampling loop).
pub const MAX_IMAGES: usize = 4096;
/// The largest training resolution (SDXL trains at 1024).
pub const MAX_RESOLUTION: usize = 8192;

/// Every numeric flag, checked before anything is read (also by `--compile-only`).
pub fn check_flags(args: &TrainArgs) -> Result<()> {
    for (flag, value) in [
        ("--num-vectors", args.num_vectors),
        ("--repeats", args.repeats),
        ("--train-batch-size", args.train_batch_size),
        (
            "--gradient-accumulation-steps",
            args.gradient_accumulation_steps,
        ),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    check_numbers(args)
}

/// The numeric flags, checked before anything is read: torch's ranges for the optimizer, a
/// usable learning rate, sizes that fit in memory.
fn check_numbers(args: &TrainArgs) -> Result<()> {
    // The optimizer runs in f32: a value past f32's range would be an infinite step.
    if !((args.learning_rate as f32).is_finite() && args.learning_rate > 0.0) {
        bail!(
            "--learning-rate {} must be a positive number (5e-4 to 5e-3 is usual for Textual Inversion)",
            args.learning_rate
        );
    }
    args.adamw.check()?;
    for (flag, value, max) in [
        ("--train-batch-size", args.train_batch_size, MAX_BATCH),
        (
            "--gradient-accumulation-steps",
            args.gradient_accumulation_steps,
            MAX_ACCUMULATION,
        ),
        ("--num-vectors", args.num_vectors, MAX_VECTORS),
        (
            "--num-validation-images",
            args.num_validation_images,
            MAX_IMAGES,
        ),
    ] {
        if value > max {
            bail!("{flag} {value} is more than ti-xla takes ({max})");
        }
    }
    if args.validation_prompt.is_some()
        && (args.num_validation_images == 0 || args.validation_steps == 0)
    {
        bail!("--num-validation-images and --validation-steps must be at least 1");
    }
    if let Some(r) = args.resolution {
        if r == 0 || r > MAX_RESOLUTION {
            bail!("--resolution {r} must be between 1 and {MAX_RESOLUTION}");
        }
    }
    if !(0.0..=1.0).contains(&args.caption_dropout_rate) {
        bail!(
            "--caption-dropout-rate {} must be between 0 and 1 (0.05-0.1 is usual)",
            args.caption_dropout_rate
        );
    }
    let positive = |v: f64| (v as f32).is_finite() && v > 0.0;
    if let Some(g) = args.snr_gamma.filter(|g| !positive(*g)) {
        bail!("--snr-gamma {g} must be a positive number (5 is usual)");
    }
    if !((args.noise_offset as f32).is_finite() && args.noise_offset >= 0.0) {
        bail!(
            "--noise-offset {} must be 0 (off) or a positive number (0.05-0.1 is usual)",
            args.noise_offset
        );
    }
    if let Some(n) = args.max_embedding_norm.filter(|n| !positive(*n)) {
        bail!("--max-embedding-norm {n} must be a positive number");
    }
    Ok(())
}

fn load_images(args: &TrainArgs, resolution: usize) -> Result<TrainImages> {
    let (mut images, skipped) =
        TrainImages::load(&args.train_data_dir, resolution, args.center_crop)?;
    // Mask files are masks with --masked-loss; without it they are images like the others.
    let masks: Vec<PathBuf> = images
        .paths
        .iter()
        .filter(|p| is_mask_file(p))
        .cloned()
        .collect();
    if args.masked_loss {
        images.retain(|p| !is_mask_file(p));
        if images.is_empty() {
            bail!(
                "{} holds only mask files (*.mask.png): add the photos they mask",
                args.train_data_dir.display()
            );
        }
    } else if let Some(m) = masks.first() {
        eprintln!(
            "warning: {} is trained on as an image; pass --masked-loss to use it as a loss mask",
            m.display()
        );
    }
    let captions: Vec<PathBuf> = match &args.caption_extension {
        Some(ext) => images.paths.iter().map(|p| caption_path(p, ext)).collect(),
        None => Vec::new(),
    };
    for path in skipped.iter().filter(|p| !captions.contains(p)) {
        eprintln!("warning: skipping {}: not an image file", path.display());
    }
    Ok(images)
}

/// `--resolution`, else the model's own size for SDXL (1024 for SDXL base), else 512.
pub fn training_resolution(args: &TrainArgs, folder: &ModelFolder) -> usize {
    args.resolution
        .or(folder
            .is_sdxl()
            .then(|| folder.native_resolution())
            .flatten())
        .unwrap_or(512)
}

/// A text encoder's token table, as f32 bytes.
fn token_table(folder: &ModelFolder, component: Component) -> Result<Vec<u8>> {
    let files = component.open(folder)?;
    let name = "text_model.embeddings.token_embedding.weight";
    files
        .read_as(name, DType::F32)
        .with_context(|| format!("cannot read {name}"))
}

/// The initializer's row of a token table.
fn initializer_row(table: &[u8], id: usize, hidden: usize) -> Result<Vec<f32>> {
    let start = id * hidden * 4;
    let row = table
        .get(start..start + hidden * 4)
        .context("the initializer id is outside the token table")?;
    Ok(row
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The median of the table's row norms (the lower middle one for an even count, as
/// `torch.median`).
pub fn median_row_norm(table: &[u8], hidden: usize) -> f64 {
    let mut norms: Vec<f64> = table
        .chunks_exact(hidden * 4)
        .map(|row| {
            row.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
                .map(|v| v * v)
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    norms.sort_by(f64::total_cmp);
    norms
        .get(norms.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(1.0)
}
