//! `ti-xla train`'s flags: the Flax trainer's plus the PyTorch trainer's extras, kebab-case,
//! with the reference scripts' snake_case spellings accepted so commands copied from the
//! diffusers docs run unchanged.

use std::path::PathBuf;

use xla_graphs::optim::AdamWConfig;

use crate::data::templates::LearnableProperty;
use crate::hub::args::HubArgs;
use crate::model::folder::ModelArgs;
use crate::runtime::device::DeviceArgs;
use crate::runtime::device::MixedPrecision;
use crate::runtime::topology::CompileOnlyArgs;
use crate::train::lr_schedule::LrSchedulerKind;

#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct TrainArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub model: ModelArgs,
    /// Tokenizer folder, if not the model's `tokenizer/`.
    #[arg(long = "tokenizer-name", alias = "tokenizer_name")]
    pub tokenizer_name: Option<PathBuf>,
    /// Folder with the 3-5 photos of the concept.
    #[arg(long = "train-data-dir", alias = "train_data_dir")]
    pub train_data_dir: PathBuf,
    /// The new token, e.g. "<cat-toy>".
    #[arg(long = "placeholder-token", alias = "placeholder_token")]
    pub placeholder_token: String,
    /// An existing single-token word the new embedding starts from, e.g. "toy".
    #[arg(long = "initializer-token", alias = "initializer_token")]
    pub initializer_token: String,
    /// Learn an object (caption templates "a photo of a {}") or a style.
    #[arg(
        long = "learnable-property",
        alias = "learnable_property",
        value_enum,
        default_value = "object"
    )]
    pub learnable_property: LearnableProperty,
    /// Use each image's caption from the file beside it with this extension (`.txt`, or
    /// kohya's `.caption`: `photo.png` and `photo.txt`) instead of the templates; the token
    /// goes where the caption says `{}` or `[name]`, else in front. Images without one use the
    /// templates [default: templates only].
    #[arg(
        long = "caption-extension",
        alias = "caption_extension",
        value_name = "EXT"
    )]
    pub caption_extension: Option<String>,
    /// Train on an empty caption this fraction of the time (kohya's caption dropout: the
    /// token then gets no gradient from that example) [default: 0].
    #[arg(
        long = "caption-dropout-rate",
        alias = "caption_dropout_rate",
        default_value_t = 0.0
    )]
    pub caption_dropout_rate: f64,
    /// Your own caption templates instead of --learnable-property's: one per line, each with
    /// `{}` or `[name]` where the token goes; `#` lines are comments.
    #[arg(long, value_name = "FILE")]
    pub templates: Option<PathBuf>,
    /// Embedding vectors for the token (P, P_1, ... in the prompt).
    #[arg(long = "num-vectors", alias = "num_vectors", default_value_t = 1)]
    pub num_vectors: usize,
    /// How many times each image appears per epoch.
    #[arg(long, default_value_t = 100)]
    pub repeats: usize,
    /// Training image size (square); default 512, or the model's own size for SDXL (1024 for
    /// SDXL base).
    #[arg(long)]
    pub resolution: Option<usize>,
    /// Crop the centred square before resizing (else squash the whole image).
    #[arg(long = "center-crop", alias = "center_crop")]
    pub center_crop: bool,
    /// Images per device per step.
    #[arg(
        long = "train-batch-size",
        alias = "train_batch_size",
        default_value_t = 16
    )]
    pub train_batch_size: usize,
    /// Epochs, when --max-train-steps is 0.
    #[arg(
        long = "num-train-epochs",
        alias = "num_train_epochs",
        default_value_t = 100
    )]
    pub num_train_epochs: usize,
    /// Optimizer steps to run (0: num-train-epochs worth).
    #[arg(
        long = "max-train-steps",
        alias = "max_train_steps",
        default_value_t = 5000
    )]
    pub max_train_steps: usize,
    /// Micro-batches whose gradients are averaged into each update.
    #[arg(
        long = "gradient-accumulation-steps",
        alias = "gradient_accumulation_steps",
        default_value_t = 1
    )]
    pub gradient_accumulation_steps: usize,
    /// Base learning rate.
    #[arg(
        long = "learning-rate",
        alias = "learning_rate",
        default_value_t = 1e-4
    )]
    pub learning_rate: f64,
    /// Multiply the learning rate by batch size x devices x accumulation steps.
    #[arg(long = "scale-lr", alias = "scale_lr", overrides_with = "no_scale_lr")]
    pub scale_lr: bool,
    /// Use the learning rate as given (the default).
    #[arg(long = "no-scale-lr", alias = "no_scale_lr")]
    pub no_scale_lr: bool,
    /// Learning-rate schedule.
    #[arg(
        long = "lr-scheduler",
        alias = "lr_scheduler",
        value_enum,
        default_value = "constant"
    )]
    pub lr_scheduler: LrSchedulerKind,
    /// Steps of linear warm-up from 0.
    #[arg(
        long = "lr-warmup-steps",
        alias = "lr_warmup_steps",
        default_value_t = 500
    )]
    pub lr_warmup_steps: usize,
    /// Hard restarts of cosine_with_restarts.
    #[arg(long = "lr-num-cycles", alias = "lr_num_cycles", default_value_t = 1)]
    pub lr_num_cycles: usize,
    #[command(flatten)]
    #[serde(flatten)]
    pub adamw: AdamWArgs,
    /// Compute precision [default: bf16 on gpu/tpu, no on cpu].
    #[arg(long = "mixed-precision", alias = "mixed_precision", value_enum)]
    pub mixed_precision: Option<MixedPrecision>,
    /// Seed of the data order and of the noise.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where the embeddings, logs and checkpoints go.
    #[arg(
        long = "output-dir",
        alias = "output_dir",
        default_value = "text-inversion-model"
    )]
    pub output_dir: PathBuf,
    /// Write learned_embeds-steps-N.safetensors every N steps (0: never).
    #[arg(long = "save-steps", alias = "save_steps", default_value_t = 500)]
    pub save_steps: usize,
    /// Write a resumable checkpoint-N/ every N steps (0: never).
    #[arg(
        long = "checkpointing-steps",
        alias = "checkpointing_steps",
        default_value_t = 500
    )]
    pub checkpointing_steps: usize,
    /// Keep at most this many checkpoints (oldest removed first).
    #[arg(long = "checkpoints-total-limit", alias = "checkpoints_total_limit")]
    pub checkpoints_total_limit: Option<usize>,
    /// Continue from a checkpoint folder, or `latest` in --output-dir.
    #[arg(long = "resume-from-checkpoint", alias = "resume_from_checkpoint")]
    pub resume_from_checkpoint: Option<String>,
    /// Also save a full diffusers pipeline that knows the new token.
    #[arg(long = "save-as-full-pipeline", alias = "save_as_full_pipeline")]
    pub save_as_full_pipeline: bool,
    /// Also make images of this prompt with the current embedding while training, into
    /// output-dir/validation/step-N/.
    #[arg(long = "validation-prompt", alias = "validation_prompt")]
    pub validation_prompt: Option<String>,
    /// Images per validation.
    #[arg(
        long = "num-validation-images",
        alias = "num_validation_images",
        default_value_t = 4
    )]
    pub num_validation_images: usize,
    /// Make validation images every N steps.
    #[arg(
        long = "validation-steps",
        alias = "validation_steps",
        default_value_t = 100
    )]
    pub validation_steps: usize,
    /// Where the loss, learning rate, validation images and hyper-parameters are logged:
    /// `tensorboard` (event files under --logging-dir, for `tensorboard --logdir`) or `none`.
    #[arg(
        long = "report-to",
        alias = "report_to",
        value_enum,
        default_value_t = ReportTo::Tensorboard
    )]
    pub report_to: ReportTo,
    /// TensorBoard's log folder; a relative one is under --output-dir (as diffusers'
    /// --logging_dir). The run's event files go into its `textual_inversion/`.
    #[arg(long = "logging-dir", alias = "logging_dir", default_value = "logs")]
    pub logging_dir: PathBuf,
    /// Min-SNR-gamma loss weighting (5.0 is the paper's value): each sample's loss weighted
    /// by min(SNR, gamma) / SNR of its timestep (/ (SNR + 1) for v-prediction), as diffusers'
    /// --snr_gamma. Steadier training at high-noise timesteps [default: off].
    #[arg(long = "snr-gamma", alias = "snr_gamma", value_name = "GAMMA")]
    pub snr_gamma: Option<f64>,
    /// Noise offset (0.05-0.1 is usual), as diffusers' --noise_offset: adds this times a normal
    /// draw per sample and latent channel to the noise, which helps very dark or bright
    /// concepts [default: 0, off].
    #[arg(long = "noise-offset", alias = "noise_offset", default_value_t = 0.0)]
    pub noise_offset: f64,
    /// After each update, rescale the learned rows to the vocabulary's median token-embedding
    /// norm (per text encoder), as OneTrainer does: keeps the new token from overpowering the
    /// prompt.
    #[arg(long = "preserve-embedding-norm", alias = "preserve_embedding_norm")]
    pub preserve_embedding_norm: bool,
    /// After each update, clamp each learned row's norm (per text encoder) to at most this
    /// [default: off].
    #[arg(
        long = "max-embedding-norm",
        alias = "max_embedding_norm",
        value_name = "NORM"
    )]
    pub max_embedding_norm: Option<f64>,
    /// Weigh the loss per pixel by each image's alpha channel, or by `NAME.mask.png` beside it
    /// (white counts, black not), as kohya's --masked_loss: train on the subject, not its
    /// background. Images with neither count everywhere.
    #[arg(long = "masked-loss", alias = "masked_loss")]
    pub masked_loss: bool,
    /// Devices to train on [default: every local device].
    #[arg(long = "num-devices", alias = "num_devices")]
    pub num_devices: Option<usize>,
    /// Run the VAE encoder every step instead of caching each image's latent moments.
    #[arg(long = "no-cache-latents", alias = "no_cache_latents")]
    pub no_cache_latents: bool,
    /// Replace the outputs of an earlier run in --output-dir.
    #[arg(long)]
    pub overwrite: bool,
    /// At the end of training, push the embedding, validation images, loss plot and a model
    /// card to a Hub model repo (created when missing; see --hub-model-id).
    #[arg(long = "push-to-hub", alias = "push_to_hub")]
    pub push_to_hub: bool,
    /// Also push after each learned_embeds-steps-N save (implies --push-to-hub); a failed push
    /// there is a warning and training goes on.
    #[arg(long = "push-every-save", alias = "push_every_save")]
    pub push_every_save: bool,
    #[command(flatten)]
    #[serde(skip)]
    pub hub: HubArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub device: DeviceArgs,
    #[command(flatten)]
    #[serde(skip)]
    pub compile_only: CompileOnlyArgs,
}

/// `--report-to`'s choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportTo {
    Tensorboard,
    None,
}

impl TrainArgs {
    /// The TensorBoard run folder (diffusers' `init_trackers("textual_inversion")`), or `None`
    /// with `--report-to none`.
    pub fn tensorboard_dir(&self) -> Option<PathBuf> {
        (self.report_to == ReportTo::Tensorboard).then(|| {
            self.output_dir
                .join(&self.logging_dir)
                .join("textual_inversion")
        })
    }
}

/// torch.optim.AdamW's hyper-parameters, with the reference trainers' defaults.
#[derive(Clone, Debug, clap::Args, serde::Serialize)]
pub struct AdamWArgs {
    /// AdamW beta1.
    #[arg(long = "adam-beta1", alias = "adam_beta1", default_value_t = 0.9)]
    pub adam_beta1: f64,
    /// AdamW beta2.
    #[arg(long = "adam-beta2", alias = "adam_beta2", default_value_t = 0.999)]
    pub adam_beta2: f64,
    /// AdamW decoupled weight decay.
    #[arg(
        long = "adam-weight-decay",
        alias = "adam_weight_decay",
        default_value_t = 1e-2
    )]
    pub adam_weight_decay: f64,
    /// AdamW epsilon.
    #[arg(long = "adam-epsilon", alias = "adam_epsilon", default_value_t = 1e-8)]
    pub adam_epsilon: f64,
}

impl TrainArgs {
    /// Whether the run pushes to the Hub (at the end, and with --push-every-save after each
    /// save).
    pub fn pushes(&self) -> bool {
        self.push_to_hub || self.push_every_save
    }
}

impl AdamWArgs {
    /// The ranges torch.optim.AdamW accepts (it raises on anything else).
    pub fn check(&self) -> anyhow::Result<()> {
        for (flag, v, ok, range) in [
            (
                "--adam-beta1",
                self.adam_beta1,
                (0.0..1.0).contains(&self.adam_beta1),
                "in [0, 1)",
            ),
            (
                "--adam-beta2",
                self.adam_beta2,
                (0.0..1.0).contains(&self.adam_beta2),
                "in [0, 1)",
            ),
            (
                "--adam-weight-decay",
                self.adam_weight_decay,
                self.adam_weight_decay >= 0.0 && (self.adam_weight_decay as f32).is_finite(),
                "a number >= 0 that fits in f32",
            ),
            (
                "--adam-epsilon",
                self.adam_epsilon,
                self.adam_epsilon >= 0.0 && (self.adam_epsilon as f32).is_finite(),
                "a number >= 0 that fits in f32",
            ),
        ] {
            if !ok {
                anyhow::bail!("{flag} {v} must be {range} (as torch.optim.AdamW requires)");
            }
        }
        Ok(())
    }

    pub fn config(&self) -> AdamWConfig {
        AdamWConfig {
            beta1: self.adam_beta1,
            beta2: self.adam_beta2,
            weight_decay: self.adam_weight_decay,
            epsilon: self.adam_epsilon,
        }
    }
}
