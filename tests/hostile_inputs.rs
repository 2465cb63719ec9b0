//! Hostile and mistaken inputs get one line and a non-zero exit, never a panic, an abort or a
//! hang (issue 13, items 5-9, 11-14 and the panic hook): image bombs and truncated images,
//! crafted pickles, ti-xla's own embeddings whatever their header length, a Hub that never
//! answers, impossible configs and flags, bf16 training on a CPU, non-finite embeddings, a
//! config that does not match its weights (reported before any compile), swapped compile-cache
//! entries. Inputs are crafted here, a few bytes each.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod scratch;
use scratch::{compile_cache, copy_model, empty_dir, fixture, ok};

fn ti_xla() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.env_remove("RUST_BACKTRACE");
    cmd
}

fn train(model: &Path, images: &Path, out: &Path, extra: &[&str]) -> Output {
    ti_xla()
        .args(["train", "--pretrained-model-name-or-path"])
        .arg(model)
        .arg("--train-data-dir")
        .arg(images)
        .args([
            "--placeholder-token",
            "<cat-toy>",
            "--initializer-token",
            "toy",
        ])
        .args([
            "--resolution",
            "16",
            "--train-batch-size",
            "1",
            "--max-train-steps",
            "2",
        ])
        .args(["--learning-rate", "5e-3", "--checkpointing-steps", "0"])
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra)
        .output()
        .unwrap()
}

fn generate(model: &Path, out: &Path, extra: &[&str]) -> Output {
    ti_xla()
        .args(["generate", "--pretrained-model-name-or-path"])
        .arg(model)
        .args(["--prompt", "a photo of a cat", "--num-inference-steps", "2"])
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra)
        .output()
        .unwrap()
}

/// Non-zero exit, exactly one `error:` line, holding every needle, no panic or backtrace.
fn one_line_error(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    for n in needles {
        assert!(errors[0].contains(n), "{n:?} not in {stderr}");
    }
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
}

/// A folder holding only `name` with `bytes`.
fn folder_with(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let d = dir.join(name.replace('.', "-"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join(name), bytes).unwrap();
    d
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn encoded(format: image::ImageFormat, size: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(size, size, |x, y| {
        image::Rgb([(x as u8).wrapping_mul(9), (y as u8).wrapping_mul(7), 99])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[test]
fn image_bombs_and_truncated_images_are_refused_by_name() {
    let dir = empty_dir("images");
    let model = fixture("tiny-sd1");
    // A 1x1 PNG whose header declares 100000 x 100000 (the CRC fixed up): under 100 bytes.
    let mut png = encoded(image::ImageFormat::Png, 1);
    png[16..20].copy_from_slice(&100_000u32.to_be_bytes());
    png[20..24].copy_from_slice(&100_000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    assert!(png.len() < 100);
    // A small JPEG whose frame header declares 65500 x 65500.
    let mut jpeg = encoded(image::ImageFormat::Jpeg, 16);
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 7].copy_from_slice(&65500u16.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&65500u16.to_be_bytes());
    // A real JPEG cut in its scan.
    let whole = encoded(image::ImageFormat::Jpeg, 64);
    let cut = whole[..whole.len() * 3 / 5].to_vec();
    for (name, bytes, needle) in [
        ("bomb.png", png, "16384 px per side"),
        ("bomb.jpg", jpeg, "16384 px per side"),
        ("cut.jpg", cut, "truncated JPEG"),
    ] {
        let images = folder_with(&dir, name, &bytes);
        let started = Instant::now();
        let run = train(&model, &images, &dir.join("out"), &[]);
        one_line_error(&run, &[name, needle]);
        assert!(started.elapsed() < Duration::from_secs(60));
        assert!(!dir.join("out/learned_embeds.safetensors").exists());
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A zip archive of stored entries, as torch.save writes one.
fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let (mut out, mut central) = (Vec::new(), Vec::new());
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let fields = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend([0u8; 6]); // flags, method (stored), time
            v.extend(0u16.to_le_bytes()); // date
            v.extend(crc.to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra
        };
        out.extend(b"PK\x03\x04");
        fields(&mut out);
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(b"PK\x01\x02");
        central.extend(20u16.to_le_bytes()); // version made by
        fields(&mut central);
        central.extend([0u8; 10]); // comment, disk, attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let (cd_offset, cd_size) = (out.len() as u32, central.len() as u32);
    out.extend(central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend(cd_size.to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

#[test]
fn crafted_pickles_end_in_one_line() {
    let dir = empty_dir("pickles");
    let model = fixture("tiny-sd1");
    let mut deep = b"\x80\x02".to_vec();
    deep.extend(std::iter::repeat_n(b']', 200_000));
    deep.extend(std::iter::repeat_n(b'a', 199_999));
    deep.push(b'.');
    let mut doubling = b"\x80\x02]q\x00".to_vec();
    for _ in 0..40 {
        doubling.extend(b"](h\x00h\x00eq\x00");
    }
    doubling.push(b'.');
    let mut far = b"\x80\x02}X\x05\x00\x00\x00<cat>ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ\x8a\x08".to_vec();
    far.extend((1u64 << 62).to_le_bytes());
    far.extend(b"K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtRs.");
    let storage = [0u8, 0, 128, 63, 0, 0, 0, 64];
    for (name, pkl, needle) in [
        ("deep.pt", deep, "containers"),
        ("doubling.pt", doubling, "values"),
        ("far.pt", far, "runs past its storage"),
    ] {
        let path = dir.join(name);
        let archive = zip(&[("archive/data.pkl", &pkl), ("archive/data/0", &storage)]);
        assert!(archive.len() < 500_000);
        std::fs::write(&path, archive).unwrap();
        let run = generate(
            &model,
            &dir.join("out"),
            &["--learned-embeds", path.to_str().unwrap()],
        );
        one_line_error(&run, &[name, needle]);
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn every_placeholder_length_loads_back_and_non_finite_rows_are_refused() {
    let dir = empty_dir("embeds");
    // ti-xla's own files for placeholders of 1..=80 characters: each header length mod 256
    // comes round, 128 (the byte that looks like a pickle's) included.
    for n in 1..=80 {
        let token = format!("<{}>", "a".repeat(n));
        let path = dir.join(format!("e{n}.safetensors"));
        ti_xla::io::learned_embeds::write_learned_embeds(&path, &token, &[0.5; 16], &[16]).unwrap();
        let e = ti_xla::model::embeddings::read_embedding(&path, None)
            .unwrap_or_else(|e| panic!("placeholder of {n} characters: {e:#}"));
        assert_eq!(e.token, token);
    }
    let header = |n: usize| {
        let bytes = std::fs::read(dir.join(format!("e{n}.safetensors"))).unwrap();
        u64::from_le_bytes(bytes[..8].try_into().unwrap()) % 256
    };
    assert!(
        (1..=80).any(|n| header(n) == 128),
        "no header of length 128 mod 256 was tried"
    );
    // A NaN row in generate: refused, naming the file.
    let nan = dir.join("nan.safetensors");
    let mut rows = vec![0.5f32; 16];
    rows[3] = f32::NAN;
    ti_xla::io::learned_embeds::write_learned_embeds(&nan, "<nan>", &rows, &[16]).unwrap();
    let run = generate(
        &fixture("tiny-sd1"),
        &dir.join("out"),
        &["--learned-embeds", nan.to_str().unwrap()],
    );
    one_line_error(&run, &["nan.safetensors", "finite"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_hub_that_never_answers_times_out_naming_the_endpoint() {
    let dir = empty_dir("hub");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Accepts every connection and never writes a byte.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let started = Instant::now();
    let run = ti_xla()
        .env("HF_ENDPOINT", &endpoint)
        .env("HF_HOME", dir.join("hf"))
        .env_remove("HF_HUB_OFFLINE")
        .env("TI_XLA_HUB_TIMEOUT_SECS", "1")
        .args([
            "generate",
            "--model",
            "some-org/some-model",
            "--prompt",
            "x",
        ])
        .arg("--output-dir")
        .arg(dir.join("out"))
        .output()
        .unwrap();
    one_line_error(&run, &[&endpoint, "HF_HUB_OFFLINE"]);
    // Three tries of one second each, with back-off between them.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A copy of tiny-sd1 with `edit` applied to one config.
fn model_with(
    dir: &Path,
    name: &str,
    config: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> PathBuf {
    let root = dir.join(name);
    copy_model(&fixture("tiny-sd1"), &root);
    let path = root.join(config);
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut json);
    std::fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
    root
}

#[test]
fn impossible_configs_and_flags_are_one_line_before_any_compile() {
    let dir = empty_dir("configs");
    let images = fixture("sample-images");
    let cache = dir.join("cache");
    let cache_flag = ["--cache-dir", cache.to_str().unwrap()];
    let out = dir.join("out");
    let unet = "unet/config.json";
    let text = "text_encoder/config.json";
    let cases: Vec<(PathBuf, Vec<&str>, Vec<&str>)> = vec![
        (
            model_with(&dir, "groups0", unet, |j| j["norm_num_groups"] = 0.into()),
            vec![],
            vec!["norm_num_groups is 0"],
        ),
        (
            model_with(&dir, "wide", unet, |j| {
                j["block_out_channels"] = serde_json::json!([8, 4000000000u64])
            }),
            vec![],
            vec!["block_out_channels is 4000000000"],
        ),
        (
            model_with(&dir, "layers", text, |j| {
                j["num_hidden_layers"] = 100000000.into()
            }),
            vec![],
            vec!["num_hidden_layers is 100000000"],
        ),
        // A config that does not match its weights: named before anything compiles.
        (
            model_with(&dir, "mismatch", text, |j| {
                j["intermediate_size"] = 38.into()
            }),
            vec![],
            vec!["fc1"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--repeats", "18446744073709551615"],
            vec!["--repeats"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--resolution", "100000"],
            vec!["--resolution 100000"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--train-batch-size", "100000"],
            vec!["--train-batch-size 100000"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--gradient-accumulation-steps", "1000000000"],
            vec!["--gradient-accumulation-steps 1000000000"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--num-vectors", "100000"],
            vec!["--num-vectors 100000"],
        ),
        (
            fixture("tiny-sd1"),
            vec![
                "--num-validation-images",
                "100000",
                "--validation-prompt",
                "a <cat-toy>",
            ],
            vec!["--num-validation-images 100000"],
        ),
        (
            fixture("tiny-sd1"),
            vec![
                "--validation-steps",
                "0",
                "--validation-prompt",
                "a <cat-toy>",
            ],
            vec!["--validation-steps"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--adam-epsilon", "1e39"],
            vec!["--adam-epsilon", "f32"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--learning-rate", "1e39"],
            vec!["--learning-rate", "positive"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--learning-rate=-1"],
            vec!["--learning-rate -1"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--adam-beta1", "2"],
            vec!["--adam-beta1 2"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--adam-beta2", "1"],
            vec!["--adam-beta2 1"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--adam-weight-decay=-5"],
            vec!["--adam-weight-decay -5"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--mixed-precision", "bf16"],
            vec!["bf16", "CPU"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--snr-gamma", "0"],
            vec!["--snr-gamma 0", "positive"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--noise-offset=-0.1"],
            vec!["--noise-offset -0.1"],
        ),
        (
            fixture("tiny-sd1"),
            vec!["--max-embedding-norm", "NaN"],
            vec!["--max-embedding-norm NaN"],
        ),
    ];
    for (model, extra, needles) in &cases {
        let mut args = cache_flag.to_vec();
        args.extend(extra);
        let started = Instant::now();
        let run = train(model, &images, &out, &args);
        one_line_error(&run, needles);
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{needles:?} took {:?}",
            started.elapsed()
        );
        assert!(!out.join("learned_embeds.safetensors").exists());
    }
    let run = generate(&fixture("tiny-sd1"), &out, &["--height", "100000"]);
    one_line_error(&run, &["--height 100000"]);
    let run = generate(
        &fixture("tiny-sd1"),
        &out,
        &["--num-samples", "1000000000000"],
    );
    one_line_error(&run, &["--num-samples 1000000000000"]);
    let run = generate(&fixture("tiny-sd1"), &out, &["--guidance-scale=-1e40"]);
    one_line_error(&run, &["--guidance-scale"]);
    // Nothing was compiled for any of them.
    let compiled = std::fs::read_dir(&cache).map(|d| d.count()).unwrap_or(0);
    assert_eq!(compiled, 0, "a case compiled before failing");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn swapped_compile_cache_entries_are_recompiled() {
    let dir = empty_dir("cache-swap");
    let cache = dir.join("cache");
    let cache_flag = ["--cache-dir", cache.to_str().unwrap()];
    let model = fixture("tiny-sd1");
    ok(&generate(&model, &dir.join("a"), &cache_flag));
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pjrt-exe"))
        .collect();
    entries.sort();
    assert!(entries.len() >= 2, "{entries:?}");
    let (a, b) = (
        std::fs::read(&entries[0]).unwrap(),
        std::fs::read(&entries[1]).unwrap(),
    );
    std::fs::write(&entries[0], &b).unwrap();
    std::fs::write(&entries[1], &a).unwrap();
    ok(&generate(&model, &dir.join("b"), &cache_flag));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_panic_is_one_line_without_a_backtrace() {
    let run = ti_xla()
        .env("TI_XLA_TEST_PANIC", "1")
        .arg("devices")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: internal error in ti-xla"),
        "{stderr}"
    );
    assert!(!stderr.contains("stack backtrace"), "{stderr}");
    let mut out = std::io::stderr();
    let _ = writeln!(out, "panic line: {stderr}");
}
