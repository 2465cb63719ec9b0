//! The in-graph RNG (`xla_graphs::random`) printed, compiled and run on the CPU plugin, against
//! the committed `jax.random` vectors (tests/fixtures/rng/threefry_vectors.json, made by
//! scripts/make_rng_vectors.py). Keys and fold_in data are program arguments, so the traced path
//! is what is checked. Bits, keys, uniforms and integers must match exactly; normals and erf_inv
//! within 1e-6 (f32) and 1e-12 (f64).
//!
//! Each group of cases is one program with one output per case, to keep compiles few.

mod rng_vectors;

use rng_vectors::{cases, dims, u32s, u64s, vectors};
use serde_json::Value;
use ti_xla::pjrt::{CompileOptions, DeviceBuffer};
use xla_graphs::{random, DType, Graph, Shape, Tensor};

/// A program under construction: u32 arguments with their host values, and outputs.
struct Program {
    g: Graph,
    args: Vec<(Vec<u32>, Vec<i64>)>,
    outputs: Vec<Tensor>,
}

impl Program {
    fn new() -> Program {
        Program {
            g: Graph::new(),
            args: Vec::new(),
            outputs: Vec::new(),
        }
    }

    fn arg(&mut self, values: Vec<u32>, dims: &[i64]) -> Tensor {
        let name = format!("arg{}", self.args.len());
        let t = self
            .g
            .parameter(name, Shape::new(DType::U32, dims))
            .unwrap();
        self.args.push((values, dims.to_vec()));
        t
    }

    fn key(&mut self, case: &Value) -> Tensor {
        self.arg(u32s(&case["key"]), &[2])
    }

    /// Prints, compiles and runs the program on one CPU device; returns its outputs on the
    /// host (device buffers must not outlive their client).
    fn run(&self) -> Vec<Output> {
        let outputs: Vec<&Tensor> = self.outputs.iter().collect();
        let text = self.g.to_stablehlo(&outputs).unwrap();
        let client = ti_xla::testing::cpu_client(1).unwrap();
        let exe = client
            .compile(&text, &CompileOptions::replicated(1))
            .unwrap_or_else(|e| panic!("compile failed: {e}\n{text}"));
        let bufs: Vec<DeviceBuffer> = self
            .args
            .iter()
            .map(|(v, d)| client.buffer_from_host::<u32>(v, d, 0).unwrap())
            .collect();
        let outs = exe.execute(&[bufs.iter().collect()]).unwrap();
        outs.into_iter()
            .next()
            .unwrap()
            .into_iter()
            .map(|b| Output {
                dims: b.dims().to_vec(),
                bytes: b.to_bytes().unwrap(),
            })
            .collect()
    }
}

/// One result copied to the host.
struct Output {
    dims: Vec<i64>,
    bytes: Vec<u8>,
}

impl Output {
    fn words<const N: usize>(&self) -> impl Iterator<Item = [u8; N]> + '_ {
        self.bytes.chunks_exact(N).map(|c| c.try_into().unwrap())
    }

    fn u32s(&self) -> Vec<u32> {
        self.words().map(u32::from_le_bytes).collect()
    }

    fn i32s(&self) -> Vec<i32> {
        self.words().map(i32::from_le_bytes).collect()
    }

    fn u64s(&self) -> Vec<u64> {
        self.words().map(u64::from_le_bytes).collect()
    }

    fn f32s(&self) -> Vec<f32> {
        self.u32s().into_iter().map(f32::from_bits).collect()
    }

    fn f64s(&self) -> Vec<f64> {
        self.u64s().into_iter().map(f64::from_bits).collect()
    }
}

#[test]
fn split_and_fold_in_match_jax() {
    let v = vectors();
    let mut p = Program::new();
    for case in cases(&v, "split") {
        let key = p.key(case);
        let n: i64 = dims(case).iter().product();
        p.outputs.push(random::split(&key, n as usize).unwrap());
    }
    for case in cases(&v, "fold_in") {
        let key = p.key(case);
        let data = p.arg(vec![case["data"].as_u64().unwrap() as u32], &[]);
        p.outputs.push(random::fold_in(&key, &data).unwrap());
    }
    // split_keys and fold_in_const are the same ops sliced or with a constant; one case each.
    let split0 = &cases(&v, "split")[0];
    let key = p.key(split0);
    let halves = random::split_keys(&key, 2).unwrap();
    p.outputs.extend(halves);
    let fold0 = &cases(&v, "fold_in")[2];
    let key = p.key(fold0);
    p.outputs
        .push(random::fold_in_const(&key, fold0["data"].as_u64().unwrap() as u32).unwrap());

    let mut outs = p.run().into_iter();
    for case in cases(&v, "split") {
        let want: Vec<u32> = case["keys"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(u32s)
            .collect();
        assert_eq!(outs.next().unwrap().u32s(), want, "split {case}");
    }
    for case in cases(&v, "fold_in") {
        let got = outs.next().unwrap().u32s();
        assert_eq!(got, u32s(&case["key_out"]), "fold_in {case}");
    }
    let want = split0["keys"].as_array().unwrap();
    assert_eq!(outs.next().unwrap().u32s(), u32s(&want[0]), "split_keys[0]");
    assert_eq!(outs.next().unwrap().u32s(), u32s(&want[1]), "split_keys[1]");
    let got = outs.next().unwrap().u32s();
    assert_eq!(got, u32s(&fold0["key_out"]), "fold_in_const");
}

#[test]
fn bits_match_jax_exactly() {
    let v = vectors();
    let mut p = Program::new();
    for case in cases(&v, "bits_u32") {
        let key = p.key(case);
        p.outputs
            .push(random::random_bits(&key, &dims(case)).unwrap());
    }
    for (case, out) in cases(&v, "bits_u32").iter().zip(p.run()) {
        assert_eq!(out.dims, dims(case), "bits shape {case}");
        assert_eq!(out.u32s(), u32s(&case["bits"]), "bits {case}");
    }
}

#[test]
fn uniform_matches_jax_exactly() {
    let v = vectors();
    let mut p = Program::new();
    for (name, dtype) in [("uniform_f32", DType::F32), ("uniform_f64", DType::F64)] {
        for case in cases(&v, name) {
            let key = p.key(case);
            let (lo, hi) = (
                case["minval"].as_f64().unwrap(),
                case["maxval"].as_f64().unwrap(),
            );
            p.outputs
                .push(random::uniform(&key, &dims(case), dtype, lo, hi).unwrap());
        }
    }
    let mut outs = p.run().into_iter();
    for case in cases(&v, "uniform_f32") {
        let got: Vec<u32> = outs.next().unwrap().u32s();
        assert_eq!(got, u32s(&case["bits"]), "uniform f32 {}", case["key"]);
    }
    for case in cases(&v, "uniform_f64") {
        let got: Vec<u64> = outs.next().unwrap().u64s();
        assert_eq!(got, u64s(&case["bits"]), "uniform f64 {}", case["key"]);
    }
}

#[test]
fn normal_matches_jax() {
    let v = vectors();
    let mut p = Program::new();
    for (name, dtype) in [("normal_f32", DType::F32), ("normal_f64", DType::F64)] {
        for case in cases(&v, name) {
            let key = p.key(case);
            p.outputs
                .push(random::normal(&key, &dims(case), dtype).unwrap());
        }
    }
    let mut outs = p.run().into_iter();
    let (mut worst, mut differ, mut total) = (0f32, 0, 0);
    for case in cases(&v, "normal_f32") {
        let got = outs.next().unwrap().f32s();
        let want = u32s(&case["bits"]);
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            worst = worst.max((g - f32::from_bits(w)).abs());
            differ += usize::from(g.to_bits() != w);
            total += 1;
        }
    }
    eprintln!("normal f32: max |graph - jax| = {worst:e}, {differ} of {total} not bit-equal");
    assert!(worst <= 1e-6, "normal f32: max |graph - jax| = {worst:e}");
    let mut worst = 0f64;
    for case in cases(&v, "normal_f64") {
        let got = outs.next().unwrap().f64s();
        for (g, w) in got.iter().zip(u64s(&case["bits"])) {
            worst = worst.max((g - f64::from_bits(w)).abs());
        }
    }
    eprintln!("normal f64: max |graph - jax| = {worst:e}");
    assert!(worst <= 1e-12, "normal f64: max |graph - jax| = {worst:e}");
}

#[test]
fn erf_inv_matches_jax() {
    let v = vectors();
    let xs = u32s(&v["erf_inv_f32"]["x_bits"]);
    let ys = u32s(&v["erf_inv_f32"]["y_bits"]);
    let mut p = Program::new();
    let x = p.arg(xs.clone(), &[xs.len() as i64]);
    p.outputs
        .push(random::erf_inv(&x.bitcast_convert(DType::F32).unwrap()).unwrap());
    let got = p.run()[0].f32s();
    let mut worst = 0f32;
    for ((x, y), g) in xs.into_iter().zip(ys).zip(got) {
        let (x, y) = (f32::from_bits(x), f32::from_bits(y));
        let err = (g - y).abs() / y.abs().max(1.0);
        worst = worst.max(err);
        assert!(err <= 1e-6, "erf_inv({x:e}) = {g:e}, jax {y:e}");
    }
    eprintln!("erf_inv f32: max |graph - jax| / max(1, |jax|) = {worst:e}");
}

#[test]
fn randint_matches_jax_exactly() {
    let v = vectors();
    let mut p = Program::new();
    for case in cases(&v, "randint_i32") {
        let key = p.key(case);
        let (lo, hi) = (
            case["minval"].as_i64().unwrap() as i32,
            case["maxval"].as_i64().unwrap() as i32,
        );
        p.outputs
            .push(random::randint(&key, &dims(case), lo, hi).unwrap());
    }
    for (case, out) in cases(&v, "randint_i32").iter().zip(p.run()) {
        let want: Vec<i32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(out.i32s(), want, "randint {case}");
    }
}

#[test]
fn bad_keys_are_errors_naming_the_op() {
    let g = Graph::new();
    let key = g.parameter("key", Shape::new(DType::U32, &[3])).unwrap();
    let e = random::random_bits(&key, &[4]).unwrap_err().to_string();
    assert!(
        e.contains("random.bits") && e.contains("tensor<3xui32>"),
        "{e}"
    );
    let key = g.parameter("key2", Shape::new(DType::U32, &[2])).unwrap();
    let e = random::uniform(&key, &[4], DType::BF16, 0.0, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("random.uniform"), "{e}");
}

/// The trainer's pattern: one program for all devices, each folding its replica id into the
/// step key and drawing its own noise. Checked against the host RNG, itself checked against JAX.
#[test]
fn replicas_fold_in_their_id() {
    let g = Graph::new();
    let key = g.parameter("key", Shape::new(DType::U32, &[2])).unwrap();
    let own = random::fold_in(&key, &g.replica_id().unwrap()).unwrap();
    let noise = random::normal(&own, &[3, 5], DType::F32).unwrap();
    let text = g.to_stablehlo(&[&own, &noise]).unwrap();

    let client = ti_xla::testing::cpu_client(2).unwrap();
    let exe = client
        .compile(&text, &CompileOptions::replicated(2))
        .unwrap();
    let host_key = ti_xla::rng::Key::from_seed(1234);
    let bufs: Vec<DeviceBuffer> = (0..2)
        .map(|d| {
            client
                .buffer_from_host::<u32>(&host_key.data(), &[2], d)
                .unwrap()
        })
        .collect();
    let outs = exe.execute(&[vec![&bufs[0]], vec![&bufs[1]]]).unwrap();
    for (replica, out) in outs.iter().enumerate() {
        let want = host_key.fold_in(replica as u32);
        assert_eq!(
            out[0].to_vec::<u32>().unwrap(),
            want.data(),
            "replica {replica} key"
        );
        let got = out[1].to_vec::<f32>().unwrap();
        for (g, w) in got.iter().zip(want.normal_f32(15)) {
            assert!((g - w).abs() <= 1e-6, "replica {replica}: {g} vs host {w}");
        }
    }
}
