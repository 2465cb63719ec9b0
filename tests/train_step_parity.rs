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

/// The f32, one-device step with given randomness for the reference's model and optimizer
/// settings; `(batch, resolution, num_vectors)`.
fn reference_config(
    r: &Reference,
    folder: &ModelFolder,
    (batch, resolution, num_vectors): (usize, usize, usize),
    latents: LatentSource,
    gradient_kernels: GradientKernels,
    options: xla_graphs::programs::train_step::StepOptions,
) -> TrainStepConfig {
    TrainStepConfig {
        text_encoder: folder.text_encoder.clone(),
        text_encoder_2: None,
        unet: folder.unet.clone(),
        vae: folder.vae.clone(),
        noise: serde_json::from_value::<NoiseScheduleConfig>(folder.scheduler.clone()).unwrap(),
        compute_dtype: DType::F32,
        vae_dtype: DType::F32,
        batch,
        resolution,
        seq_len: 77,
        num_vectors,
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
        options,
    }
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
    let shape = (batch, resolution, rows_shape[0]);
    let config = reference_config(
        &r,
        &folder,
        shape,
        latents,
        gradient_kernels,
        Default::default(),
    );
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
            offset_noise: None,
            loss_mask: None,
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

// ---- The step's options (off by default), against closed forms built from the plain step
// (itself checked against diffusers above). ----

use xla_graphs::programs::train_step::StepOptions;

/// One step's loss, accumulated gradient (apply = 0) and rows after the update (apply = 1).
struct StepRun {
    loss: f64,
    grad: Vec<f32>,
    rows: Vec<f32>,
}

/// The per-sample inputs of the reference, samples `from..to`, with the noise replaced when
/// given; `offset_noise` is the noise-offset draw `[B, C, 1, 1]` for an offset step.
fn run_options(
    model: &str,
    options: StepOptions,
    (from, to): (usize, usize),
    noise: Option<Vec<f32>>,
    offset_noise: Option<Vec<f32>>,
    loss_mask: Option<Vec<f32>>,
) -> StepRun {
    let r = reference(model);
    let folder = ModelFolder::open(fixture(model).to_str().unwrap(), None, None).unwrap();
    let client = ti_xla::testing::cpu_client(1).unwrap();
    let (px_shape, _) = r.get("pixel_values");
    let (rows_shape, rows) = r.get("rows");
    let resolution = px_shape[2];
    let batch = to - from;
    let shape = (batch, resolution, rows_shape[0]);
    let config = reference_config(
        &r,
        &folder,
        shape,
        LatentSource::Encode,
        GradientKernels::Uploaded,
        options,
    );
    let step = compile_step(&client, &folder, &config).unwrap();
    // Samples from..to of a reference tensor, as f32 or i32 on the device.
    let slice = |name: &str| -> (Vec<i64>, Vec<f64>) {
        let (shape, data) = r.get(name);
        let per = data.len() / shape[0];
        let mut dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        dims[0] = batch as i64;
        (dims, data[from * per..to * per].to_vec())
    };
    let f32s = |(dims, data): (Vec<i64>, Vec<f64>)| {
        let v: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        client.buffer_from_host(&v, &dims, 0).unwrap()
    };
    let i32s = |(dims, data): (Vec<i64>, Vec<f64>)| {
        let v: Vec<i32> = data.iter().map(|&v| v as i32).collect();
        client.buffer_from_host(&v, &dims, 0).unwrap()
    };
    let pixels = f32s(slice("pixel_values"));
    let ids = i32s(slice("input_ids"));
    let eps = f32s(slice("latent_eps"));
    let (noise_dims, reference_noise) = slice("noise");
    let noise = match noise {
        Some(n) => client.buffer_from_host(&n, &noise_dims, 0).unwrap(),
        None => f32s((noise_dims.clone(), reference_noise)),
    };
    let timesteps = i32s(slice("timesteps"));
    let offset_noise = offset_noise.map(|o| {
        let dims = [batch as i64, noise_dims[1], 1, 1];
        client.buffer_from_host(&o, &dims, 0).unwrap()
    });
    let loss_mask = loss_mask.map(|m| {
        let dims = [batch as i64, 1, noise_dims[2], noise_dims[3]];
        client.buffer_from_host(&m, &dims, 0).unwrap()
    });
    let lr = client
        .buffer_from_host(&[r.meta("learning_rate") as f32], &[], 0)
        .unwrap();
    let one = client.buffer_from_host(&[1f32], &[], 0).unwrap();
    let zero = client.buffer_from_host(&[0f32], &[], 0).unwrap();
    let dims = [rows_shape[0] as i64, rows_shape[1] as i64];
    let rows: Vec<f32> = rows.iter().map(|&v| v as f32).collect();
    let mut outs = Vec::new();
    for apply in [&zero, &one] {
        let state: Vec<DeviceBuffer> = [
            rows.clone(),
            vec![0.0; rows.len()],
            vec![0.0; rows.len()],
            vec![0.0; rows.len()],
        ]
        .iter()
        .map(|v| client.buffer_from_host(v, &dims, 0).unwrap())
        .collect();
        let inputs = TrainStepInputs {
            pixel_values: Some(&pixels),
            moment_table: None,
            moment_index: None,
            input_ids: &ids,
            input_ids_2: None,
            time_ids: None,
            state: RowState {
                rows: &state[0],
                exp_avg: &state[1],
                exp_avg_sq: &state[2],
                grad_acc: &state[3],
            },
            lr: &lr,
            step: &one,
            apply,
            key: None,
            sample_index: None,
            latent_eps: Some(&eps),
            noise: Some(&noise),
            timesteps: Some(&timesteps),
            offset_noise: offset_noise.as_ref(),
            loss_mask: loss_mask.as_ref(),
        };
        outs.push(step.run(&[inputs]).unwrap().remove(0));
    }
    StepRun {
        loss: outs[0].loss.to_vec::<f32>().unwrap()[0] as f64,
        grad: outs[0].state.grad_acc.to_vec().unwrap(),
        rows: outs[1].state.rows.to_vec().unwrap(),
    }
}

/// alphas_cumprod of the fixtures' scaled_linear schedule (0.00085..0.012, 1000 steps),
/// computed here from the formula.
fn alphas_cumprod() -> Vec<f64> {
    let (a, b, n) = (0.00085f64.sqrt(), 0.012f64.sqrt(), 1000);
    let mut acc = 1.0;
    (0..n)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / (n - 1) as f64).powi(2);
            acc *= 1.0 - beta;
            acc
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    let (abs, rel) = max_rel(got, want);
    eprintln!("{what}: abs {abs:.1e} rel {rel:.1e}");
    assert!(rel <= tol, "{what}: relative error {rel:.1e} > {tol:.0e}");
}

/// Min-SNR-gamma: the batch's loss and gradient are the mean over its samples of each one's
/// plain (batch of one) loss and gradient times min(snr_t, gamma) / snr_t (epsilon) or
/// / (snr_t + 1) (v-prediction), snr_t = acp_t / (1 - acp_t), as diffusers' train scripts.
#[test]
fn min_snr_gamma_weights_each_samples_loss_by_its_timestep() {
    for (model, v_prediction) in [("tiny-sd1", false), ("tiny-sd2", true)] {
        let r = reference(model);
        let t = &r.get("timesteps").1;
        let b = t.len();
        let acp = alphas_cumprod();
        // A gamma between the samples' SNRs, so that some are clipped and some are not.
        let snrs: Vec<f64> = t
            .iter()
            .map(|&t| acp[t as usize] / (1.0 - acp[t as usize]))
            .collect();
        let gamma = snrs.iter().copied().fold(f64::INFINITY, f64::min) * 1.5;
        let weight = |snr: f64| snr.min(gamma) / if v_prediction { snr + 1.0 } else { snr };
        let options = StepOptions {
            snr_gamma: Some(gamma),
            ..Default::default()
        };
        let weighted = run_options(model, options, (0, b), None, None, None);
        let (mut loss, mut grad) = (0.0, vec![0.0; weighted.grad.len()]);
        for (i, &snr) in snrs.iter().enumerate() {
            let one = run_options(model, StepOptions::default(), (i, i + 1), None, None, None);
            let w = weight(snr) / b as f64;
            loss += w * one.loss;
            for (g, o) in grad.iter_mut().zip(&one.grad) {
                *g += w * *o as f64;
            }
        }
        eprintln!(
            "{model}: gamma {gamma:.3}, snrs {snrs:?}, loss {} vs {loss}",
            weighted.loss
        );
        assert!(
            ((weighted.loss - loss) / loss).abs() <= 1e-5,
            "{model} loss"
        );
        assert_close(
            &weighted.grad,
            &grad,
            1e-4,
            &format!("{model} min-snr gradient"),
        );
        // Not the plain step: the weights are not all 1.
        let plain = run_options(model, StepOptions::default(), (0, b), None, None, None);
        assert!(
            ((plain.loss - loss) / loss).abs() > 1e-3,
            "{model}: weights changed nothing"
        );
    }
}

/// Noise offset: the step with offset o and draws d is the plain step on the noise
/// noise + o * d (broadcast over h and w), as diffusers adds it.
#[test]
fn noise_offset_adds_a_per_channel_draw_to_the_noise() {
    let model = "tiny-sd1";
    let r = reference(model);
    let (shape, noise) = r.get("noise");
    let (b, c, hw) = (shape[0], shape[1], shape[2] * shape[3]);
    // One draw per sample and channel; the noise is [B, C, h, w], so element i's draw is
    // draws[i / (h w)].
    let draws: Vec<f32> = (0..b * c).map(|i| ((i as f32) * 0.7).sin()).collect();
    let offset = 0.1;
    let options = StepOptions {
        noise_offset: offset,
        ..Default::default()
    };
    let with = run_options(model, options, (0, b), None, Some(draws.clone()), None);
    let shifted: Vec<f32> = noise
        .iter()
        .enumerate()
        .map(|(i, &n)| (n + offset * draws[i / hw] as f64) as f32)
        .collect();
    let plain = run_options(
        model,
        StepOptions::default(),
        (0, b),
        Some(shifted),
        None,
        None,
    );
    assert!(((with.loss - plain.loss) / plain.loss).abs() <= 1e-6);
    let want: Vec<f64> = plain.grad.iter().map(|&g| g as f64).collect();
    assert_close(&with.grad, &want, 1e-5, "noise-offset gradient");
    let unshifted = run_options(model, StepOptions::default(), (0, b), None, None, None);
    assert!(
        (with.loss - unshifted.loss).abs() > 1e-6,
        "the offset changed nothing"
    );
}

/// Embedding norms: after the update each row is the plain update's row rescaled to the
/// target norm (preserve), or clamped to the maximum norm.
#[test]
fn embedding_norm_options_rescale_and_clamp_the_updated_rows() {
    let model = "tiny-sd1";
    let plain = run_options(model, StepOptions::default(), (0, 2), None, None, None);
    let width = reference(model).get("rows").0[1];
    let norms: Vec<f64> = plain
        .rows
        .chunks(width)
        .map(|r| r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt())
        .collect();
    let target = 0.37;
    let preserve = StepOptions {
        preserve_norm: Some(vec![target]),
        ..Default::default()
    };
    let got = run_options(model, preserve, (0, 2), None, None, None);
    let want: Vec<f64> = plain
        .rows
        .chunks(width)
        .zip(&norms)
        .flat_map(|(r, n)| r.iter().map(move |&v| v as f64 * target / n))
        .collect();
    assert_close(&got.rows, &want, 1e-6, "preserved norm");
    // The clamp: a maximum below the rows' norms scales them down to it; above, nothing.
    let max = norms.iter().copied().fold(f64::INFINITY, f64::min) * 0.5;
    let clamp = StepOptions {
        max_norm: Some(max),
        ..Default::default()
    };
    let got = run_options(model, clamp, (0, 2), None, None, None);
    let want: Vec<f64> = plain
        .rows
        .chunks(width)
        .zip(&norms)
        .flat_map(|(r, n)| r.iter().map(move |&v| v as f64 * max / n))
        .collect();
    assert_close(&got.rows, &want, 1e-6, "clamped norm");
    let loose = StepOptions {
        max_norm: Some(norms.iter().copied().fold(0.0, f64::max) * 2.0),
        ..Default::default()
    };
    let got = run_options(model, loose, (0, 2), None, None, None);
    assert_eq!(got.rows, plain.rows, "a loose clamp leaves the rows");
}

/// Masked loss: the weighted mean is linear in the mask, so complementary masks M and 1 - M
/// give losses and gradients that add up to the unmasked step's, and the mask of ones is the
/// unmasked step; a mask that varies over the pixels gives neither half of it.
#[test]
fn masked_loss_weighs_each_latent_pixel() {
    let model = "tiny-sd1";
    let (shape, _) = reference(model).get("noise").clone();
    let (b, h, w) = (shape[0], shape[2], shape[3]);
    // Per sample, a different ramp over the pixels in [0, 1].
    let mask: Vec<f32> = (0..b * h * w)
        .map(|i| ((i % (h * w)) as f32 / (h * w - 1) as f32 + (i / (h * w)) as f32 * 0.3) % 1.0)
        .collect();
    let rest: Vec<f32> = mask.iter().map(|m| 1.0 - m).collect();
    let masked = StepOptions {
        masked_loss: true,
        ..Default::default()
    };
    let plain = run_options(model, StepOptions::default(), (0, b), None, None, None);
    let a = run_options(model, masked.clone(), (0, b), None, None, Some(mask));
    let c = run_options(model, masked.clone(), (0, b), None, None, Some(rest));
    let ones = run_options(
        model,
        masked,
        (0, b),
        None,
        None,
        Some(vec![1.0; b * h * w]),
    );
    assert!(((a.loss + c.loss - plain.loss) / plain.loss).abs() <= 1e-5);
    let sum: Vec<f32> = a.grad.iter().zip(&c.grad).map(|(x, y)| x + y).collect();
    let want: Vec<f64> = plain.grad.iter().map(|&g| g as f64).collect();
    assert_close(&sum, &want, 1e-5, "complementary masks' gradients");
    assert!(((ones.loss - plain.loss) / plain.loss).abs() <= 1e-6);
    assert_eq!(ones.grad, plain.grad, "the mask of ones is the plain step");
    assert!(
        ((a.loss - plain.loss / 2.0) / plain.loss).abs() > 1e-3,
        "the mask varies"
    );
}
