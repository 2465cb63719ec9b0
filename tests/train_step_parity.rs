//! One Textual Inversion step against diffusers' PyTorch trainer (references made by
//! scripts/make_train_step_fixtures.py in float64): loss, gradient of the placeholder rows and
//! the rows after one AdamW step, for the SD1-style (epsilon) and SD2-style (v_prediction)
//! fixtures, with the VAE run in the step and with the latent moments cached.

use std::collections::HashMap;

mod fixtures_path;

use fixtures_path::fixture;
use safetensors::SafeTensors;
use ti_xla::model::folder::ModelFolder;
use ti_xla::pjrt::{Client, DeviceBuffer};
use ti_xla::runtime::program::{CompiledProgram, ProgramName};
use ti_xla::train::step::compile_step;
use xla_graphs::models::params::GradientKernels;
use xla_graphs::optim::AdamWConfig;
use xla_graphs::programs::train_step::{
    build_encode_moments, EncodeMomentsInputs, LatentSource, RowState, TrainStepConfig,
    TrainStepInputs,
};
use xla_graphs::schedulers::NoiseScheduleConfig;
use xla_graphs::DType;

struct Reference {
    tensors: HashMap<String, (Vec<usize>, Vec<f64>)>,
    meta: HashMap<String, String>,
}

fn reference(model: &str) -> Reference {
    let bytes = std::fs::read(fixture(model).join("reference/train_step.safetensors")).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, v)| {
            let data: Vec<f64> = match v.dtype() {
                safetensors::Dtype::F32 => v
                    .data()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                safetensors::Dtype::I64 => v
                    .data()
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                    .collect(),
                other => panic!("{name}: {other:?}"),
            };
            (name, (v.shape().to_vec(), data))
        })
        .collect();
    Reference {
        tensors,
        meta: meta.metadata().clone().unwrap_or_default(),
    }
}

impl Reference {
    fn get(&self, name: &str) -> &(Vec<usize>, Vec<f64>) {
        &self.tensors[name]
    }
    fn meta(&self, key: &str) -> f64 {
        self.meta[key].parse().unwrap()
    }
    fn upload(&self, client: &Client, name: &str, dtype: DType) -> DeviceBuffer {
        let (shape, data) = self.get(name);
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        match dtype {
            DType::F32 => client.buffer_from_host(
                &data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
                &dims,
                0,
            ),
            DType::I32 => client.buffer_from_host(
                &data.iter().map(|&v| v as i32).collect::<Vec<_>>(),
                &dims,
                0,
            ),
            other => panic!("{other}"),
        }
        .unwrap()
    }
}

fn max_rel(got: &[f32], want: &[f64]) -> (f64, f64) {
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let abs = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (g, w)| m.max((*g as f64 - w).abs()));
    (abs, abs / scale)
}

/// `gradient_kernels`: the UNet's input gradients use pre-reversed kernels (the CPU trainer's
/// setting) or reverse them in the program (GPU/TPU); both must match the reference.
fn check_step(model: &str, latents: LatentSource, gradient_kernels: GradientKernels) {
    let r = reference(model);
    let folder = ModelFolder::open(fixture(model).to_str().unwrap(), None, None).unwrap();
    let client = ti_xla::testing::cpu_client(1).unwrap();
    let (px_shape, _) = r.get("pixel_values");
    let (rows_shape, _) = r.get("rows");
    let (batch, resolution) = (px_shape[0], px_shape[2]);
    let noise = serde_json::from_value::<NoiseScheduleConfig>(folder.scheduler.clone()).unwrap();
    let config = TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: None,
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise,
        compute_dtype: DType::F32,
        vae_dtype: DType::F32,
        batch,
        resolution,
        seq_len: 77,
        num_vectors: rows_shape[0],
        num_devices: 1,
        latents,
        adamw: AdamWConfig {
            beta1: r.meta("adam_beta1"),
            beta2: r.meta("adam_beta2"),
            weight_decay: r.meta("adam_weight_decay"),
            epsilon: r.meta("adam_epsilon"),
        },
        gradient_accumulation_steps: 1,
        explicit_randomness: true,
        gradient_kernels,
    };
    let step = compile_step(&client, &folder, &config).unwrap();

    let pixels = r.upload(&client, "pixel_values", DType::F32);
    // With the cache, the moments come from the encoder program, indexed per sample.
    let moments = match latents {
        LatentSource::Encode => None,
        LatentSource::Cached { .. } => {
            let program = build_encode_moments(&folder.vae, DType::F32, batch, resolution).unwrap();
            let name = ProgramName {
                what: "VAE encoder",
                out_of_memory: "",
            };
            let encoder = CompiledProgram::new(&client, &folder, program, 1, name).unwrap();
            let inputs = EncodeMomentsInputs {
                pixel_values: &pixels,
            };
            let table = encoder.run(&[inputs]).unwrap().remove(0).moments;
            let index = client
                .buffer_from_host(&(0..batch as i32).collect::<Vec<_>>(), &[batch as i64], 0)
                .unwrap();
            Some((table, index))
        }
    };
    let ids = r.upload(&client, "input_ids", DType::I32);
    let eps = r.upload(&client, "latent_eps", DType::F32);
    let noise = r.upload(&client, "noise", DType::F32);
    let timesteps = r.upload(&client, "timesteps", DType::I32);
    let lr = client
        .buffer_from_host(&[r.meta("learning_rate") as f32], &[], 0)
        .unwrap();
    let one = client.buffer_from_host(&[1f32], &[], 0).unwrap();
    let zero = client.buffer_from_host(&[0f32], &[], 0).unwrap();
    let n = rows_shape.iter().product::<usize>();
    let dims = [rows_shape[0] as i64, rows_shape[1] as i64];

    // apply = 0 leaves the rows and puts the (device-mean) gradient in the accumulator;
    // apply = 1 makes the AdamW update from zero moments.
    let mut results = Vec::new();
    for apply in [&zero, &one] {
        let rows = r.upload(&client, "rows", DType::F32);
        let zeros: Vec<DeviceBuffer> = (0..3)
            .map(|_| client.buffer_from_host(&vec![0f32; n], &dims, 0).unwrap())
            .collect();
        let inputs = TrainStepInputs {
            pixel_values: moments.is_none().then_some(&pixels),
            moment_table: moments.as_ref().map(|(table, _)| table),
            moment_index: moments.as_ref().map(|(_, index)| index),
            input_ids: &ids,
            input_ids_2: None,
            time_ids: None,
            state: RowState {
                rows: &rows,
                exp_avg: &zeros[0],
                exp_avg_sq: &zeros[1],
                grad_acc: &zeros[2],
            },
            lr: &lr,
            step: &one,
            apply,
            key: None,
            sample_index: None,
            latent_eps: Some(&eps),
            noise: Some(&noise),
            timesteps: Some(&timesteps),
        };
        let out = step.run(&[inputs]).unwrap().remove(0);
        let read = |b: &DeviceBuffer| b.to_vec::<f32>().unwrap();
        let s = &out.state;
        results.push([
            read(&s.rows),
            read(&s.exp_avg),
            read(&s.exp_avg_sq),
            read(&s.grad_acc),
            read(&out.loss),
        ]);
    }
    let loss = results[0][4][0];
    let want_loss = r.get("loss").1[0];
    let loss_rel = ((loss as f64 - want_loss) / want_loss).abs();
    let (g_abs, g_rel) = max_rel(&results[0][3], &r.get("grad_rows").1);
    let (r_abs, r_rel) = max_rel(&results[1][0], &r.get("rows_after").1);
    eprintln!(
        "{model} {latents:?}: loss {loss} vs {want_loss} (rel {loss_rel:.1e}); grad_rows abs {g_abs:.1e} rel {g_rel:.1e}; rows_after abs {r_abs:.1e} rel {r_rel:.1e}"
    );
    assert!(loss_rel <= 1e-4, "loss");
    assert!(g_rel <= 1e-4, "grad_rows");
    assert!(r_rel <= 1e-5, "rows after AdamW");
    assert_eq!(
        results[0][0],
        r.get("rows")
            .1
            .iter()
            .map(|&v| v as f32)
            .collect::<Vec<_>>(),
        "apply = 0 keeps the rows"
    );
    assert!(
        results[1][3].iter().all(|&v| v == 0.0),
        "the accumulator is cleared by the update"
    );
}

#[test]
fn sd1_epsilon_step_matches_diffusers() {
    check_step("tiny-sd1", LatentSource::Encode, GradientKernels::InProgram);
}

#[test]
fn sd2_v_prediction_step_matches_diffusers() {
    check_step("tiny-sd2", LatentSource::Encode, GradientKernels::Uploaded);
}

#[test]
fn cached_latent_moments_give_the_same_step() {
    check_step(
        "tiny-sd1",
        LatentSource::Cached { entries: 2 },
        GradientKernels::Uploaded,
    );
    check_step(
        "tiny-sd2",
        LatentSource::Cached { entries: 3 },
        GradientKernels::InProgram,
    );
}

#[test]
fn forward_command_runs_the_step_from_a_file() {
    let model = "tiny-sd2";
    let r = reference(model);
    let out = std::env::temp_dir().join(format!(
        "ti-xla-forward-step-{}.safetensors",
        std::process::id()
    ));
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ti-xla"))
        .args(["forward", "--component", "train_step", "--model"])
        .arg(fixture(model))
        .arg("--inputs")
        .arg(fixture(model).join("reference/train_step.safetensors"))
        .arg("--output")
        .arg(&out)
        .args([
            "--placeholder-token",
            "<cat-toy>",
            "--learning-rate",
            &r.meta["learning_rate"],
        ])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let loss = read("loss")[0] as f64;
    assert!(((loss - r.get("loss").1[0]) / r.get("loss").1[0]).abs() <= 1e-4);
    assert!(max_rel(&read("grad_rows"), &r.get("grad_rows").1).1 <= 1e-4);
    assert!(max_rel(&read("rows"), &r.get("rows_after").1).1 <= 1e-5);
    std::fs::remove_file(&out).unwrap();
}
