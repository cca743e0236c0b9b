//! [`Model`]: loaded weights + vocabulary, shared by any number of contexts.
//!
//! `params` holds what a load is configured with; `check` validates a file and its
//! metadata (with overrides applied) before llama.cpp sees them.

pub(crate) mod check;
mod params;

pub use params::{BufferTarget, GpuLayers, KvOverride, LoadMode, ModelParams, SplitMode};

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use llama_sys as sys;

use crate::backend::{self, guard};
use crate::error::{Error, Result};
use crate::ffi::{path_cstring, read_string};
use crate::vocab::Vocab;
use check::{check_model_file, check_splits};
use params::ProgressFn;

/// The owner of a `llama_model*`.
struct ModelInner {
    ptr: NonNull<sys::llama_model>,
    vocab: NonNull<sys::llama_vocab>,
    vocab_only: bool,
    no_repack: bool,
    /// Loaded with its MTP layers (`ModelParams::mtp`).
    mtp_loaded: bool,
    gpu_layers: GpuLayers,
    /// See `check_vocab`.
    missing_bytes: Vec<u8>,
    path: PathBuf,
    /// `file_identity` of `path`, computed on first use (`Context::state_key`).
    content_id: std::sync::OnceLock<u64>,
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
/// let model = Model::load(llama_testkit::default_model_path()?, ModelParams::default())?;
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
            return Err(Error::invalid("", "load_splits needs at least one path".into()));
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
        backend::check_cpu_backend()?;
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
            return Err(Error::invalid("", "rpc_servers needs llama-rs built with the `rpc` feature".into()));
        }
        if params.load_mode == LoadMode::Auto {
            params.load_mode = auto_load_mode(path);
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
                no_repack: params.no_repack,
                mtp_loaded: params.mtp,
                gpu_layers: params.gpu_layers,
                missing_bytes,
                path: path.into(),
                content_id: std::sync::OnceLock::new(),
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

    /// What identifies the model file's contents (`file_identity`), for keys of saved
    /// KV state: two fine-tunes of one base share every shape, not their bytes.
    pub(crate) fn content_id(&self) -> u64 {
        *self.inner.content_id.get_or_init(|| file_identity(&self.inner.path))
    }

    /// The file this model was loaded from (the first split for split models).
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this model was loaded with `no_repack` (CPU weights in their file layout,
    /// so results do not depend on how many tokens a batch holds).
    pub fn no_repack(&self) -> bool {
        self.inner.no_repack
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
    /// Width of the input embeddings (what an embedding batch and a projector give; equal
    /// to `n_embd` except for models with extra input features).
    pub fn n_embd_inp(&self) -> usize {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_embd_inp(self.as_ptr()) }.max(0) as usize
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
    /// Number of multi-token-prediction (NextN) layers in the file (0: none), whether or
    /// not they were loaded ([`ModelParams::mtp`](crate::ModelParams::mtp)).
    pub fn n_mtp_layers(&self) -> u32 {
        // SAFETY: const query on a valid model.
        unsafe { sys::llama_model_n_layer_nextn(self.as_ptr()) }.max(0) as u32
    }
    /// Whether the MTP layers were loaded (`ModelParams::mtp` and the file has them).
    pub fn mtp_loaded(&self) -> bool {
        self.inner.mtp_loaded && self.n_mtp_layers() > 0
    }
    /// Number of MoE experts per layer (`<arch>.expert_count`; 0 for a dense model).
    pub fn n_expert(&self) -> u32 {
        self.meta(&format!("{}.expert_count", self.architecture())).and_then(|v| v.parse().ok()).unwrap_or(0)
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

/// What [`LoadMode::Auto`] means: read the weights into memory when the model takes at
/// most half of the memory available, else map the file (the only way to run a model
/// larger than RAM). Measured on this project's CPU machine (docs/BENCHMARKS.md,
/// `load-modes`): reading is faster (1.5B Q4_K: 1.8 s vs 3.2 s warm, 2.5 s vs 4.1 s
/// cold), holds less memory (1.0 vs 1.7 GiB: repacked CPU weights are copies, and the
/// mapped pages stay resident besides them), and a file replaced or truncated under a
/// running process cannot SIGBUS it. Where the available memory is unknown (not
/// Linux), llama.cpp decides.
fn auto_load_mode(path: &Path) -> LoadMode {
    let available = std::fs::read_to_string("/proc/meminfo").ok().and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    });
    let Some(available) = available else { return LoadMode::Auto };
    let size = model_bytes(path);
    if size <= available / 2 {
        LoadMode::None
    } else {
        LoadMode::Mmap
    }
}

/// Bytes of a model file, all its splits counted (`name-00001-of-00003.gguf`).
fn model_bytes(path: &Path) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let split = name.strip_suffix(".gguf").and_then(|stem| {
        let (head, n) = stem.rsplit_once("-of-")?;
        let (prefix, _) = head.rsplit_once('-')?;
        Some((prefix.to_string(), n.to_string()))
    });
    match split {
        Some((prefix, n)) if n.parse::<u32>().is_ok() => {
            let count: u32 = n.parse().unwrap_or(1);
            (1..=count)
                .map(|i| len(&path.with_file_name(format!("{prefix}-{i:0width$}-of-{n}.gguf", width = n.len()))))
                .sum()
        }
        _ => len(path),
    }
}

/// A hash of a file's size, its first MiB (a GGUF's metadata and tensor table) and 64
/// evenly spaced 4 KiB samples of the rest: cheap for a file of many GiB, and different
/// for files that differ in their metadata or in any tensor's values (a fine-tune changes
/// nearly every block). 0 when the file cannot be read.
pub(crate) fn file_identity(path: &Path) -> u64 {
    use std::os::unix::fs::FileExt;
    let Ok(f) = std::fs::File::open(path) else { return 0 };
    let len = f.metadata().map_or(0, |m| m.len());
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&len.to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    let n = f.read_at(&mut buf, 0).unwrap_or(0);
    h.update(&buf[..n]);
    let mut sample = [0u8; 4096];
    for i in 0..64u64 {
        let off = (1 << 20) + len.saturating_sub(1 << 20) / 64 * i;
        let n = f.read_at(&mut sample, off).unwrap_or(0);
        h.update(&sample[..n]);
    }
    h.digest()
}
