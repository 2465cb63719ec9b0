//! Shared helpers of the graph tests: one CPU client, host arrays of any dtype (values kept
//! as f64), deterministic random inputs, index arithmetic for the Rust references, and
//! finite-difference checks of gradients through the printed program.
#![allow(dead_code)]

use std::sync::OnceLock;

use half::{bf16, f16};
use ti_xla::pjrt::{Client, CompileOptions, LoadedExecutable};
use xla_graphs::{DType, Graph, Shape, Tensor};

pub mod fd;

/// Devices of the shared client: enough for the all_reduce tests.
pub const DEVICES: usize = 2;

pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| match ti_xla::testing::cpu_client(DEVICES) {
        Ok(c) => c,
        Err(e) => panic!("CPU plugin: {e:#}"),
    })
}

/// A host array; values are kept as f64 whatever the dtype (exact for every dtype used here).
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub dtype: DType,
    pub dims: Vec<i64>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn new(dtype: DType, dims: &[i64], data: Vec<f64>) -> Array {
        assert_eq!(
            dims.iter().product::<i64>() as usize,
            data.len(),
            "array size"
        );
        Array {
            dtype,
            dims: dims.to_vec(),
            data,
        }
    }

    pub fn f64(dims: &[i64], data: Vec<f64>) -> Array {
        Array::new(DType::F64, dims, data)
    }

    pub fn shape(&self) -> Shape {
        Shape::new(self.dtype, &self.dims)
    }

    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * self.dtype.size_in_bytes());
        for &x in &self.data {
            match self.dtype {
                DType::Pred => out.push((x != 0.0) as u8),
                DType::U8 => out.push(x as u8),
                DType::U32 => out.extend((x as u32).to_le_bytes()),
                DType::I32 => out.extend((x as i32).to_le_bytes()),
                DType::I64 => out.extend((x as i64).to_le_bytes()),
                DType::F16 => out.extend(f16::from_f64(x).to_le_bytes()),
                DType::BF16 => out.extend(bf16::from_f64(x).to_le_bytes()),
                DType::F32 => out.extend((x as f32).to_le_bytes()),
                DType::F64 => out.extend(x.to_le_bytes()),
            }
        }
        out
    }

    fn from_bytes(dtype: DType, dims: &[i64], bytes: &[u8]) -> Array {
        let n = dtype.size_in_bytes();
        let data = bytes
            .chunks_exact(n)
            .map(|c| match dtype {
                DType::Pred => (c[0] != 0) as u8 as f64,
                DType::U8 => c[0] as f64,
                DType::U32 => u32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::I32 => i32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::I64 => i64::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::F16 => f16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::BF16 => bf16::from_le_bytes(c.try_into().unwrap()).to_f64(),
                DType::F32 => f32::from_le_bytes(c.try_into().unwrap()) as f64,
                DType::F64 => f64::from_le_bytes(c.try_into().unwrap()),
            })
            .collect();
        Array::new(dtype, dims, data)
    }
}

pub fn compile(text: &str, devices: usize) -> LoadedExecutable {
    match client().compile(text, &CompileOptions::replicated(devices)) {
        Ok(e) => e,
        Err(e) => panic!("compile failed: {e}\n{text}"),
    }
}

/// Runs `exe` with `inputs[d]` on device d; returns `outputs[d]`.
pub fn execute(exe: &LoadedExecutable, inputs: &[Vec<Array>]) -> Vec<Vec<Array>> {
    let bufs: Vec<Vec<_>> = inputs
        .iter()
        .enumerate()
        .map(|(d, list)| {
            list.iter()
                .map(|a| {
                    client()
                        .buffer_from_bytes(&a.to_bytes(), a.dtype, &a.dims, d)
                        .expect("upload")
                })
                .collect()
        })
        .collect();
    let args: Vec<Vec<_>> = bufs.iter().map(|l| l.iter().collect()).collect();
    let outs = exe.execute(&args).expect("execute");
    outs.iter()
        .map(|l| {
            l.iter()
                .map(|b| Array::from_bytes(b.dtype(), b.dims(), &b.to_bytes().expect("download")))
                .collect()
        })
        .collect()
}

/// Prints, compiles and runs a one-device program; returns its outputs.
pub fn run(g: &Graph, outputs: &[&Tensor], inputs: &[Array]) -> Vec<Array> {
    let text = g.to_stablehlo(outputs).expect("print");
    let exe = compile(&text, 1);
    execute(&exe, &[inputs.to_vec()]).remove(0)
}

/// Deterministic values in [-1, 1) with |v| >= 0.1 (never zero), from a 64-bit LCG.
pub fn rand_values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed.wrapping_mul(0x9E3779B97F4A7C15) ^ 0xD1B54A32D192ED03;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (s >> 11) as f64 / (1u64 << 53) as f64;
            let v = 2.0 * u - 1.0;
            if v.abs() < 0.1 {
                v.signum() * 0.1 + v
            } else {
                v
            }
        })
        .collect()
}

pub fn rand(dims: &[i64], seed: u64) -> Array {
    let n = dims.iter().product::<i64>() as usize;
    Array::f64(dims, rand_values(n, seed))
}

/// Values in [0.5, 1.5): for log, sqrt, power and divisors.
pub fn rand_pos(dims: &[i64], seed: u64) -> Array {
    let mut a = rand(dims, seed);
    a.data.iter_mut().for_each(|x| *x = 1.0 + 0.5 * *x);
    a
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[i64]) -> Vec<i64> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

pub fn unravel(mut i: i64, dims: &[i64]) -> Vec<i64> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        idx[d] = i % dims[d];
        i /= dims[d];
    }
    idx
}

pub fn ravel(idx: &[i64], dims: &[i64]) -> usize {
    idx.iter()
        .zip(strides(dims))
        .map(|(i, s)| i * s)
        .sum::<i64>() as usize
}

/// Asserts `got` matches `want` to `rel` relative to want's largest magnitude.
pub fn assert_close(what: &str, got: &Array, want: &[f64], rel: f64) {
    assert_eq!(got.data.len(), want.len(), "{what}: element count");
    let scale = want.iter().fold(1e-300f64, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.data.iter().zip(want).enumerate() {
        let err = (g - w).abs() / scale;
        assert!(
            err <= rel || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g}, want {w} (error {err:e} > {rel:e})"
        );
    }
}
