//! What a run reports while it trains: a progress bar on a terminal (plain lines otherwise),
//! `train_log.jsonl` (one line per optimizer step) and, with `--report-to tensorboard`, the
//! same loss and learning rate, the validation images and the hyper-parameters as TensorBoard
//! events.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};

use crate::io::tensorboard::{EventWriter, HParam};

pub struct Progress {
    bar: Option<ProgressBar>,
    log: std::fs::File,
    started: Instant,
    total: usize,
    first_step: usize,
    tensorboard: Option<EventWriter>,
}

/// One optimizer step's record.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StepRecord {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    /// Seconds since the run (or resume) started.
    pub seconds: f64,
}

impl Progress {
    /// `tensorboard`: the run folder to write event files into, and the hyper-parameters
    /// (any serializable settings, flattened) to log there once.
    pub fn new(
        output_dir: &Path,
        first_step: usize,
        total: usize,
        tensorboard: Option<(&Path, &serde_json::Value)>,
    ) -> Result<Progress> {
        let path = output_dir.join("train_log.jsonl");
        // A resumed run appends to the log of the run it continues.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
                )
                .expect("static template"),
            );
            bar.set_position(first_step as u64);
            bar
        });
        let tensorboard = match tensorboard {
            Some((dir, settings)) => {
                let mut writer = EventWriter::create(dir)?;
                writer.hparams(&hparams(settings), &["loss", "lr"])?;
                Some(writer)
            }
            None => None,
        };
        Ok(Progress {
            bar,
            log,
            started: Instant::now(),
            total,
            first_step,
            tensorboard,
        })
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Records steps whose losses have been read back.
    pub fn record(&mut self, records: &[StepRecord]) -> Result<()> {
        for r in records {
            writeln!(self.log, "{}", serde_json::to_string(r)?)?;
            if let Some(tb) = &mut self.tensorboard {
                tb.scalars(r.step as u64 + 1, &[("loss", r.loss), ("lr", r.lr)])?;
            }
        }
        self.log.flush()?;
        let Some(last) = records.last() else {
            return Ok(());
        };
        let done = last.step + 1 - self.first_step;
        let rate = done as f64 / self.seconds().max(1e-9);
        let msg = format!(
            "loss {:.4}  lr {:.2e}  {rate:.2} steps/s",
            last.loss, last.lr
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(last.step as u64 + 1);
                bar.set_message(msg);
            }
            None => eprintln!("step {}/{}  {msg}", last.step + 1, self.total),
        }
        Ok(())
    }

    /// Logs the validation images of `step` (1-based), in `dir`, to TensorBoard: their grid as
    /// the `validation` image, as diffusers' `add_images("validation", ...)` does.
    pub fn validation_images(&mut self, step: usize, dir: &Path) -> Result<()> {
        let Some(tb) = &mut self.tensorboard else {
            return Ok(());
        };
        let grid = dir.join("grid.png");
        let path = if grid.is_file() {
            grid
        } else {
            dir.join("0000.png")
        };
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let (width, height) = image::ImageReader::new(std::io::Cursor::new(&bytes))
            .with_guessed_format()?
            .into_dimensions()
            .with_context(|| format!("{} is not an image", path.display()))?;
        tb.png(step as u64, "validation", bytes, width, height)
    }

    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

/// Settings as hyper-parameters: each field of `settings` (nested objects flattened with `.`),
/// numbers, strings and booleans as such, lists as their JSON text; unset (null) ones left out.
pub fn hparams(settings: &serde_json::Value) -> BTreeMap<String, HParam> {
    fn go(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, HParam>) {
        use serde_json::Value;
        let value = match v {
            Value::Null => return,
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    go(&key, v, out);
                }
                return;
            }
            Value::Bool(b) => HParam::Bool(*b),
            Value::Number(n) => HParam::Number(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => HParam::Text(s.clone()),
            Value::Array(_) => HParam::Text(v.to_string()),
        };
        out.insert(prefix.to_string(), value);
    }
    let mut out = BTreeMap::new();
    go("", settings, &mut out);
    out
}

/// Cuts `train_log.jsonl` back to the `step` steps a checkpoint holds (0-based records below `step`) (a resumed run logs from there on, so
/// the steps a stopped run logged after its checkpoint are not repeated).
pub fn truncate_log(output_dir: &Path, step: usize) -> Result<()> {
    let path = output_dir.join("train_log.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| (s as usize) < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    if kept.len() != text.len() {
        crate::io::atomic_file::write_atomic(&path, kept.as_bytes())?;
    }
    Ok(())
}
