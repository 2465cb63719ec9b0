//! Compiling StableHLO text and running the result on one or many devices.

use super::buffer::DeviceBuffer;
use super::cache::CacheOutcome;
use std::sync::Arc;

use super::client::{Client, ClientHandle};
use super::compile_options::CompileOptions;
use super::error::{PjrtError, Result};
use super::event::await_and_destroy;
use super::ffi;
use super::plugin::{pjrt_call, Args, Plugin};
use super::program_code::ProgramCode;

/// A program compiled for a fixed set of devices.
pub struct LoadedExecutable {
    client: Arc<ClientHandle>,
    plugin: &'static Plugin,
    raw: *mut ffi::PJRT_LoadedExecutable,
    num_devices: usize,
    num_outputs: usize,
    /// Whether it came from the compile cache (for progress messages and benchmarks).
    pub cache_outcome: CacheOutcome,
}

unsafe impl Send for LoadedExecutable {}
unsafe impl Sync for LoadedExecutable {}

impl Client {
    /// Compiles StableHLO text (a module whose entry is `@main`) for `options`' devices,
    /// through the compile cache when one is set.
    pub fn compile(&self, program: &str, options: &CompileOptions) -> Result<LoadedExecutable> {
        match &self.cache {
            Some(cache) => cache.get_or_compile(self, program, options),
            None => self.compile_uncached(program, options),
        }
    }

    pub(crate) fn compile_uncached(
        &self,
        program: &str,
        options: &CompileOptions,
    ) -> Result<LoadedExecutable> {
        if options.num_devices() > self.device_count() {
            return Err(PjrtError::Usage(format!(
                "the program is compiled for {} devices but the client has {}",
                options.num_devices(),
                self.device_count()
            )));
        }
        let encoded = options.encode();
        let mut code = ProgramCode::new(program);
        let prog = code.program();
        let mut args = ffi::PJRT_Client_Compile_Args::new();
        args.client = self.raw;
        args.program = &prog;
        args.compile_options = encoded.as_ptr() as *const std::os::raw::c_char;
        args.compile_options_size = encoded.len();
        pjrt_call!(self.plugin, PJRT_Client_Compile, &mut args)?;
        LoadedExecutable::wrap(
            &self.handle,
            self.plugin,
            args.executable,
            options.num_devices(),
        )
    }

    /// Loads an executable made by `LoadedExecutable::serialize` with the same plugin build.
    pub(crate) fn deserialize(&self, bytes: &[u8], num_devices: usize) -> Result<LoadedExecutable> {
        let mut args = ffi::PJRT_Executable_DeserializeAndLoad_Args::new();
        args.client = self.raw;
        args.serialized_executable = bytes.as_ptr() as *const std::os::raw::c_char;
        args.serialized_executable_size = bytes.len();
        pjrt_call!(self.plugin, PJRT_Executable_DeserializeAndLoad, &mut args)?;
        LoadedExecutable::wrap(
            &self.handle,
            self.plugin,
            args.loaded_executable,
            num_devices,
        )
    }
}

/// Runs `f` with the executable's `PJRT_Executable` view, destroying the view afterwards.
fn with_executable<R>(
    plugin: &'static Plugin,
    loaded: *mut ffi::PJRT_LoadedExecutable,
    f: impl FnOnce(*mut ffi::PJRT_Executable) -> Result<R>,
) -> Result<R> {
    let mut get = ffi::PJRT_LoadedExecutable_GetExecutable_Args::new();
    get.loaded_executable = loaded;
    pjrt_call!(plugin, PJRT_LoadedExecutable_GetExecutable, &mut get)?;
    let result = f(get.executable);
    let mut destroy = ffi::PJRT_Executable_Destroy_Args::new();
    destroy.executable = get.executable;
    pjrt_call!(plugin, PJRT_Executable_Destroy, &mut destroy)?;
    result
}

impl LoadedExecutable {
    fn wrap(
        client: &Arc<ClientHandle>,
        plugin: &'static Plugin,
        raw: *mut ffi::PJRT_LoadedExecutable,
        num_devices: usize,
    ) -> Result<Self> {
        let mut exe = LoadedExecutable {
            client: client.clone(),
            plugin,
            raw,
            num_devices,
            num_outputs: 0,
            cache_outcome: CacheOutcome::Disabled,
        };
        exe.num_outputs = with_executable(plugin, raw, |e| {
            let mut n = ffi::PJRT_Executable_NumOutputs_Args::new();
            n.executable = e;
            pjrt_call!(plugin, PJRT_Executable_NumOutputs, &mut n)?;
            Ok(n.num_outputs)
        })?;
        Ok(exe)
    }

    pub fn num_devices(&self) -> usize {
        self.num_devices
    }

    pub fn num_outputs(&self) -> usize {
        self.num_outputs
    }

    /// The plugin-specific bytes of this executable, for the compile cache.
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let plugin = self.plugin;
        with_executable(plugin, self.raw, |e| {
            let mut args = ffi::PJRT_Executable_Serialize_Args::new();
            args.executable = e;
            pjrt_call!(plugin, PJRT_Executable_Serialize, &mut args)?;
            // SAFETY: the bytes live until the deleter is called on `serialized_executable`.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    args.serialized_bytes as *const u8,
                    args.serialized_bytes_size,
                )
            }
            .to_vec();
            if let Some(deleter) = args.serialized_executable_deleter {
                // SAFETY: handing back the object the plugin gave us, exactly once.
                unsafe { deleter(args.serialized_executable) };
            }
            Ok(bytes)
        })
    }

    /// Runs the program: `arguments[d]` is the argument list of the d-th device (replicated
    /// arguments repeated per device, sharded ones differing). Returns `outputs[d][i]`.
    /// Inputs the program donates (`tf.aliasing_output`) are consumed: reading them afterwards
    /// is an error from the plugin.
    pub fn execute(&self, arguments: &[Vec<&DeviceBuffer>]) -> Result<Vec<Vec<DeviceBuffer>>> {
        if arguments.len() != self.num_devices {
            return Err(PjrtError::Usage(format!(
                "the program runs on {} device(s) but {} argument list(s) were given",
                self.num_devices,
                arguments.len()
            )));
        }
        let num_args = arguments.first().map_or(0, Vec::len);
        if let Some((d, list)) = arguments
            .iter()
            .enumerate()
            .find(|(_, l)| l.len() != num_args)
        {
            return Err(PjrtError::Usage(format!(
                "argument list {d} has {} buffers but list 0 has {num_args}",
                list.len()
            )));
        }
        let raw_lists: Vec<Vec<*mut ffi::PJRT_Buffer>> = arguments
            .iter()
            .map(|list| list.iter().map(|b| b.raw).collect())
            .collect();
        let list_ptrs: Vec<*const *mut ffi::PJRT_Buffer> =
            raw_lists.iter().map(|l| l.as_ptr()).collect();
        let mut outputs: Vec<Vec<*mut ffi::PJRT_Buffer>> =
            vec![vec![std::ptr::null_mut(); self.num_outputs]; self.num_devices];
        let output_ptrs: Vec<*mut *mut ffi::PJRT_Buffer> =
            outputs.iter_mut().map(|l| l.as_mut_ptr()).collect();
        let mut events: Vec<*mut ffi::PJRT_Event> = vec![std::ptr::null_mut(); self.num_devices];
        let mut options = ffi::PJRT_ExecuteOptions::new();
        let mut args = ffi::PJRT_LoadedExecutable_Execute_Args::new();
        args.executable = self.raw;
        args.options = &mut options;
        args.argument_lists = list_ptrs.as_ptr();
        args.num_devices = self.num_devices;
        args.num_args = num_args;
        args.output_lists = output_ptrs.as_ptr();
        args.device_complete_events = events.as_mut_ptr();
        pjrt_call!(self.plugin, PJRT_LoadedExecutable_Execute, &mut args)?;
        // Wrap every output first so nothing leaks if a later step fails.
        let wrapped: Vec<Vec<Result<DeviceBuffer>>> = outputs
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&raw| DeviceBuffer::from_raw(&self.client, self.plugin, raw))
                    .collect()
            })
            .collect();
        let mut first_err = None;
        for event in events {
            if let Err(e) = await_and_destroy(self.plugin, event, "execution") {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        wrapped
            .into_iter()
            .map(|l| l.into_iter().collect::<Result<Vec<_>>>())
            .collect()
    }
}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_LoadedExecutable_Destroy_Args::new();
        args.executable = self.raw;
        let _ = pjrt_call!(self.plugin, PJRT_LoadedExecutable_Destroy, &mut args);
    }
}
