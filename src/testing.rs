//! Helpers for the integration tests: the CPU client CI installs, found the way users find it.

use crate::pjrt::{Client, NamedValue, Plugin};
use crate::runtime::device::{find_plugin, DeviceKind};

/// A client on the CPU plugin that `scripts/install-plugin.sh cpu` installs, with `devices`
/// CPU devices and no compile cache. Fails (never skips) with the install command when absent.
pub fn cpu_client(devices: usize) -> anyhow::Result<Client> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = std::env::var_os("TI_XLA_PLUGIN")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            let p = root.join(".pjrt/cpu/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so");
            p.is_file().then_some(p)
        });
    let path = find_plugin(DeviceKind::Cpu, path.as_deref())?;
    let plugin = Plugin::load(&path)?;
    Ok(Client::new(
        plugin,
        &[("cpu_device_count", NamedValue::Int64(devices as i64))],
    )?)
}
