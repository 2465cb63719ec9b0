//! `ti-xla plot OUTPUT_DIR`: redraws `loss.png` from the `train_log.jsonl` of a running or
//! finished training run (the run's own plot is drawn only when it ends).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::io::output_dir;
use crate::train::{loss_plot, validation};

#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// A training run's --output-dir (it holds train_log.jsonl).
    #[arg(value_name = "OUTPUT_DIR")]
    pub output_dir: PathBuf,
    /// Where to write the plot [default: OUTPUT_DIR/loss.png].
    #[arg(long, short = 'o', value_name = "PNG")]
    pub output: Option<PathBuf>,
    /// The plot's title [default: the title of the run's own loss.png, else one naming the
    /// output folder].
    #[arg(long)]
    pub title: Option<String>,
}

pub fn run(args: &PlotArgs) -> Result<()> {
    let dir = &args.output_dir;
    let log = dir.join("train_log.jsonl");
    if !log.is_file() {
        bail!(
            "{} has no train_log.jsonl: give the --output-dir of a training run",
            dir.display()
        );
    }
    let points = loss_plot::read_log(&log)?;
    let own = dir.join("loss.png");
    let target = args.output.clone().unwrap_or_else(|| own.clone());
    if target == own {
        check_own_plot(dir, &own)?;
    }
    let title = args
        .title
        .clone()
        .or_else(|| loss_plot::read_title(&own))
        .unwrap_or_else(|| format!("Textual Inversion loss: {}", folder_name(dir)));
    loss_plot::write(&target, &title, &points, &validation::marks(dir))?;
    println!(
        "{} ({} steps{})",
        target.display(),
        points.len(),
        points
            .last()
            .map(|p| format!(", last loss {:.4} at step {}", p.1, p.0))
            .unwrap_or_default()
    );
    Ok(())
}

/// The run's `loss.png` is replaced only when ti-xla wrote it (or there is none yet).
fn check_own_plot(dir: &Path, plot: &Path) -> Result<()> {
    if plot.exists() && !output_dir::written_by_ti_xla(dir)?.contains(Path::new("loss.png")) {
        bail!(
            "{} was not written by ti-xla: move it away, or write the plot elsewhere with --output",
            plot.display()
        );
    }
    Ok(())
}

fn folder_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}
