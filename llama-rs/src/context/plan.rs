//! [`MemoryPlan`]: where weights, KV cache and compute buffers go, per device —
//! predicted before loading (llama.cpp's `no_alloc` dry run) or read after.

use std::path::Path;

use llama_sys as sys;
use serde::Serialize;

use crate::context::{Context, ContextParams};
use crate::error::{backend_error, Result};
use crate::ffi::owned_string;
use crate::model::{Model, ModelParams};

/// Memory of one buffer type (one device's memory, or host memory), in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryEntry {
    /// ggml buffer type name, e.g. `CPU`, `CUDA0`, `CUDA_Host`, `Vulkan0`.
    pub buffer_type: String,
    /// The device the buffer type belongs to, if any (e.g. `CPU`, `CUDA0`).
    pub device: Option<String>,
    /// Host memory (also pinned host buffers such as `CUDA_Host`, which belong to a GPU
    /// device but live in RAM).
    pub host: bool,
    /// Bytes of model weights in this buffer type.
    pub model: u64,
    /// Bytes of context state (KV cache, recurrent state).
    pub context: u64,
    /// Bytes of compute buffers (graph intermediates).
    pub compute: u64,
}

impl MemoryEntry {
    /// All bytes of this entry.
    pub fn total(&self) -> u64 {
        self.model + self.context + self.compute
    }
}

/// Per-buffer-type memory of a model + context.
///
/// ```
/// use llama_rs::{ContextParams, MemoryPlan, ModelParams, GpuLayers};
/// let path = llama_testkit::default_model_path()?;
/// let plan = MemoryPlan::estimate(&path, ModelParams::default().gpu_layers(GpuLayers::All),
///                                 &ContextParams::default().n_ctx(8192))?;
/// for e in &plan.entries {
///     println!("{:>10}: weights {} MiB, KV {} MiB, compute {} MiB",
///              e.buffer_type, e.model >> 20, e.context >> 20, e.compute >> 20);
/// }
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryPlan {
    /// One entry per buffer type that holds memory.
    pub entries: Vec<MemoryEntry>,
}

impl MemoryPlan {
    /// Sum over all buffer types.
    pub fn total(&self) -> u64 {
        self.entries.iter().map(MemoryEntry::total).sum()
    }

    /// Memory of one device: its own (non-host) buffers; host memory for `CPU`.
    pub fn device_total(&self, device: &str) -> u64 {
        self.entries
            .iter()
            .filter(|e| {
                // CPU: every host buffer, plus CPU-only layouts such as CPU_REPACK.
                if device == "CPU" {
                    e.host || e.device.as_deref() == Some("CPU")
                } else {
                    !e.host && e.device.as_deref() == Some(device)
                }
            })
            .map(MemoryEntry::total)
            .sum()
    }

    /// All host (RAM) memory.
    pub fn host_total(&self) -> u64 {
        self.device_total("CPU")
    }

    /// Predicts the memory of loading `path` with `model_params` and creating a context
    /// with `ctx_params`, without allocating it (llama.cpp simulates the allocations).
    pub fn estimate(
        path: impl AsRef<Path>,
        mut model_params: ModelParams,
        ctx_params: &ContextParams,
    ) -> Result<MemoryPlan> {
        model_params.no_alloc = true;
        let model = Model::load(path, model_params)?;
        let ctx = Context::new(&model, ctx_params.clone())?;
        ctx.memory_breakdown()
    }
}

impl Context {
    /// The memory this model + context hold, per buffer type.
    pub fn memory_breakdown(&self) -> Result<MemoryPlan> {
        let empty = sys::llama_rs_memory_entry { buft: std::ptr::null_mut(), model: 0, context: 0, compute: 0 };
        let mut buf: Vec<sys::llama_rs_memory_entry> = vec![empty; 16];
        loop {
            // SAFETY: valid context; `buf` has room for `buf.len()` entries.
            let n = unsafe { sys::llama_rs_memory_breakdown(self.as_ptr(), buf.as_mut_ptr(), buf.len() as i32) };
            if n < 0 {
                return Err(backend_error("llama_rs_memory_breakdown", Some(n)));
            }
            if n as usize <= buf.len() {
                buf.truncate(n as usize);
                break;
            }
            buf = vec![empty; n as usize];
        }
        let entries = buf
            .iter()
            .map(|e| {
                // SAFETY: `buft` is a buffer type owned by a registered backend (static).
                let (bname, dev) =
                    unsafe { (sys::ggml_backend_buft_name(e.buft), sys::ggml_backend_buft_get_device(e.buft)) };
                // SAFETY: `buft` is valid (as above).
                let is_host = unsafe { sys::ggml_backend_buft_is_host(e.buft) };
                let device = if !dev.is_null() {
                    // SAFETY: a non-null device from the static registry; its name is NULL or a
                    // NUL-terminated string the registry owns.
                    Some(unsafe { owned_string(sys::ggml_backend_dev_name(dev)) })
                } else {
                    // ggml's CPU buffer types report no device; host memory is the CPU's.
                    is_host.then(|| "CPU".to_string())
                };
                MemoryEntry {
                    // SAFETY: NULL or a static NUL-terminated name.
                    buffer_type: unsafe { owned_string(bname) },
                    device,
                    host: is_host,
                    model: e.model as u64,
                    context: e.context as u64,
                    compute: e.compute as u64,
                }
            })
            .collect();
        Ok(MemoryPlan { entries })
    }
}
