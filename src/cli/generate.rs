//! `ti-xla generate`: images from a prompt with learned tokens.

use anyhow::Result;

pub use crate::generate::args::GenerateArgs;
use crate::generate::generate;

pub fn run(args: &GenerateArgs) -> Result<()> {
    if args.compile_only.compile_only {
        return crate::generate::compile_only::run(args);
    }
    let outcome = generate(args)?;
    let samples = outcome.images.len().saturating_sub(1);
    println!(
        "wrote {samples} image(s) and grid.png to {} ({} device(s))",
        args.output_dir.display(),
        outcome.devices
    );
    Ok(())
}
