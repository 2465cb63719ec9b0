//! Per-image captions (`--caption-extension`), a user's templates (`--templates`) and caption
//! dropout, checked through whole runs: a caption file saying what a one-line template says
//! gives the run of that template bit for bit (so the caption is what the text encoder read),
//! `[name]` and a caption without a mark place the token as documented, and dropping every
//! caption leaves the token without gradient (its row then only decays: closed form); and
//! `--masked-loss` reading `.mask.png` files.

use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

mod scratch;
use scratch::{empty_dir, fixture, fresh_dir, ok, train_tiny};

/// The sample images copied into `name`, with `caption` (if any) beside each as `.txt`.
fn images(name: &str, caption: Option<&str>) -> PathBuf {
    let dir = empty_dir(name);
    for entry in std::fs::read_dir(fixture("sample-images")).unwrap() {
        let path = entry.unwrap().path();
        let target = dir.join(path.file_name().unwrap());
        std::fs::copy(&path, &target).unwrap();
        if let Some(c) = caption {
            std::fs::write(target.with_extension("txt"), c).unwrap();
        }
    }
    dir
}

fn template_file(name: &str, text: &str) -> PathBuf {
    let path = empty_dir(name).join("templates.txt");
    std::fs::write(&path, text).unwrap();
    path
}

/// The learned row of a run.
fn row(out: &Path) -> Vec<f32> {
    let bytes = std::fs::read(out.join("learned_embeds.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("<cat-toy>")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn log(out: &Path) -> String {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}\n", v["step"], v["loss"])
        })
        .collect()
}

fn run(name: &str, images: &Path, extra: &[&str]) -> PathBuf {
    let out = fresh_dir(name);
    let result = train_tiny(&out, images, extra);
    ok(&result);
    let stderr = String::from_utf8_lossy(&result.stderr);
    if extra.iter().any(|a| a.starts_with("--caption")) {
        assert!(
            !stderr.contains("not an image file"),
            "caption files are not warned of: {stderr}"
        );
    }
    out
}

#[test]
fn a_caption_file_is_what_the_text_encoder_reads() {
    let plain = images("plain", None);
    let photo = template_file("photo-template", "# one template\n\na photo of {}\n");
    let templated = run(
        "templated",
        &plain,
        &["--templates", photo.to_str().unwrap()],
    );

    // The same words from caption files: the same run, bit for bit.
    let marked = images("marked", Some("a photo of {}\n"));
    let captioned = run("captioned", &marked, &["--caption-extension", ".txt"]);
    assert_eq!(log(&captioned), log(&templated));
    assert_eq!(row(&captioned), row(&templated));
    // A1111's [name], and "txt" without the dot.
    let named = images("named", Some("a photo of [name]"));
    let out = run("named-run", &named, &["--caption_extension", "txt"]);
    assert_eq!(row(&out), row(&templated));
    // A caption without a mark gets the token in front: the template "{} photo of a cat".
    let unmarked = images("unmarked", Some("photo of a cat"));
    let out = run("unmarked-run", &unmarked, &["--caption-extension", ".txt"]);
    let front = template_file("front-template", "{} photo of a cat\n");
    let want = run(
        "front-run",
        &plain,
        &["--templates", front.to_str().unwrap()],
    );
    assert_eq!(row(&out), row(&want));
    // Other words, another run; without --caption-extension the files are not read.
    assert_ne!(row(&out), row(&templated));
    let ignored = run(
        "ignored",
        &unmarked,
        &["--templates", photo.to_str().unwrap()],
    );
    assert_eq!(row(&ignored), row(&templated));
}

#[test]
fn dropping_every_caption_leaves_the_token_untrained() {
    let plain = images("dropout", None);
    let out = run(
        "dropout-run",
        &plain,
        &["--caption-dropout-rate", "1", "--adam-weight-decay", "0"],
    );
    // No caption holds the token, so its gradient is 0 and AdamW moves it by 0 / (0 + eps):
    // the row stays the initializer's ("toy"), read from the fixture's table.
    let undropped = run("undropped-run", &plain, &["--adam-weight-decay", "0"]);
    let toy = initializer_row();
    assert_eq!(row(&out), toy);
    assert_ne!(row(&undropped), toy);
}

/// Row of "toy" in the fixture's token table.
fn initializer_row() -> Vec<f32> {
    let vocab: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-sd1/tokenizer/vocab.json")).unwrap(),
    )
    .unwrap();
    let id = vocab["toy</w>"].as_u64().unwrap() as usize;
    let folder = fixture("tiny-sd1/text_encoder");
    let file = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let table = st
        .tensor("text_model.embeddings.token_embedding.weight")
        .unwrap();
    // The fixture's table is float16 (read as f32 by the trainer, exactly).
    assert_eq!(table.dtype(), safetensors::Dtype::F16);
    let width = table.shape()[1];
    table.data()[id * width * 2..(id + 1) * width * 2]
        .chunks_exact(2)
        .map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32())
        .collect()
}

#[test]
fn bad_template_files_and_rates_are_one_line_errors() {
    let plain = images("bad", None);
    for (text, needle) in [
        ("a photo of a cat\n", "line 1"),
        ("# nothing\n\n", "no templates"),
    ] {
        let file = template_file("bad-template", text);
        let out = fresh_dir("bad-run");
        let result = train_tiny(&out, &plain, &["--templates", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{text:?}");
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error")).count(),
            1,
            "{err}"
        );
        assert!(err.contains(needle), "{needle:?} in {err}");
    }
    let out = fresh_dir("bad-rate");
    let result = train_tiny(&out, &plain, &["--caption-dropout-rate", "1.5"]);
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success() && err.contains("--caption-dropout-rate 1.5"),
        "{err}"
    );
    // A caption file that is not UTF-8 is named.
    let latin = images("latin", None);
    std::fs::write(latin.join("chelsea-1.txt"), b"caf\xe9 {}").unwrap();
    let result = train_tiny(
        &fresh_dir("latin-run"),
        &latin,
        &["--caption-extension", ".txt"],
    );
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(
        !result.status.success() && err.contains("chelsea-1.txt") && err.contains("UTF-8"),
        "{err}"
    );
}

/// `--masked-loss` end to end: white `.mask.png` files weigh every pixel 1, so the run is the
/// unmasked run bit for bit, and the mask files are masks, not training images; black masks
/// leave the token without gradient (the initializer's row, as with dropped captions).
#[test]
fn masked_loss_reads_mask_files_beside_the_images() {
    let plain = images("unmasked", None);
    let want = run("unmasked-run", &plain, &[]);
    for (name, level) in [("white", 255u8), ("black", 0)] {
        let dir = images(name, None);
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let (w, h) = image::image_dimensions(&path).unwrap();
            let mask = image::GrayImage::from_pixel(w, h, image::Luma([level]));
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            mask.save(dir.join(format!("{stem}.mask.png"))).unwrap();
        }
        let out = fresh_dir(&format!("{name}-run"));
        let result = train_tiny(&out, &dir, &["--masked-loss", "--adam-weight-decay", "0"]);
        ok(&result);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(stderr.contains("4 of 4 image(s) have a mask"), "{stderr}");
        assert!(
            stderr.contains("4 image(s), 12 steps"),
            "masks are not images: {stderr}"
        );
        if level == 255 {
            let unmasked = run("unmasked-nodecay", &plain, &["--adam-weight-decay", "0"]);
            assert_eq!(row(&out), row(&unmasked));
            // The masked program sums in another order: losses equal to f32 rounding.
            let losses = |o: &Path| -> Vec<f64> {
                log(o)
                    .lines()
                    .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
                    .collect()
            };
            for (a, b) in losses(&out).iter().zip(losses(&unmasked)) {
                assert!(((a - b) / b).abs() <= 1e-6, "{a} vs {b}");
            }
        } else {
            assert_eq!(row(&out), initializer_row());
        }
    }
    assert_ne!(row(&want), initializer_row());
}
