//! Device buffers: host-to-device and device-to-host copies for every dtype ti-xla uses,
//! with the transfer events awaited before the host memory is released or read.

use half::{bf16, f16};
use xla_graphs::DType;

use std::sync::Arc;

use super::client::{Client, ClientHandle};
use super::error::{PjrtError, Result};
use super::event::await_and_destroy;
use super::ffi;
use super::plugin::{pjrt_call, Args, Plugin};

/// A host element type with a fixed PJRT buffer type.
pub trait HostElement: Copy + Default + 'static {
    const DTYPE: DType;
}

macro_rules! host_element {
    ($($t:ty => $d:ident),*) => {$( impl HostElement for $t { const DTYPE: DType = DType::$d; } )*};
}
host_element!(f32 => F32, f64 => F64, bf16 => BF16, f16 => F16, i32 => I32, i64 => I64, u32 => U32, u8 => U8, bool => Pred);

pub(crate) fn buffer_type(dtype: DType) -> ffi::PJRT_Buffer_Type {
    match dtype {
        DType::Pred => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_PRED,
        DType::U8 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U8,
        DType::U32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U32,
        DType::I32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_S32,
        DType::I64 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_S64,
        DType::F16 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F16,
        DType::BF16 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_BF16,
        DType::F32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F32,
        DType::F64 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F64,
    }
}

fn dtype_of(t: ffi::PJRT_Buffer_Type) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| buffer_type(d) == t)
}

/// An array on one device. Dropping it frees the device memory.
pub struct DeviceBuffer {
    _client: Arc<ClientHandle>,
    plugin: &'static Plugin,
    pub(crate) raw: *mut ffi::PJRT_Buffer,
    dims: Vec<i64>,
    dtype: DType,
}

unsafe impl Send for DeviceBuffer {}
unsafe impl Sync for DeviceBuffer {}

fn element_count(dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d)
            .ok()
            .and_then(|d| acc.checked_mul(d))
            .ok_or_else(|| PjrtError::Usage(format!("invalid dimensions {dims:?}")))
    })
}

impl Client {
    /// Copies `data` (row-major, shape `dims`) to the device at `device_index`.
    pub fn buffer_from_host<T: HostElement>(
        &self,
        data: &[T],
        dims: &[i64],
        device_index: usize,
    ) -> Result<DeviceBuffer> {
        // SAFETY: T is a plain scalar type; viewing its slice as bytes is sound.
        let bytes = unsafe {
            std::slice::from_raw_parts(data.as_ptr() as *const u8, std::mem::size_of_val(data))
        };
        self.buffer_from_bytes(bytes, T::DTYPE, dims, device_index)
    }

    /// Copies raw little-endian bytes of `dtype` elements to a device.
    pub fn buffer_from_bytes(
        &self,
        bytes: &[u8],
        dtype: DType,
        dims: &[i64],
        device_index: usize,
    ) -> Result<DeviceBuffer> {
        let expected = element_count(dims)? * dtype.size_in_bytes();
        if bytes.len() != expected {
            return Err(PjrtError::Usage(format!(
                "host data for a {dtype}{dims:?} buffer must be {expected} bytes, got {}",
                bytes.len()
            )));
        }
        let device = self.device(device_index)?;
        let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args::new();
        args.client = self.raw;
        args.data = bytes.as_ptr() as *const std::ffi::c_void;
        args.type_ = buffer_type(dtype);
        args.dims = dims.as_ptr();
        args.num_dims = dims.len();
        args.host_buffer_semantics =
            ffi::PJRT_HostBufferSemantics_PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes;
        args.device = device;
        pjrt_call!(self.plugin, PJRT_Client_BufferFromHostBuffer, &mut args)?;
        let buffer = DeviceBuffer {
            _client: self.handle.clone(),
            plugin: self.plugin,
            raw: args.buffer,
            dims: dims.to_vec(),
            dtype,
        };
        // `bytes` may be freed once this returns, so wait until the plugin is done reading it.
        await_and_destroy(
            self.plugin,
            args.done_with_host_buffer,
            "host-to-device transfer",
        )?;
        Ok(buffer)
    }
}

impl DeviceBuffer {
    /// Wraps a buffer the plugin returned (an execution output), reading its shape and type.
    pub(crate) fn from_raw(
        client: &Arc<ClientHandle>,
        plugin: &'static Plugin,
        raw: *mut ffi::PJRT_Buffer,
    ) -> Result<Self> {
        let mut buffer = DeviceBuffer {
            _client: client.clone(),
            plugin,
            raw,
            dims: Vec::new(),
            dtype: DType::F32,
        };
        let mut t = ffi::PJRT_Buffer_ElementType_Args::new();
        t.buffer = raw;
        pjrt_call!(plugin, PJRT_Buffer_ElementType, &mut t)?;
        buffer.dtype = dtype_of(t.type_).ok_or_else(|| {
            PjrtError::Usage(format!(
                "the plugin returned a buffer of unsupported type {}",
                t.type_
            ))
        })?;
        let mut d = ffi::PJRT_Buffer_Dimensions_Args::new();
        d.buffer = raw;
        pjrt_call!(plugin, PJRT_Buffer_Dimensions, &mut d)?;
        if d.num_dims > 0 {
            // SAFETY: the plugin returns `num_dims` dimensions owned by the buffer.
            buffer.dims = unsafe { std::slice::from_raw_parts(d.dims, d.num_dims) }.to_vec();
        }
        Ok(buffer)
    }

    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn element_count(&self) -> usize {
        element_count(&self.dims).unwrap_or(0)
    }

    /// Copies the buffer to the host as dense row-major little-endian bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = vec![0u8; self.element_count() * self.dtype.size_in_bytes()];
        self.copy_to_host(out.as_mut_ptr(), out.len())?;
        Ok(out)
    }

    /// Copies the buffer to a host vector; `T` must be the buffer's dtype.
    pub fn to_vec<T: HostElement>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(PjrtError::Usage(format!(
                "cannot read a {} buffer as {}",
                self.dtype,
                T::DTYPE
            )));
        }
        let mut out = vec![T::default(); self.element_count()];
        self.copy_to_host(
            out.as_mut_ptr() as *mut u8,
            std::mem::size_of_val(out.as_slice()),
        )?;
        Ok(out)
    }

    fn copy_to_host(&self, dst: *mut u8, len: usize) -> Result<()> {
        let mut args = ffi::PJRT_Buffer_ToHostBuffer_Args::new();
        args.src = self.raw;
        args.dst = dst as *mut std::ffi::c_void;
        args.dst_size = len;
        pjrt_call!(self.plugin, PJRT_Buffer_ToHostBuffer, &mut args)?;
        await_and_destroy(self.plugin, args.event, "device-to-host transfer")
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Buffer_Destroy_Args::new();
        args.buffer = self.raw;
        let _ = pjrt_call!(self.plugin, PJRT_Buffer_Destroy, &mut args);
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({}{:?})", self.dtype, self.dims)
    }
}
