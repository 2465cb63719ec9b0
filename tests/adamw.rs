//! AdamW in the graph against torch.optim.AdamW's update written out in f64 (three steps, with
//! weight decay and a changing learning rate), through the CPU plugin.

mod common;

use common::{rand_values, run, Array};
use xla_graphs::optim::{adamw_update, AdamWConfig};
use xla_graphs::{DType, Graph, Shape};

/// torch.optim.AdamW (amsgrad off), one step, in f64.
fn torch_adamw(
    p: &mut [f64],
    m: &mut [f64],
    v: &mut [f64],
    g: &[f64],
    lr: f64,
    t: f64,
    c: &AdamWConfig,
) {
    let bc1 = 1.0 - c.beta1.powf(t);
    let bc2 = 1.0 - c.beta2.powf(t);
    for i in 0..p.len() {
        p[i] *= 1.0 - lr * c.weight_decay;
        m[i] = c.beta1 * m[i] + (1.0 - c.beta1) * g[i];
        v[i] = c.beta2 * v[i] + (1.0 - c.beta2) * g[i] * g[i];
        let denom = v[i].sqrt() / bc2.sqrt() + c.epsilon;
        p[i] -= lr / bc1 * m[i] / denom;
    }
}

#[test]
fn three_updates_match_torch_adamw() {
    let cfg = AdamWConfig {
        weight_decay: 0.05,
        ..AdamWConfig::default()
    };
    let dims = [2i64, 6];
    let n = 12;
    let g = Graph::new();
    let shape = Shape::new(DType::F32, &dims);
    let p = g.parameter("p", shape.clone()).unwrap();
    let m = g.parameter("m", shape.clone()).unwrap();
    let v = g.parameter("v", shape.clone()).unwrap();
    let grad = g.parameter("grad", shape).unwrap();
    let lr = g.parameter("lr", Shape::new(DType::F32, &[])).unwrap();
    let step = g.parameter("step", Shape::new(DType::F32, &[])).unwrap();
    let s = adamw_update(&p, &m, &v, &grad, &lr, &step, &cfg).unwrap();

    let (mut rp, mut rm, mut rv) = (rand_values(n, 1), vec![0.0; n], vec![0.0; n]);
    let (mut dp, mut dm, mut dv) = (rp.clone(), rm.clone(), rv.clone());
    for (t, lr_t) in [(1.0, 1e-2), (2.0, 5e-3), (3.0, 2e-2)] {
        let gr: Vec<f64> = rand_values(n, 10 + t as u64)
            .iter()
            .map(|x| x * 3.0)
            .collect();
        let f32s = |x: &[f64]| {
            Array::new(
                DType::F32,
                &dims,
                x.iter().map(|&v| v as f32 as f64).collect(),
            )
        };
        let scalar = |x: f64| Array::new(DType::F32, &[], vec![x]);
        let out = run(
            &g,
            &[&s.params, &s.exp_avg, &s.exp_avg_sq],
            &[
                f32s(&dp),
                f32s(&dm),
                f32s(&dv),
                f32s(&gr),
                scalar(lr_t),
                scalar(t),
            ],
        );
        (dp, dm, dv) = (
            out[0].data.clone(),
            out[1].data.clone(),
            out[2].data.clone(),
        );
        torch_adamw(&mut rp, &mut rm, &mut rv, &gr, lr_t, t, &cfg);
        for (what, got, want) in [
            ("params", &dp, &rp),
            ("exp_avg", &dm, &rm),
            ("exp_avg_sq", &dv, &rv),
        ] {
            let scale = want.iter().fold(0f64, |a, b| a.max(b.abs()));
            let err = got
                .iter()
                .zip(want.iter())
                .fold(0f64, |a, (x, y)| a.max((x - y).abs()))
                / scale;
            eprintln!("step {t}: {what} max rel error {err:.2e}");
            assert!(
                err <= 2e-6,
                "step {t} {what}: rel error {err:e} > 2e-6 (f32 arithmetic)"
            );
        }
    }
    // The update moved every parameter (a zero gradient would only decay it).
    assert!(dp
        .iter()
        .zip(rand_values(n, 1))
        .all(|(a, b)| (a - b).abs() > 1e-4));
}
