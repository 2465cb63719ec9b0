//! Progress over the denoising steps: a bar on a terminal, a line every tenth of the run
//! otherwise (logs, CI).

use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

pub struct StepProgress {
    bar: Option<ProgressBar>,
    started: Instant,
    total: usize,
}

impl StepProgress {
    pub fn new(total: usize) -> StepProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} denoising steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("static template"),
            );
            bar
        });
        StepProgress {
            bar,
            started: Instant::now(),
            total,
        }
    }

    /// Step `i` (0-based) is done.
    pub fn step(&self, i: usize) {
        let done = i + 1;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        match &self.bar {
            Some(bar) => {
                bar.set_position(done as u64);
                bar.set_message(format!("{rate:.2} steps/s"));
            }
            None if done == self.total || done.is_multiple_of((self.total / 10).max(1)) => {
                eprintln!("step {done}/{}  {rate:.2} steps/s", self.total)
            }
            None => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
