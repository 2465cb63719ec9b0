//! `ti-xla train`: learn a new token's embedding from a folder of photos.

use anyhow::{Context, Result};

use crate::hub::push::{push, push_token};
pub use crate::train::args::TrainArgs;
use crate::train::trainer::train;

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.compile_only.compile_only {
        return crate::train::compile_only::run(args);
    }
    if args.pushes() {
        // No token (or offline): said before hours of training, not after.
        push_token(&args.hub)?;
    }
    let outcome = train(args)?;
    let loss = outcome
        .last_loss
        .map(|l| format!(", last loss {l:.4}"))
        .unwrap_or_default();
    println!("trained {} steps{loss}", outcome.steps);
    println!("learned embedding: {}", outcome.learned_embeds.display());
    if args.pushes() {
        let url = push(&args.output_dir, &args.hub).context(
            "training finished and its outputs are in place, but the push to the Hub failed",
        )?;
        println!("pushed to {url}");
    }
    Ok(())
}
