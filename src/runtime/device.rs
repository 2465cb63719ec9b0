//! Choosing a device: finding the PJRT plugin for `--device`, opening a client on it with the
//! options every command shares (`--plugin`, `--cpu-devices`, the compile cache).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use xla_graphs::models::params::GradientKernels;
use xla_graphs::DType;

use crate::pjrt::{Client, CompileCache, NamedValue, Plugin};

/// Which kind of accelerator a command runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceKind {
    Cpu,
    Gpu,
    Tpu,
}

impl DeviceKind {
    pub fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Gpu => "gpu",
            DeviceKind::Tpu => "tpu",
        }
    }

    /// Where `scripts/install-plugin.sh` leaves the plugin, relative to `.pjrt/<device>/`.
    fn plugin_file(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so",
            DeviceKind::Gpu => "jax_plugins/xla_cuda12/xla_cuda_plugin.so",
            DeviceKind::Tpu => "libtpu/libtpu.so",
        }
    }

    /// How programs on this device bind the conv kernels a gradient passes through: XLA's CPU
    /// backend copies every kernel it rearranges on every run (2.5x slower SD 1.5 steps), GPU
    /// backends fold the rearrangement into their backward convolution.
    pub fn gradient_kernels(self) -> GradientKernels {
        match self {
            DeviceKind::Cpu => GradientKernels::Uploaded,
            DeviceKind::Gpu | DeviceKind::Tpu => GradientKernels::InProgram,
        }
    }

    pub fn install_command(self) -> String {
        format!("scripts/install-plugin.sh {}", self.name())
    }
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// float32 everywhere.
    No,
    /// bfloat16 weights and activations; rows, optimizer state and loss stay float32.
    Bf16,
}

impl MixedPrecision {
    /// The compute dtype of frozen weights and activations: `--mixed-precision` as given, or
    /// bf16 on accelerators and f32 on a CPU (whose bf16 arithmetic is emulated and slower).
    pub fn resolve(flag: Option<MixedPrecision>, device: DeviceKind) -> DType {
        let mode = flag.unwrap_or(match device {
            DeviceKind::Cpu => MixedPrecision::No,
            _ => MixedPrecision::Bf16,
        });
        match mode {
            MixedPrecision::No => DType::F32,
            MixedPrecision::Bf16 => DType::BF16,
        }
    }
}

/// `--num-devices`, or every device of the client, checked against what the plugin has.
pub fn resolve_devices(
    client: &Client,
    requested: Option<usize>,
    device: DeviceKind,
) -> Result<usize> {
    let available = client.device_count();
    let devices = requested.unwrap_or(available);
    if devices == 0 || devices > available {
        bail!(
            "--num-devices {devices}: the {} plugin has {available} device(s)",
            device.name()
        );
    }
    Ok(devices)
}

/// The flags of every command that opens a client.
#[derive(Clone, Debug, clap::Args)]
pub struct DeviceArgs {
    /// Accelerator to run on: cpu, gpu or tpu.
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceKind,
    /// Path of the PJRT plugin .so (overrides TI_XLA_PLUGIN and the .pjrt/ folders).
    #[arg(long, env = "TI_XLA_PLUGIN")]
    pub plugin: Option<PathBuf>,
    /// How many devices the CPU plugin exposes (for data parallelism on a CPU).
    #[arg(long = "cpu-devices", alias = "cpu_devices", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub cpu_devices: u32,
    /// Folder of the on-disk compile cache [default: ~/.cache/ti-xla/compile].
    #[arg(long = "cache-dir", alias = "cache_dir")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every program afresh instead of reusing cached executables.
    #[arg(long = "no-compile-cache", alias = "no_compile_cache")]
    pub no_compile_cache: bool,
}

impl Default for DeviceArgs {
    fn default() -> Self {
        DeviceArgs {
            device: DeviceKind::Cpu,
            plugin: None,
            cpu_devices: 1,
            cache_dir: None,
            no_compile_cache: false,
        }
    }
}

/// Finds the plugin for `device`: an explicit path first, then `.pjrt/<device>/` under the
/// current folder, then beside the executable (and up to three folders above it, which covers
/// `target/release/ti-xla` run from anywhere).
pub fn find_plugin(device: DeviceKind, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        if path.is_file() {
            return Ok(path.to_path_buf());
        }
        bail!(
            "PJRT plugin {} does not exist; fix --plugin/TI_XLA_PLUGIN or run `{}`",
            path.display(),
            device.install_command()
        );
    }
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        roots.extend(exe_dir.ancestors().take(4).map(Path::to_path_buf));
    }
    roots
        .iter()
        .map(|root| root.join(".pjrt").join(device.name()).join(device.plugin_file()))
        .find(|candidate| candidate.is_file())
        .with_context(|| {
            format!(
                "no PJRT plugin for --device {} found; install it with `{}` (or pass --plugin PATH)",
                device.name(),
                device.install_command()
            )
        })
}

/// Loads the plugin and opens a client with the shared options.
pub fn open_client(args: &DeviceArgs) -> Result<Client> {
    let path = find_plugin(args.device, args.plugin.as_deref())?;
    let plugin = Plugin::load(&path)?;
    let options = match args.device {
        DeviceKind::Cpu => vec![(
            "cpu_device_count",
            NamedValue::Int64(args.cpu_devices as i64),
        )],
        _ => Vec::new(),
    };
    let hint = match args.device {
        DeviceKind::Cpu => "",
        DeviceKind::Gpu => {
            "; is an NVIDIA GPU with its driver present (`nvidia-smi` should list it)?"
        }
        DeviceKind::Tpu => "; is this a cloud TPU VM, and is no other process holding the TPU?",
    };
    let mut client = Client::new(plugin, &options).with_context(|| {
        format!(
            "cannot open a {} client with {}{hint}",
            args.device.name(),
            path.display()
        )
    })?;
    if client.device_count() == 0 {
        bail!("the {} plugin found no devices{hint}", args.device.name());
    }
    if !args.no_compile_cache {
        let dir = args
            .cache_dir
            .clone()
            .unwrap_or_else(CompileCache::default_dir);
        client.set_compile_cache(Some(CompileCache::new(dir)));
    }
    Ok(client)
}
