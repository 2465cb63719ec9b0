//! Times the SD 1.5 UNet forward (random weights, no download) on a PJRT plugin: trace,
//! print, compile, and the forward at 32x32 and 64x64 latents, batch 1, f32 by default.
//! `scripts/bench_unet_torch.py` times diffusers' UNet on the same shapes.
//!
//! ```sh
//! cargo run --example bench_unet -- [--plugin PATH] [--runs N] [--sizes 32,64] [--bf16]
//! ```
//! Prints the times; asserts nothing about speed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ti_xla::pjrt::{Client, CompileOptions, DeviceBuffer, NamedValue, Plugin};
use ti_xla::runtime::device::{find_plugin, DeviceKind};
use xla_graphs::models::params::{ParamKind, ParamSpec, Params};
use xla_graphs::models::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use xla_graphs::{DType, Graph, Shape};

/// CLIP ViT-L/14's sequence length and width, what SD 1.5 conditions on.
const TOKENS: i64 = 77;

struct Args {
    plugin: Option<std::path::PathBuf>,
    runs: usize,
    sizes: Vec<i64>,
    dtype: DType,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        plugin: None,
        runs: 5,
        sizes: vec![32, 64],
        dtype: DType::F32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--plugin" => args.plugin = Some(value()?.into()),
            "--runs" => args.runs = value()?.parse()?,
            "--sizes" => {
                args.sizes = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--bf16" => args.dtype = DType::BF16,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

/// xorshift64*: weights only need to be reproducible and roughly unit-scaled, not good.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        bits as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// torch-like initialisation, so activations stay finite through 16 transformer blocks:
/// matrices and kernels uniform in +-1/sqrt(fan_in), norm scales 1, biases small.
fn random_weight(spec: &ParamSpec, rng: &mut Rng) -> Vec<f32> {
    let dims = &spec.shape.dims;
    let n = dims.iter().product::<i64>() as usize;
    if dims.len() == 1 {
        if spec.name.contains("norm") && spec.name.ends_with(".weight") {
            return vec![1.0; n];
        }
        return (0..n).map(|_| 0.01 * rng.uniform()).collect();
    }
    let bound = 1.0 / (dims[1..].iter().product::<i64>() as f32).sqrt();
    (0..n).map(|_| bound * rng.uniform()).collect()
}

fn upload(client: &Client, spec: &ParamSpec, values: &[f32]) -> Result<DeviceBuffer> {
    Ok(match spec.shape.dtype {
        DType::F32 => client.buffer_from_host(values, &spec.shape.dims, 0)?,
        DType::BF16 => {
            let bytes: Vec<u8> = values
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect();
            client.buffer_from_bytes(&bytes, DType::BF16, &spec.shape.dims, 0)?
        }
        other => bail!("no upload for {other}"),
    })
}

/// User + system CPU time of this process (all threads) so far, from /proc/self/stat: on a
/// machine shared with other work it varies far less than the wall time.
fn cpu_time() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat
        .rsplit_once(')')
        .context("unexpected /proc/self/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    // The kernel's USER_HZ is 100 on every Linux target.
    Ok(ticks / 100.0)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let config = UNet2DConditionConfig::v1_5();
    let unet = UNet2DConditionModel::new(config.clone())?;
    let plugin = find_plugin(DeviceKind::Cpu, args.plugin.as_deref())?;
    let client = Client::new(
        Plugin::load(&plugin)?,
        &[("cpu_device_count", NamedValue::Int64(1))],
    )?;
    let cross = 768;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut weights: HashMap<String, DeviceBuffer> = HashMap::new();
    println!(
        "SD 1.5 UNet, batch 1, {}, {} runs per size",
        args.dtype, args.runs
    );
    println!(
        "| latents | graph | trace | print | compile | forward (median) | forward (min) | CPU time per forward |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &hw in &args.sizes {
        let t0 = Instant::now();
        let g = Graph::new();
        let p = Params::new(&g, args.dtype);
        let x = p.input("sample", Shape::new(DType::F32, &[1, 4, hw, hw]))?;
        let t = p.input("timestep", Shape::new(DType::F32, &[1]))?;
        let ctx = p.input(
            "encoder_hidden_states",
            Shape::new(DType::F32, &[1, TOKENS, cross]),
        )?;
        let y = unet.forward(&p, &x, &t, &ctx, None)?;
        let y = if y.dtype() == DType::F32 {
            y
        } else {
            y.convert(DType::F32)?
        };
        let traced = t0.elapsed();
        let t1 = Instant::now();
        let program = g.to_stablehlo(&[&y])?;
        let printed = t1.elapsed();
        let t2 = Instant::now();
        let exe = client.compile(&program, &CompileOptions::replicated(1))?;
        let compiled = t2.elapsed();

        let specs = p.specs();
        let mut inputs: HashMap<String, DeviceBuffer> = HashMap::new();
        for spec in &specs {
            let values = match spec.kind {
                ParamKind::Weight if weights.contains_key(&spec.name) => continue,
                ParamKind::Weight => random_weight(spec, &mut rng),
                ParamKind::Input if spec.name == "timestep" => vec![500.0],
                ParamKind::Input => {
                    let n = spec.shape.dims.iter().product::<i64>() as usize;
                    (0..n).map(|_| rng.uniform()).collect()
                }
            };
            let buffer = upload(&client, spec, &values)?;
            match spec.kind {
                ParamKind::Weight => weights.insert(spec.name.clone(), buffer),
                ParamKind::Input => inputs.insert(spec.name.clone(), buffer),
            };
        }
        let arguments: Vec<&DeviceBuffer> = specs
            .iter()
            .map(|s| match s.kind {
                ParamKind::Weight => &weights[&s.name],
                ParamKind::Input => &inputs[&s.name],
            })
            .collect();
        let arguments = vec![arguments];
        let mut times = Vec::with_capacity(args.runs);
        let mut checksum = 0.0f64;
        let mut cpu = 0.0;
        for run in 0..=args.runs {
            let c0 = cpu_time()?;
            let t3 = Instant::now();
            let out = exe.execute(&arguments)?;
            let values = out[0][0].to_vec::<f32>()?;
            let took = t3.elapsed();
            // The first run pays for one-time allocations; it is not counted.
            if run > 0 {
                times.push(took);
                cpu += cpu_time()? - c0;
            }
            checksum = values.iter().map(|&v| v as f64).sum();
        }
        if !checksum.is_finite() {
            bail!("the {hw}x{hw} forward produced non-finite values");
        }
        times.sort();
        println!(
            "| {hw}x{hw} | {} ops, {:.1} MB | {:.3} s | {:.3} s | {:.1} s | {:.3} s | {:.3} s | {:.2} s |",
            g.num_nodes(),
            program.len() as f64 / 1e6,
            secs(traced),
            secs(printed),
            secs(compiled),
            secs(times[times.len() / 2]),
            secs(times[0]),
            cpu / args.runs as f64,
        );
    }
    Ok(())
}
