//! Everything a run needs before its first step: the model folder and tokenizer with the new
//! tokens, the starting rows, the training images, the device set, the step count and the
//! learning-rate schedule, each checked with an error that says what to change.

use anyhow::{bail, Context, Result};
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::DType;

use super::args::TrainArgs;
use super::lr_schedule::LrSchedule;
use crate::data::dataset::TrainImages;
use crate::model::component::Component;
use crate::model::folder::ModelFolder;
use crate::model::tokenizer::{placeholder_token_names, ClipTokenizer};
use crate::runtime::device::MixedPrecision;

pub struct RunPlan {
    pub folder: ModelFolder,
    pub tokenizer: ClipTokenizer,
    /// The placeholder string as prompts use it: "P" or "P P_1 P_2".
    pub placeholder_text: String,
    pub placeholder_ids: Vec<u32>,
    /// `num_vectors` copies of the initializer's row, row-major.
    pub initial_rows: Vec<f32>,
    pub hidden: usize,
    pub images: TrainImages,
    pub compute_dtype: DType,
    pub batches_per_epoch: usize,
    pub total_steps: usize,
    pub schedule: LrSchedule,
}

pub fn plan(args: &TrainArgs, devices: usize) -> Result<RunPlan> {
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
    let folder = args.model.open()?;
    let tokenizer_dir = args
        .tokenizer_name
        .clone()
        .unwrap_or_else(|| folder.component("tokenizer"));
    let mut tokenizer = ClipTokenizer::from_dir(&tokenizer_dir)?;
    let vocab = folder.text_encoder.vocab_size;
    if tokenizer.vocab_size() != vocab {
        bail!(
            "the tokenizer has {} tokens but the text encoder {vocab} rows: use the model's own tokenizer",
            tokenizer.vocab_size()
        );
    }
    let placeholder_ids =
        tokenizer.add_placeholder_tokens(&args.placeholder_token, args.num_vectors)?;
    // The step appends the trainable rows after the frozen table, so the new ids must follow it.
    let expected: Vec<u32> = (vocab as u32..(vocab + args.num_vectors) as u32).collect();
    if placeholder_ids != expected {
        bail!("the placeholder tokens got ids {placeholder_ids:?}, expected {expected:?}: the tokenizer already has added tokens");
    }
    let initializer = tokenizer.encode_initializer(&args.initializer_token)?;
    let hidden = folder.text_encoder.hidden_size;
    let row = initializer_row(&folder, initializer as usize, hidden)?;
    let initial_rows = row.repeat(args.num_vectors);

    let images = load_images(args)?;
    let unet = UNet2DConditionModel::new(folder.unet.clone())?;
    let multiple = folder.vae.downscale_factor() * unet.size_multiple() as usize;
    if !args.resolution.is_multiple_of(multiple) {
        bail!(
            "--resolution {} must be a multiple of {multiple} for this model",
            args.resolution
        );
    }
    let compute_dtype = MixedPrecision::resolve(args.mixed_precision, args.device.device);
    let samples = images.len() * args.repeats;
    let global = args.train_batch_size * devices;
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
        args.num_train_epochs * updates_per_epoch
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
        tokenizer,
        placeholder_text: placeholder_token_names(&args.placeholder_token, args.num_vectors)
            .join(" "),
        placeholder_ids,
        initial_rows,
        hidden,
        images,
        compute_dtype,
        batches_per_epoch,
        total_steps,
        schedule,
    })
}

fn load_images(args: &TrainArgs) -> Result<TrainImages> {
    let (images, warnings) =
        TrainImages::load(&args.train_data_dir, args.resolution, args.center_crop)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    Ok(images)
}

/// The initializer's row of the token table, as f32.
fn initializer_row(folder: &ModelFolder, id: usize, hidden: usize) -> Result<Vec<f32>> {
    let files = Component::TextEncoder.open(folder)?;
    let name = "text_model.embeddings.token_embedding.weight";
    let bytes = files
        .read_as(name, DType::F32)
        .with_context(|| format!("cannot read {name}"))?;
    let start = id * hidden * 4;
    let row = bytes
        .get(start..start + hidden * 4)
        .context("the initializer id is outside the token table")?;
    Ok(row
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}
