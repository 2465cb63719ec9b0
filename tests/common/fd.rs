//! Finite-difference checks of gradients: central differences of the printed loss program
//! in f64 against the autodiff gradient, and the error tables the tests print.

use super::{compile, execute, rand, Array};
use xla_graphs::{value_and_grad, DType, Graph, Result, Tensor};

/// Largest |ad - fd| over largest |fd| (0 when both vanish).
fn rel_error(ad: &[f64], fd: &[f64]) -> f64 {
    let scale = fd.iter().chain(ad).fold(0f64, |m, v| m.max(v.abs()));
    if scale < 1e-300 {
        return 0.0;
    }
    ad.iter()
        .zip(fd)
        .fold(0f64, |m, (a, f)| m.max((a - f).abs()))
        / scale
}

/// Step of the central differences: near the f64 optimum eps^(1/3), scaled to the input.
const FD_STEP: f64 = 1e-5;

/// Compares the autodiff gradient of `sum(build(inputs) * R)` (R a fixed random projection,
/// so every output element gets its own cotangent) with central finite differences of the
/// same printed loss program, for each input index in `wrt` (f64 inputs). Returns the
/// largest relative error.
pub fn fd_check(
    inputs: &[Array],
    wrt: &[usize],
    build: impl Fn(&Graph, &[Tensor]) -> xla_graphs::Result<Tensor>,
) -> f64 {
    let g = Graph::new();
    let params: Vec<Tensor> = inputs
        .iter()
        .enumerate()
        .map(|(i, a)| g.parameter(format!("x{i}"), a.shape()).expect("parameter"))
        .collect();
    let out = build(&g, &params).expect("build");
    assert_eq!(out.dtype(), DType::F64, "finite differences run in f64");
    let proj = rand(&out.dims(), 0xC0FFEE);
    let r = g
        .constant_f64(DType::F64, &proj.dims, &proj.data)
        .expect("projection");
    let loss = out.multiply(&r).and_then(|p| p.sum_all()).expect("loss");
    let wrt_t: Vec<Tensor> = wrt.iter().map(|&i| params[i].clone()).collect();
    let (loss, grads) = value_and_grad(&loss, &wrt_t).expect("value_and_grad");
    let grad_refs: Vec<&Tensor> = grads.iter().collect();
    let loss_exe = compile(&g.to_stablehlo(&[&loss]).expect("print loss"), 1);
    let grad_exe = compile(&g.to_stablehlo(&grad_refs).expect("print grads"), 1);
    let ad = execute(&grad_exe, &[inputs.to_vec()]).remove(0);
    let mut worst = 0f64;
    for (k, &i) in wrt.iter().enumerate() {
        let mut fd = Vec::with_capacity(inputs[i].data.len());
        for j in 0..inputs[i].data.len() {
            let at = |delta: f64| {
                let mut args = inputs.to_vec();
                args[i].data[j] += delta;
                execute(&loss_exe, &[args]).remove(0).remove(0).data[0]
            };
            let h = FD_STEP * inputs[i].data[j].abs().max(1.0);
            fd.push((at(h) - at(-h)) / (2.0 * h));
        }
        worst = worst.max(rel_error(&ad[k].data, &fd));
    }
    worst
}

/// Prints a table of finite-difference errors and asserts each is within `tol`.
pub fn report(title: &str, rows: &[(&str, f64)], tol: f64) {
    eprintln!("\n{title} (max |AD - FD| / max |FD|, tolerance {tol:e})");
    for (name, err) in rows {
        eprintln!("  {name:<40} {err:.2e}");
    }
    let bad: Vec<_> = rows
        .iter()
        .filter(|(_, e)| e.is_nan() || *e > tol)
        .collect();
    assert!(bad.is_empty(), "gradients off: {bad:?}");
}

pub const TOL: f64 = 1e-6;

pub type Build = Box<dyn Fn(&Graph, &[Tensor]) -> Result<Tensor>>;

pub struct Case {
    name: &'static str,
    inputs: Vec<Array>,
    wrt: Vec<usize>,
    build: Build,
}

pub fn case(
    name: &'static str,
    inputs: Vec<Array>,
    wrt: &[usize],
    build: impl Fn(&Graph, &[Tensor]) -> Result<Tensor> + 'static,
) -> Case {
    Case {
        name,
        inputs,
        wrt: wrt.to_vec(),
        build: Box::new(build),
    }
}

pub fn check(title: &str, cases: Vec<Case>) {
    let rows: Vec<(&str, f64)> = cases
        .iter()
        .map(|c| (c.name, fd_check(&c.inputs, &c.wrt, &c.build)))
        .collect();
    report(title, &rows, TOL);
}
