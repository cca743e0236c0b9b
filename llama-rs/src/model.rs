//! [`Model`]: loaded weights + vocabulary, shared by any number of contexts.

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::backend::{self, guard};
use crate::device::Device;
use crate::error::{check_arg, Error, Result};
use crate::vocab::Vocab;

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
/// With a memory map (`Auto` may choose one, `Mmap`, `MmapMlock`) the file must not
/// shrink while the model is loaded: reading a page past the new end is a SIGBUS, which
/// no library can turn into an error (mmap's contract). `Model::load` checks that every
/// tensor lies inside the file before loading; for files that may change under you
/// (downloads in progress, network shares), use `None`, which reads into memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum LoadMode {
    /// llama.cpp decides (turns mmap off on integrated GPUs).
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
    Int(i64),
    Float(f64),
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

type ProgressFn = Box<dyn FnMut(f32) -> bool + Send>;

/// Everything `llama_model_params` offers, as a typed builder.
///
/// ```
/// use llama_rs::{Model, ModelParams, GpuLayers, LoadMode};
/// let params = ModelParams::default()
///     .gpu_layers(GpuLayers::All)
///     .load_mode(LoadMode::Mmap)
///     .experts_on_cpu()
///     .progress(|p| { eprint!("\rloading {:3.0}%", p * 100.0); true });
/// let model = Model::load(llama_rs::default_model_path()?, params)?;
/// assert_eq!(model.architecture(), "gemma3");
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Serialize, Deserialize, Default)]
pub struct ModelParams {
    pub gpu_layers: GpuLayers,
    pub split_mode: SplitMode,
    pub main_gpu: i32,
    /// Proportions per device; empty = llama.cpp's default.
    pub tensor_split: Vec<f32>,
    /// Explicit device list (indices into [`Device::all`]); empty = all devices.
    pub devices: Vec<usize>,
    pub load_mode: LoadMode,
    pub kv_overrides: Vec<(String, KvOverride)>,
    /// Regex pattern over tensor names → placement.
    pub tensor_overrides: Vec<(String, BufferTarget)>,
    /// RPC servers (`host:port`) whose devices join this load (llama.cpp's `--rpc`).
    pub rpc_servers: Vec<String>,
    pub vocab_only: bool,
    pub check_tensors: bool,
    /// Skip llama.cpp's repacked CPU weight layouts (`CPU_REPACK`). Slower prompt
    /// processing, but results no longer depend on how many tokens a batch holds.
    pub no_repack: bool,
    /// Only simulate allocations (used by the memory planner).
    #[serde(skip)]
    pub(crate) no_alloc: bool,
    #[serde(skip)]
    progress: Option<ProgressFn>,
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
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl ModelParams {
    pub fn gpu_layers(mut self, n: GpuLayers) -> Self {
        self.gpu_layers = n;
        self
    }
    pub fn split_mode(mut self, m: SplitMode) -> Self {
        self.split_mode = m;
        self
    }
    pub fn main_gpu(mut self, i: i32) -> Self {
        self.main_gpu = i;
        self
    }
    pub fn tensor_split(mut self, s: impl Into<Vec<f32>>) -> Self {
        self.tensor_split = s.into();
        self
    }
    pub fn devices(mut self, d: impl Into<Vec<usize>>) -> Self {
        self.devices = d.into();
        self
    }
    pub fn load_mode(mut self, m: LoadMode) -> Self {
        self.load_mode = m;
        self
    }
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
    pub fn tensor_override(mut self, pattern: impl Into<String>, t: BufferTarget) -> Self {
        self.tensor_overrides.push((pattern.into(), t));
        self
    }
    /// Keep MoE expert tensors in host memory (llama.cpp's `--cpu-moe`).
    pub fn experts_on_cpu(self) -> Self {
        self.tensor_override(r"\.ffn_(up|down|gate|gate_up)_(ch|)exps", BufferTarget::Cpu)
    }
    pub fn vocab_only(mut self, v: bool) -> Self {
        self.vocab_only = v;
        self
    }
    pub fn no_repack(mut self, v: bool) -> Self {
        self.no_repack = v;
        self
    }
    pub fn check_tensors(mut self, v: bool) -> Self {
        self.check_tensors = v;
        self
    }
    /// Called with the load progress in `0.0..=1.0`; return `false` to cancel the load.
    /// A panic inside the callback cancels the load and is resumed after it returns.
    pub fn progress(mut self, f: impl FnMut(f32) -> bool + Send + 'static) -> Self {
        self.progress = Some(Box::new(f));
        self
    }
}

/// C-side storage that must outlive the `llama_model_params` pointing into it.
struct RawParams {
    raw: sys::llama_model_params,
    _kv: Vec<sys::llama_model_kv_override>,
    _patterns: Vec<CString>,
    _bufts: Vec<sys::llama_model_tensor_buft_override>,
    _devices: Vec<sys::ggml_backend_dev_t>,
    _split: Vec<f32>,
}

impl ModelParams {
    fn to_raw(&self) -> Result<RawParams> {
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
            let c = CString::new(pattern.as_str()).map_err(|_| Error::Nul(pattern.clone()))?;
            let buft = match target {
                // SAFETY: returns a static buffer type of the always-present CPU backend.
                BufferTarget::Cpu => unsafe { sys::ggml_backend_cpu_buffer_type() },
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

/// The owner of a `llama_model*`.
struct ModelInner {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    vocab_only: bool,
    gpu_layers: GpuLayers,
    /// See `check_vocab`.
    missing_bytes: Vec<u8>,
    path: PathBuf,
    /// Serialises the few llama.cpp calls that mutate the model (adapter registration,
    /// context creation), see the `Send`/`Sync` contract below.
    pub(crate) lock: Mutex<()>,
}

// SAFETY: (contract) after loading, llama.cpp treats `llama_model` as read-only: every
// query takes `const llama_model*`, tokenization is documented thread-safe, and many
// contexts may run on one model from different threads (llama-server's design). The
// calls that touch model state (LoRA adapter init/free, context creation) go through
// `ModelInner::lock`. The pointer is freed once, by Drop, when the last handle goes.
unsafe impl Send for ModelInner {}
// SAFETY: see the contract above; `&ModelInner` only exposes const queries.
unsafe impl Sync for ModelInner {}

impl Drop for ModelInner {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_model_load_* and is freed exactly once, here,
        // after every Context (which holds a Model clone) is gone.
        unsafe { sys::llama_model_free(self.ptr.as_ptr()) }
    }
}

/// A loaded model: a cheap, cloneable handle (`Arc` inside). Contexts, engines and
/// Python objects hold clones, so nothing borrows from a stack frame.
///
/// ```
/// use llama_rs::{Model, ModelParams};
/// let model = Model::load(llama_rs::default_model_path()?, ModelParams::default())?;
/// println!("{} ({} params, {} layers)", model.description(), model.n_params(), model.n_layer());
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Clone)]
pub struct Model {
    inner: Arc<ModelInner>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("path", &self.inner.path).field("desc", &self.description()).finish()
    }
}

/// Checks what llama.cpp would otherwise find out the hard way: the file exists, is
/// readable, and starts with a GGUF header of a version llama.cpp reads.
pub(crate) fn check_gguf_header(path: &Path) -> Result<()> {
    // stat before open: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(|e| Error::ModelFile { path: path.into(), source: e })?;
    if meta.is_dir() {
        return Err(Error::NotGguf { path: path.into(), reason: "is a directory".into() });
    }
    if !meta.is_file() {
        return Err(Error::NotGguf {
            path: path.into(),
            reason: "not a regular file (a FIFO, socket or device)".into(),
        });
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::ModelFile { path: path.into(), source: e })?;
    let mut head = [0u8; 24];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::ModelFile { path: path.into(), source: e }),
        }
    }
    if n < 4 || &head[..4] != b"GGUF" {
        return Err(Error::NotGguf { path: path.into(), reason: "wrong magic (expected \"GGUF\")".into() });
    }
    if n < head.len() {
        return Err(Error::NotGguf { path: path.into(), reason: format!("truncated header ({n} bytes)") });
    }
    let version = u32::from_le_bytes(head[4..8].try_into().unwrap());
    if !(2..=3).contains(&version) {
        return Err(Error::NotGguf { path: path.into(), reason: format!("unsupported GGUF version {version}") });
    }
    Ok(())
}

/// Checks the vocabulary metadata for what makes llama.cpp abort instead of failing:
/// repeated token strings abort the load (`GGML_ASSERT(id_to_token.size() ==
/// token_to_id.size())` in llama-vocab.cpp), and a SentencePiece vocabulary without a
/// token for some byte throws `std::out_of_range` through `llama_tokenize` when byte
/// fallback needs it. Returns those bytes (empty for complete vocabularies); the
/// tokenizer refuses text containing them. Both found by the `model_load` fuzz target.
pub(crate) fn check_vocab(path: &Path, meta: &[(String, crate::GgufValue)]) -> Result<Vec<u8>> {
    let Some((_, crate::GgufValue::Array(tokens))) = meta.iter().find(|(k, _)| k == "tokenizer.ggml.tokens") else {
        return Ok(Vec::new());
    };
    let mut seen: std::collections::HashSet<std::borrow::Cow<'_, str>> =
        std::collections::HashSet::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        if let crate::GgufValue::Str(s) = t {
            // llama.cpp renames an empty token to "[EMPTY_<i>]", which can collide too.
            let name: std::borrow::Cow<'_, str> =
                if s.is_empty() { format!("[EMPTY_{i}]").into() } else { s.as_str().into() };
            if !seen.insert(name) {
                return Err(Error::NotGguf {
                    path: path.into(),
                    reason: format!(
                        "tokenizer.ggml.tokens repeats {s:?} (token {i}): llama.cpp cannot load such a vocabulary"
                    ),
                });
            }
        }
    }
    let spm =
        meta.iter().any(|(k, v)| k == "tokenizer.ggml.model" && matches!(v, crate::GgufValue::Str(m) if m == "llama"));
    if !spm {
        return Ok(Vec::new());
    }
    // llama_vocab::byte_to_token: "<0xAB>", else the byte itself as a one-byte token.
    let has = |b: u8| {
        seen.contains(format!("<0x{b:02X}>").as_str()) || std::str::from_utf8(&[b]).is_ok_and(|s| seen.contains(s))
    };
    Ok((0..=255u8).filter(|&b| !has(b)).collect())
}

/// Everything checked before llama.cpp opens a model file (the first of a split model):
/// header, metadata with the overrides applied, vocabulary, tensors inside the file.
/// Returns the bytes the vocabulary cannot tokenize.
fn check_model_file(path: &Path, params: &ModelParams) -> Result<Vec<u8>> {
    let layout = crate::gguf::read_layout(path, true)?;
    crate::model_check::check_metadata(&layout.meta, &params.kv_overrides, path)?;
    crate::model_check::check_extent(&layout, path)?;
    check_vocab(path, &layout.meta)
}

/// An explicit split list must be the parts of one model, in order: each file's
/// `split.no` is its index and `split.count` the list's length.
fn check_splits<P: AsRef<Path>>(paths: &[P]) -> Result<()> {
    if paths.len() == 1 {
        return Ok(());
    }
    // Missing or non-GGUF parts first: those errors name the file.
    for p in paths {
        check_gguf_header(p.as_ref())?;
    }
    for (i, p) in paths.iter().enumerate() {
        let p = p.as_ref();
        let layout = crate::gguf::read_layout(p, true)?;
        let get = |k: &str| {
            layout.meta.iter().find(|(key, _)| key == k).and_then(|(_, v)| match v {
                crate::GgufValue::U16(x) => Some(*x as u64),
                crate::GgufValue::U32(x) => Some(*x as u64),
                crate::GgufValue::I32(x) => Some(*x as u64),
                _ => None,
            })
        };
        let (no, count) = (get("split.no"), get("split.count"));
        if no != Some(i as u64) || count != Some(paths.len() as u64) {
            return Err(Error::InvalidParam(format!(
                "{} is not part {} of a {}-part split model (split.no = {no:?}, split.count = {count:?})",
                p.display(),
                i + 1,
                paths.len()
            )));
        }
        crate::model_check::check_extent(&layout, p)?;
    }
    Ok(())
}

struct ProgressState {
    f: ProgressFn,
    panic: Option<Box<dyn std::any::Any + Send>>,
    cancelled: bool,
}

extern "C" fn progress_trampoline(progress: f32, data: *mut c_void) -> bool {
    // SAFETY: `data` is the `&mut ProgressState` passed by `Model::load_raw`, alive and
    // not otherwise accessed for the duration of the load call.
    let st = unsafe { &mut *(data as *mut ProgressState) };
    let f = &mut st.f;
    let go_on = guard(&mut st.panic, false, || f(progress));
    if !go_on {
        st.cancelled = true;
    }
    go_on
}

impl Model {
    /// Loads a GGUF model. For split models (`...-00001-of-00003.gguf`) pass the first
    /// part: llama.cpp finds the others next to it.
    pub fn load(path: impl AsRef<Path>, params: ModelParams) -> Result<Model> {
        let path = path.as_ref();
        let missing_bytes = check_model_file(path, &params)?;
        let c = path_cstring(path)?;
        // SAFETY: `c` is a valid NUL-terminated path; raw params are valid for the call.
        Self::load_raw(path, params, missing_bytes, |raw| unsafe { sys::llama_model_load_from_file(c.as_ptr(), raw) })
    }

    /// Loads a model from an explicit list of split files, in order.
    pub fn load_splits<P: AsRef<Path>>(paths: &[P], params: ModelParams) -> Result<Model> {
        if paths.is_empty() {
            return Err(Error::InvalidParam("load_splits needs at least one path".into()));
        }
        let missing_bytes = check_model_file(paths[0].as_ref(), &params)?;
        check_splits(paths)?;
        let cs: Vec<CString> = paths.iter().map(|p| path_cstring(p.as_ref())).collect::<Result<_>>()?;
        let mut ptrs: Vec<*const c_char> = cs.iter().map(|c| c.as_ptr()).collect();
        let first = paths[0].as_ref();
        Self::load_raw(first, params, missing_bytes, |raw| {
            // SAFETY: `ptrs` holds `cs.len()` valid C strings alive for the call.
            unsafe { sys::llama_model_load_from_splits(ptrs.as_mut_ptr(), ptrs.len(), raw) }
        })
    }

    fn load_raw(
        path: &Path,
        mut params: ModelParams,
        missing_bytes: Vec<u8>,
        load: impl FnOnce(sys::llama_model_params) -> *mut sys::llama_model,
    ) -> Result<Model> {
        backend::init();
        if !params.rpc_servers.is_empty() {
            #[cfg(feature = "rpc")]
            for endpoint in params.rpc_servers.clone() {
                let devs = crate::rpc::add_server(&endpoint)?;
                // With an explicit device list, the RPC devices join it; otherwise
                // llama.cpp uses every registered device, these included.
                if !params.devices.is_empty() {
                    for d in devs {
                        if !params.devices.contains(&d.index) {
                            params.devices.push(d.index);
                        }
                    }
                }
            }
            #[cfg(not(feature = "rpc"))]
            return Err(Error::InvalidParam("rpc_servers needs llama-rs built with the `rpc` feature".into()));
        }
        let mut rp = params.to_raw()?;
        let mut state = params.progress.take().map(|f| ProgressState { f, panic: None, cancelled: false });
        if let Some(st) = state.as_mut() {
            rp.raw.progress_callback = Some(progress_trampoline);
            rp.raw.progress_callback_user_data = st as *mut ProgressState as *mut c_void;
        }
        let ptr = load(rp.raw);
        drop(rp);
        if let Some(st) = state {
            if let Some(p) = st.panic {
                if let Some(m) = NonNull::new(ptr) {
                    // SAFETY: freeing the model we just got; nothing else references it.
                    unsafe { sys::llama_model_free(m.as_ptr()) };
                }
                std::panic::resume_unwind(p);
            }
            if st.cancelled {
                if let Some(m) = NonNull::new(ptr) {
                    // SAFETY: as above.
                    unsafe { sys::llama_model_free(m.as_ptr()) };
                }
                return Err(Error::LoadCancelled);
            }
        }
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::ModelLoad { path: path.into() })?;
        // SAFETY: `ptr` is a valid model; the vocab lives as long as the model.
        let vocab = unsafe { sys::llama_model_get_vocab(ptr.as_ptr()) };
        let vocab =
            NonNull::new(vocab as *mut sys::llama_vocab).ok_or_else(|| Error::ModelLoad { path: path.into() })?;
        Ok(Model {
            inner: Arc::new(ModelInner {
                ptr,
                vocab,
                vocab_only: params.vocab_only,
                gpu_layers: params.gpu_layers,
                missing_bytes,
                path: path.into(),
                lock: Mutex::new(()),
            }),
        })
    }

    /// Raw pointer escape hatch for calling llama-sys directly. The pointer is valid
    /// while any clone of this `Model` is alive; do not free it.
    pub fn as_ptr(&self) -> *const sys::llama_model {
        self.inner.ptr.as_ptr()
    }

    pub(crate) fn as_mut_ptr(&self) -> *mut sys::llama_model {
        self.inner.ptr.as_ptr()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.inner.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file this model was loaded from (the first split for split models).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this model was loaded with `vocab_only` (tokenizer only, no weights).
    pub fn is_vocab_only(&self) -> bool {
        self.inner.vocab_only
    }

    /// The tokenizer.
    pub fn vocab(&self) -> Vocab<'_> {
        // SAFETY: the vocab pointer is valid for the model's lifetime, which the
        // returned borrow cannot outlive.
        unsafe { Vocab::from_raw(self.inner.vocab, &self.inner.missing_bytes) }
    }

    /// Number of tokens in the vocabulary.
    pub fn n_vocab(&self) -> i32 {
        self.vocab().n_tokens()
    }

    /// Training context length.
    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_ctx_train(self.as_ptr()) }.max(0) as u32
    }
    /// Embedding width.
    pub fn n_embd(&self) -> usize {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_embd(self.as_ptr()) }.max(0) as usize
    }
    /// Width of the embeddings a context outputs (may differ from `n_embd`).
    pub fn n_embd_out(&self) -> usize {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_embd_out(self.as_ptr()) }.max(0) as usize
    }
    /// Whether the output layer (the logits) is computed on an accelerator (GPU or RPC
    /// server) rather than the CPU. llama.cpp places it on the last device whenever any
    /// layer is offloaded.
    pub fn output_on_device(&self) -> bool {
        self.output_backend().is_some()
    }
    /// The backend ("CUDA", "Vulkan", "ROCm", "RPC", ...) that computes the logits, `None`
    /// for the CPU.
    pub fn output_backend(&self) -> Option<String> {
        if self.inner.gpu_layers == GpuLayers::Count(0) {
            return None;
        }
        // SAFETY: const queries on a valid model (the shim catches exceptions and
        // range-checks the index); the name is a static string of the backend registry.
        unsafe {
            let n = sys::llama_rs_model_n_devices(self.as_ptr());
            let name = sys::llama_rs_model_device_backend(self.as_ptr(), n - 1);
            (n > 0 && !name.is_null()).then(|| std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned())
        }
    }
    /// Whether every layer and the output run on an accelerator, so that llama_decode
    /// queues work rather than computing it in place.
    pub(crate) fn fully_offloaded(&self) -> bool {
        let all = match self.inner.gpu_layers {
            GpuLayers::All => true,
            GpuLayers::Count(n) => n as u64 > self.n_layer() as u64,
        };
        all && self.output_on_device()
    }
    /// Number of layers.
    pub fn n_layer(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_layer(self.as_ptr()) }.max(0) as u32
    }
    /// Number of attention heads.
    pub fn n_head(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_head(self.as_ptr()) }.max(0) as u32
    }
    /// Number of KV heads.
    pub fn n_head_kv(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_head_kv(self.as_ptr()) }.max(0) as u32
    }
    /// Sliding-window size (0 = none).
    pub fn n_swa(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_swa(self.as_ptr()) }.max(0) as u32
    }
    /// Number of parameters.
    pub fn n_params(&self) -> u64 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_params(self.as_ptr()) }
    }
    /// Total size of all tensors in bytes.
    pub fn size(&self) -> u64 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_size(self.as_ptr()) }
    }
    /// Whether the model has an encoder (T5-style); use `Context::encode` first.
    pub fn has_encoder(&self) -> bool {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_has_encoder(self.as_ptr()) }
    }
    /// Whether the model has a decoder.
    pub fn has_decoder(&self) -> bool {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_has_decoder(self.as_ptr()) }
    }
    /// Recurrent models (Mamba, RWKV) keep a state instead of a KV cache.
    pub fn is_recurrent(&self) -> bool {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_is_recurrent(self.as_ptr()) }
    }

    /// A one-line description, e.g. `gemma3 270M Q4_K - Medium`.
    pub fn description(&self) -> String {
        // SAFETY: the closure writes at most `len` bytes into `buf` and returns the full length.
        read_string(|buf, len| unsafe { sys::llama_model_desc(self.as_ptr(), buf, len) }).unwrap_or_default()
    }

    /// `general.architecture`, e.g. `gemma3`.
    pub fn architecture(&self) -> String {
        self.meta("general.architecture").unwrap_or_default()
    }

    /// One metadata value as a string.
    pub fn meta(&self, key: &str) -> Option<String> {
        let k = CString::new(key).ok()?;
        // SAFETY: `k` is a valid C string; writes at most `len` bytes into `buf`.
        read_string(|buf, len| unsafe { sys::llama_model_meta_val_str(self.as_ptr(), k.as_ptr(), buf, len) })
    }

    /// All metadata as strings (arrays are summarised by llama.cpp).
    pub fn metadata(&self) -> BTreeMap<String, String> {
        // SAFETY: const query on a valid model.
        let n = unsafe { sys::llama_model_meta_count(self.as_ptr()) };
        (0..n)
            .filter_map(|i| {
                // SAFETY: 0 <= i < meta_count; each call writes at most `len` bytes.
                let k = read_string(|b, l| unsafe { sys::llama_model_meta_key_by_index(self.as_ptr(), i, b, l) })?;
                // SAFETY: as above.
                let v = read_string(|b, l| unsafe { sys::llama_model_meta_val_str_by_index(self.as_ptr(), i, b, l) })?;
                Some((k, v))
            })
            .collect()
    }

    /// The default chat template (`tokenizer.chat_template`), or a named one.
    pub fn chat_template(&self, name: Option<&str>) -> Option<String> {
        let c = name.map(CString::new).transpose().ok()?;
        // SAFETY: name is NULL or a valid C string; the result is NULL or a C string owned
        // by the model.
        let p = unsafe {
            sys::llama_model_chat_template(self.as_ptr(), c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null NUL-terminated string valid while the model lives.
        Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// Names of the extra chat templates (`tokenizer.chat_template.<name>`).
    pub fn chat_template_names(&self) -> Vec<String> {
        self.metadata().keys().filter_map(|k| k.strip_prefix("tokenizer.chat_template.").map(str::to_owned)).collect()
    }
}

pub(crate) fn path_cstring(p: &Path) -> Result<CString> {
    // The path's own bytes: a lossy conversion would hand llama.cpp another file's name
    // (`m\xff.gguf` would become `m\u{FFFD}.gguf`).
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = p
        .to_str()
        .ok_or_else(|| Error::InvalidParam(format!("path {} is not valid Unicode", p.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| Error::Nul(p.display().to_string()))
}

/// Calls a llama.cpp "write into buf, return needed length" function, growing once.
pub(crate) fn read_string(mut f: impl FnMut(*mut c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = f(buf.as_mut_ptr() as *mut c_char, buf.len());
    if n < 0 {
        return None;
    }
    let n = n as usize;
    if n >= buf.len() {
        buf = vec![0u8; n + 1];
        let m = f(buf.as_mut_ptr() as *mut c_char, buf.len());
        if m < 0 {
            return None;
        }
    }
    buf.truncate(n);
    Some(String::from_utf8_lossy(&buf).into_owned())
}
