//! Loading a PJRT plugin `.so` once per process, checking its API version, and calling its
//! function table safely: a function the plugin is too old to have is an error, never a crash.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::error::{code_name, PjrtError, Result};
use super::ffi;

/// A loaded, initialised plugin. Plugins are never unloaded (unloading one segfaults at
/// process exit), so a `Plugin` lives for the whole process and is handed out as `&'static`.
pub struct Plugin {
    api: *const ffi::PJRT_Api,
    path: PathBuf,
    api_struct_size: usize,
    major: i32,
    minor: i32,
}

// The PJRT C API is thread-safe: the function table is immutable after initialisation.
unsafe impl Send for Plugin {}
unsafe impl Sync for Plugin {}

/// Calls `PJRT_Api.$name` with `$args`, after checking the plugin has that entry.
macro_rules! pjrt_call {
    ($plugin:expr, $name:ident, $args:expr) => {{
        let plugin: &$crate::pjrt::plugin::Plugin = $plugin;
        let offset = ::std::mem::offset_of!($crate::pjrt::ffi::PJRT_Api, $name);
        match plugin.function(offset, stringify!($name), |api| api.$name) {
            Ok(f) => {
                #[allow(unused_unsafe)]
                let err = unsafe { f($args) };
                plugin.check(err, stringify!($name))
            }
            Err(e) => Err(e),
        }
    }};
}
pub(crate) use pjrt_call;

/// Every PJRT args struct begins with `struct_size`; it must hold the header's
/// `*_STRUCT_SIZE` constant (not `size_of`, which includes trailing padding).
pub(crate) trait Args: Default {
    const STRUCT_SIZE: usize;
    fn set_struct_size(&mut self);
    fn new() -> Self {
        let mut a = Self::default();
        a.set_struct_size();
        a
    }
}

macro_rules! impl_args {
    ($($ty:ident => $size:ident),* $(,)?) => {$(
        impl Args for ffi::$ty {
            const STRUCT_SIZE: usize = ffi::$size as usize;
            fn set_struct_size(&mut self) { self.struct_size = Self::STRUCT_SIZE; }
        }
    )*};
}

impl_args!(
    PJRT_Error_Destroy_Args => PJRT_Error_Destroy_Args_STRUCT_SIZE,
    PJRT_Error_Message_Args => PJRT_Error_Message_Args_STRUCT_SIZE,
    PJRT_Error_GetCode_Args => PJRT_Error_GetCode_Args_STRUCT_SIZE,
    PJRT_Plugin_Initialize_Args => PJRT_Plugin_Initialize_Args_STRUCT_SIZE,
    PJRT_Event_Await_Args => PJRT_Event_Await_Args_STRUCT_SIZE,
    PJRT_Event_Destroy_Args => PJRT_Event_Destroy_Args_STRUCT_SIZE,
    PJRT_NamedValue => PJRT_NamedValue_STRUCT_SIZE,
    PJRT_Client_Create_Args => PJRT_Client_Create_Args_STRUCT_SIZE,
    PJRT_Client_Destroy_Args => PJRT_Client_Destroy_Args_STRUCT_SIZE,
    PJRT_Client_PlatformName_Args => PJRT_Client_PlatformName_Args_STRUCT_SIZE,
    PJRT_Client_PlatformVersion_Args => PJRT_Client_PlatformVersion_Args_STRUCT_SIZE,
    PJRT_Client_AddressableDevices_Args => PJRT_Client_AddressableDevices_Args_STRUCT_SIZE,
    PJRT_Device_GetDescription_Args => PJRT_Device_GetDescription_Args_STRUCT_SIZE,
    PJRT_DeviceDescription_Id_Args => PJRT_DeviceDescription_Id_Args_STRUCT_SIZE,
    PJRT_DeviceDescription_Kind_Args => PJRT_DeviceDescription_Kind_Args_STRUCT_SIZE,
    PJRT_Device_MemoryStats_Args => PJRT_Device_MemoryStats_Args_STRUCT_SIZE,
    PJRT_Program => PJRT_Program_STRUCT_SIZE,
    PJRT_Client_Compile_Args => PJRT_Client_Compile_Args_STRUCT_SIZE,
    PJRT_Client_BufferFromHostBuffer_Args => PJRT_Client_BufferFromHostBuffer_Args_STRUCT_SIZE,
    PJRT_Buffer_Destroy_Args => PJRT_Buffer_Destroy_Args_STRUCT_SIZE,
    PJRT_Buffer_ElementType_Args => PJRT_Buffer_ElementType_Args_STRUCT_SIZE,
    PJRT_Buffer_Dimensions_Args => PJRT_Buffer_Dimensions_Args_STRUCT_SIZE,
    PJRT_Buffer_ToHostBuffer_Args => PJRT_Buffer_ToHostBuffer_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_Destroy_Args => PJRT_LoadedExecutable_Destroy_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_GetExecutable_Args => PJRT_LoadedExecutable_GetExecutable_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_AddressableDevices_Args => PJRT_LoadedExecutable_AddressableDevices_Args_STRUCT_SIZE,
    PJRT_LoadedExecutable_Execute_Args => PJRT_LoadedExecutable_Execute_Args_STRUCT_SIZE,
    PJRT_ExecuteOptions => PJRT_ExecuteOptions_STRUCT_SIZE,
    PJRT_Executable_Destroy_Args => PJRT_Executable_Destroy_Args_STRUCT_SIZE,
    PJRT_Executable_NumOutputs_Args => PJRT_Executable_NumOutputs_Args_STRUCT_SIZE,
    PJRT_Executable_Serialize_Args => PJRT_Executable_Serialize_Args_STRUCT_SIZE,
    PJRT_Executable_DeserializeAndLoad_Args => PJRT_Executable_DeserializeAndLoad_Args_STRUCT_SIZE,
    PJRT_TopologyDescription_Create_Args => PJRT_TopologyDescription_Create_Args_STRUCT_SIZE,
    PJRT_TopologyDescription_Destroy_Args => PJRT_TopologyDescription_Destroy_Args_STRUCT_SIZE,
    PJRT_TopologyDescription_PlatformName_Args => PJRT_TopologyDescription_PlatformName_Args_STRUCT_SIZE,
    PJRT_TopologyDescription_GetDeviceDescriptions_Args => PJRT_TopologyDescription_GetDeviceDescriptions_Args_STRUCT_SIZE,
    PJRT_Compile_Args => PJRT_Compile_Args_STRUCT_SIZE,
    PJRT_Executable_GetCompiledMemoryStats_Args => PJRT_Executable_GetCompiledMemoryStats_Args_STRUCT_SIZE,
    PJRT_Executable_GetCostAnalysis_Args => PJRT_Executable_GetCostAnalysis_Args_STRUCT_SIZE,
);

const RTLD_NODELETE: i32 = 0x1000;

fn loaded_plugins() -> &'static Mutex<HashMap<PathBuf, &'static Plugin>> {
    static PLUGINS: OnceLock<Mutex<HashMap<PathBuf, &'static Plugin>>> = OnceLock::new();
    PLUGINS.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Plugin {
    /// Loads and initialises the plugin at `path`, or returns the one already loaded from there.
    pub fn load(path: &Path) -> Result<&'static Plugin> {
        let load_err = |reason: String| PjrtError::Load {
            path: path.to_path_buf(),
            reason,
        };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let mut plugins = loaded_plugins()
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(plugin) = plugins.get(&key) {
            return Ok(plugin);
        }
        let flags =
            libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL | RTLD_NODELETE;
        // SAFETY: loading a shared object runs its initialisers; a PJRT plugin is a trusted
        // library the user pointed us at, exactly as jax would load it.
        let lib = unsafe { libloading::os::unix::Library::open(Some(&key), flags) }
            .map_err(|e| load_err(e.to_string()))?;
        type GetApi = unsafe extern "C" fn() -> *const ffi::PJRT_Api;
        // SAFETY: GetPjrtApi has this signature in every PJRT plugin.
        let get_api: GetApi = unsafe { lib.get::<GetApi>(b"GetPjrtApi\0") }
            .map(|s| *s)
            .map_err(|_| load_err("not a PJRT plugin (it has no GetPjrtApi symbol)".into()))?;
        // Never unload: the symbol must stay valid for the process lifetime.
        std::mem::forget(lib);
        // SAFETY: the plugin returns a pointer to a static table (or null on failure).
        let api = unsafe { get_api() };
        if api.is_null() {
            return Err(load_err("GetPjrtApi returned null".into()));
        }
        // SAFETY: the first fields of PJRT_Api have been stable since API 0.1.
        let (api_struct_size, major, minor) = unsafe {
            (
                (*api).struct_size,
                (*api).pjrt_api_version.major_version,
                (*api).pjrt_api_version.minor_version,
            )
        };
        if major != ffi::PJRT_API_MAJOR as i32 {
            return Err(load_err(format!(
                "it speaks PJRT API {major}.{minor}, ti-xla needs major version {}",
                ffi::PJRT_API_MAJOR
            )));
        }
        let plugin: &'static Plugin = Box::leak(Box::new(Plugin {
            api,
            path: key.clone(),
            api_struct_size,
            major,
            minor,
        }));
        let mut args = ffi::PJRT_Plugin_Initialize_Args::new();
        pjrt_call!(plugin, PJRT_Plugin_Initialize, &mut args)?;
        plugins.insert(key, plugin);
        Ok(plugin)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The plugin's PJRT API version (major, minor).
    pub fn api_version(&self) -> (i32, i32) {
        (self.major, self.minor)
    }

    /// Returns the function at `offset` of the plugin's table, or an error if the plugin's
    /// table is too short to hold it (an older plugin) or leaves it null.
    pub(crate) fn function<F: Copy>(
        &self,
        offset: usize,
        name: &'static str,
        read: impl FnOnce(&ffi::PJRT_Api) -> Option<F>,
    ) -> Result<F> {
        let missing = || PjrtError::MissingFunction {
            path: self.path.clone(),
            major: self.major,
            minor: self.minor,
            function: name,
        };
        if offset + std::mem::size_of::<usize>() > self.api_struct_size {
            return Err(missing());
        }
        // SAFETY: `api` is the plugin's static table and `offset` lies within its reported size.
        read(unsafe { &*self.api }).ok_or_else(missing)
    }

    /// Turns a returned `PJRT_Error*` into a `PjrtError` (and frees it).
    pub(crate) fn check(&self, err: *mut ffi::PJRT_Error, function: &'static str) -> Result<()> {
        if err.is_null() {
            return Ok(());
        }
        let mut message = String::from("(no message)");
        let mut code = "UNKNOWN";
        // SAFETY: `err` is a live error object owned by us until destroyed below.
        unsafe {
            let api = &*self.api;
            if let Some(f) = api.PJRT_Error_Message {
                let mut args = ffi::PJRT_Error_Message_Args::new();
                args.error = err;
                f(&mut args);
                if !args.message.is_null() {
                    let bytes =
                        std::slice::from_raw_parts(args.message as *const u8, args.message_size);
                    message = String::from_utf8_lossy(bytes).into_owned();
                }
            }
            if let Some(f) = api.PJRT_Error_GetCode {
                let mut args = ffi::PJRT_Error_GetCode_Args::new();
                args.error = err;
                if f(&mut args).is_null() {
                    code = code_name(args.code);
                }
            }
            if let Some(f) = api.PJRT_Error_Destroy {
                let mut args = ffi::PJRT_Error_Destroy_Args::new();
                args.error = err;
                f(&mut args);
            }
        }
        Err(PjrtError::Plugin {
            function,
            code,
            message,
        })
    }
}

/// Copies a (pointer, length) string the plugin returned into an owned `String`.
///
/// # Safety
/// `ptr` must point to `len` readable bytes (or be null).
pub(crate) unsafe fn plugin_string(ptr: *const std::os::raw::c_char, len: usize) -> String {
    if ptr.is_null() {
        return String::new();
    }
    String::from_utf8_lossy(std::slice::from_raw_parts(ptr as *const u8, len)).into_owned()
}
