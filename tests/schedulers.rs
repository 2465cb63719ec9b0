//! The sampling schedulers against diffusers 0.42.1 (tests/fixtures/schedules/sampling.json,
//! made by scripts/make_scheduler_fixtures.py): the host tables for the SD 1.5 and SD 2.1
//! configs and variants, and whole 5-step runs of the traced update, compiled once per case and
//! run step after step through the CPU plugin with the state fed back, against diffusers
//! stepping the same float32 inputs in float32.

mod common;
mod fixtures_path;

use std::collections::BTreeMap;

use common::{compile, execute, Array};
use fixtures_path::fixture;
use serde_json::Value;
use xla_graphs::schedulers::{build_scheduler, Noise, Scheduler, SchedulerConfig, SchedulerKind};
use xla_graphs::{random, DType, Graph, Shape};

/// tests/fixtures/schedules/sampling.json, parsed.
fn sampling_json() -> Value {
    let path = fixture("schedules/sampling.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The hub config with the case's overrides, built as the case's class.
fn scheduler(fx: &Value, case: &Value) -> Box<dyn Scheduler> {
    let mut config = fx["configs"][case["config"].as_str().unwrap()].clone();
    for (k, v) in case["overrides"].as_object().unwrap() {
        config[k] = v.clone();
    }
    let config = SchedulerConfig::from_json(&config.to_string()).unwrap();
    let kind = SchedulerKind::from_class_name(case["scheduler"].as_str().unwrap()).unwrap();
    let (s, warnings) = build_scheduler(&config, Some(kind)).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    s
}

fn name(case: &Value) -> String {
    format!(
        "{} {} {}",
        case["scheduler"].as_str().unwrap(),
        case["config"].as_str().unwrap(),
        case["overrides"]
    )
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The rows scripts/make_scheduler_fixtures.py keeps: the first four, every fifth, the last three.
fn kept(len: usize) -> Vec<usize> {
    (0..len)
        .filter(|&i| i < 4 || i % 5 == 0 || i + 3 >= len)
        .collect()
}

/// Largest error per scheduler, for the report.
#[derive(Default)]
struct Worst(BTreeMap<String, f64>);

impl Worst {
    fn note(&mut self, key: String, err: f64) {
        let e = self.0.entry(key).or_insert(0.0);
        *e = e.max(err);
    }
}

#[test]
fn tables_match_diffusers() {
    let fx = sampling_json();
    let mut worst = Worst::default();
    for case in fx["tables"].as_array().unwrap() {
        let what = name(case);
        let class = case["scheduler"].as_str().unwrap().to_string();
        let mut s = scheduler(&fx, case);
        s.set_timesteps(case["steps"].as_u64().unwrap() as usize)
            .unwrap();
        let ts = s.timesteps();
        assert_eq!(
            ts.len(),
            case["num_timesteps"].as_u64().unwrap() as usize,
            "{what}"
        );
        let rows = kept(ts.len());
        // Timesteps are integers or float32 values in both: they must be equal.
        let want: Vec<f32> = floats(&case["timesteps"])
            .iter()
            .map(|&t| t as f32)
            .collect();
        let got: Vec<f32> = rows.iter().map(|&i| ts[i] as f32).collect();
        let karras = case["overrides"]["use_karras_sigmas"].as_bool() == Some(true);
        if karras && class == "EulerDiscreteScheduler" {
            // Euler's Karras timesteps are fractions read off diffusers' float32 log sigmas,
            // which near t = 0 are 4e-5 off (see below): 1e-4 relative, absolute below 1.
            for (g, w) in got.iter().zip(&want) {
                let err = (g - w).abs() / w.abs().max(1.0);
                worst.note(
                    format!("{class} Karras timesteps (abs below 1, rel above)"),
                    err as f64,
                );
                assert!(err <= 1e-4, "{what}: timesteps {got:?} vs {want:?}");
            }
        } else {
            assert_eq!(got, want, "{what}: timesteps");
        }
        // diffusers' tables are float32 cumulative products; ours are f64. Relative errors.
        let rel = |got: f64, want: f64| (got - want).abs() / want.abs().max(1e-300);
        let init = rel(
            s.init_noise_sigma(),
            case["init_noise_sigma"].as_f64().unwrap(),
        );
        worst.note(format!("{class} init_noise_sigma"), init);
        assert!(init <= 1e-6, "{what}: init_noise_sigma {init:e}");
        if let Some(alphas) = s.alphas() {
            for (k, &i) in rows.iter().enumerate() {
                for j in 0..2 {
                    let want = case["alphas"][k][j].as_f64().unwrap();
                    let err = (alphas[i][j] - want).abs();
                    worst.note(format!("{class} alphas (abs)"), err);
                    assert!(err <= 1e-6, "{what}: alphas[{i}][{j}] {err:e}");
                }
            }
        }
        // Karras levels are spaced between the schedule's ends, and diffusers' lower end is
        // float32's `sqrt((1 - acp[0]) / acp[0])`, whose `1 - 0.99915` keeps 4 digits: that
        // moves the levels by up to 4.3e-6 relatively (ours are the f64 values; the formula
        // itself is checked exactly in `schedulers::karras`'s unit tests).
        let (tol, class) = if karras {
            (1e-5, format!("{class} (Karras)"))
        } else {
            (1e-6, class)
        };
        if let Some(sigmas) = s.sigmas() {
            let want = floats(&case["sigmas"]);
            let mut idx = rows.clone();
            idx.push(sigmas.len() - 1);
            for (k, &i) in idx.iter().enumerate() {
                // diffusers' float32 `1 - alphas_cumprod` leaves small sigmas 1e-5 off
                // relatively: absolute below 1, relative above.
                let err = (sigmas[i] - want[k]).abs() / want[k].abs().max(1.0);
                worst.note(format!("{class} sigmas (abs below 1, rel above)"), err);
                assert!(
                    err <= tol,
                    "{what}: sigmas[{i}] {} vs {} ({err:e})",
                    sigmas[i],
                    want[k]
                );
            }
        }
    }
    for (k, v) in worst.0 {
        eprintln!("{k}: max error {v:.2e}");
    }
}

fn f32_array(dims: &[i64], data: impl IntoIterator<Item = f64>) -> Array {
    Array::new(
        DType::F32,
        dims,
        data.into_iter().map(|x| x as f32 as f64).collect(),
    )
}

#[test]
fn update_steps_match_diffusers() {
    let fx = sampling_json();
    let inputs = &fx["inputs"];
    let dims: Vec<i64> = inputs["dims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect();
    let model_outputs: Vec<Vec<f64>> = inputs["model_outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let noise: Vec<Vec<f64>> = inputs["noise"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let mut worst = Worst::default();
    for case in fx["steps"].as_array().unwrap() {
        let what = name(case);
        let mut s = scheduler(&fx, case);
        s.set_timesteps(case["num_inference_steps"].as_u64().unwrap() as usize)
            .unwrap();
        let ancestral = s.kind() == SchedulerKind::EulerAncestral;

        // One program for every step: the step's scalars and the state are inputs.
        let g = Graph::new();
        let shape = Shape::new(DType::F32, &dims);
        let sample = g.parameter("sample", shape.clone()).unwrap();
        let model_output = g.parameter("model_output", shape.clone()).unwrap();
        let k = s.scalar_names().len() as i64;
        let scalars = g
            .parameter("scalars", Shape::new(DType::F32, &[k]))
            .unwrap();
        let state: Vec<_> = (0..s.num_state())
            .map(|i| g.parameter(format!("state{i}"), shape.clone()).unwrap())
            .collect();
        let normals = g.parameter("noise", shape.clone()).unwrap();
        let step_inputs = s.step_inputs(&scalars).unwrap();
        let scaled = s.scale_model_input(&sample, &step_inputs).unwrap();
        let noise_arg = if ancestral {
            Noise::Normals(&normals)
        } else {
            Noise::None
        };
        let out = s
            .step(&model_output, &sample, &step_inputs, &state, noise_arg)
            .unwrap();
        // Every parameter is an argument, used or not: one argument list for all cases.
        let mut outputs = vec![&out.prev_sample, &scaled];
        outputs.extend(out.state.iter());
        let exe = compile(&g.to_stablehlo(&outputs).unwrap(), 1);

        let init = s.init_noise_sigma() as f32;
        let mut x = f32_array(
            &dims,
            floats(&inputs["sample"])
                .into_iter()
                .map(|v| (v as f32 * init) as f64),
        );
        let mut st: Vec<Array> = (0..s.num_state())
            .map(|_| f32_array(&dims, vec![0.0; x.data.len()]))
            .collect();
        let want_steps = case["outputs"].as_array().unwrap();
        assert_eq!(want_steps.len(), s.timesteps().len(), "{what}");
        for (i, want) in want_steps.iter().enumerate() {
            let mut args = vec![
                x.clone(),
                f32_array(&dims, model_outputs[i].clone()),
                f32_array(&[k], s.step_scalars(i)),
            ];
            args.extend(st.iter().cloned());
            args.push(f32_array(
                &dims,
                noise.get(i).cloned().unwrap_or(vec![0.0; x.data.len()]),
            ));
            let mut got = execute(&exe, &[args]).remove(0);

            let divisor = match (s.kind(), s.sigmas()) {
                (SchedulerKind::Euler | SchedulerKind::EulerAncestral, Some(sig)) => {
                    (sig[i] * sig[i] + 1.0).sqrt()
                }
                _ => 1.0,
            };
            for (j, (g, v)) in got[1].data.iter().zip(&x.data).enumerate() {
                let e = (g - v / divisor).abs() / (v / divisor).abs().max(1.0);
                assert!(e <= 1e-6, "{what}: scaled input[{j}] at step {i}: {e:e}");
            }

            let want = floats(want);
            let scale = want.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
            let err = got[0]
                .data
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs() / scale)
                .fold(0.0, f64::max);
            worst.note(what.clone(), err);
            assert!(err <= 1e-5, "{what}: step {i}: error {err:e}");
            st = got.split_off(2);
            x = got.swap_remove(0);
        }
    }
    for (k, v) in worst.0 {
        eprintln!("{k}: max relative error {v:.2e}");
    }
}

/// Euler ancestral's noise from a key is `random::normal` of that key: the whole sample from a
/// `[2]` key, or each sample from its own row of a `[B, 2]` key.
#[test]
fn ancestral_noise_from_keys_is_threefry_normal() {
    let config =
        SchedulerConfig::from_json(r#"{"_class_name": "EulerAncestralDiscreteScheduler"}"#)
            .unwrap();
    let (mut s, _) = build_scheduler(&config, None).unwrap();
    s.set_timesteps(10).unwrap();
    let dims = [2i64, 3, 2, 2];
    let g = Graph::new();
    let shape = Shape::new(DType::F32, &dims);
    let sample = g.parameter("sample", shape.clone()).unwrap();
    let model_output = g.parameter("model_output", shape.clone()).unwrap();
    let k = s.scalar_names().len() as i64;
    let scalars = g
        .parameter("scalars", Shape::new(DType::F32, &[k]))
        .unwrap();
    let key = g.parameter("key", Shape::new(DType::U32, &[2])).unwrap();
    let keys = g
        .parameter("keys", Shape::new(DType::U32, &[2, 2]))
        .unwrap();
    let si = s.step_inputs(&scalars).unwrap();
    let step = |noise| {
        s.step(&model_output, &sample, &si, &[], noise)
            .unwrap()
            .prev_sample
    };
    let from_key = step(Noise::Key(&key));
    let z = random::normal(&key, &dims, DType::F32).unwrap();
    let from_normals = step(Noise::Normals(&z));
    let from_keys = step(Noise::Key(&keys));
    let rows: Vec<_> = (0..2)
        .map(|b| {
            let kb = keys.slice_axis(0, b, b + 1).unwrap().reshape(&[2]).unwrap();
            random::normal(&kb, &dims[1..], DType::F32)
                .unwrap()
                .reshape(&[1, 3, 2, 2])
                .unwrap()
        })
        .collect();
    let z_rows = g.concatenate(&rows, 0).unwrap();
    let from_rows = step(Noise::Normals(&z_rows));
    let n = 24;
    let out = common::run(
        &g,
        &[&from_key, &from_normals, &from_keys, &from_rows, &z],
        &[
            Array::new(DType::F32, &dims, common::rand_values(n, 1)),
            Array::new(DType::F32, &dims, common::rand_values(n, 2)),
            f32_array(&[k], s.step_scalars(3)),
            Array::new(DType::U32, &[2], vec![0.0, 42.0]),
            Array::new(DType::U32, &[2, 2], vec![0.0, 7.0, 0.0, 8.0]),
        ],
    );
    assert_eq!(out[0].data, out[1].data);
    assert_eq!(out[2].data, out[3].data);
    assert_ne!(out[0].data, out[2].data);
    // The noise matters: sigma_up is not zero mid-schedule.
    assert!(s.step_scalars(3)[5] > 0.1);
    assert!(out[4].data.iter().all(|v| v.is_finite()));
}

/// Built from the hub configs without a kind, each picks its class with no warning, and the
/// CLI kinds keep the file's prediction type and offset.
#[test]
fn hub_configs_pick_their_class() {
    let fx = sampling_json();
    for (config, kind) in [("sd15", SchedulerKind::Pndm), ("sd21", SchedulerKind::Ddim)] {
        let c = SchedulerConfig::from_json(&fx["configs"][config].to_string()).unwrap();
        let (s, warnings) = build_scheduler(&c, None).unwrap();
        assert_eq!(s.kind(), kind);
        assert!(warnings.is_empty(), "{warnings:?}");
        for k in SchedulerKind::ALL {
            let (s, warnings) = build_scheduler(&c, Some(k)).unwrap();
            assert_eq!(s.kind(), k);
            assert!(warnings.is_empty(), "{k}: {warnings:?}");
        }
    }
}
