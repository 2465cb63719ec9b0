//! `ti-xla train --validation-prompt` on the tiny SD1-style fixture: images every
//! `--validation-steps` into `validation/step-N/`, the same pixels `ti-xla generate` makes from
//! that step's saved embedding (DPM-Solver++ 2M, 25 steps, the run's seed), changing as the rows
//! learn.

use std::path::Path;
use std::process::{Command, Output};

mod scratch;
use scratch::{compile_cache, fixture, fresh_dir, ok};

fn ti_xla(args: &[&str]) -> Output {
    let cache = compile_cache();
    Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .expect("run ti-xla")
}

fn pixels(path: &Path) -> Vec<u8> {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
        .into_raw()
}

#[test]
fn validation_images_are_generate_with_the_current_rows() {
    let (out, generated) = (fresh_dir("run"), fresh_dir("generate"));
    let model = fixture("tiny-sd1");
    let (model, images) = (model.to_str().unwrap(), fixture("sample-images"));
    let prompt = "a photo of <cat-toy>";
    ok(&ti_xla(&[
        "train",
        "--pretrained_model_name_or_path",
        model,
        "--train_data_dir",
        images.to_str().unwrap(),
        "--placeholder_token",
        "<cat-toy>",
        "--initializer_token",
        "toy",
        "--num_vectors",
        "2",
        "--resolution",
        "16",
        "--train_batch_size",
        "1",
        "--cpu-devices",
        "2",
        "--max_train_steps",
        "4",
        "--learning_rate",
        "5e-2",
        "--lr_warmup_steps",
        "0",
        "--save_steps",
        "2",
        "--checkpointing_steps",
        "0",
        "--validation_prompt",
        prompt,
        "--num_validation_images",
        "3",
        "--validation_steps",
        "2",
        "--output_dir",
        out.to_str().unwrap(),
    ]));
    let validation = out.join("validation");
    let mut steps: Vec<String> = std::fs::read_dir(&validation)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    steps.sort();
    assert_eq!(steps, ["step-2", "step-4"]);
    for step in &steps {
        for name in ["0000.png", "0001.png", "0002.png", "grid.png"] {
            assert!(validation.join(step).join(name).is_file(), "{step}/{name}");
        }
        assert!(!validation.join(step).join("0003.png").exists());
    }
    assert!(out.join("loss.png").is_file());
    assert_ne!(
        pixels(&validation.join("step-2/0000.png")),
        pixels(&validation.join("step-4/0000.png")),
        "the images follow the rows"
    );

    let embeds = out.join("learned_embeds-steps-2.safetensors");
    ok(&ti_xla(&[
        "generate",
        "--pretrained-model-name-or-path",
        model,
        "--learned-embeds",
        embeds.to_str().unwrap(),
        "--prompt",
        prompt,
        "--scheduler",
        "dpmpp-2m",
        "--num-inference-steps",
        "25",
        "--seed",
        "42",
        "--num-samples",
        "3",
        "--cpu-devices",
        "2",
        "--output-dir",
        generated.to_str().unwrap(),
    ]));
    for i in 0..3 {
        let name = format!("{i:04}.png");
        assert_eq!(
            pixels(&validation.join("step-2").join(&name)),
            pixels(&generated.join(&name)),
            "validation image {i} at step 2 vs ti-xla generate"
        );
    }
    for d in [out, generated] {
        let _ = std::fs::remove_dir_all(d);
    }
}
