//! `ti-xla devices`: which plugin was found and which devices it exposes.

use anyhow::Result;

use crate::runtime::device::{find_plugin, open_client, DeviceArgs};

#[derive(Debug, clap::Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub device: DeviceArgs,
    /// Print `{"platform": ..., "devices": [...]}` instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print only the number of devices (for `--num-samples $(ti-xla devices --count)`).
    #[arg(long, conflicts_with = "json")]
    pub count: bool,
}

pub fn run(args: &DevicesArgs) -> Result<()> {
    let client = open_client(&args.device)?;
    let devices = client.devices()?;
    if args.count {
        println!("{}", devices.len());
        return Ok(());
    }
    let plugin_path = find_plugin(args.device.device, args.device.plugin.as_deref())?;
    let (major, minor) = client.plugin().api_version();
    let platform = client.platform_name()?;
    let version = client.platform_version()?;
    if args.json {
        let out = serde_json::json!({
            "platform": platform,
            "platform_version": version,
            "plugin": plugin_path,
            "api_version": format!("{major}.{minor}"),
            "devices": devices,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("platform: {platform} ({version})");
    println!("plugin:   {}", plugin_path.display());
    println!("PJRT API: {major}.{minor}");
    for d in &devices {
        let memory = d
            .memory_bytes
            .map(|b| format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64))
            .unwrap_or_else(|| "memory not reported".into());
        println!("  device {}: {} ({memory})", d.id, d.kind);
    }
    Ok(())
}
