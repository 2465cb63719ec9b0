//! `ti-xla generate`'s flags, kebab-case with the snake_case spellings of diffusers' scripts
//! accepted as aliases.

use std::path::PathBuf;

use xla_graphs::schedulers::SchedulerKind;

use crate::model::folder::ModelArgs;
use crate::runtime::device::DeviceArgs;
use crate::runtime::device::MixedPrecision;
use crate::runtime::topology::CompileOnlyArgs;

#[derive(Clone, Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Learned embedding files (diffusers `learned_embeds.safetensors`, A1111/kohya
    /// safetensors); each adds its token to the prompt's vocabulary.
    #[arg(
        long = "learned-embeds",
        alias = "learned_embeds",
        value_name = "FILE",
        num_args = 1..,
        action = clap::ArgAction::Append
    )]
    pub learned_embeds: Vec<PathBuf>,
    /// The token each embedding file is used under, in the files' order (default: the name
    /// stored in the file).
    #[arg(long, value_name = "TOKEN", num_args = 1.., action = clap::ArgAction::Append)]
    pub token: Vec<String>,
    /// What to draw, e.g. "a photo of <cat-toy> on a beach".
    #[arg(long)]
    pub prompt: String,
    /// What to steer away from (default: the empty prompt).
    #[arg(long = "negative-prompt", alias = "negative_prompt")]
    pub negative_prompt: Option<String>,
    /// Images to make [default: one per device used].
    #[arg(long = "num-samples", alias = "num_samples")]
    pub num_samples: Option<usize>,
    /// Denoising steps.
    #[arg(
        long = "num-inference-steps",
        alias = "num_inference_steps",
        default_value_t = 50
    )]
    pub num_inference_steps: usize,
    /// Classifier-free guidance scale.
    #[arg(
        long = "guidance-scale",
        alias = "guidance_scale",
        default_value_t = 7.5
    )]
    pub guidance_scale: f64,
    /// Sampler: pndm, ddim, euler, euler-ancestral or dpmpp-2m [default: the model's
    /// scheduler_config.json].
    #[arg(long)]
    pub scheduler: Option<SchedulerKind>,
    /// Karras noise levels (as diffusers' `use_karras_sigmas`): with dpmpp-2m this is "DPM++ 2M
    /// Karras"; also for euler.
    #[arg(long = "karras-sigmas", alias = "use_karras_sigmas")]
    pub karras_sigmas: bool,
    /// Seed of the starting latents (and of Euler ancestral's noise); sample i always gets the
    /// same draws, whatever the number of devices.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image height [default: the UNet's sample_size x the VAE's scale factor, 512 for SD 1.5].
    #[arg(long)]
    pub height: Option<usize>,
    /// Image width [default: as the height].
    #[arg(long)]
    pub width: Option<usize>,
    /// Where the PNGs go.
    #[arg(long = "output-dir", alias = "output_dir", default_value = "samples")]
    pub output_dir: PathBuf,
    /// Replace PNGs an earlier run left in --output-dir.
    #[arg(long)]
    pub overwrite: bool,
    /// Devices to spread the samples over [default: every local device].
    #[arg(long = "num-devices", alias = "num_devices")]
    pub num_devices: Option<usize>,
    /// Compute precision [default: bf16 on gpu/tpu, no on cpu].
    #[arg(long = "mixed-precision", alias = "mixed_precision", value_enum)]
    pub mixed_precision: Option<MixedPrecision>,
    /// Starting latents instead of drawing them: a safetensors file with `latents`
    /// [num_samples, C, h, w] standard normals and, optionally, `noise` [steps, num_samples, C,
    /// h, w] for Euler ancestral (for checks against other implementations).
    #[arg(long, hide = true, value_name = "FILE")]
    pub latents: Option<PathBuf>,
    /// Also write the float images `images` [num_samples, 3, H, W] in [0, 1] to this
    /// safetensors file.
    #[arg(long = "save-tensors", hide = true, value_name = "FILE")]
    pub save_tensors: Option<PathBuf>,
    #[command(flatten)]
    pub device: DeviceArgs,
    #[command(flatten)]
    pub compile_only: CompileOnlyArgs,
}
