//! [`ModelParams`]: how a model is loaded.

use std::ffi::{c_char, CString};

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::device::Device;
use crate::error::{check_arg, Result};

/// How many layers to offload to GPU devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GpuLayers {
    /// Every layer (llama.cpp's `-ngl all`). Harmless on a CPU-only build.
    #[default]
    All,
    /// The first `n` repeating layers.
    Count(u32),
}

/// How a model is spread over several GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum SplitMode {
    /// One GPU (`main_gpu`) holds everything.
    None,
    /// Whole layers (and their KV) per GPU.
    #[default]
    Layer,
    /// Rows of matrices across GPUs (tensor parallelism where the backend supports it).
    Row,
    /// Tensor-level split.
    Tensor,
}

/// How the weights are read from disk.
///
/// With a memory map (`Mmap`, `MmapMlock`, or `Auto` for a model larger than half the
/// available memory) the file must not
/// shrink while the model is loaded: reading a page past the new end is a SIGBUS, which
/// no library can turn into an error (mmap's contract). `Model::load` checks that every
/// tensor lies inside the file before loading; for files that may change under you
/// (downloads in progress, network shares), use `None`, which reads into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LoadMode {
    /// Read into memory when the model takes at most half of the memory available, else
    /// map it (Linux; elsewhere llama.cpp decides). Reading measured faster and smaller
    /// on CPUs, and it cannot SIGBUS when the file changes (docs/BENCHMARKS.md).
    #[default]
    Auto,
    /// Plain reads into allocated buffers.
    None,
    /// Memory-map the file.
    Mmap,
    /// Read and lock in RAM.
    Mlock,
    /// mmap + mlock.
    MmapMlock,
    /// Direct I/O where available.
    DirectIo,
}

/// A metadata override applied at load (`--override-kv`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum KvOverride {
    /// An integer value.
    Int(i64),
    /// A float value.
    Float(f64),
    /// A boolean value.
    Bool(bool),
    /// At most 127 bytes.
    Str(String),
}

/// Where tensors matching a pattern are placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BufferTarget {
    /// Host memory (e.g. MoE experts on CPU while attention runs on the GPU).
    Cpu,
    /// The default buffer type of this device (index into [`Device::all`]).
    Device(usize),
}

pub(super) type ProgressFn = Box<dyn FnMut(f32) -> bool + Send>;

/// Everything `llama_model_params` offers, as a typed builder.
///
/// ```
/// use llama_rs::{Model, ModelParams, GpuLayers, LoadMode};
/// let params = ModelParams::default()
///     .gpu_layers(GpuLayers::All)
///     .load_mode(LoadMode::Mmap)
///     .experts_on_cpu()
///     .progress(|p| { eprint!("\rloading {:3.0}%", p * 100.0); true });
/// let model = Model::load(llama_testkit::default_model_path()?, params)?;
/// assert_eq!(model.architecture(), "gemma3");
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Serialize, Deserialize, Default)]
pub struct ModelParams {
    /// How many layers go to GPUs.
    pub gpu_layers: GpuLayers,
    /// How layers or rows are split over several GPUs.
    pub split_mode: SplitMode,
    /// The GPU used for everything with `SplitMode::None`, and for small tensors otherwise.
    pub main_gpu: i32,
    /// Proportions per device; empty = llama.cpp's default.
    pub tensor_split: Vec<f32>,
    /// Explicit device list (indices into [`Device::all`]); empty = all devices.
    pub devices: Vec<usize>,
    /// How the file is read (mmap, into memory, direct I/O).
    pub load_mode: LoadMode,
    /// Metadata overrides (`--override-kv`); checked against the key's type in the file.
    pub kv_overrides: Vec<(String, KvOverride)>,
    /// Regex pattern over tensor names → placement.
    pub tensor_overrides: Vec<(String, BufferTarget)>,
    /// RPC servers (`host:port`) whose devices join this load (llama.cpp's `--rpc`).
    pub rpc_servers: Vec<String>,
    /// Load only the vocabulary (tokenize / detokenize without weights).
    pub vocab_only: bool,
    /// Validate tensor data while loading (slower; catches NaN/inf and corrupt blocks).
    pub check_tensors: bool,
    /// Skip llama.cpp's repacked CPU weight layouts (`CPU_REPACK`). Slower prompt
    /// processing, but results no longer depend on how many tokens a batch holds.
    pub no_repack: bool,
    /// Also load the model's multi-token-prediction (NextN) layers, which
    /// [`Mtp`](crate::Mtp) drafting runs (llama.cpp skips them by default: they cost
    /// memory). Models without such layers load as usual.
    #[serde(default)]
    pub mtp: bool,
    /// Only simulate allocations (used by the memory planner).
    #[serde(skip)]
    pub(crate) no_alloc: bool,
    #[serde(skip)]
    pub(super) progress: Option<ProgressFn>,
}

impl std::fmt::Debug for ModelParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelParams")
            .field("gpu_layers", &self.gpu_layers)
            .field("split_mode", &self.split_mode)
            .field("main_gpu", &self.main_gpu)
            .field("tensor_split", &self.tensor_split)
            .field("devices", &self.devices)
            .field("load_mode", &self.load_mode)
            .field("kv_overrides", &self.kv_overrides)
            .field("tensor_overrides", &self.tensor_overrides)
            .field("rpc_servers", &self.rpc_servers)
            .field("vocab_only", &self.vocab_only)
            .field("check_tensors", &self.check_tensors)
            .field("no_repack", &self.no_repack)
            .field("mtp", &self.mtp)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ModelParams {
    setters! {
        gpu_layers: GpuLayers, split_mode: SplitMode, main_gpu: i32, load_mode: LoadMode,
        vocab_only: bool, no_repack: bool, check_tensors: bool, mtp: bool,
    }

    /// Sets [`ModelParams::tensor_split`].
    pub fn tensor_split(mut self, s: impl Into<Vec<f32>>) -> Self {
        self.tensor_split = s.into();
        self
    }
    /// Sets [`ModelParams::devices`].
    pub fn devices(mut self, d: impl Into<Vec<usize>>) -> Self {
        self.devices = d.into();
        self
    }
    /// Adds a metadata override (replacing one for the same key).
    pub fn kv_override(mut self, key: impl Into<String>, v: KvOverride) -> Self {
        self.kv_overrides.push((key.into(), v));
        self
    }
    /// Adds an RPC server's devices (feature `rpc`): layers are spread over them like
    /// local GPUs. The server is contacted when the model loads.
    pub fn rpc_server(mut self, endpoint: impl Into<String>) -> Self {
        self.rpc_servers.push(endpoint.into());
        self
    }
    /// Places tensors whose name matches the regex `pattern` on `t` (llama.cpp's `-ot`).
    pub fn tensor_override(mut self, pattern: impl Into<String>, t: BufferTarget) -> Self {
        self.tensor_overrides.push((pattern.into(), t));
        self
    }
    /// Keep MoE expert tensors in host memory (llama.cpp's `--cpu-moe`).
    pub fn experts_on_cpu(self) -> Self {
        self.tensor_override(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", BufferTarget::Cpu)
    }
    /// Keep the MoE expert tensors of the first `n` layers in host memory (llama.cpp's
    /// `--n-cpu-moe N`): the rest of those layers, and all of the others, go where
    /// [`ModelParams::gpu_layers`] puts them. `0` adds nothing.
    ///
    /// ```
    /// let p = llama_rs::ModelParams::default().experts_on_cpu_layers(3);
    /// assert_eq!(p.tensor_overrides[0].0, r"^blk\.(0|1|2)\.ffn_(up|down|gate|gate_up)_(ch|)exps");
    /// ```
    pub fn experts_on_cpu_layers(self, n: u32) -> Self {
        if n == 0 {
            return self;
        }
        let layers: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        let pattern = format!(r"^blk\.({})\.ffn_(up|down|gate|gate_up)_(ch|)exps", layers.join("|"));
        self.tensor_override(pattern, BufferTarget::Cpu)
    }
    /// Called with the load progress in `0.0..=1.0`; return `false` to cancel the load.
    /// A panic inside the callback cancels the load and is resumed after it returns.
    pub fn progress(mut self, f: impl FnMut(f32) -> bool + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

/// C-side storage that must outlive the `llama_model_params` pointing into it.
pub(super) struct RawParams {
    pub(super) raw: sys::llama_model_params,
    _kv: Vec<sys::llama_model_kv_override>,
    _patterns: Vec<CString>,
    _bufts: Vec<sys::llama_model_tensor_buft_override>,
    _devices: Vec<sys::ggml_backend_dev_t>,
    _split: Vec<f32>,
}

impl ModelParams {
    pub(super) fn to_raw(&self) -> Result<RawParams> {
        // SAFETY: returns a plain struct by value; no preconditions.
        let mut raw = unsafe { sys::llama_model_default_params() };
        raw.n_gpu_layers = match self.gpu_layers {
            GpuLayers::All => -1,
            GpuLayers::Count(n) => i32::try_from(n).unwrap_or(i32::MAX),
        };
        raw.split_mode = match self.split_mode {
            SplitMode::None => sys::LLAMA_SPLIT_MODE_NONE,
            SplitMode::Layer => sys::LLAMA_SPLIT_MODE_LAYER,
            SplitMode::Row => sys::LLAMA_SPLIT_MODE_ROW,
            SplitMode::Tensor => sys::LLAMA_SPLIT_MODE_TENSOR,
        };
        raw.load_mode = match self.load_mode {
            LoadMode::Auto => sys::LLAMA_LOAD_MODE_AUTO,
            LoadMode::None => sys::LLAMA_LOAD_MODE_NONE,
            LoadMode::Mmap => sys::LLAMA_LOAD_MODE_MMAP,
            LoadMode::Mlock => sys::LLAMA_LOAD_MODE_MLOCK,
            LoadMode::MmapMlock => sys::LLAMA_LOAD_MODE_MMAP_MLOCK,
            LoadMode::DirectIo => sys::LLAMA_LOAD_MODE_DIRECT_IO,
        };
        raw.vocab_only = self.vocab_only;
        raw.check_tensors = self.check_tensors;
        if self.no_repack {
            raw.use_extra_bufts = false;
        }
        raw.load_mtp = self.mtp;
        raw.no_alloc = self.no_alloc;
        if self.no_alloc {
            // The dry run asserts on mmap'd buffers (llama-model.cpp: `!ml.no_alloc`).
            raw.load_mode = sys::LLAMA_LOAD_MODE_NONE;
        }

        let n_dev = Device::count();
        // SAFETY: a pure query with no preconditions.
        let max_devices = unsafe { sys::llama_max_devices() };
        check_arg(self.main_gpu >= 0 && (self.main_gpu as usize) < n_dev.max(1), || {
            format!("main_gpu {} but {} device(s) exist", self.main_gpu, n_dev)
        })?;
        let mut split = Vec::new();
        if !self.tensor_split.is_empty() {
            check_arg(self.tensor_split.len() <= max_devices, || {
                format!("tensor_split has {} entries, llama.cpp supports {max_devices}", self.tensor_split.len())
            })?;
            check_arg(
                self.tensor_split.iter().all(|v| v.is_finite() && *v >= 0.0)
                    && self.tensor_split.iter().sum::<f32>() > 0.0,
                || format!("tensor_split {:?}: entries must be finite, >= 0, not all 0", self.tensor_split),
            )?;
            split = self.tensor_split.clone();
            split.resize(max_devices, 0.0);
            raw.tensor_split = split.as_ptr();
        }
        let mut devices = Vec::new();
        if !self.devices.is_empty() {
            for &i in &self.devices {
                devices.push(Device::raw_by_index(i)?);
            }
            devices.push(std::ptr::null_mut()); // NULL-terminated
            raw.devices = devices.as_mut_ptr();
        }
        let mut kv = Vec::new();
        for (key, v) in &self.kv_overrides {
            // SAFETY: an all-zero llama_model_kv_override is a valid value (plain data).
            let mut o: sys::llama_model_kv_override = unsafe { std::mem::zeroed() };
            check_arg(key.len() < o.key.len() && !key.contains('\0'), || {
                format!("kv_override key {key:?} must be < 128 bytes without NUL")
            })?;
            for (d, s) in o.key.iter_mut().zip(key.bytes()) {
                *d = s as c_char;
            }
            match v {
                KvOverride::Int(i) => {
                    o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_INT;
                    o.__bindgen_anon_1.val_i64 = *i;
                }
                KvOverride::Float(f) => {
                    o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_FLOAT;
                    o.__bindgen_anon_1.val_f64 = *f;
                }
                KvOverride::Bool(b) => {
                    o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_BOOL;
                    o.__bindgen_anon_1.val_bool = *b;
                }
                KvOverride::Str(s) => {
                    o.tag = sys::LLAMA_KV_OVERRIDE_TYPE_STR;
                    check_arg(s.len() < 128 && !s.contains('\0'), || {
                        format!("kv_override {key:?}: string value must be < 128 bytes without NUL")
                    })?;
                    // SAFETY: writing the str member of the union we just tagged as STR.
                    let dst = unsafe { &mut o.__bindgen_anon_1.val_str };
                    for (d, s) in dst.iter_mut().zip(s.bytes()) {
                        *d = s as c_char;
                    }
                }
            }
            kv.push(o);
        }
        if !kv.is_empty() {
            // SAFETY: see above; the terminator has an empty key.
            kv.push(unsafe { std::mem::zeroed() });
            raw.kv_overrides = kv.as_ptr();
        }
        let mut patterns = Vec::new();
        let mut bufts = Vec::new();
        for (pattern, target) in &self.tensor_overrides {
            let c = crate::ffi::c_string(pattern, pattern)?;
            let buft = match target {
                // The CPU device's buffer type through the registry: in a `cpu-all` build
                // the CPU backend is a module and its functions are not linked.
                BufferTarget::Cpu => {
                    // SAFETY: registry queries; a NULL device (no CPU backend) is checked.
                    let dev = unsafe { sys::ggml_backend_dev_by_type(sys::GGML_BACKEND_DEVICE_TYPE_CPU) };
                    if dev.is_null() {
                        return Err(crate::Error::NoSuchDevice("no CPU backend is registered".into()));
                    }
                    // SAFETY: `dev` is a valid registry device.
                    unsafe { sys::ggml_backend_dev_buffer_type(dev) }
                }
                BufferTarget::Device(i) => {
                    let dev = Device::raw_by_index(*i)?;
                    // SAFETY: `dev` is a valid registry device pointer (checked above).
                    unsafe { sys::ggml_backend_dev_buffer_type(dev) }
                }
            };
            bufts.push(sys::llama_model_tensor_buft_override { pattern: c.as_ptr(), buft });
            patterns.push(c);
        }
        if !bufts.is_empty() {
            bufts.push(sys::llama_model_tensor_buft_override { pattern: std::ptr::null(), buft: std::ptr::null_mut() });
            raw.tensor_buft_overrides = bufts.as_ptr();
        }
        Ok(RawParams { raw, _kv: kv, _patterns: patterns, _bufts: bufts, _devices: devices, _split: split })
    }
}
