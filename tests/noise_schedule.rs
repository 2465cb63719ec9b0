//! The training noise schedule: tables against diffusers' DDPMScheduler, and add_noise and the
//! v-prediction target in the graph against their closed forms.

mod common;

use common::{rand_values, run, Array};
use xla_graphs::schedulers::{add_noise, training_target, NoiseScheduleConfig, PredictionType};
use xla_graphs::{DType, Graph, Shape};

#[test]
fn tables_match_diffusers_ddpm_scheduler() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schedules/ddpm_tables.json"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (name, case) in json["cases"].as_object().unwrap() {
        let cfg: NoiseScheduleConfig = serde_json::from_value(case["config"].clone()).unwrap();
        let betas = cfg.betas().unwrap();
        let acp = cfg.alphas_cumprod().unwrap();
        assert_eq!(betas.len(), 1000);
        let idx: Vec<usize> = case["indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        for (what, ours, theirs) in [
            ("betas", &betas, &case["betas"]),
            ("alphas_cumprod", &acp, &case["alphas_cumprod"]),
        ] {
            let mut worst = 0f64;
            for (k, &i) in idx.iter().enumerate() {
                let want = theirs[k].as_f64().unwrap();
                worst = worst.max((ours[i] - want).abs());
            }
            // diffusers builds the table in float32; ours is f64.
            eprintln!("{name} {what}: max abs error {worst:.2e}");
            assert!(worst <= 1e-6, "{name} {what}: {worst:e}");
        }
    }
}

#[test]
fn add_noise_and_targets_follow_their_closed_forms() {
    let cfg = NoiseScheduleConfig::stable_diffusion(PredictionType::VPrediction);
    let acp = cfg.alphas_cumprod().unwrap();
    let dims = [3i64, 2, 2, 2];
    let n = 24;
    let g = Graph::new();
    let x0 = g.parameter("x0", Shape::new(DType::F32, &dims)).unwrap();
    let noise = g.parameter("noise", Shape::new(DType::F32, &dims)).unwrap();
    let t = g.parameter("t", Shape::new(DType::I32, &[3])).unwrap();
    let noisy = add_noise(&acp, &x0, &noise, &t).unwrap();
    let v = training_target(PredictionType::VPrediction, &acp, &x0, &noise, &t).unwrap();
    let eps = training_target(PredictionType::Epsilon, &acp, &x0, &noise, &t).unwrap();
    let (xs, ns) = (rand_values(n, 5), rand_values(n, 6));
    let ts = [0.0, 481.0, 999.0];
    let f32s = |v: &[f64]| {
        Array::new(
            DType::F32,
            &dims,
            v.iter().map(|&x| x as f32 as f64).collect(),
        )
    };
    let out = run(
        &g,
        &[&noisy, &v, &eps],
        &[
            f32s(&xs),
            f32s(&ns),
            Array::new(DType::I32, &[3], ts.to_vec()),
        ],
    );
    for i in 0..n {
        let a = acp[ts[i / 8] as usize];
        let (x, e) = (xs[i] as f32 as f64, ns[i] as f32 as f64);
        let want_noisy = a.sqrt() * x + (1.0 - a).sqrt() * e;
        let want_v = a.sqrt() * e - (1.0 - a).sqrt() * x;
        assert!((out[0].data[i] - want_noisy).abs() <= 1e-6, "noisy[{i}]");
        assert!((out[1].data[i] - want_v).abs() <= 1e-6, "v[{i}]");
        assert_eq!(out[2].data[i], e);
    }
}
