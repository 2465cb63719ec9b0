//! `--compile-only --topology`: the tiny fixture's training step (4 replicas, with its
//! all-reduce) and generation programs compiled by libtpu for a v5e:2x2 slice on this machine,
//! without a TPU; the reported memory grows with the batch, and a bad topology name, an
//! over-large batch and a missing plugin each end in one line.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

mod scratch;
use scratch::{fixture, ok};

const TOPOLOGY: &str = "v5e:2x2";
const GIB: i64 = 1 << 30;

/// Fails, naming the install command, when libtpu is not installed.
fn require_libtpu() {
    let so = Path::new(env!("CARGO_MANIFEST_DIR")).join(".pjrt/tpu/libtpu/libtpu.so");
    assert!(
        so.is_file(),
        "{} is missing: install the TPU plugin with `scripts/install-plugin.sh tpu`",
        so.display()
    );
}

fn ti_xla(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(args)
        .output()
        .unwrap()
}

fn train(topology: &str, batch: usize, extra: &[&str]) -> Output {
    let model = fixture("tiny-sd1");
    let images = fixture("sample-images");
    let batch = batch.to_string();
    let mut args = vec![
        "train",
        "--pretrained_model_name_or_path",
        model.to_str().unwrap(),
        "--train_data_dir",
        images.to_str().unwrap(),
        "--placeholder_token",
        "<cat-toy>",
        "--initializer_token",
        "toy",
        "--resolution",
        "16",
        "--train_batch_size",
        &batch,
        "--device",
        "tpu",
        "--compile-only",
        "--topology",
        topology,
    ];
    args.extend_from_slice(extra);
    ti_xla(&args)
}

fn report(out: &Output) -> Value {
    ok(out);
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {text}"))
}

fn int(v: &Value, key: &str) -> i64 {
    v[key]
        .as_i64()
        .unwrap_or_else(|| panic!("no integer {key} in {v}"))
}

fn float(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("no number {key} in {v}"))
}

/// stderr's lines: ti-xla's own only (libtpu's log lines are kept off the terminal).
fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

fn assert_one_error_line(out: &Output, contains: &[&str]) {
    assert!(!out.status.success(), "expected a failure");
    let lines = stderr_lines(out);
    let errors: Vec<_> = lines.iter().filter(|l| l.starts_with("error")).collect();
    assert_eq!(errors.len(), 1, "one error line: {lines:#?}");
    let last = lines.last().unwrap();
    assert!(
        last.starts_with("error"),
        "the error ends stderr: {lines:#?}"
    );
    for c in contains {
        assert!(last.contains(c), "{c:?} in {last:?}");
    }
    // No plugin log lines (glog's "E1207 ...", "WARNING: ...", stack-trace banners).
    for l in &lines {
        assert!(
            !l.starts_with("WARNING") && !l.starts_with("===") && !l.starts_with("E0000"),
            "libtpu noise on stderr: {l:?}"
        );
    }
}

/// A program's estimated time: XLA's cost model when it gave a positive time, else the v5e
/// roofline, max(flops / 197 TFLOP/s, bytes / 819 GB/s).
fn assert_estimate(p: &Value) {
    assert_estimate_on(p, TOPOLOGY)
}

/// As [`assert_estimate`], with the roofline of `topology`'s devices (Google's figures per
/// chip; a v4 chip is two devices).
fn assert_estimate_on(p: &Value, topology: &str) {
    let (flops, bandwidth) = match topology.split(':').next().unwrap() {
        "v5e" => (197e12, 819e9),
        "v4" => (275e12 / 2.0, 1228e9 / 2.0),
        "v5p" => (459e12, 2765e9),
        other => panic!("{other}"),
    };
    let seconds = float(p, "estimated_seconds");
    assert!(seconds > 0.0, "{p}");
    match p["estimate"].as_str().unwrap() {
        "cost_model" => assert_eq!(seconds, float(p, "optimal_seconds"), "{p}"),
        "roofline" => {
            let roofline = (float(p, "flops") / flops).max(float(p, "bytes_accessed") / bandwidth);
            assert!((seconds - roofline).abs() <= 1e-12 * roofline, "{p}");
        }
        other => panic!("estimate {other:?} in {p}"),
    }
}

#[test]
fn the_training_step_compiles_for_v5e_and_its_memory_grows_with_the_batch() {
    require_libtpu();
    let one = report(&train(TOPOLOGY, 1, &["--json", "--batch-search", "0"]));
    let eight = report(&train(TOPOLOGY, 8, &["--json", "--batch-search", "0"]));
    for r in [&one, &eight] {
        assert_eq!(int(r, "devices"), 4, "{r}");
        assert!(r["device_kind"].as_str().unwrap().contains("v5"), "{r}");
        assert_eq!(int(r, "hbm_bytes"), 16 * GIB, "v5e has 16 GiB per chip");
        assert_eq!(r["fits"], Value::Bool(true));
        let programs = r["programs"].as_array().unwrap();
        let names: Vec<_> = programs
            .iter()
            .map(|p| p["program"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["training step", "VAE encoder"]);
        // The step runs on all 4 chips (its gradient all-reduce over 4 replicas), the latent
        // cache's encoder on one.
        assert_eq!(int(&programs[0], "devices"), 4);
        assert_eq!(int(&programs[1], "devices"), 1);
        assert!(
            int(&programs[0], "temp_bytes") > 0,
            "the step's activations"
        );
        for p in programs {
            for key in ["argument_bytes", "output_bytes", "code_bytes"] {
                assert!(int(p, key) > 0, "{key} of {p}");
            }
            assert!(int(p, "temp_bytes") >= 0, "{p}");
            assert!(float(p, "flops") > 0.0, "{p}");
        }
        // The totals are the programs' arguments together plus the step's transient need.
        let args: i64 = programs.iter().map(|p| int(p, "argument_bytes")).sum();
        assert_eq!(int(r, "argument_bytes"), args);
        assert!(int(r, "needed_bytes") > args && int(r, "needed_bytes") < int(r, "hbm_bytes"));
        // Per step only the step counts (the encoder runs once before the loop).
        assert_eq!(float(r, "flops"), float(&programs[0], "flops"));
        for p in programs {
            assert_estimate(p);
        }
        let step = float(r, "estimated_step_seconds");
        assert!(step > 0.0 && step < 1.0, "{step}");
        assert_eq!(step, float(&programs[0], "estimated_seconds"));
        let rate = float(r, "samples_per_second");
        let batch = int(r, "batch") as f64;
        assert!((rate - 4.0 * batch / step).abs() <= 1e-9 * rate, "{rate}");
    }
    let step = |r: &Value, key: &str| int(&r["programs"][0], key);
    // (Batch 8 against 1: at batch 2 the TPU's tiling pads the 16 px fixture's activations
    // to the same size, and its temporaries can come out smaller.)
    assert!(step(&eight, "argument_bytes") > step(&one, "argument_bytes"));
    assert!(step(&eight, "temp_bytes") > step(&one, "temp_bytes"));
    assert!(float(&eight, "flops") > 4.0 * float(&one, "flops"));
    // The encoder's shapes do not depend on the training batch.
    assert_eq!(one["programs"][1], eight["programs"][1]);
}

#[test]
fn the_generation_programs_compile_for_v5e() {
    require_libtpu();
    let model = fixture("tiny-sd1");
    let out = ti_xla(&[
        "generate",
        "--pretrained_model_name_or_path",
        model.to_str().unwrap(),
        "--prompt",
        "a photo",
        "--height",
        "16",
        "--width",
        "16",
        "--num_inference_steps",
        "3",
        "--scheduler",
        "ddim",
        "--device",
        "tpu",
        "--compile-only",
        "--topology",
        TOPOLOGY,
        "--json",
        "--batch-search",
        "0",
    ]);
    let r = report(&out);
    assert_eq!(int(&r, "devices"), 4);
    assert_eq!(int(&r, "batch"), 1, "one image per device by default");
    let programs = r["programs"].as_array().unwrap();
    let names: Vec<_> = programs
        .iter()
        .map(|p| p["program"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["text encoder", "denoising step", "VAE decoder"]);
    for p in programs {
        assert_eq!(int(p, "devices"), 4);
        for key in ["argument_bytes", "output_bytes", "code_bytes"] {
            assert!(int(p, key) > 0, "{key} of {p}");
        }
    }
    // One generation: the text encoder and decoder once, the step once per timestep.
    let f = |i: usize| float(&programs[i], "flops");
    let expected = f(0) + 3.0 * f(1) + f(2);
    assert!((float(&r, "flops") - expected).abs() <= 1e-9 * expected);
    for p in programs {
        assert_estimate(p);
    }
    let secs = |i: usize| float(&programs[i], "estimated_seconds");
    let expected = secs(0) + 3.0 * secs(1) + secs(2);
    assert!((float(&r, "estimated_step_seconds") - expected).abs() <= 1e-9 * expected);
}

#[test]
fn a_bad_topology_name_is_one_line_naming_good_ones() {
    require_libtpu();
    // An unknown generation is refused before the plugin loads; a known one with a shape
    // libtpu does not make is refused by the plugin, in one line all the same.
    for name in ["v9z:2x2", "v5e:3x7"] {
        let out = train(name, 1, &[]);
        assert_one_error_line(&out, &[name, "v5e:2x4"]);
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn an_over_large_batch_is_one_line_saying_what_to_lower() {
    require_libtpu();
    // 256 images of 4096 x 4096 per chip, encoded in the step: the pixels alone are more than
    // a v5e chip's 16 GiB, which is known without compiling (libtpu would spend minutes and
    // tens of GB of host memory before giving up).
    let (batch, px) = (256, 4096);
    let out = train(
        TOPOLOGY,
        batch,
        &[
            "--resolution",
            &px.to_string(),
            "--no-cache-latents",
            "--batch-search",
            "0",
            "--json",
        ],
    );
    assert_one_error_line(
        &out,
        &["does not fit", "--train-batch-size 256", "16.00 GiB"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(r["fits"], Value::Bool(false));
    assert!(
        r["programs"].as_array().unwrap().is_empty(),
        "not compiled: {r}"
    );
    // At least the pixels (bf16, TPU's default precision: force_upcast keeps only SDXL's VAE
    // in f32, as diffusers does) and at most 1% more (the tiny model's weights and the other
    // inputs).
    let pixels = (batch * 3 * px * px * 2) as i64;
    let args = int(&r, "argument_bytes");
    assert!(
        args >= pixels && args < pixels + pixels / 100,
        "{args} vs {pixels}"
    );
    // A batch beyond what ti-xla takes at all is refused before the plugin loads.
    let out = train(TOPOLOGY, 5000, &[]);
    assert_one_error_line(&out, &["--train-batch-size 5000", "4096"]);
}

#[test]
fn a_missing_plugin_names_the_install_command() {
    let out = train(TOPOLOGY, 1, &["--plugin", "/nonexistent/libtpu.so"]);
    assert_one_error_line(&out, &["scripts/install-plugin.sh tpu"]);
}

#[test]
fn compile_only_needs_a_tpu_and_a_topology() {
    let out = train(TOPOLOGY, 1, &["--device", "cpu"]);
    assert_one_error_line(&out, &["--device tpu"]);
}

/// The training step also compiles for v4 and v5p slices; libtpu makes a v4:2x2x1 (4 chips)
/// into 8 devices, one per TensorCore, so each has half a chip's 32 GiB, while a v5p:2x2x1 is
/// 4 devices of 95 GiB.
#[test]
fn the_training_step_compiles_for_v4_and_v5p() {
    require_libtpu();
    for (topology, devices, hbm) in [("v4:2x2x1", 8, 16 * GIB), ("v5p:2x2x1", 4, 95 * GIB)] {
        let r = report(&train(topology, 1, &["--json", "--batch-search", "0"]));
        assert_eq!(int(&r, "devices"), devices, "{r}");
        assert_eq!(int(&r, "hbm_bytes"), hbm, "{topology}");
        assert_eq!(r["fits"], Value::Bool(true));
        assert_eq!(int(&r["programs"][0], "devices"), devices);
        for p in r["programs"].as_array().unwrap() {
            assert_estimate_on(p, topology);
        }
    }
}
