//! `ti-xla generate` against diffusers' `StableDiffusionPipeline` and
//! `StableDiffusionXLPipeline` (0.42.1, float32): from the same starting latents (and, for Euler
//! ancestral, the same noise), each scheduler's images on the tiny fixtures, with and without a
//! 2-vector learned embedding, within 1e-3 absolute.
//! References: tests/fixtures/<model>/reference/generate.safetensors, made by
//! scripts/make_generate_fixtures.py.

use std::process::Command;

use safetensors::SafeTensors;
use serde_json::Value;

mod scratch;
use scratch::{compile_cache, fixture, fresh_dir};

const SCHEDULERS: [&str; 5] = ["pndm", "ddim", "euler", "euler-ancestral", "dpmpp-2m"];
const TOLERANCE: f64 = 1e-3;

fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    st.tensor(name)
        .unwrap_or_else(|_| panic!("no tensor {name}"))
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Runs every case of one model and returns (case, scheduler, max abs error) rows.
fn compare_model(model: &str) -> Vec<(String, String, f64)> {
    let model_dir = fixture(model);
    let reference = model_dir.join("reference/generate.safetensors");
    let bytes = std::fs::read(&reference).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta: Value = serde_json::from_str(&meta.metadata().as_ref().unwrap()["cases"]).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let out = fresh_dir(model);
    let mut rows = Vec::new();
    for (case, prompts) in meta["cases"].as_object().unwrap() {
        for scheduler in SCHEDULERS {
            let tensors = out.join(format!("{case}-{scheduler}.safetensors"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
            cmd.args(["generate", "--pretrained-model-name-or-path"])
                .arg(&model_dir)
                .args(["--prompt", prompts["prompt"].as_str().unwrap()])
                .args(["--scheduler", scheduler])
                .args(["--num-inference-steps", &meta["steps"].to_string()])
                .args(["--guidance-scale", &meta["guidance_scale"].to_string()])
                .args(["--height", &meta["size"].to_string()])
                .args(["--width", &meta["size"].to_string()])
                .arg("--latents")
                .arg(&reference)
                .arg("--save-tensors")
                .arg(&tensors)
                .arg("--output-dir")
                .arg(out.join(format!("{case}-{scheduler}")))
                .arg("--cache-dir")
                .arg(compile_cache());
            // null is diffusers' `negative_prompt=None` (for SDXL: zeros); the SD fixtures'
            // "" was passed as None, which SD 1.x/2.x encode as the empty prompt.
            if let Some(negative) = prompts["negative_prompt"].as_str() {
                cmd.args(["--negative-prompt", negative]);
            }
            if case.starts_with("embed") {
                cmd.arg("--learned-embeds")
                    .arg(model_dir.join("reference/learned_embeds.safetensors"));
                // The SDXL file ({clip_l, clip_g}) names no token.
                if model == "tiny-sdxl" {
                    cmd.args(["--token", "<cat-toy>"]);
                }
            }
            let run = cmd.output().expect("run ti-xla");
            assert!(
                run.status.success(),
                "{model} {case} {scheduler}: {}",
                String::from_utf8_lossy(&run.stderr)
            );
            let got_bytes = std::fs::read(&tensors).unwrap();
            let got = floats(&SafeTensors::deserialize(&got_bytes).unwrap(), "images");
            let want = floats(&st, &format!("{case}.{scheduler}.images"));
            assert_eq!(got.len(), want.len(), "{model} {case} {scheduler}");
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() as f64)
                .fold(0.0, f64::max);
            rows.push((case.clone(), scheduler.to_string(), err));
        }
    }
    let _ = std::fs::remove_dir_all(&out);
    for (case, scheduler, err) in &rows {
        eprintln!("{model} {case:5} {scheduler:15} max |image - diffusers| = {err:.2e}");
    }
    rows
}

fn check(model: &str, cases: usize) {
    let rows = compare_model(model);
    assert_eq!(rows.len(), cases * SCHEDULERS.len());
    for (case, scheduler, err) in rows {
        assert!(
            err <= TOLERANCE,
            "{model} {case} {scheduler}: images differ from diffusers' by {err:e}"
        );
    }
}

#[test]
fn tiny_sd1_matches_diffusers_for_every_scheduler() {
    check("tiny-sd1", 2);
}

#[test]
fn tiny_sd2_matches_diffusers_for_every_scheduler() {
    check("tiny-sd2", 2);
}

/// `StableDiffusionXLPipeline`: both encoders, pooled embeddings and time ids, with and without
/// a `{clip_l, clip_g}` embedding, with no negative prompt (zeros) and with the empty one.
#[test]
fn tiny_sdxl_matches_diffusers_for_every_scheduler() {
    check("tiny-sdxl", 4);
}
