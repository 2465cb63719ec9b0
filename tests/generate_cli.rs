//! `ti-xla generate` end to end on the tiny SD1-style fixture: the same seed gives the same PNGs
//! on 1, 2 and 4 CPU devices (with padding when the samples do not divide), the PNGs carry the
//! settings, earlier PNGs are not overwritten, and embedding files of every supported format
//! load while wrong ones fail with one clear line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;
use ti_xla::model::embeddings::{add_to_tokenizer, expand_prompt, read_embedding};
use ti_xla::model::folder::ModelFolder;
use ti_xla::model::full_pipeline::{save_full_pipeline, LearnedTokens};
use ti_xla::model::tokenizers::Tokenizers;

mod scratch;
use scratch::{compile_cache, empty_dir, fixture, ok};

fn model() -> PathBuf {
    fixture("tiny-sd1")
}

/// `ti-xla generate` writing into `out`, with the tests' shared compile cache.
fn command(out: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.arg("generate")
        .arg("--output-dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache());
    cmd
}

fn generate(out: &Path, extra: &[&str]) -> Output {
    command(out)
        .arg("--pretrained_model_name_or_path")
        .arg(model())
        .arg("--learned_embeds")
        .arg(model().join("reference/learned_embeds.safetensors"))
        .args(["--prompt", "a photo of <cat-toy> on a beach", "--seed", "7"])
        .args([
            "--num-inference-steps",
            "3",
            "--scheduler",
            "euler-ancestral",
        ])
        .args(extra)
        .output()
        .expect("run ti-xla")
}

fn one_line_error(out: &Output, needle: &str) {
    assert!(!out.status.success(), "expected a failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains(needle), "{stderr}");
}

fn text_chunks(path: &Path) -> HashMap<String, String> {
    let file = std::fs::File::open(path).unwrap();
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let info = reader.info();
    let mut chunks: HashMap<String, String> = info
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    for c in &info.utf8_text {
        chunks.insert(c.keyword.clone(), c.get_text().unwrap());
    }
    chunks
}

#[test]
fn same_seed_same_pngs_on_any_device_count() {
    let (one, two, four) = (empty_dir("one"), empty_dir("two"), empty_dir("four"));
    ok(&generate(&one, &["--num-samples", "4"]));
    // Three samples on two devices: one padded slot, dropped.
    ok(&generate(
        &two,
        &["--num-samples", "3", "--cpu-devices", "2"],
    ));
    // --num-samples defaults to the number of devices.
    ok(&generate(&four, &["--cpu-devices", "4"]));
    let png = |dir: &Path, i: usize| std::fs::read(dir.join(format!("{i:04}.png"))).unwrap();
    for i in 0..4 {
        assert_eq!(png(&one, i), png(&four, i), "sample {i}: 1 vs 4 devices");
        if i < 3 {
            assert_eq!(png(&one, i), png(&two, i), "sample {i}: 1 vs 2 devices");
        }
    }
    assert!(!two.join("0003.png").exists());
    assert_ne!(png(&one, 0), png(&one, 1), "samples must differ");
    assert_eq!(
        std::fs::read(one.join("grid.png")).unwrap(),
        std::fs::read(four.join("grid.png")).unwrap()
    );

    let chunks = text_chunks(&one.join("0002.png"));
    assert_eq!(chunks["prompt"], "a photo of <cat-toy> on a beach");
    assert_eq!(chunks["negative_prompt"], "");
    assert_eq!(chunks["seed"], "7");
    assert_eq!(chunks["sample_index"], "2");
    assert_eq!(chunks["steps"], "3");
    assert_eq!(chunks["guidance_scale"], "7.5");
    assert_eq!(chunks["scheduler"], "euler-ancestral");
    assert!(chunks["parameters"].contains("Seed: 7"));
    let image = image::open(one.join("grid.png")).unwrap();
    assert_eq!((image.width(), image.height()), (32, 32));

    // A second run into the same folder stops before touching the PNGs.
    let before = png(&one, 0);
    one_line_error(
        &generate(&one, &["--num-samples", "4", "--seed", "8"]),
        "--overwrite",
    );
    assert_eq!(png(&one, 0), before);
    for dir in [one, two, four] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn images(path: &Path, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// `--model-dir` of a pipeline saved with the learned rows in its token table and the tokens in
/// its tokenizer gives diffusers' images for the embedding file (the parity fixture's case).
#[test]
fn a_saved_full_pipeline_generates_as_its_embedding_file() {
    let dir = empty_dir("full");
    let pipeline = dir.join("pipeline");
    let reference = model().join("reference/generate.safetensors");
    let e = read_embedding(&model().join("reference/learned_embeds.safetensors"), None).unwrap();
    let learned = LearnedTokens {
        names: &e.token_names(),
        first_ids: &[49408],
        rows: &e.rows,
        widths: &[e.hidden],
    };
    save_full_pipeline(
        &model(),
        &[model().join("tokenizer").as_path()],
        None,
        &pipeline,
        &learned,
    )
    .unwrap();
    let tensors = dir.join("images.safetensors");
    // The prompts of scripts/make_generate_fixtures.py's "embed" case.
    let run = command(&dir.join("out"))
        .arg("--model-dir")
        .arg(&pipeline)
        .args(["--prompt", "a photo of <cat-toy> on a beach"])
        .args(["--negative-prompt", "blurry, dark", "--scheduler", "pndm"])
        .args([
            "--num-inference-steps",
            "5",
            "--height",
            "16",
            "--width",
            "16",
        ])
        .arg("--latents")
        .arg(&reference)
        .arg("--save-tensors")
        .arg(&tensors)
        .output()
        .unwrap();
    ok(&run);
    let got = images(&tensors, "images");
    let want = images(&reference, "embed.pndm.images");
    let err = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    eprintln!("full pipeline vs diffusers with the embedding file: {err:.2e}");
    assert!(err <= 1e-3, "{err:e}");
    let _ = std::fs::remove_dir_all(dir);
}

/// Writes a safetensors file of f32 tensors (or f16 where the name ends in `@f16`).
fn write_embeds(
    path: &Path,
    tensors: &[(&str, Vec<usize>)],
    metadata: Option<HashMap<String, String>>,
) {
    let datas: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let values = (0..n).map(|i| i as f32 * 0.01 - 0.1);
            match name.strip_suffix("@f16") {
                Some(name) => (
                    name.to_string(),
                    safetensors::Dtype::F16,
                    shape.clone(),
                    values
                        .flat_map(|v| half::f16::from_f32(v).to_le_bytes())
                        .collect(),
                ),
                None => (
                    name.to_string(),
                    safetensors::Dtype::F32,
                    shape.clone(),
                    values.flat_map(f32::to_le_bytes).collect(),
                ),
            }
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = datas
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes);
            (name.clone(), view.unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

#[test]
fn embedding_files_of_each_format_load() {
    let dir = empty_dir("formats");
    let folder = ModelFolder::open(model().to_str().unwrap(), None, None).unwrap();
    let tokenizer = || Tokenizers::open(&folder, None).unwrap();
    let (vocab, hidden) = (49408, 16);
    // (file stem, tensor key, shape, metadata name, expected token, vectors)
    let cases = [
        ("diffusers_1d", "<one>", &[16][..], None, "<one>", 1),
        ("diffusers_2d", "<two>", &[1, 16], None, "<two>", 1),
        ("multi", "<multi>", &[3, 16], None, "<multi>", 3),
        ("half", "<half>@f16", &[2, 16], None, "<half>", 2),
        (
            "a1111",
            "string_to_param.*",
            &[2, 16],
            Some("<a1111>"),
            "<a1111>",
            2,
        ),
        (
            "kohya-style",
            "emb_params",
            &[1, 16],
            None,
            "kohya-style",
            1,
        ),
    ];
    for (stem, key, shape, name, token, vectors) in cases {
        let path = dir.join(format!("{stem}.safetensors"));
        let metadata = name.map(|n| HashMap::from([("name".to_string(), n.to_string())]));
        write_embeds(&path, &[(key, shape.to_vec())], metadata);
        let e = read_embedding(&path, None).unwrap();
        assert_eq!(
            (e.token.as_str(), e.hidden, e.num_vectors()),
            (token, 16, vectors)
        );
        assert!((e.rows[1] - (0.01 - 0.1)).abs() < 1e-3, "{stem}");
        let mut tok = tokenizer();
        let rows = add_to_tokenizer(&mut tok, std::slice::from_ref(&e), &[hidden]).unwrap();
        assert_eq!(rows.len(), vectors * hidden);
        let prompt = expand_prompt(tok.first(), &format!("a {token} toy")).unwrap();
        let ids = tok.first().encode(&prompt).unwrap();
        let learned: Vec<u32> = ids.into_iter().filter(|&i| i >= vocab as u32).collect();
        let want: Vec<u32> = (vocab as u32..(vocab + vectors) as u32).collect();
        assert_eq!(learned, want, "{stem}: {prompt}");
    }

    // PyTorch files, read without unpickling: A1111's `.pt` dict and diffusers' `.bin` (f16).
    let reference = |ext: &str| {
        read_embedding(
            &model().join(format!("reference/learned_embeds.{ext}")),
            None,
        )
        .unwrap()
    };
    let (st, pt, bin) = (reference("safetensors"), reference("pt"), reference("bin"));
    assert_eq!((&pt.token, &pt.rows, pt.hidden), (&st.token, &st.rows, 16));
    assert_eq!((&bin.token, bin.num_vectors()), (&st.token, 2));
    for (b, s) in bin.rows.iter().zip(&st.rows) {
        assert!((b - s).abs() <= 1e-3 * s.abs().max(1.0), "{b} vs {s}");
    }

    // --token renames; two files take consecutive ids.
    let a = read_embedding(&dir.join("multi.safetensors"), Some("<renamed>")).unwrap();
    let b = read_embedding(&dir.join("diffusers_1d.safetensors"), None).unwrap();
    assert_eq!(a.token, "<renamed>");
    let mut tok = tokenizer();
    let rows = add_to_tokenizer(&mut tok, &[a.clone(), b.clone()], &[hidden]).unwrap();
    assert_eq!(rows.len(), 4 * hidden);
    assert_eq!(tok.first().token_id("<one>"), Some(vocab as u32 + 3));
    let err = add_to_tokenizer(&mut tokenizer(), &[b.clone(), b], &[hidden]).unwrap_err();
    assert!(err.to_string().contains("both hold the token"), "{err}");
    let err = add_to_tokenizer(&mut tokenizer(), &[a], &[768]).unwrap_err();
    assert!(err.to_string().contains("text encoder width 768"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_embedding_files_fail_with_one_line() {
    let dir = empty_dir("bad");
    let out = dir.join("out");
    let wrong = dir.join("sd2.safetensors");
    write_embeds(&wrong, &[("<wide>", vec![1, 1024])], None);
    let run = |file: &Path| generate(&out, &["--learned-embeds", file.to_str().unwrap()]);
    one_line_error(&run(&wrong), "text encoder width 16");

    let unknown = dir.join("two.safetensors");
    write_embeds(&unknown, &[("a", vec![16]), ("b", vec![16])], None);
    one_line_error(&run(&unknown), "tensors a, b");

    let pickle = dir.join("a1111.pt");
    std::fs::write(&pickle, b"PK\x03\x04 not really a zip").unwrap();
    one_line_error(&run(&pickle), "not a torch.save archive");
    let legacy = dir.join("old.pt");
    std::fs::write(&legacy, b"\x80\x02\x8a\x0alegacy").unwrap();
    one_line_error(&run(&legacy), "pre-1.6 format");

    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    one_line_error(&run(&text), "not an embedding file ti-xla reads");

    let scalar = dir.join("scalar.safetensors");
    write_embeds(&scalar, &[("<s>", vec![2, 2, 4])], None);
    one_line_error(&run(&scalar), "[vectors, hidden]");
    assert!(
        !out.exists(),
        "a failed run must not create the output folder"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// `--karras-sigmas` changes the images (the noise levels differ), records itself in the PNG
/// and is refused with a scheduler that has no Karras levels. Its tables and updates are checked
/// against diffusers in tests/schedulers.rs.
#[test]
fn karras_sigmas_are_a_dpm_and_euler_option() {
    let dir = empty_dir("karras");
    let plain = dir.join("plain");
    let karras = dir.join("karras");
    for (out, extra) in [(&plain, &[][..]), (&karras, &["--karras-sigmas"][..])] {
        let tensors = out.with_extension("safetensors");
        let tensors = tensors.to_str().unwrap();
        let mut args = vec!["--scheduler", "dpmpp-2m", "--save-tensors", tensors];
        args.extend_from_slice(extra);
        ok(&generate(out, &args));
    }
    assert_eq!(
        text_chunks(&karras.join("0000.png"))["scheduler"],
        "dpmpp-2m karras"
    );
    let a = images(&plain.with_extension("safetensors"), "images");
    let b = images(&karras.with_extension("safetensors"), "images");
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(
        diff > 1e-3,
        "Karras levels left the images unchanged ({diff:e})"
    );
    let refused = dir.join("refused");
    one_line_error(
        &generate(&refused, &["--scheduler", "pndm", "--karras-sigmas"]),
        "--karras-sigmas works with --scheduler dpmpp-2m or euler",
    );
    assert!(!refused.exists());
    let _ = std::fs::remove_dir_all(dir);
}
