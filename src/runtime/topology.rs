//! A Cloud TPU slice described by name (`--topology v5e:2x4`) through the TPU plugin, with no
//! TPU attached: what `--compile-only` compiles for, and the HBM each of its chips has.

use anyhow::{bail, Context, Result};

use super::device::{find_plugin, DeviceArgs, DeviceKind};
use crate::pjrt::{Plugin, QuietStderr, Topology, TopologyDevice};

/// Topology names libtpu accepts, as `--help` lists them: `<generation>:<chips per axis>`.
pub const TOPOLOGY_EXAMPLES: &str =
    "v4:2x2x1 (v4-8), v5e:2x2, v5e:2x4 (v5e-8), v5p:2x2x1 (v5p-8), v6e:2x2, v6e:2x4 (v6e-8)";

/// The flags of `--compile-only`, shared by `train` and `generate`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CompileOnlyArgs {
    /// Compile every program of the run for --topology's TPU slice and report its memory per
    /// chip, whether it fits, the largest batch that fits and XLA's estimated time; nothing is
    /// run and no weights are read (needs `--device tpu` and `scripts/install-plugin.sh tpu`,
    /// not a TPU).
    #[arg(long = "compile-only", alias = "compile_only", requires = "topology")]
    pub compile_only: bool,
    /// The TPU slice to compile for with --compile-only: v4:2x2x1 (v4-8), v5e:2x2,
    /// v5e:2x4 (v5e-8), v5p:2x2x1 (v5p-8), v6e:2x4 (v6e-8), ...
    #[arg(long, value_name = "NAME")]
    pub topology: Option<String>,
    /// With --compile-only: print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// With --compile-only: how many more compiles the search for the largest batch that fits
    /// may spend (doubling, then bisecting; 0: report only the batch asked for).
    #[arg(long = "batch-search", alias = "batch_search", default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=16))]
    pub batch_search: u32,
    /// With --compile-only: show the TPU plugin's own log lines.
    #[arg(long)]
    pub verbose: bool,
}

/// A named slice and its devices.
pub struct Slice {
    pub topology: Topology,
    pub devices: Vec<TopologyDevice>,
    /// What each device has: its chip's HBM, peak compute and bandwidth (from the generation
    /// in the name), shared among the chip's devices where libtpu makes one per TensorCore
    /// (v4:2x2x1 is 4 chips and 8 devices).
    pub chip: Chip,
    /// Whether libtpu's log lines are kept off the terminal.
    pub quiet: bool,
}

const GIB: i64 = 1 << 30;

/// What a chip of one Cloud TPU generation has, from Google's published figures
/// (cloud.google.com/tpu/docs/system-architecture-tpu-vm and the per-version pages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chip {
    pub hbm_bytes: i64,
    /// Peak bf16 FLOP/s.
    pub peak_flops: f64,
    /// HBM bandwidth in bytes/s.
    pub hbm_bytes_per_second: f64,
}

impl Chip {
    /// What each of `n` devices on the chip has.
    pub fn shared_by(self, n: usize) -> Chip {
        let n = n.max(1);
        Chip {
            hbm_bytes: self.hbm_bytes / n as i64,
            peak_flops: self.peak_flops / n as f64,
            hbm_bytes_per_second: self.hbm_bytes_per_second / n as f64,
        }
    }

    /// A roofline time for `flops` and `bytes` on one chip: the larger of the compute-bound
    /// and the memory-bound time (what the chip could do at best, not a measurement).
    pub fn roofline_seconds(&self, flops: f64, bytes: f64) -> f64 {
        (flops / self.peak_flops).max(bytes / self.hbm_bytes_per_second)
    }
}

/// The chip of the generation in a topology name (v2 16 GiB per chip of 2 cores, 45 TFLOP/s,
/// 600 GB/s; v3 32 GiB, 123 TFLOP/s, 900 GB/s; v4 32 GiB, 275 TFLOP/s, 1228 GB/s; v5e 16 GiB,
/// 197 TFLOP/s, 819 GB/s; v5p 95 GiB, 459 TFLOP/s, 2765 GB/s; v6e 32 GiB, 918 TFLOP/s,
/// 1640 GB/s).
pub fn chip_of(topology: &str) -> Option<Chip> {
    let generation = topology.split(':').next()?.to_ascii_lowercase();
    let (gib, tflops, gb_per_s) = match generation.as_str() {
        "v2" => (16, 45.0, 600.0),
        "v3" => (32, 123.0, 900.0),
        "v4" => (32, 275.0, 1228.0),
        "v5e" | "v5litepod" | "v5lite" => (16, 197.0, 819.0),
        "v5p" | "v5" => (95, 459.0, 2765.0),
        "v6e" | "v6" => (32, 918.0, 1640.0),
        _ => return None,
    };
    Some(Chip {
        hbm_bytes: gib * GIB,
        peak_flops: tflops * 1e12,
        hbm_bytes_per_second: gb_per_s * 1e9,
    })
}

/// Loads the TPU plugin and describes `--topology`'s slice.
pub fn open_slice(device: &DeviceArgs, flags: &CompileOnlyArgs) -> Result<Slice> {
    if device.device != DeviceKind::Tpu {
        bail!("--compile-only compiles for a TPU slice: add --device tpu");
    }
    let Some(name) = flags.topology.as_deref() else {
        bail!("--compile-only needs --topology NAME, e.g. {TOPOLOGY_EXAMPLES}");
    };
    let Some(chip) = chip_of(name) else {
        bail!("--topology {name:?}: unknown TPU generation; use one of {TOPOLOGY_EXAMPLES}");
    };
    let path = find_plugin(DeviceKind::Tpu, device.plugin.as_deref())?;
    let quiet = !flags.verbose;
    // Off a TPU VM libtpu would ask the GCE metadata server for the slice (30 tries per key,
    // minutes); the topology name says it all. Its log levels: errors only unless --verbose.
    // Several compile-only runs may share the machine: no TPU is opened, so libtpu's
    // one-process lock (/tmp/libtpu_lockfile) is not needed. Set before the plugin loads,
    // which reads them once.
    for (key, value) in [
        ("TPU_SKIP_MDS_QUERY", "1"),
        ("ALLOW_MULTIPLE_LIBTPU_LOAD", "1"),
        ("TPU_STDERR_LOG_LEVEL", if quiet { "3" } else { "0" }),
        ("TPU_MIN_LOG_LEVEL", if quiet { "3" } else { "0" }),
    ] {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, value);
        }
    }
    let _quiet = QuietStderr::new(quiet);
    let plugin = Plugin::load(&path)?;
    let topology = Topology::new(plugin, name).map_err(|e| {
        anyhow::anyhow!(
            "--topology {name:?} is not a topology the TPU plugin knows ({}); use one of {TOPOLOGY_EXAMPLES}",
            first_line(&e.to_string())
        )
    })?;
    let devices = topology
        .devices()
        .with_context(|| format!("cannot list the devices of --topology {name}"))?;
    if devices.is_empty() {
        bail!("--topology {name:?} has no devices; use one of {TOPOLOGY_EXAMPLES}");
    }
    let chip = chip.shared_by(devices_per_chip(name, devices.len()));
    Ok(Slice {
        topology,
        devices,
        chip,
        quiet,
    })
}

/// Devices per chip: the devices over the chips the name's shape counts (`2x2x1`: 4), or 1
/// when the shape does not divide them.
pub fn devices_per_chip(name: &str, devices: usize) -> usize {
    let chips: Option<usize> = name
        .split(':')
        .nth(1)
        .and_then(|shape| shape.split('x').map(|d| d.parse::<usize>().ok()).product());
    match chips {
        Some(c) if c > 0 && devices > c && devices.is_multiple_of(c) => devices / c,
        _ => 1,
    }
}

/// The first line of a plugin message (libtpu's carry stack traces).
pub fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or("").trim()
}
