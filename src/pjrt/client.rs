//! A PJRT client: created with named options, it knows its platform and addressable devices.

use std::ffi::CString;
use std::sync::Arc;

use super::error::{PjrtError, Result};
use super::ffi;
use super::plugin::{pjrt_call, plugin_string, Args, Plugin};

/// A value for a client-create option (`cpu_device_count` and the like).
#[derive(Clone, Debug)]
pub enum NamedValue {
    Int64(i64),
    Str(String),
    Bool(bool),
    Float(f32),
}

/// One device the client can address directly.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// The global device id (what device assignments name).
    pub id: i32,
    /// Position in the client's addressable-device list (what buffers and argument lists use).
    pub index: usize,
    pub kind: String,
    /// Memory the device may use, when the plugin reports it.
    pub memory_bytes: Option<i64>,
}

/// Owns the plugin's client object. Buffers and executables hold an `Arc` of it, because the
/// plugin frees everything a client made when the client goes: a buffer outliving its client
/// would be a dangling pointer.
pub(crate) struct ClientHandle {
    plugin: &'static Plugin,
    raw: *mut ffi::PJRT_Client,
}

unsafe impl Send for ClientHandle {}
unsafe impl Sync for ClientHandle {}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Client_Destroy_Args::new();
        args.client = self.raw;
        // Errors while tearing down cannot be acted on; they are not worth a panic.
        let _ = pjrt_call!(self.plugin, PJRT_Client_Destroy, &mut args);
    }
}

pub struct Client {
    pub(crate) handle: Arc<ClientHandle>,
    pub(crate) plugin: &'static Plugin,
    pub(crate) raw: *mut ffi::PJRT_Client,
    pub(crate) devices: Vec<*mut ffi::PJRT_Device>,
    pub(crate) cache: Option<super::cache::CompileCache>,
}

// PJRT clients are thread-safe objects.
unsafe impl Send for Client {}
unsafe impl Sync for Client {}

impl Client {
    /// Creates a client on `plugin` with create options such as `("cpu_device_count", Int64(4))`.
    pub fn new(plugin: &'static Plugin, options: &[(&str, NamedValue)]) -> Result<Client> {
        // The names and string values must outlive the call: keep them here.
        let names: Vec<CString> = options
            .iter()
            .map(|(n, _)| {
                CString::new(*n).map_err(|_| PjrtError::Usage(format!("bad option name {n:?}")))
            })
            .collect::<Result<_>>()?;
        let strings: Vec<Option<CString>> = options
            .iter()
            .map(|(_, v)| match v {
                NamedValue::Str(s) => CString::new(s.as_str()).ok(),
                _ => None,
            })
            .collect();
        let values: Vec<ffi::PJRT_NamedValue> = options
            .iter()
            .enumerate()
            .map(|(i, (name, value))| {
                let mut nv = ffi::PJRT_NamedValue::new();
                nv.name = names[i].as_ptr();
                nv.name_size = name.len();
                match value {
                    NamedValue::Int64(v) => {
                        nv.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64;
                        nv.__bindgen_anon_1.int64_value = *v;
                        nv.value_size = 1;
                    }
                    NamedValue::Str(s) => {
                        nv.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kString;
                        nv.__bindgen_anon_1.string_value =
                            strings[i].as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
                        nv.value_size = s.len();
                    }
                    NamedValue::Bool(b) => {
                        nv.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kBool;
                        nv.__bindgen_anon_1.bool_value = *b;
                        nv.value_size = 1;
                    }
                    NamedValue::Float(f) => {
                        nv.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kFloat;
                        nv.__bindgen_anon_1.float_value = *f;
                        nv.value_size = 1;
                    }
                }
                nv
            })
            .collect();
        let mut args = ffi::PJRT_Client_Create_Args::new();
        args.create_options = values.as_ptr();
        args.num_options = values.len();
        pjrt_call!(plugin, PJRT_Client_Create, &mut args)?;
        let handle = Arc::new(ClientHandle {
            plugin,
            raw: args.client,
        });
        let mut client = Client {
            handle,
            plugin,
            raw: args.client,
            devices: Vec::new(),
            cache: None,
        };
        let mut dev_args = ffi::PJRT_Client_AddressableDevices_Args::new();
        dev_args.client = client.raw;
        pjrt_call!(plugin, PJRT_Client_AddressableDevices, &mut dev_args)?;
        if dev_args.num_addressable_devices > 0 {
            // SAFETY: the plugin returns an array of that many device pointers, owned by the client.
            client.devices = unsafe {
                std::slice::from_raw_parts(
                    dev_args.addressable_devices,
                    dev_args.num_addressable_devices,
                )
            }
            .to_vec();
        }
        Ok(client)
    }

    pub fn plugin(&self) -> &'static Plugin {
        self.plugin
    }

    /// Platform name as the plugin reports it ("cpu", "cuda", "tpu").
    pub fn platform_name(&self) -> Result<String> {
        let mut args = ffi::PJRT_Client_PlatformName_Args::new();
        args.client = self.raw;
        pjrt_call!(self.plugin, PJRT_Client_PlatformName, &mut args)?;
        // SAFETY: the string is owned by the client and valid while it lives.
        Ok(unsafe { plugin_string(args.platform_name, args.platform_name_size) })
    }

    pub fn platform_version(&self) -> Result<String> {
        let mut args = ffi::PJRT_Client_PlatformVersion_Args::new();
        args.client = self.raw;
        pjrt_call!(self.plugin, PJRT_Client_PlatformVersion, &mut args)?;
        // SAFETY: as above.
        Ok(unsafe { plugin_string(args.platform_version, args.platform_version_size) })
    }

    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// Id, kind and (when reported) memory of every addressable device, in client order.
    pub fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.devices
            .iter()
            .enumerate()
            .map(|(index, &device)| {
                let mut desc = ffi::PJRT_Device_GetDescription_Args::new();
                desc.device = device;
                pjrt_call!(self.plugin, PJRT_Device_GetDescription, &mut desc)?;
                let mut id = ffi::PJRT_DeviceDescription_Id_Args::new();
                id.device_description = desc.device_description;
                pjrt_call!(self.plugin, PJRT_DeviceDescription_Id, &mut id)?;
                let mut kind = ffi::PJRT_DeviceDescription_Kind_Args::new();
                kind.device_description = desc.device_description;
                pjrt_call!(self.plugin, PJRT_DeviceDescription_Kind, &mut kind)?;
                let mut stats = ffi::PJRT_Device_MemoryStats_Args::new();
                stats.device = device;
                // Many plugins (CPU among them) do not implement memory stats: that is not an error.
                let memory_bytes =
                    match pjrt_call!(self.plugin, PJRT_Device_MemoryStats, &mut stats) {
                        Ok(()) if stats.bytes_limit_is_set => Some(stats.bytes_limit),
                        _ => None,
                    };
                Ok(DeviceInfo {
                    id: id.id,
                    index,
                    // SAFETY: owned by the device description, valid while the client lives.
                    kind: unsafe { plugin_string(kind.device_kind, kind.device_kind_size) },
                    memory_bytes,
                })
            })
            .collect()
    }

    pub(crate) fn device(&self, index: usize) -> Result<*mut ffi::PJRT_Device> {
        self.devices.get(index).copied().ok_or_else(|| {
            PjrtError::Usage(format!(
                "device index {index} is out of range: the client has {} device(s)",
                self.devices.len()
            ))
        })
    }

    /// Turns on the on-disk compile cache for every later `compile` on this client.
    pub fn set_compile_cache(&mut self, cache: Option<super::cache::CompileCache>) {
        self.cache = cache;
    }

    pub fn compile_cache(&self) -> Option<&super::cache::CompileCache> {
        self.cache.as_ref()
    }
}
