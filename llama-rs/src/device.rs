//! [`Device`]: the ggml backend devices (CPU, GPUs, RPC servers) llama.cpp can use.

use llama_sys as sys;
use serde::Serialize;

use crate::backend;
use crate::error::{Error, Result};
use crate::ffi::owned_string;

/// What kind of device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceType {
    /// The CPU.
    Cpu,
    /// A discrete GPU.
    Gpu,
    /// Integrated GPU sharing host memory (e.g. Strix Halo, Radeon 890M).
    IntegratedGpu,
    /// An accelerator that works next to the CPU (e.g. BLAS, AMX).
    Accelerator,
    /// A virtual device over others (ggml's meta device).
    Meta,
    /// A device type this version of llama-rs does not know.
    Other,
}

/// A ggml backend device, as enumerated at query time.
///
/// ```
/// for d in llama_rs::Device::all() {
///     println!("{}: {} ({:?}), {} MiB free", d.index, d.name, d.kind, d.free / (1 << 20));
/// }
/// assert!(llama_rs::Device::all().iter().any(|d| d.kind == llama_rs::DeviceType::Cpu));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// Index in the registry (what `ModelParams::devices` takes).
    pub index: usize,
    /// ggml's name for it (`CPU`, `CUDA0`, `Vulkan0`, ...).
    pub name: String,
    /// The driver's description (e.g. the GPU model).
    pub description: String,
    /// What kind of device it is.
    pub kind: DeviceType,
    /// Free memory in bytes.
    pub free: u64,
    /// Total memory in bytes.
    pub total: u64,
}

impl Device {
    /// Number of registered devices.
    pub fn count() -> usize {
        backend::init();
        // SAFETY: a pure registry query.
        unsafe { sys::ggml_backend_dev_count() }
    }

    pub(crate) fn raw_by_index(i: usize) -> Result<sys::ggml_backend_dev_t> {
        let n = Self::count();
        if i >= n {
            return Err(Error::NoSuchDevice(format!("index {i}, {n} device(s) exist")));
        }
        // SAFETY: i < count.
        Ok(unsafe { sys::ggml_backend_dev_get(i) })
    }

    /// All devices, in registry order.
    pub fn all() -> Vec<Device> {
        (0..Self::count()).filter_map(|i| Self::get(i).ok()).collect()
    }

    /// One device by index.
    pub fn get(index: usize) -> Result<Device> {
        let d = Self::raw_by_index(index)?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: `d` is a valid registry device; out-pointers are valid locals.
        let (name, description, ty) = unsafe {
            // Through the shim's barrier: an RPC device asks its server, which may have
            // failed (then 0 / 0).
            sys::llama_rs_dev_memory(d, &mut free, &mut total);
            (sys::ggml_backend_dev_name(d), sys::ggml_backend_dev_description(d), sys::ggml_backend_dev_type(d))
        };
        let kind = match ty {
            sys::GGML_BACKEND_DEVICE_TYPE_CPU => DeviceType::Cpu,
            sys::GGML_BACKEND_DEVICE_TYPE_GPU => DeviceType::Gpu,
            sys::GGML_BACKEND_DEVICE_TYPE_IGPU => DeviceType::IntegratedGpu,
            sys::GGML_BACKEND_DEVICE_TYPE_ACCEL => DeviceType::Accelerator,
            sys::GGML_BACKEND_DEVICE_TYPE_META => DeviceType::Meta,
            _ => DeviceType::Other,
        };
        Ok(Device {
            index,
            // SAFETY: NULL or NUL-terminated strings owned by ggml's static device registry.
            name: unsafe { owned_string(name) },
            // SAFETY: as above.
            description: unsafe { owned_string(description) },
            kind,
            free: free as u64,
            total: total as u64,
        })
    }

    /// Finds a device by name (e.g. `CPU`, `CUDA0`, `Vulkan0`).
    pub fn by_name(name: &str) -> Result<Device> {
        Self::all().into_iter().find(|d| d.name == name).ok_or_else(|| Error::NoSuchDevice(name.into()))
    }
}
