//! Times 3x3 convolutions on the XLA CPU plugin with the kernel argument in torch's OIHW
//! layout (what checkpoints hold) against HWIO (the layout XLA's
//! CPU convolution wants), at the UNet's channel widths. With OIHW, XLA transposes every kernel
//! on every run, and that copy costs ~10x the convolution itself for 1280-wide kernels at
//! SD's lowest resolutions; transposing inside the program (even in two cache-friendly steps)
//! does not help, so the fix is to upload kernels already transposed (`modules::conv2d` now
//! binds HWIO). The last variant keeps the activations NHWC as well, which measures what the
//! activation transposes XLA puts around each NCHW convolution cost.
//!
//! ```sh
//! cargo run --example bench_conv_layout
//! ```

use std::time::Instant;

use anyhow::Result;
use ti_xla::pjrt::{Client, CompileOptions, NamedValue, Plugin};
use ti_xla::runtime::device::{find_plugin, DeviceKind};
use xla_graphs::{ConvDimensionNumbers, Convolution, DType, Graph, Shape};

/// Convolutions per program: enough that the per-run overhead is negligible.
const LAYERS: usize = 6;

#[derive(Clone, Copy, PartialEq)]
enum Kernel {
    /// `[O, I, 3, 3]` as the argument, convolved directly.
    Oihw,
    /// `[3, 3, I, O]` as the argument.
    Hwio,
    /// `[O, I, 3, 3]` as the argument, transposed to HWIO inside the program.
    OihwTransposed,
    /// `[3, 3, I, O]`, with NHWC activations (no layout change between the convolutions and
    /// the elementwise op after each).
    HwioNhwc,
}

fn main() -> Result<()> {
    let plugin = find_plugin(DeviceKind::Cpu, None)?;
    let client = Client::new(
        Plugin::load(&plugin)?,
        &[("cpu_device_count", NamedValue::Int64(1))],
    )?;
    println!("| channels | size | kernel argument | ms per conv |");
    println!("|---|---|---|---|");
    for (c, s) in [(320i64, 32i64), (640, 16), (1280, 8), (1280, 4)] {
        for (kernel, label) in [
            (Kernel::Oihw, "OIHW"),
            (Kernel::Hwio, "HWIO"),
            (Kernel::OihwTransposed, "OIHW, transposed in-graph"),
            (Kernel::HwioNhwc, "HWIO, NHWC activations"),
        ] {
            let xdims = match kernel {
                Kernel::HwioNhwc => vec![1, s, s, c],
                _ => vec![1, c, s, s],
            };
            let g = Graph::new();
            let x = g.parameter("x", Shape::new(DType::F32, &xdims))?;
            let kdims = match kernel {
                Kernel::Hwio | Kernel::HwioNhwc => vec![3, 3, c, c],
                _ => vec![c, c, 3, 3],
            };
            let mut h = x.clone();
            for i in 0..LAYERS {
                let w = g.parameter(format!("w{i}"), Shape::new(DType::F32, &kdims))?;
                let (w, dims) = match kernel {
                    Kernel::Oihw => (w, ConvDimensionNumbers::nchw_oihw(2)),
                    Kernel::Hwio => (w, ConvDimensionNumbers::nchw_hwio(2)),
                    Kernel::HwioNhwc => (w, ConvDimensionNumbers::nhwc_hwio(2)),
                    Kernel::OihwTransposed => (
                        w.transpose(&[2, 3, 1, 0])?,
                        ConvDimensionNumbers::nchw_hwio(2),
                    ),
                };
                let attrs = Convolution {
                    padding: vec![(1, 1); 2],
                    ..Convolution::new(dims)
                };
                h = h.convolution(&w, attrs)?.tanh()?;
            }
            let exe = client.compile(&g.to_stablehlo(&[&h])?, &CompileOptions::replicated(1))?;
            let x = client.buffer_from_host(&vec![0.1f32; (c * s * s) as usize], &xdims, 0)?;
            let n = kdims.iter().product::<i64>() as usize;
            let ws = (0..LAYERS)
                .map(|_| client.buffer_from_host(&vec![0.01f32; n], &kdims, 0))
                .collect::<Result<Vec<_>, _>>()?;
            let mut args = vec![&x];
            args.extend(ws.iter());
            let mut best = f64::MAX;
            for _ in 0..4 {
                let t = Instant::now();
                exe.execute(&[args.clone()])?[0][0].to_vec::<f32>()?;
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!(
                "| {c} | {s}x{s} | {label} | {:.1} |",
                best * 1e3 / LAYERS as f64
            );
        }
    }
    Ok(())
}
