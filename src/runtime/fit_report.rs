//! `--compile-only`: compile every program of a run for a TPU slice (no TPU attached), add up
//! what stays on each chip, compare it with the chip's HBM, find the largest per-device batch
//! that fits by compiling a few sizes, and report XLA's cost-model estimate of the step time.

use anyhow::{bail, Result};

use super::program::ProgramName;
use super::topology::{first_line, Chip, Slice};
use crate::pjrt::{CompileOptions, CostAnalysis, MemoryStats, QuietStderr};

/// One program the run would compile, as its text.
pub struct ProgramToCompile {
    pub name: ProgramName,
    pub text: String,
    /// Bytes of its arguments on one replica (weights and inputs), known before compiling.
    pub argument_bytes: i64,
    /// Replicas it runs on (the slice's devices, or 1 for the VAE encoder's latent cache).
    pub devices: usize,
    /// How often it runs per reported step (the denoising step once per timestep; 0 for a
    /// program that runs once before the loop).
    pub runs_per_step: f64,
}

/// The programs of a run at a per-device batch size.
pub type BuildPrograms<'a> = dyn Fn(usize) -> Result<Vec<ProgramToCompile>> + 'a;

#[derive(Clone, Debug, serde::Serialize)]
pub struct ProgramReport {
    pub program: &'static str,
    pub devices: usize,
    #[serde(flatten)]
    pub memory: MemoryStats,
    #[serde(flatten)]
    pub cost: CostAnalysis,
    pub runs_per_step: f64,
    /// One run's estimated time: XLA's cost model where it gives a positive time (libtpu gives
    /// a negative one for large programs), else the chip's roofline for the program's flops
    /// and bytes accessed; `estimate` says which.
    pub estimated_seconds: f64,
    pub estimate: Estimate,
}

/// Where a program's estimated time comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// XLA's cost model (`optimal_seconds`).
    CostModel,
    /// max(flops / peak FLOP/s, bytes accessed / HBM bandwidth) for the chip.
    Roofline,
}

impl Estimate {
    fn of(cost: &CostAnalysis, chip: &Chip) -> (f64, Estimate) {
        match cost.optimal_seconds {
            Some(s) if s.is_finite() && s > 0.0 => (s, Estimate::CostModel),
            _ => (
                chip.roofline_seconds(cost.flops, cost.bytes_accessed),
                Estimate::Roofline,
            ),
        }
    }
}

/// The whole report; `--json` prints it as is.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FitReport {
    pub topology: String,
    pub device_kind: String,
    pub devices: usize,
    /// Per-device batch compiled for.
    pub batch: usize,
    pub fits: bool,
    pub hbm_bytes: i64,
    /// Per chip: what every program's arguments (weights, inputs) hold together, since the run
    /// keeps all of them uploaded.
    pub argument_bytes: i64,
    /// Per chip, of the program with the largest transient need: outputs (less donated
    /// inputs), temporaries and code.
    pub output_bytes: i64,
    pub temp_bytes: i64,
    pub code_bytes: i64,
    /// argument_bytes + the largest transient need.
    pub needed_bytes: i64,
    /// Per device and step, summed over the programs as often as they run.
    pub flops: f64,
    pub bytes_accessed: f64,
    /// XLA's cost-model estimate (not a measurement), per step.
    pub estimated_step_seconds: Option<f64>,
    /// Samples per second for the whole slice at that estimate.
    pub samples_per_second: Option<f64>,
    /// The largest per-device batch found to fit (None: not even 1); `largest_batch_bound`
    /// tells whether the search stopped at its limit.
    pub largest_batch: Option<usize>,
    pub largest_batch_is_lower_bound: bool,
    pub programs: Vec<ProgramReport>,
}

/// The largest batch the search tries.
const MAX_BATCH: usize = 256;

/// Compiles the programs at `batch` (and at a few other sizes to find the largest that fits)
/// and returns the report; what libtpu rejects is a one-line error naming the program.
pub fn check(
    slice: &Slice,
    batch: usize,
    search_compiles: usize,
    build: &BuildPrograms<'_>,
) -> Result<FitReport> {
    let compiled = compile_programs(slice, &build(batch)?)?;
    let mut report = summarise(slice, batch, compiled);
    let mut fits_at = |b: usize| -> Result<bool> {
        Ok(summarise(slice, b, compile_programs(slice, &build(b)?)?).fits)
    };
    let (largest, bounded) = largest_batch(batch, report.fits, search_compiles, &mut fits_at)?;
    report.largest_batch = largest;
    report.largest_batch_is_lower_bound = bounded;
    Ok(report)
}

/// What compiling the programs of one batch size gave.
enum Compiled {
    /// Each program's stats.
    Programs(Vec<ProgramReport>),
    /// The compiler ran out of HBM on one of them.
    OutOfMemory,
    /// Their arguments alone (these bytes per chip) are more than the HBM: not compiled, since
    /// libtpu spends minutes and many GB of host memory on such a program before it gives up.
    ArgumentsTooLarge(i64),
}

fn compile_programs(slice: &Slice, programs: &[ProgramToCompile]) -> Result<Compiled> {
    let arguments = programs
        .iter()
        .map(|p| p.argument_bytes)
        .fold(0i64, i64::saturating_add);
    if arguments > slice.chip.hbm_bytes {
        return Ok(Compiled::ArgumentsTooLarge(arguments));
    }
    let ids: Vec<i64> = slice.devices.iter().map(|d| d.id as i64).collect();
    let mut out = Vec::new();
    for p in programs {
        if p.devices > ids.len() {
            bail!(
                "the {} is for {} devices but --topology {} has {}",
                p.name.what,
                p.devices,
                slice.topology.name(),
                ids.len()
            );
        }
        let options = CompileOptions::replicated_on(&ids[..p.devices]);
        let started = std::time::Instant::now();
        let result = {
            let _quiet = QuietStderr::new(slice.quiet);
            slice.topology.compile(&p.text, &options)
        };
        let stats = match result {
            Ok(stats) => stats,
            Err(e) if e.is_out_of_memory() => return Ok(Compiled::OutOfMemory),
            Err(e) => bail!(
                "the TPU compiler rejected the {} for {}: {}",
                p.name.what,
                slice.topology.name(),
                first_line(&e.to_string())
            ),
        };
        eprintln!(
            "compiled the {} for {} in {:.1} s",
            p.name.what,
            slice.topology.name(),
            started.elapsed().as_secs_f64()
        );
        let (estimated_seconds, estimate) = Estimate::of(&stats.cost, &slice.chip);
        out.push(ProgramReport {
            program: p.name.what,
            devices: p.devices,
            memory: stats.memory,
            cost: stats.cost,
            runs_per_step: p.runs_per_step,
            estimated_seconds,
            estimate,
        });
    }
    Ok(Compiled::Programs(out))
}

fn summarise(slice: &Slice, batch: usize, compiled: Compiled) -> FitReport {
    let devices = slice.devices.len();
    let mut report = FitReport {
        topology: slice.topology.name().to_string(),
        device_kind: slice.devices[0].kind.clone(),
        devices,
        batch,
        fits: false,
        hbm_bytes: slice.chip.hbm_bytes,
        argument_bytes: 0,
        output_bytes: 0,
        temp_bytes: 0,
        code_bytes: 0,
        needed_bytes: 0,
        flops: 0.0,
        bytes_accessed: 0.0,
        estimated_step_seconds: None,
        samples_per_second: None,
        largest_batch: None,
        largest_batch_is_lower_bound: false,
        programs: Vec::new(),
    };
    let programs = match compiled {
        Compiled::Programs(programs) => programs,
        // The compiler itself ran out of HBM: it does not fit.
        Compiled::OutOfMemory => return report,
        Compiled::ArgumentsTooLarge(bytes) => {
            report.argument_bytes = bytes;
            report.needed_bytes = bytes;
            return report;
        }
    };
    let transient = |m: &MemoryStats| m.output_bytes - m.alias_bytes + m.temp_bytes + m.code_bytes;
    report.argument_bytes = programs.iter().map(|p| p.memory.argument_bytes).sum();
    if let Some(top) = programs.iter().max_by_key(|p| transient(&p.memory)) {
        report.output_bytes = top.memory.output_bytes;
        report.temp_bytes = top.memory.temp_bytes;
        report.code_bytes = top.memory.code_bytes;
        report.needed_bytes = report.argument_bytes + transient(&top.memory);
    }
    report.fits = report.needed_bytes <= slice.chip.hbm_bytes;
    report.flops = programs
        .iter()
        .map(|p| p.cost.flops * p.runs_per_step)
        .sum();
    report.bytes_accessed = programs
        .iter()
        .map(|p| p.cost.bytes_accessed * p.runs_per_step)
        .sum();
    let seconds: f64 = programs
        .iter()
        .map(|p| p.estimated_seconds * p.runs_per_step)
        .sum();
    report.estimated_step_seconds = Some(seconds).filter(|s| s.is_finite() && *s > 0.0);
    report.samples_per_second = report
        .estimated_step_seconds
        .map(|s| (devices * batch) as f64 / s);
    report.programs = programs;
    report
}

/// Doubling from the requested batch (or halving when it does not fit), then bisecting, with
/// at most `budget` more compiles; returns the largest batch seen to fit and
/// whether the search stopped before finding one that does not.
fn largest_batch(
    requested: usize,
    requested_fits: bool,
    mut budget: usize,
    fits: &mut dyn FnMut(usize) -> Result<bool>,
) -> Result<(Option<usize>, bool)> {
    let (mut lo, mut hi) = match requested_fits {
        true => (requested, None),
        false => (0, Some(requested)),
    };
    while budget > 0 {
        let next = match (lo, hi) {
            (lo, None) if lo >= MAX_BATCH => break,
            (lo, None) => (lo * 2).min(MAX_BATCH),
            (0, Some(hi)) if hi <= 1 => break,
            (0, Some(hi)) => hi / 2,
            (lo, Some(hi)) if hi - lo <= 1 => break,
            (lo, Some(hi)) => lo + (hi - lo) / 2,
        };
        budget -= 1;
        if fits(next)? {
            lo = next;
        } else {
            hi = Some(next);
        }
    }
    let bounded = match hi {
        None => true,
        Some(hi) => hi - lo > 1,
    };
    Ok(((lo > 0).then_some(lo), bounded))
}

fn gib(bytes: i64) -> String {
    format!("{:.2} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Prints the report (text, or one JSON object), then fails with one line when it does not
/// fit, so that scripts can stop before renting the slice.
pub fn print(report: &FitReport, json: bool, unit: &str, lower: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
    } else {
        println!(
            "{}: {} x {}, {} HBM per device; {unit} {}",
            report.topology,
            report.devices,
            report.device_kind,
            gib(report.hbm_bytes),
            report.batch
        );
        for p in &report.programs {
            let how = match p.estimate {
                Estimate::CostModel => "XLA's cost model",
                Estimate::Roofline => "roofline",
            };
            let time = format!(", estimated {:.4} s ({how})", p.estimated_seconds);
            println!(
                "  {:<16} arguments {}, outputs {}, temporaries {}, code {}{time}",
                p.program,
                gib(p.memory.argument_bytes),
                gib(p.memory.output_bytes),
                gib(p.memory.temp_bytes),
                gib(p.memory.code_bytes),
            );
        }
        if report.programs.is_empty() && report.argument_bytes > 0 {
            println!(
                "  the arguments alone (weights and inputs) need {} per device: not compiled",
                gib(report.argument_bytes)
            );
        } else if report.programs.is_empty() {
            println!("  the TPU compiler ran out of HBM");
        } else {
            println!(
                "per device: {} of {} ({})",
                gib(report.needed_bytes),
                gib(report.hbm_bytes),
                if report.fits { "fits" } else { "does not fit" }
            );
        }
        match report.largest_batch {
            Some(b) => println!(
                "largest {unit} that fits: {b}{}",
                if report.largest_batch_is_lower_bound {
                    " (the search stopped there; more may fit)"
                } else {
                    ""
                }
            ),
            None => println!("largest {unit} that fits: none"),
        }
        if let (Some(s), Some(rate)) = (report.estimated_step_seconds, report.samples_per_second) {
            println!(
                "estimated step: {s:.4} s, {rate:.2} samples/s for the slice (an estimate, not a measurement)"
            );
        }
    }
    if !report.fits {
        let largest = report
            .largest_batch
            .map(|b| format!(" (largest that fits: {b})"))
            .unwrap_or_default();
        bail!(
            "{unit} {} does not fit in the {} HBM of a {} device: {lower}{largest}",
            report.batch,
            gib(report.hbm_bytes),
            report.topology
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{largest_batch, Estimate};
    use crate::pjrt::CostAnalysis;
    use crate::runtime::topology::{chip_of, devices_per_chip};

    #[test]
    fn an_estimate_is_the_cost_models_when_positive_else_the_roofline() {
        let v5e = chip_of("v5e:2x4").unwrap();
        let cost = |optimal| CostAnalysis {
            flops: 394e12,
            bytes_accessed: 819e9,
            transcendentals: 0.0,
            optimal_seconds: optimal,
        };
        assert_eq!(
            Estimate::of(&cost(Some(0.5)), &v5e),
            (0.5, Estimate::CostModel)
        );
        // 394 TFLOP at 197 TFLOP/s: 2 s, more than 819 GB at 819 GB/s (1 s).
        for bad in [None, Some(-295.99), Some(0.0), Some(f64::NAN)] {
            assert_eq!(Estimate::of(&cost(bad), &v5e), (2.0, Estimate::Roofline));
        }
        let memory_bound = CostAnalysis {
            flops: 1e12,
            ..cost(None)
        };
        assert_eq!(Estimate::of(&memory_bound, &v5e), (1.0, Estimate::Roofline));
        assert_eq!(chip_of("v5p:2x2x1").unwrap().hbm_bytes, 95 << 30);
        // v4:2x2x1: 4 chips, 8 devices (one per TensorCore): each has half a chip.
        assert_eq!(devices_per_chip("v4:2x2x1", 8), 2);
        assert_eq!(devices_per_chip("v5e:2x4", 8), 1);
        assert_eq!(devices_per_chip("v5e:odd", 8), 1);
        assert_eq!(
            chip_of("v4:2x2x1").unwrap().shared_by(2).hbm_bytes,
            16 << 30
        );
        assert_eq!(chip_of("v9z:2x2"), None);
    }

    fn search(requested: usize, limit: usize) -> (Option<usize>, bool, usize) {
        let mut calls = 0;
        let (b, bounded) = largest_batch(requested, requested <= limit, 8, &mut |b| {
            calls += 1;
            Ok(b <= limit)
        })
        .unwrap();
        (b, bounded, calls)
    }

    #[test]
    fn the_search_finds_the_limit_within_its_budget() {
        // From 1 with 13 fitting: 2, 4, 8, 16 (no), then 12, 14 (no), 13.
        assert_eq!(search(1, 13), (Some(13), false, 7));
        // From too large: 50 (no), 25, 12 (yes), 18, 15, 13, 14 (no).
        assert_eq!(search(100, 13).0, Some(13));
        assert_eq!(search(4, 0), (None, false, 2));
        // Everything fits: stops at the cap, reported as a lower bound.
        assert_eq!(search(64, usize::MAX), (Some(256), true, 2));
        // No budget: the requested batch alone, a lower bound when it fits.
        let (b, bounded) = largest_batch(4, true, 0, &mut |_| unreachable!()).unwrap();
        assert_eq!((b, bounded), (Some(4), true));
    }
}
