//! `ti-xla push`: uploads a finished (or still running) training output folder to a Hub model
//! repo, as `ti-xla train --push-to-hub` does at the end of a run; also the way to retry a push
//! that failed.

use std::path::PathBuf;

use anyhow::Result;

use crate::hub::args::HubArgs;
use crate::hub::push::push;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The training output folder (`--output-dir` of `ti-xla train`).
    #[arg(value_name = "OUTPUT_DIR")]
    pub output_dir: PathBuf,
    #[command(flatten)]
    pub hub: HubArgs,
}

pub fn run(args: &PushArgs) -> Result<()> {
    let url = push(&args.output_dir, &args.hub)?;
    println!("{url}");
    Ok(())
}
