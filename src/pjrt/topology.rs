//! Compiling ahead of time for a named device topology, without opening a client: libtpu
//! describes a Cloud TPU slice by name (`v5e:2x2`) on a machine without TPU chips, compiles a
//! program for it, and reports the compiled program's memory and XLA's cost estimate.

use std::ffi::CString;

use super::compile_options::CompileOptions;
use super::error::{PjrtError, Result};
use super::ffi;
use super::plugin::{pjrt_call, plugin_string, Args, Plugin};
use super::program_code::ProgramCode;

/// A device topology the plugin made from a name; no device is opened.
pub struct Topology {
    plugin: &'static Plugin,
    raw: *mut ffi::PJRT_TopologyDescription,
    name: String,
}

// Topology descriptions are immutable plugin objects.
unsafe impl Send for Topology {}
unsafe impl Sync for Topology {}

/// One device of a topology.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TopologyDevice {
    pub id: i32,
    /// "TPU v5 lite", "TPU v4".
    pub kind: String,
}

/// Device memory a compiled program needs, per device, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemoryStats {
    pub argument_bytes: i64,
    pub output_bytes: i64,
    /// Outputs that share an argument's buffer (donated inputs).
    pub alias_bytes: i64,
    pub temp_bytes: i64,
    pub code_bytes: i64,
    /// The plugin's peak, when it reports one (0 otherwise).
    pub peak_bytes: i64,
}

impl MemoryStats {
    /// What the program holds on a device at once: arguments, outputs that are not aliases of
    /// arguments, temporaries and code (XLA's own sum when it gives no peak).
    pub fn total_bytes(&self) -> i64 {
        let sum = self.argument_bytes + self.output_bytes - self.alias_bytes
            + self.temp_bytes
            + self.code_bytes;
        sum.max(self.peak_bytes)
    }
}

/// XLA's cost analysis of one device's program.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CostAnalysis {
    pub flops: f64,
    pub bytes_accessed: f64,
    pub transcendentals: f64,
    /// The cost model's estimated run time, when the plugin gives one.
    pub optimal_seconds: Option<f64>,
}

/// What compiling for a topology tells about a program.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CompiledStats {
    pub memory: MemoryStats,
    pub cost: CostAnalysis,
}

impl Topology {
    /// The topology `name` (`v5e:2x2`, `v4:2x2x1`) as `plugin` describes it.
    pub fn new(plugin: &'static Plugin, name: &str) -> Result<Topology> {
        let c_name = CString::new(name)
            .map_err(|_| PjrtError::Usage(format!("bad topology name {name:?}")))?;
        let mut args = ffi::PJRT_TopologyDescription_Create_Args::new();
        args.topology_name = c_name.as_ptr();
        args.topology_name_size = name.len();
        pjrt_call!(plugin, PJRT_TopologyDescription_Create, &mut args)?;
        if args.topology.is_null() {
            return Err(PjrtError::Usage(format!(
                "the plugin made no topology for {name:?}"
            )));
        }
        Ok(Topology {
            plugin,
            raw: args.topology,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn platform_name(&self) -> Result<String> {
        let mut args = ffi::PJRT_TopologyDescription_PlatformName_Args::new();
        args.topology = self.raw;
        pjrt_call!(
            self.plugin,
            PJRT_TopologyDescription_PlatformName,
            &mut args
        )?;
        // SAFETY: owned by the topology, valid while it lives.
        Ok(unsafe { plugin_string(args.platform_name, args.platform_name_size) })
    }

    /// Every device of the topology, in the plugin's order.
    pub fn devices(&self) -> Result<Vec<TopologyDevice>> {
        let mut args = ffi::PJRT_TopologyDescription_GetDeviceDescriptions_Args::new();
        args.topology = self.raw;
        pjrt_call!(
            self.plugin,
            PJRT_TopologyDescription_GetDeviceDescriptions,
            &mut args
        )?;
        if args.num_descriptions == 0 || args.descriptions.is_null() {
            return Ok(Vec::new());
        }
        // SAFETY: an array of that many descriptions, owned by the topology.
        let descriptions =
            unsafe { std::slice::from_raw_parts(args.descriptions, args.num_descriptions) };
        descriptions
            .iter()
            .map(|&description| {
                let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
                id.device_description = description;
                pjrt_call!(self.plugin, PJRT_DeviceDescription_Id, &mut id)?;
                let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
                kind.device_description = description;
                pjrt_call!(self.plugin, PJRT_DeviceDescription_Kind, &mut kind)?;
                Ok(TopologyDevice {
                    id: id.id,
                    // SAFETY: owned by the description, valid while the topology lives.
                    kind: unsafe { plugin_string(kind.device_kind, kind.device_kind_size) },
                })
            })
            .collect()
    }

    /// Compiles StableHLO text for this topology with `options` and returns what the plugin
    /// reports about the result; the executable itself is dropped.
    pub fn compile(&self, program: &str, options: &CompileOptions) -> Result<CompiledStats> {
        let encoded = options.encode();
        let mut code = ProgramCode::new(program);
        let prog = code.program();
        let mut args = ffi::PJRT_Compile_Args::new();
        args.topology = self.raw;
        args.program = &prog;
        args.compile_options = encoded.as_ptr() as *const std::os::raw::c_char;
        args.compile_options_size = encoded.len();
        pjrt_call!(self.plugin, PJRT_Compile, &mut args)?;
        let executable = args.executable;
        let stats = self.read_stats(executable);
        let mut destroy = ffi::PJRT_Executable_Destroy_Args::new();
        destroy.executable = executable;
        pjrt_call!(self.plugin, PJRT_Executable_Destroy, &mut destroy)?;
        stats
    }

    fn read_stats(&self, executable: *mut ffi::PJRT_Executable) -> Result<CompiledStats> {
        let mut m = ffi::PJRT_Executable_GetCompiledMemoryStats_Args::new();
        m.executable = executable;
        pjrt_call!(self.plugin, PJRT_Executable_GetCompiledMemoryStats, &mut m)?;
        let memory = MemoryStats {
            argument_bytes: m.argument_size_in_bytes,
            output_bytes: m.output_size_in_bytes,
            alias_bytes: m.alias_size_in_bytes,
            temp_bytes: m.temp_size_in_bytes,
            code_bytes: m.generated_code_size_in_bytes,
            peak_bytes: m.peak_memory_in_bytes,
        };
        let mut c = ffi::PJRT_Executable_GetCostAnalysis_Args::new();
        c.executable = executable;
        pjrt_call!(self.plugin, PJRT_Executable_GetCostAnalysis, &mut c)?;
        let mut cost = CostAnalysis::default();
        let properties = match c.num_properties {
            0 => &[][..],
            // SAFETY: an array of that many values, owned by the executable.
            n => unsafe { std::slice::from_raw_parts(c.properties, n) },
        };
        for p in properties {
            // SAFETY: the name is `name_size` bytes owned by the executable; the union member
            // read is the one `type_` names.
            let (name, value) = unsafe {
                let name = plugin_string(p.name, p.name_size);
                let value = match p.type_ {
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kFloat => {
                        Some(p.__bindgen_anon_1.float_value as f64)
                    }
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64 => {
                        Some(p.__bindgen_anon_1.int64_value as f64)
                    }
                    _ => None,
                };
                (name, value)
            };
            let Some(value) = value else { continue };
            match name.as_str() {
                "flops" => cost.flops = value,
                "bytes accessed" => cost.bytes_accessed = value,
                "transcendentals" => cost.transcendentals = value,
                "optimal_seconds" => cost.optimal_seconds = Some(value),
                _ => {}
            }
        }
        Ok(CompiledStats { memory, cost })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_TopologyDescription_Destroy_Args::new();
        args.topology = self.raw;
        let _ = pjrt_call!(self.plugin, PJRT_TopologyDescription_Destroy, &mut args);
    }
}
