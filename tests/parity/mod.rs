//! Helpers shared by the model parity tests (text encoder, UNet, VAE): fixture paths, the
//! error measure every parity assertion uses, scratch files and the `ti-xla forward` command.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../fixtures_path/mod.rs"]
mod fixtures_path;

/// `tests/fixtures/<rel>`.
#[allow(unused_imports)]
pub use fixtures_path::{copy_model, fixture};

/// Prints and returns (max abs error, max abs error / max |reference|).
pub fn compare(what: &str, ours: &[f32], reference: &[f32]) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len(), "{what}: element count");
    let max_abs = ours
        .iter()
        .zip(reference)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    let scale = reference.iter().map(|v| v.abs() as f64).fold(0.0, f64::max);
    let rel = max_abs / scale;
    println!("{what}: max abs error {max_abs:.3e}, max rel error {rel:.3e} (max |ref| {scale:.3})");
    (max_abs, rel)
}

/// A file path in this test binary's own scratch folder.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(env!("CARGO_CRATE_NAME"));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Runs `ti-xla forward --component COMPONENT` on a fixture model, without the compile cache.
pub fn forward(
    component: &str,
    model: &str,
    inputs: &Path,
    output: &Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["forward", "--component", component, "--no-compile-cache"])
        .arg("--model")
        .arg(fixture(model))
        .arg("--inputs")
        .arg(inputs)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}
