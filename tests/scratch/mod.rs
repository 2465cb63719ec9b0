//! What the command-line tests share: where they find fixtures and put their files (Cargo's
//! scratch folder for integration tests, `target/tmp`, never /tmp), one compile cache every
//! test binary uses, so identical programs compile once per checkout, and the success check.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

#[path = "../fixtures_path/mod.rs"]
mod fixtures_path;

/// `tests/fixtures/<rel>`.
#[allow(unused_imports)]
pub use fixtures_path::{copy_model, fixture};

/// This test binary's folder `name`, emptied (not created: commands must create their output
/// folders themselves).
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(env!("CARGO_CRATE_NAME"))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The compile cache the tests pass as `--cache-dir`.
pub fn compile_cache() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("compile-cache")
}

/// `fresh_dir`, created.
pub fn empty_dir(name: &str) -> PathBuf {
    let dir = fresh_dir(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Asserts that a `ti-xla` run succeeded, showing its stderr if not.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "ti-xla failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The losses of `train_log.jsonl` in `out`, in order.
pub fn logged_losses(out: &Path) -> Vec<f64> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["loss"]
                .as_f64()
                .unwrap()
        })
        .collect()
}

/// `ti-xla train` on the tiny SD 1.x fixture and the sample images: 12 steps of batch 2 at
/// 16 px, lr 5e-3 with the linear schedule, no saves but the final one, the shared compile
/// cache, then `extra`.
pub fn train_tiny(out: &Path, images: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["train", "--pretrained_model_name_or_path"])
        .arg(fixture("tiny-sd1"))
        .arg("--train_data_dir")
        .arg(images)
        .args([
            "--placeholder_token",
            "<cat-toy>",
            "--initializer_token",
            "toy",
        ])
        .args(["--resolution", "16", "--train_batch_size", "2"])
        .args(["--learning_rate", "5e-3", "--lr_scheduler", "linear"])
        .args(["--lr_warmup_steps", "0", "--save_steps", "0"])
        .args(["--max_train_steps", "12"])
        .arg("--output_dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra)
        .output()
        .unwrap()
}
