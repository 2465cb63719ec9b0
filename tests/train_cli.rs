//! `ti-xla train` end to end on the tiny SD1-style fixture and the bundled sample images:
//! the saved file's structure, a lower evaluation loss after training, resume bit for bit,
//! 4 devices equal to 1, and one-line errors for bad input that leave no output behind.

use std::path::Path;
use std::process::Command;

use safetensors::SafeTensors;

mod scratch;
use scratch::{compile_cache, fixture, fresh_dir, logged_losses, ok};

fn train(out: &Path, extra: &[&str]) -> std::process::Output {
    let model = fixture("tiny-sd1");
    let images = fixture("sample-images");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ti-xla"));
    cmd.args(["train", "--pretrained_model_name_or_path"])
        .arg(&model)
        .arg("--train_data_dir")
        .arg(&images)
        .args([
            "--placeholder_token",
            "<cat-toy>",
            "--initializer_token",
            "toy",
            "--resolution",
            "16",
        ])
        .args([
            "--learning_rate",
            "5e-3",
            "--lr_warmup_steps",
            "0",
            "--save_steps",
            "0",
        ])
        .arg("--output_dir")
        .arg(out)
        .arg("--cache-dir")
        .arg(compile_cache())
        .args(extra);
    cmd.output().expect("run ti-xla")
}

fn embedding(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor("<cat-toy>").unwrap();
    (
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

#[test]
fn resume_continues_bit_for_bit() {
    let (straight, split) = (fresh_dir("straight"), fresh_dir("split"));
    ok(&train(
        &straight,
        &[
            "--max_train_steps",
            "6",
            "--train_batch_size",
            "2",
            "--checkpointing_steps",
            "0",
        ],
    ));
    ok(&train(
        &split,
        &[
            "--max_train_steps",
            "3",
            "--train_batch_size",
            "2",
            "--checkpointing_steps",
            "3",
        ],
    ));
    assert!(split.join("checkpoint-3/state.safetensors").is_file());
    let resumed = train(
        &split,
        &[
            "--max_train_steps",
            "6",
            "--train_batch_size",
            "2",
            "--checkpointing_steps",
            "3",
            "--resume_from_checkpoint",
            "latest",
        ],
    );
    ok(&resumed);
    let a = std::fs::read(straight.join("learned_embeds.safetensors")).unwrap();
    let b = std::fs::read(split.join("learned_embeds.safetensors")).unwrap();
    assert_eq!(a, b, "3 steps + resume + 3 steps must equal 6 steps");
    assert_eq!(
        logged_losses(&straight),
        logged_losses(&split),
        "the same losses, step by step"
    );
    // A resume with other settings is refused.
    let other = train(
        &split,
        &[
            "--max_train_steps",
            "9",
            "--train_batch_size",
            "1",
            "--resume_from_checkpoint",
            "latest",
        ],
    );
    assert!(!other.status.success());
    assert!(String::from_utf8_lossy(&other.stderr).contains("train_batch_size"));
    for d in [straight, split] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn four_devices_equal_one_device_with_the_whole_batch() {
    let (one, four) = (fresh_dir("one"), fresh_dir("four"));
    ok(&train(
        &one,
        &[
            "--max_train_steps",
            "3",
            "--train_batch_size",
            "4",
            "--checkpointing_steps",
            "0",
        ],
    ));
    ok(&train(
        &four,
        &[
            "--max_train_steps",
            "3",
            "--train_batch_size",
            "1",
            "--cpu-devices",
            "4",
            "--checkpointing_steps",
            "0",
        ],
    ));
    let (l1, l4) = (logged_losses(&one), logged_losses(&four));
    assert_eq!(l1.len(), 3);
    for (a, b) in l1.iter().zip(&l4) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "loss {a} vs {b}");
    }
    let ((_, r1), (_, r4)) = (
        embedding(&one.join("learned_embeds.safetensors")),
        embedding(&four.join("learned_embeds.safetensors")),
    );
    let worst = r1
        .iter()
        .zip(&r4)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    eprintln!("1 vs 4 devices after 3 steps: max row difference {worst:e}");
    assert!(worst <= 1e-5, "rows differ by {worst}");
    for d in [one, four] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn saved_embedding_has_the_reference_structure() {
    let out = fresh_dir("structure");
    let run = train(
        &out,
        &[
            "--max_train_steps",
            "4",
            "--train_batch_size",
            "2",
            "--num_vectors",
            "2",
            "--save_steps",
            "2",
            "--checkpointing_steps",
            "0",
        ],
    );
    ok(&run);
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("learned_embeds.safetensors"),
        "the path is printed"
    );
    let bytes = std::fs::read(out.join("learned_embeds.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    assert_eq!(
        meta.metadata()
            .as_ref()
            .unwrap()
            .get("format")
            .map(String::as_str),
        Some("pt")
    );
    let st = SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(
        st.names(),
        vec!["<cat-toy>"],
        "one tensor keyed by the placeholder"
    );
    let t = st.tensor("<cat-toy>").unwrap();
    assert_eq!(
        (t.dtype(), t.shape()),
        (safetensors::Dtype::F32, &[2usize, 16][..])
    );
    assert!(out.join("learned_embeds-steps-2.safetensors").is_file());
    assert!(out.join("learned_embeds-steps-4.safetensors").is_file());
    // The rows moved away from the initializer's row (both vectors start there).
    let (_, rows) = embedding(&out.join("learned_embeds.safetensors"));
    assert_ne!(&rows[..16], &rows[16..], "the two vectors train separately");
    // A second run into the same folder is refused without --overwrite, and changes nothing.
    let again = train(&out, &["--max_train_steps", "1", "--train_batch_size", "2"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--overwrite"));
    assert_eq!(
        std::fs::read(out.join("learned_embeds.safetensors")).unwrap(),
        bytes
    );
    std::fs::remove_dir_all(&out).unwrap();
}

fn expect_one_line_error(
    out: &Path,
    extra: &[&str],
    images: Option<&Path>,
    model: Option<&Path>,
    needle: &str,
) {
    let model = model
        .map(Path::to_path_buf)
        .unwrap_or_else(|| fixture("tiny-sd1"));
    let images = images
        .map(Path::to_path_buf)
        .unwrap_or_else(|| fixture("sample-images"));
    let run = Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["train", "--pretrained-model-name-or-path"])
        .arg(&model)
        .arg("--train-data-dir")
        .arg(&images)
        .args([
            "--resolution",
            "16",
            "--max-train-steps",
            "1",
            "--train-batch-size",
            "1",
        ])
        .arg("--output-dir")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(!run.status.success(), "{needle}: must fail");
    assert_eq!(errors.len(), 1, "{needle}: one error line in {stderr}");
    assert!(errors[0].contains(needle), "{needle} not in {}", errors[0]);
    let leftovers = std::fs::read_dir(out).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "{needle}: no partial outputs");
}

#[test]
fn bad_input_gives_one_line_errors_and_no_outputs() {
    let out = fresh_dir("bad");
    let token = [
        "--placeholder-token",
        "<cat-toy>",
        "--initializer-token",
        "toy",
    ];
    let empty = fresh_dir("empty-images");
    std::fs::create_dir_all(&empty).unwrap();
    expect_one_line_error(&out, &token, Some(&empty), None, "no training images");
    let corrupt = fresh_dir("corrupt-images");
    std::fs::create_dir_all(&corrupt).unwrap();
    std::fs::copy(fixture("data/corrupt.jpg"), corrupt.join("broken.jpg")).unwrap();
    expect_one_line_error(&out, &token, Some(&corrupt), None, "broken.jpg");
    expect_one_line_error(
        &out,
        &[
            "--placeholder-token",
            "<cat-toy>",
            "--initializer-token",
            "teddy bear",
        ],
        None,
        None,
        "not one",
    );
    expect_one_line_error(
        &out,
        &["--placeholder-token", "cat", "--initializer-token", "toy"],
        None,
        None,
        "already contains",
    );
    expect_one_line_error(
        &out,
        &token,
        None,
        Some(&fresh_dir("no-model")),
        "does not exist",
    );
    for d in [empty, corrupt] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// The loss of the step program on a fixed batch (every sample image, fixed latent noise,
/// diffusion noise and timesteps) with the given placeholder row.
fn eval_loss(row: &[f32]) -> f64 {
    use ti_xla::data::dataset::{Sample, TrainImages};
    use ti_xla::model::folder::ModelFolder;
    use ti_xla::model::tokenizer::ClipTokenizer;
    use ti_xla::pjrt::DeviceBuffer;
    use ti_xla::rng::Key;
    use ti_xla::train::step::compile_step;
    use xla_graphs::programs::train_step::{
        LatentSource, RowState, TrainStepConfig, TrainStepInputs,
    };

    let model = fixture("tiny-sd1");
    let folder = ModelFolder::open(model.to_str().unwrap(), None, None).unwrap();
    let (images, _) = TrainImages::load(&fixture("sample-images"), 16, false).unwrap();
    let repeats = 4;
    let b = images.len() * repeats;
    let config = TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: None,
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise: serde_json::from_value(folder.scheduler.clone()).unwrap(),
        compute_dtype: xla_graphs::DType::F32,
        vae_dtype: xla_graphs::DType::F32,
        batch: b,
        resolution: 16,
        seq_len: 77,
        num_vectors: 1,
        num_devices: 1,
        latents: LatentSource::Encode,
        adamw: Default::default(),
        gradient_accumulation_steps: 1,
        explicit_randomness: true,
        gradient_kernels: xla_graphs::models::params::GradientKernels::Uploaded,
        options: Default::default(),
    };
    let client = ti_xla::testing::cpu_client(1).unwrap();
    let step = compile_step(&client, &folder, &config).unwrap();
    let mut tok = ClipTokenizer::from_dir(folder.component("tokenizer")).unwrap();
    tok.add_placeholder_tokens("<cat-toy>", 1).unwrap();
    let samples: Vec<Sample> = (0..b)
        .map(|i| Sample {
            image: i % images.len(),
            template: 0,
            flip: false,
        })
        .collect();
    let px: Vec<f32> = images
        .pixel_values(&samples)
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let ids: Vec<i32> = (0..b)
        .flat_map(|_| tok.encode("a photo of a <cat-toy>").unwrap())
        .map(|i| i as i32)
        .collect();
    let latent = b * 4 * 8 * 8;
    let key = Key::from_seed(7);
    let (eps, noise) = (
        key.fold_in(0).normal_f32(latent),
        key.fold_in(1).normal_f32(latent),
    );
    let t: Vec<i32> = (0..b as i32).map(|i| 50 + 60 * i).collect();
    let up = |v: &[f32], dims: &[i64]| client.buffer_from_host(v, dims, 0).unwrap();
    let ints = |v: &[i32], dims: &[i64]| client.buffer_from_host(v, dims, 0).unwrap();
    let pixel_values = up(&px, &[b as i64, 3, 16, 16]);
    let input_ids = ints(&ids, &[b as i64, 77]);
    let (eps, noise) = (
        up(&eps, &[b as i64, 4, 8, 8]),
        up(&noise, &[b as i64, 4, 8, 8]),
    );
    let timesteps = ints(&t, &[b as i64]);
    let rows = up(row, &[1, 16]);
    let zeros: Vec<DeviceBuffer> = (0..3).map(|_| up(&[0.0; 16], &[1, 16])).collect();
    let (lr, step_number, apply) = (up(&[0.0], &[]), up(&[1.0], &[]), up(&[0.0], &[]));
    let inputs = TrainStepInputs {
        pixel_values: Some(&pixel_values),
        moment_table: None,
        moment_index: None,
        input_ids: &input_ids,
        input_ids_2: None,
        time_ids: None,
        state: RowState {
            rows: &rows,
            exp_avg: &zeros[0],
            exp_avg_sq: &zeros[1],
            grad_acc: &zeros[2],
        },
        lr: &lr,
        step: &step_number,
        apply: &apply,
        key: None,
        sample_index: None,
        latent_eps: Some(&eps),
        noise: Some(&noise),
        timesteps: Some(&timesteps),
        offset_noise: None,
        loss_mask: None,
    };
    let out = step.run(&[inputs]).unwrap().remove(0);
    out.loss.to_vec::<f32>().unwrap()[0] as f64
}

#[test]
fn training_lowers_a_fixed_evaluation_loss() {
    let out = fresh_dir("eval");
    ok(&train(
        &out,
        &[
            "--max_train_steps",
            "150",
            "--train_batch_size",
            "4",
            "--checkpointing_steps",
            "0",
            "--num_vectors",
            "1",
        ],
    ));
    let (_, trained) = embedding(&out.join("learned_embeds.safetensors"));
    // The starting row is the initializer's ("toy"), as the trainer sets it.
    let files = ti_xla::io::weights::WeightFiles::open(&[fixture(
        "tiny-sd1/text_encoder/model.safetensors",
    )])
    .unwrap();
    let table = files
        .read_as(
            "text_model.embeddings.token_embedding.weight",
            xla_graphs::DType::F32,
        )
        .unwrap();
    let toy = 5988usize; // "toy</w>" in the CLIP vocabulary (REFERENCE.md's check string)
    let start: Vec<f32> = table[toy * 64..(toy + 1) * 64]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (before, after) = (eval_loss(&start), eval_loss(&trained));
    eprintln!("fixed evaluation loss: before {before:.5}, after {after:.5}");
    assert!(
        after < before,
        "training should lower the evaluation loss: {before} -> {after}"
    );
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn full_pipeline_differs_from_the_base_model_only_in_the_new_rows() {
    let out = fresh_dir("pipeline");
    ok(&train(
        &out,
        &[
            "--max_train_steps",
            "2",
            "--train_batch_size",
            "2",
            "--num_vectors",
            "2",
            "--checkpointing_steps",
            "0",
            "--save_as_full_pipeline",
        ],
    ));
    let base = fixture("tiny-sd1");
    for file in [
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "model_index.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
    ] {
        assert_eq!(
            std::fs::read(base.join(file)).unwrap(),
            std::fs::read(out.join(file)).unwrap(),
            "{file} is copied unchanged"
        );
    }
    let read = |dir: &Path| {
        ti_xla::io::weights::WeightFiles::open(&[dir.join("text_encoder/model.safetensors")])
            .unwrap()
    };
    let (old, new) = (read(&base), read(&out));
    let f32s = |f: &ti_xla::io::weights::WeightFiles, n: &str| -> Vec<f32> {
        f.read_as(n, xla_graphs::DType::F32)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let table = "text_model.embeddings.token_embedding.weight";
    for name in old
        .names()
        .filter(|n| *n != table && !n.ends_with("position_ids"))
    {
        assert_eq!(f32s(&old, name), f32s(&new, name), "{name} unchanged");
    }
    let (t_old, t_new) = (f32s(&old, table), f32s(&new, table));
    assert_eq!(new.shape(table), Some(&[49410usize, 16][..]));
    assert_eq!(
        &t_new[..t_old.len()],
        &t_old[..],
        "every original row is unchanged"
    );
    let (_, learned) = embedding(&out.join("learned_embeds.safetensors"));
    assert_eq!(
        &t_new[t_old.len()..],
        &learned[..],
        "the new rows are the learned ones"
    );
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("text_encoder/config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["vocab_size"], 49410);
    // The saved tokenizer knows the tokens, at the rows' ids.
    let tok = ti_xla::model::tokenizer::ClipTokenizer::from_dir(out.join("tokenizer")).unwrap();
    let ids = tok.encode("a photo of <cat-toy> <cat-toy>_1").unwrap();
    assert_eq!(&ids[..6], &[49406, 320, 1125, 539, 49408, 49409]);
    std::fs::remove_dir_all(&out).unwrap();
}
