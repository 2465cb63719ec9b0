//! The `ti-xla` command line: one file per subcommand.

mod devices;
mod forward;
mod generate;
mod plot;
mod push;
mod train;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ti-xla",
    version,
    // A flag given twice takes its last value, as argparse (the reference scripts) does.
    args_override_self = true,
    about = "Textual Inversion for Stable Diffusion on XLA (CPU, GPU, TPU)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the devices a PJRT plugin exposes.
    Devices(devices::DevicesArgs),
    /// Run one model component (text_encoder, unet, vae_encoder, vae_decoder) on tensors
    /// from a safetensors file and write its outputs to another.
    Forward(forward::ForwardArgs),
    /// Make images from a prompt with learned tokens (one sample per device by default).
    Generate(Box<generate::GenerateArgs>),
    /// Redraw loss.png from the train_log.jsonl of a running or finished training run.
    Plot(plot::PlotArgs),
    /// Upload a training output folder (embeddings, validation images, loss plot, a model
    /// card) to a Hugging Face Hub model repo, creating it when missing.
    Push(push::PushArgs),
    /// Learn a new token's embedding (Textual Inversion) from a folder of 3-5 photos.
    Train(Box<train::TrainArgs>),
}

/// Runs the parsed command line; errors are printed as one line by `main`.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Devices(args) => devices::run(&args),
        Command::Forward(args) => forward::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Plot(args) => plot::run(&args),
        Command::Push(args) => push::run(&args),
        Command::Train(args) => train::run(&args),
    }
}
