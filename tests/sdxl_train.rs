//! `ti-xla train` on the tiny SDXL-style fixture: the `{clip_l, clip_g}` file, 2 devices equal
//! to 1 device with the whole batch, the model's own resolution by default, and a full
//! pipeline whose two tables and tokenizers know the new token, with validation images; resume
//! bit for bit; an embedding of the other model family refused.

use std::path::Path;
use std::process::Command;

use safetensors::SafeTensors;

mod scratch;
use scratch::{compile_cache, fixture, fresh_dir, ok};

fn train(out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["train", "--pretrained_model_name_or_path"])
        .arg(fixture("tiny-sdxl"))
        .arg("--train_data_dir")
        .arg(fixture("sample-images"))
        .args([
            "--placeholder_token",
            "<cat-toy>",
            "--initializer_token",
            "toy",
        ])
        .args(["--learning_rate", "5e-3", "--lr_warmup_steps", "0"])
        .args(["--save_steps", "0", "--checkpointing_steps", "0"])
        .args(["--max_train_steps", "3", "--num_vectors", "2"])
        .arg("--output_dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra)
        .output()
        .expect("run ti-xla")
}

/// `(shape, values)` of each tensor of an embedding file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let t = st.tensor(&n).unwrap();
            assert_eq!(t.dtype(), safetensors::Dtype::F32);
            let values = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (n.clone(), t.shape().to_vec(), values)
        })
        .collect()
}

fn losses(out: &Path) -> Vec<f64> {
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

#[test]
fn two_devices_equal_one_and_write_clip_l_and_clip_g() {
    let (one, two) = (fresh_dir("xl-one"), fresh_dir("xl-two"));
    ok(&train(&one, &["--train_batch_size", "2"]));
    ok(&train(
        &two,
        &["--train_batch_size", "1", "--cpu-devices", "2"],
    ));
    let (a, b) = (
        tensors(&one.join("learned_embeds.safetensors")),
        tensors(&two.join("learned_embeds.safetensors")),
    );
    let names: Vec<&str> = a.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names, ["clip_g", "clip_l"]);
    // tiny-sdxl: text_encoder 12 wide, text_encoder_2 20 wide; two vectors.
    assert_eq!(a[0].1, [2, 20]);
    assert_eq!(a[1].1, [2, 12]);
    for ((name, _, x), (_, _, y)) in a.iter().zip(&b) {
        let worst = x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
        eprintln!("{name}: 1 vs 2 devices after 3 steps, max difference {worst:e}");
        assert!(worst <= 1e-5, "{name} differs by {worst}");
    }
    let (l1, l2) = (losses(&one), losses(&two));
    assert_eq!(l1.len(), 3);
    for (p, q) in l1.iter().zip(&l2) {
        assert!((p - q).abs() <= 1e-5 * p.abs(), "loss {p} vs {q}");
    }
    for d in [one, two] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn full_pipeline_holds_the_rows_in_both_tables() {
    let out = fresh_dir("xl-full");
    ok(&train(
        &out,
        &[
            "--train_batch_size",
            "2",
            "--save_as_full_pipeline",
            "--validation_prompt",
            "a <cat-toy> toy",
            "--validation_steps",
            "3",
            "--num_validation_images",
            "1",
        ],
    ));
    let validation = out.join("validation/step-3");
    let pngs = std::fs::read_dir(&validation)
        .unwrap_or_else(|e| panic!("{}: {e}", validation.display()))
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png"))
        })
        .count();
    assert!(pngs >= 1, "no validation image in {}", validation.display());
    let learned = tensors(&out.join("learned_embeds.safetensors"));
    for (folder, key, width) in [
        ("text_encoder", "clip_l", 12),
        ("text_encoder_2", "clip_g", 20),
    ] {
        let table_file = out.join(folder).join("model.safetensors");
        let bytes = std::fs::read(&table_file).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st
            .tensor("text_model.embeddings.token_embedding.weight")
            .unwrap();
        assert_eq!(t.shape(), [49410, width], "{folder}");
        let values: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let rows = &learned.iter().find(|(n, _, _)| n == key).unwrap().2;
        assert_eq!(&values[49408 * width..], rows.as_slice(), "{folder}");
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join(folder).join("config.json")).unwrap())
                .unwrap();
        assert_eq!(config["vocab_size"], 49410);
    }
    for tokenizer in ["tokenizer", "tokenizer_2"] {
        let added: serde_json::Value = serde_json::from_slice(
            &std::fs::read(out.join(tokenizer).join("added_tokens.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(added["<cat-toy>"], 49408, "{tokenizer}");
        assert_eq!(added["<cat-toy>_1"], 49409, "{tokenizer}");
    }
    // The saved pipeline generates with its own tokens.
    let images = fresh_dir("xl-full-images");
    let run = Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["generate", "--model"])
        .arg(&out)
        .args([
            "--prompt",
            "a <cat-toy> on a beach",
            "--num-inference-steps",
            "2",
        ])
        .arg("--output-dir")
        .arg(images.clone())
        .arg("--cache-dir")
        .arg(compile_cache())
        .output()
        .unwrap();
    ok(&run);
    std::fs::remove_dir_all(out).unwrap();
    std::fs::remove_dir_all(images).unwrap();
}

#[test]
fn resume_continues_bit_for_bit() {
    let (whole, split) = (fresh_dir("xl-whole"), fresh_dir("xl-split"));
    ok(&train(
        &whole,
        &["--train_batch_size", "1", "--max_train_steps", "4"],
    ));
    ok(&train(
        &split,
        &[
            "--train_batch_size",
            "1",
            "--max_train_steps",
            "2",
            "--checkpointing_steps",
            "2",
        ],
    ));
    ok(&train(
        &split,
        &[
            "--train_batch_size",
            "1",
            "--max_train_steps",
            "4",
            "--resume_from_checkpoint",
            "latest",
        ],
    ));
    assert_eq!(
        tensors(&whole.join("learned_embeds.safetensors")),
        tensors(&split.join("learned_embeds.safetensors"))
    );
    assert_eq!(losses(&whole), losses(&split));
    for d in [whole, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn embeddings_of_the_other_family_are_refused_naming_both_widths() {
    let out = fresh_dir("xl-mismatch");
    let run = |model: &str, embeds: &Path| {
        Command::new(env!("CARGO_BIN_EXE_ti-xla"))
            .args(["generate", "--model"])
            .arg(fixture(model))
            .arg("--learned-embeds")
            .arg(embeds)
            .args([
                "--token",
                "<x>",
                "--prompt",
                "a <x>",
                "--num-inference-steps",
                "1",
            ])
            .arg("--output-dir")
            .arg(&out)
            .output()
            .unwrap()
    };
    for (model, embeds, needles) in [
        (
            "tiny-sdxl",
            fixture("tiny-sd1/reference/learned_embeds.safetensors"),
            ["SD 1.x/2.x embedding of width 16", "widths [12, 20]"],
        ),
        (
            "tiny-sd1",
            fixture("tiny-sdxl/reference/learned_embeds.safetensors"),
            ["SDXL embedding of widths [12, 20]", "text encoder width 16"],
        ),
    ] {
        let r = run(model, &embeds);
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
        for n in needles {
            assert!(stderr.contains(n), "{n:?} not in {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(out);
}
