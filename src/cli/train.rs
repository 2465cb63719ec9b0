//! `ti-xla train`: learn a new token's embedding from a folder of photos.

use anyhow::Result;

pub use crate::train::args::TrainArgs;
use crate::train::trainer::train;

pub fn run(args: &TrainArgs) -> Result<()> {
    if args.compile_only.compile_only {
        return crate::train::compile_only::run(args);
    }
    let outcome = train(args)?;
    let loss = outcome
        .last_loss
        .map(|l| format!(", last loss {l:.4}"))
        .unwrap_or_default();
    println!("trained {} steps{loss}", outcome.steps);
    println!("learned embedding: {}", outcome.learned_embeds.display());
    Ok(())
}
