//! [`Context`]: one inference state (KV cache, outputs) over a [`Model`].

use std::ffi::c_void;
use std::ops::{Bound, RangeBounds};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::error::{compute_error, Error, Result};
use crate::model::Model;
use crate::sampling::{DeviceSampler, RawSampler};
use crate::token::{Pos, SeqId, Token};

/// Flash attention: let llama.cpp decide, or force it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FlashAttn {
    #[default]
    Auto,
    On,
    Off,
}

/// The element types llama.cpp accepts for the K and V caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KvType {
    F32,
    #[default]
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
    Iq4Nl,
    Q5_0,
    Q5_1,
}

impl KvType {
    pub(crate) fn raw(self) -> sys::ggml_type {
        match self {
            KvType::F32 => sys::GGML_TYPE_F32,
            KvType::F16 => sys::GGML_TYPE_F16,
            KvType::Bf16 => sys::GGML_TYPE_BF16,
            KvType::Q8_0 => sys::GGML_TYPE_Q8_0,
            KvType::Q4_0 => sys::GGML_TYPE_Q4_0,
            KvType::Q4_1 => sys::GGML_TYPE_Q4_1,
            KvType::Iq4Nl => sys::GGML_TYPE_IQ4_NL,
            KvType::Q5_0 => sys::GGML_TYPE_Q5_0,
            KvType::Q5_1 => sys::GGML_TYPE_Q5_1,
        }
    }
    /// Block-quantized types (need flash attention when used for V).
    pub fn is_quantized(self) -> bool {
        !matches!(self, KvType::F32 | KvType::F16 | KvType::Bf16)
    }
}

/// How per-token embeddings are pooled per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Pooling {
    /// The model's default.
    #[default]
    Unspecified,
    None,
    Mean,
    Cls,
    Last,
    /// Reranking head.
    Rank,
}

/// Attention type for embedding contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AttentionType {
    #[default]
    Unspecified,
    Causal,
    NonCausal,
}

/// RoPE scaling override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RopeScaling {
    #[default]
    Unspecified,
    None,
    Linear,
    Yarn,
    LongRope,
}

/// Everything `llama_context_params` offers, as plain data with builder methods.
/// Zero / `None` means "llama.cpp's default" where noted.
///
/// ```
/// use llama_rs::{ContextParams, FlashAttn, KvType};
/// let p = ContextParams::default()
///     .n_ctx(4096)
///     .n_batch(512)
///     .n_seq_max(4)
///     .flash_attn(FlashAttn::On)
///     .kv_types(KvType::Q8_0, KvType::Q8_0);
/// assert_eq!(p.n_ctx, 4096);
/// let json = serde_json::to_string(&p).unwrap();
/// assert!(json.contains("\"Q8_0\""));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextParams {
    /// Context length (0 = the model's training length).
    pub n_ctx: u32,
    /// Most tokens one `decode` call accepts.
    pub n_batch: u32,
    /// Physical micro-batch size (must be <= n_batch).
    pub n_ubatch: u32,
    /// Number of distinct sequences.
    pub n_seq_max: u32,
    /// Threads for generation (0 = all physical cores as llama.cpp picks).
    pub n_threads: u32,
    /// Threads for prompt processing (0 = same as llama.cpp's default).
    pub n_threads_batch: u32,
    pub flash_attn: FlashAttn,
    pub type_k: KvType,
    pub type_v: KvType,
    pub offload_kqv: bool,
    pub op_offload: bool,
    /// Full-size SWA cache (needed to roll back / reuse prefixes beyond the window).
    pub swa_full: bool,
    /// One KV buffer shared by all sequences.
    pub kv_unified: bool,
    /// Compute embeddings (and pool them per `pooling`). Pooled embedding contexts with
    /// several sequences always use a unified KV cache (see `Context::new`).
    pub embeddings: bool,
    pub pooling: Pooling,
    pub attention: AttentionType,
    pub rope_scaling: RopeScaling,
    /// 0 = from model.
    pub rope_freq_base: f32,
    /// 0 = from model.
    pub rope_freq_scale: f32,
    /// Negative = from model.
    pub yarn_ext_factor: f32,
    pub yarn_attn_factor: f32,
    pub yarn_beta_fast: f32,
    pub yarn_beta_slow: f32,
    pub yarn_orig_ctx: u32,
    /// Skip perf counters.
    pub no_perf: bool,
}

impl Default for ContextParams {
    fn default() -> Self {
        // SAFETY: returns a plain struct by value; no preconditions.
        let d = unsafe { sys::llama_context_default_params() };
        ContextParams {
            n_ctx: 4096,
            n_batch: d.n_batch,
            n_ubatch: d.n_ubatch,
            n_seq_max: 1,
            n_threads: 0,
            n_threads_batch: 0,
            flash_attn: FlashAttn::Auto,
            type_k: KvType::F16,
            type_v: KvType::F16,
            offload_kqv: d.offload_kqv,
            op_offload: d.op_offload,
            // As llama.cpp's tools (llama-server, llama-cli) default: a sliding-window
            // cache only as large as the window needs, not n_ctx (Gemma 3 at 4k context:
            // ~38 MiB less). Set it for prefix reuse beyond the window.
            swa_full: false,
            kv_unified: d.kv_unified,
            embeddings: false,
            pooling: Pooling::Unspecified,
            attention: AttentionType::Unspecified,
            rope_scaling: RopeScaling::Unspecified,
            rope_freq_base: d.rope_freq_base,
            rope_freq_scale: d.rope_freq_scale,
            yarn_ext_factor: d.yarn_ext_factor,
            yarn_attn_factor: d.yarn_attn_factor,
            yarn_beta_fast: d.yarn_beta_fast,
            yarn_beta_slow: d.yarn_beta_slow,
            yarn_orig_ctx: d.yarn_orig_ctx,
            no_perf: false,
        }
    }
}

macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets `", stringify!($name), "`.")]
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            }
        )*
    };
}

impl ContextParams {
    setters! {
        n_ctx: u32, n_batch: u32, n_ubatch: u32, n_seq_max: u32, n_threads: u32,
        n_threads_batch: u32, flash_attn: FlashAttn, offload_kqv: bool, op_offload: bool,
        swa_full: bool, kv_unified: bool, embeddings: bool, pooling: Pooling,
        attention: AttentionType, rope_scaling: RopeScaling, rope_freq_base: f32,
        rope_freq_scale: f32, yarn_ext_factor: f32, yarn_attn_factor: f32,
        yarn_beta_fast: f32, yarn_beta_slow: f32, yarn_orig_ctx: u32, no_perf: bool,
    }

    /// K and V cache element types.
    pub fn kv_types(mut self, k: KvType, v: KvType) -> Self {
        self.type_k = k;
        self.type_v = v;
        self
    }

    /// Checks the combinations llama.cpp would reject or abort on.
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidParam(m));
        if self.n_batch == 0 || self.n_ubatch == 0 {
            return bad("n_batch and n_ubatch must be > 0".into());
        }
        if self.n_ubatch > self.n_batch {
            return bad(format!("n_ubatch ({}) must be <= n_batch ({})", self.n_ubatch, self.n_batch));
        }
        // SAFETY: a pure query.
        let max_seq = unsafe { sys::llama_max_parallel_sequences() } as u32;
        if self.n_seq_max == 0 || self.n_seq_max > max_seq {
            return bad(format!("n_seq_max must be in 1..={max_seq}, got {}", self.n_seq_max));
        }
        if self.n_seq_max > self.n_batch {
            // llama.cpp reserves one output row per sequence inside an n_batch-row
            // buffer and asserts (llama-context.cpp output_reserve) when it cannot.
            return bad(format!("n_seq_max ({}) must be <= n_batch ({})", self.n_seq_max, self.n_batch));
        }
        if self.type_v.is_quantized() && self.flash_attn == FlashAttn::Off {
            return bad(format!("quantized V cache ({:?}) requires flash attention (Auto or On)", self.type_v));
        }
        // ggml's thread pool holds at most GGML_MAX_N_THREADS; creating more threads
        // than the system allows throws inside ggml (an exception across the C API).
        let max = sys::GGML_MAX_N_THREADS;
        if self.n_threads > max || self.n_threads_batch > max {
            return bad(format!(
                "n_threads ({}) and n_threads_batch ({}) must be <= {max} (0 = all cores)",
                self.n_threads, self.n_threads_batch
            ));
        }
        if self.n_ctx != 0 && self.n_ctx < self.n_seq_max {
            return bad(format!("n_ctx ({}) leaves no room for {} sequences", self.n_ctx, self.n_seq_max));
        }
        Ok(())
    }

    fn to_raw(&self) -> sys::llama_context_params {
        // SAFETY: returns a plain struct by value; no preconditions.
        let mut r = unsafe { sys::llama_context_default_params() };
        r.n_ctx = self.n_ctx;
        r.n_batch = self.n_batch;
        r.n_ubatch = self.n_ubatch;
        r.n_seq_max = self.n_seq_max;
        let threads = default_threads();
        r.n_threads = if self.n_threads == 0 { threads } else { self.n_threads as i32 };
        r.n_threads_batch = if self.n_threads_batch == 0 { r.n_threads } else { self.n_threads_batch as i32 };
        r.flash_attn_type = match self.flash_attn {
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        r.type_k = self.type_k.raw();
        r.type_v = self.type_v.raw();
        r.offload_kqv = self.offload_kqv;
        r.op_offload = self.op_offload;
        r.swa_full = self.swa_full;
        r.kv_unified = self.kv_unified;
        r.embeddings = self.embeddings;
        r.pooling_type = match self.pooling {
            Pooling::Unspecified => sys::LLAMA_POOLING_TYPE_UNSPECIFIED,
            Pooling::None => sys::LLAMA_POOLING_TYPE_NONE,
            Pooling::Mean => sys::LLAMA_POOLING_TYPE_MEAN,
            Pooling::Cls => sys::LLAMA_POOLING_TYPE_CLS,
            Pooling::Last => sys::LLAMA_POOLING_TYPE_LAST,
            Pooling::Rank => sys::LLAMA_POOLING_TYPE_RANK,
        };
        r.attention_type = match self.attention {
            AttentionType::Unspecified => sys::LLAMA_ATTENTION_TYPE_UNSPECIFIED,
            AttentionType::Causal => sys::LLAMA_ATTENTION_TYPE_CAUSAL,
            AttentionType::NonCausal => sys::LLAMA_ATTENTION_TYPE_NON_CAUSAL,
        };
        r.rope_scaling_type = match self.rope_scaling {
            RopeScaling::Unspecified => sys::LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
            RopeScaling::None => sys::LLAMA_ROPE_SCALING_TYPE_NONE,
            RopeScaling::Linear => sys::LLAMA_ROPE_SCALING_TYPE_LINEAR,
            RopeScaling::Yarn => sys::LLAMA_ROPE_SCALING_TYPE_YARN,
            RopeScaling::LongRope => sys::LLAMA_ROPE_SCALING_TYPE_LONGROPE,
        };
        r.rope_freq_base = self.rope_freq_base;
        r.rope_freq_scale = self.rope_freq_scale;
        r.yarn_ext_factor = self.yarn_ext_factor;
        r.yarn_attn_factor = self.yarn_attn_factor;
        r.yarn_beta_fast = self.yarn_beta_fast;
        r.yarn_beta_slow = self.yarn_beta_slow;
        r.yarn_orig_ctx = self.yarn_orig_ctx;
        r.no_perf = self.no_perf;
        r
    }
}

/// Physical cores, as llama.cpp's tools pick by default (at most 4 on hosts where
/// more threads stop helping generation is left to the caller).
fn default_threads() -> i32 {
    std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(4)
}

/// Stops a running (or the next) `decode` from any thread.
///
/// ```
/// # let model = llama_rs::Model::load(llama_rs::default_model_path()?, Default::default())?;
/// let mut ctx = model.context(Default::default())?;
/// let abort = ctx.abort_handle();
/// abort.abort(); // e.g. from another thread; the next decode observes it
/// let mut batch = llama_rs::Batch::new(8, 1)?;
/// batch.add(llama_rs::Token(2), 0, &[0], true)?;
/// assert!(matches!(ctx.decode(&mut batch), Err(llama_rs::Error::Aborted)));
/// ctx.decode(&mut batch)?; // the request is consumed
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct AbortHandle(Arc<AtomicBool>);

impl AbortHandle {
    /// Requests the abort. The decode that observes it returns [`Error::Aborted`] and
    /// clears the request.
    pub fn abort(&self) {
        self.0.store(true, Ordering::Release);
    }
}

extern "C" fn abort_trampoline(data: *mut c_void) -> bool {
    // SAFETY: `data` points to the AtomicBool inside the context's `Arc`, which the
    // context keeps alive for as long as the callback is installed. Loading an atomic
    // cannot panic.
    unsafe { &*(data as *const AtomicBool) }.load(Ordering::Acquire)
}

/// Timing counters of a context.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Perf {
    pub load_ms: f64,
    /// Prompt tokens processed (batches of more than one token).
    pub prompt_tokens: i32,
    pub prompt_ms: f64,
    /// Tokens generated one at a time.
    pub eval_tokens: i32,
    pub eval_ms: f64,
    pub reused: i32,
}

/// The owner of a `llama_context*`. Holds a [`Model`] clone, so it cannot outlive the
/// weights. `Send` (move it to a worker thread), not `Sync` (one decode at a time).
///
/// ```
/// use llama_rs::{Batch, ContextParams, Model, ModelParams};
/// let model = Model::load(llama_rs::default_model_path()?, ModelParams::default())?;
/// let mut ctx = model.context(ContextParams::default().n_ctx(2048))?;
/// let tokens = model.vocab().tokenize("The capital of France is", true, false)?;
/// let mut batch = Batch::new(512, 1)?;
/// batch.add_sequence(&tokens, 0, 0, true)?;
/// ctx.decode(&mut batch)?;
/// let logits = ctx.logits(tokens.len() - 1)?;
/// assert_eq!(logits.len(), model.n_vocab() as usize);
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Context {
    ptr: NonNull<sys::llama_context>,
    model: Model,
    params: ContextParams,
    n_ctx: u32,
    n_vocab: i32,
    causal: bool,
    abort: Arc<AtomicBool>,
    /// Output of each entry of the last successful batch.
    outputs: Vec<Output>,
    /// Sampler chains llama.cpp runs in the graph, per sequence. llama.cpp keeps raw
    /// pointers to them, so they are owned here and freed after the context.
    device_samplers: Vec<(SeqId, DeviceSampler, RawSampler)>,
    /// Scratch for decode's position check: next expected position per sequence.
    next_pos: Vec<Pos>,
    /// LoRA adapters applied now: kept alive while llama.cpp may use them.
    pub(crate) applied_loras: Vec<crate::adapter::LoraAdapter>,
}

// SAFETY: (contract) a llama_context is not tied to the thread that created it;
// llama.cpp requires only that calls on one context do not overlap. Every call that
// computes or mutates takes `&mut self`, and `Context` is not `Sync`, so `&self`
// queries cannot race either. The model it uses is kept alive by the `Model` clone.
unsafe impl Send for Context {}

/// What a batch entry produced in the last decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    None,
    /// Logits (and embeddings) on the host.
    Host,
    /// Only the device sampler's result; no logits were copied back.
    Device(DeviceSampler),
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from llama_init_from_model and is freed once, before the
        // `model` field (declared after it) drops its reference.
        unsafe { sys::llama_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("n_ctx", &self.n_ctx).field("params", &self.params).finish()
    }
}

impl Model {
    /// Creates an inference context. Shorthand for [`Context::new`].
    pub fn context(&self, params: ContextParams) -> Result<Context> {
        Context::new(self, params)
    }
}

/// llama.cpp reserves its worst-case graph with `n_tokens / n_seq_max` tokens per
/// sequence but `n_tokens` outputs; with mean or rank pooling the pooling matrix then
/// does not fit (`GGML_ASSERT(ggml_can_mul_mat(a, b))` at context creation) unless the
/// micro-batch divides evenly among the sequences.
fn check_pooled_reserve(model: &Model, p: &ContextParams) -> Result<()> {
    let pooled = p.embeddings && matches!(p.pooling, Pooling::Mean | Pooling::Rank | Pooling::Unspecified);
    if !pooled || p.n_seq_max <= 1 {
        return Ok(());
    }
    let n_ctx = if p.n_ctx == 0 { model.n_ctx_train() } else { p.n_ctx };
    // What llama.cpp reserves with: the micro-batch, bounded by the context (causal
    // models clamp n_batch to n_ctx; others see the padded n_ctx).
    let causal = p.n_ubatch.min(p.n_batch).min(n_ctx);
    let non_causal = p.n_ubatch.min(n_ctx.next_multiple_of(256));
    for n_tokens in [causal, non_causal] {
        if n_tokens % p.n_seq_max != 0 {
            return Err(Error::InvalidParam(format!(
                "with pooled embeddings, n_ubatch ({n_tokens} after llama.cpp's clamping) must be a multiple of \
                 n_seq_max ({})",
                p.n_seq_max
            )));
        }
    }
    Ok(())
}

fn range_to_c(r: impl RangeBounds<Pos>) -> (Pos, Pos) {
    let p0 = match r.start_bound() {
        Bound::Included(&p) => p,
        Bound::Excluded(&p) => p.saturating_add(1),
        Bound::Unbounded => -1,
    };
    let p1 = match r.end_bound() {
        Bound::Included(&p) => p.saturating_add(1),
        Bound::Excluded(&p) => p,
        Bound::Unbounded => -1,
    };
    (p0, p1)
}

impl Context {
    /// Creates a context after checking `params` against what llama.cpp would reject.
    pub fn new(model: &Model, params: ContextParams) -> Result<Context> {
        if model.is_vocab_only() {
            return Err(Error::VocabOnly);
        }
        params.validate()?;
        check_pooled_reserve(model, &params)?;
        let mut params = params;
        if params.embeddings && params.pooling != Pooling::None && params.n_seq_max > 1 {
            // With one KV stream per sequence llama.cpp splits a batch into equal-length
            // micro-batches, and pooling then sees only the last piece of a longer
            // sequence (wrong embeddings). A unified cache keeps sequences whole.
            params.kv_unified = true;
        }
        let raw = params.to_raw();
        let ptr = {
            let _g = model.lock();
            // SAFETY: the model is valid and loaded with weights; params are validated.
            unsafe { sys::llama_init_from_model(model.as_mut_ptr(), raw) }
        };
        let ptr = NonNull::new(ptr).ok_or(Error::ContextCreate)?;
        let abort = Arc::new(AtomicBool::new(false));
        // SAFETY: valid context; the callback data (the AtomicBool in `abort`) lives as
        // long as the context because the context owns the Arc.
        unsafe {
            sys::llama_set_abort_callback(ptr.as_ptr(), Some(abort_trampoline), Arc::as_ptr(&abort) as *mut c_void)
        };
        // SAFETY: const queries on a valid context.
        let (n_ctx, causal) = unsafe { (sys::llama_n_ctx(ptr.as_ptr()), sys::llama_get_causal_attn(ptr.as_ptr())) };
        // llama.cpp may change what was asked (n_batch is clamped to n_ctx, n_ctx is
        // padded): every later check and chunking loop must use what it applied.
        // SAFETY: const queries on a valid context.
        unsafe {
            params.n_batch = sys::llama_n_batch(ptr.as_ptr());
            params.n_ubatch = sys::llama_n_ubatch(ptr.as_ptr());
            params.n_seq_max = sys::llama_n_seq_max(ptr.as_ptr());
        }
        Ok(Context {
            ptr,
            model: model.clone(),
            n_ctx,
            n_vocab: model.n_vocab(),
            causal,
            abort,
            outputs: Vec::new(),
            device_samplers: Vec::new(),
            next_pos: vec![0; params.n_seq_max as usize],
            applied_loras: Vec::new(),
            params,
        })
    }

    /// Raw pointer escape hatch. Valid while `self` lives; do not free it.
    pub fn as_ptr(&self) -> *mut sys::llama_context {
        self.ptr.as_ptr()
    }
    /// The model this context runs.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// The parameters it was created with, with `n_batch`, `n_ubatch` and `n_seq_max`
    /// as llama.cpp applied them (it clamps `n_batch` to `n_ctx`, for one).
    pub fn params(&self) -> &ContextParams {
        &self.params
    }
    /// Actual context length (llama.cpp may round up).
    pub fn n_ctx(&self) -> u32 {
        self.n_ctx
    }
    /// Context length available to each sequence.
    pub fn n_ctx_seq(&self) -> u32 {
        // SAFETY: const query on a valid context.
        unsafe { sys::llama_n_ctx_seq(self.ptr.as_ptr()) }
    }
    /// Most tokens one `decode` accepts (as applied: at most `n_ctx`).
    pub fn n_batch(&self) -> u32 {
        self.params.n_batch
    }
    pub fn n_ubatch(&self) -> u32 {
        self.params.n_ubatch
    }
    pub fn n_seq_max(&self) -> u32 {
        self.params.n_seq_max
    }

    /// A handle that aborts a running decode from another thread (CPU backends).
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.abort.clone())
    }

    /// Withdraws an abort request that no decode has consumed yet.
    pub fn clear_abort(&mut self) {
        self.abort.store(false, Ordering::Release);
    }

    /// Sets generation / batch thread counts.
    pub fn set_threads(&mut self, n_threads: u32, n_threads_batch: u32) -> Result<()> {
        let max = sys::GGML_MAX_N_THREADS;
        if n_threads == 0 || n_threads_batch == 0 || n_threads > max || n_threads_batch > max {
            return Err(Error::InvalidParam(format!("thread counts must be in 1..={max}")));
        }
        // SAFETY: valid context, positive counts.
        unsafe { sys::llama_set_n_threads(self.ptr.as_ptr(), n_threads as i32, n_threads_batch as i32) };
        Ok(())
    }

    pub(crate) fn check_seq(&self, seq_id: SeqId) -> Result<()> {
        if seq_id < 0 || seq_id as u32 >= self.params.n_seq_max {
            return Err(Error::InvalidSeqId { seq_id, n_seq_max: self.params.n_seq_max });
        }
        Ok(())
    }

    /// Everything llama.cpp checks (some by aborting), checked here first.
    fn validate_batch(&mut self, batch: &Batch, encoder: bool) -> Result<()> {
        let n = batch.len();
        if n == 0 {
            return Err(Error::EmptyBatch);
        }
        if n > self.params.n_batch as usize {
            return Err(Error::BatchTooLarge { n_tokens: n, n_batch: self.params.n_batch });
        }
        if (encoder || !self.causal) && n > self.params.n_ubatch as usize {
            return Err(Error::BatchMismatch(format!(
                "{} tokens with non-causal attention need n_ubatch >= n_tokens (n_ubatch = {})",
                n, self.params.n_ubatch
            )));
        }
        if batch.n_embd() != 0 && batch.n_embd() != self.model.n_embd() {
            return Err(Error::BatchMismatch(format!(
                "embedding batch of width {} for a model with n_embd {}",
                batch.n_embd(),
                self.model.n_embd()
            )));
        }
        for &t in batch.tokens() {
            if t.0 < 0 || t.0 >= self.n_vocab {
                return Err(Error::InvalidToken { token: t.0, n_vocab: self.n_vocab });
            }
        }
        // Positions: each sequence continues where its memory ends, one step at a time.
        const UNSEEN: Pos = Pos::MIN;
        self.next_pos.iter_mut().for_each(|p| *p = UNSEEN);
        let pos = batch.positions();
        for (i, &p) in pos.iter().enumerate() {
            for &s in batch.seq_ids(i) {
                self.check_seq(s)?;
                let seen = self.next_pos[s as usize];
                let expected = if seen != UNSEEN {
                    seen
                } else if encoder {
                    p // the encoder does not use the KV cache
                } else {
                    // An empty sequence may start anywhere; otherwise continue at max + 1.
                    self.seq_pos_max(s).map_or(p, |last| last.saturating_add(1))
                };
                if p != expected {
                    return Err(Error::InvalidPosition { seq_id: s, expected, got: p });
                }
                // The last position has no successor (and `+ 1` would wrap to UNSEEN).
                self.next_pos[s as usize] = p
                    .checked_add(1)
                    .ok_or_else(|| Error::InvalidParam(format!("sequence {s}: position {p} is out of range")))?;
            }
            let seqs = batch.seq_ids(i);
            if batch.is_output(i) && seqs.len() > 1 && seqs.iter().any(|&s| self.device_sampler(s).is_some()) {
                return Err(Error::BatchMismatch(format!(
                    "entry {i} is an output shared by {} sequences, one of which samples on the device",
                    seqs.len()
                )));
            }
        }
        Ok(())
    }

    /// Runs the decoder on a batch, filling the KV cache and computing outputs for the
    /// entries marked `output`. Checks token ids, sequence ids, positions and sizes
    /// first. On `ContextFull` the memory is unchanged; on `Aborted` the micro-batches
    /// already processed stay in memory (see `seq_pos_max`).
    pub fn decode(&mut self, batch: &mut Batch) -> Result<()> {
        self.validate_batch(batch, false)?;
        self.outputs.clear();
        let raw = batch.as_raw();
        // SAFETY: the batch view points into `batch`'s buffers, exclusively borrowed
        // for the call; every precondition llama.cpp asserts on is checked above.
        let code = unsafe { sys::llama_decode(self.ptr.as_ptr(), raw) };
        self.finish_compute("llama_decode", code, batch)
    }

    /// Runs the encoder (encoder-decoder models, or non-causal embedding models).
    pub fn encode(&mut self, batch: &mut Batch) -> Result<()> {
        // llama_encode on a decoder-only model dereferences state it never built (SIGSEGV).
        let non_causal_embeddings = self.params.embeddings && !self.causal;
        if !self.model.has_encoder() && !non_causal_embeddings {
            return Err(Error::InvalidParam(
                "encode needs an encoder-decoder model or a non-causal embedding context; use decode".into(),
            ));
        }
        self.validate_batch(batch, true)?;
        self.outputs.clear();
        let raw = batch.as_raw();
        // SAFETY: as in `decode`; n_tokens <= n_ubatch is checked for the encoder.
        let code = unsafe { sys::llama_encode(self.ptr.as_ptr(), raw) };
        self.finish_compute("llama_encode", code, batch)
    }

    fn finish_compute(&mut self, op: &'static str, code: i32, batch: &Batch) -> Result<()> {
        if code != 0 {
            if code == 2 {
                self.abort.store(false, Ordering::Release);
            }
            return Err(compute_error(op, code));
        }
        let samplers = &self.device_samplers;
        self.outputs.extend((0..batch.len()).map(|i| {
            if !batch.is_output(i) {
                return Output::None;
            }
            // validate_batch refused outputs shared by several sequences with device samplers.
            let first = batch.seq_ids(i).first().copied();
            match samplers.iter().find(|(s, ..)| Some(*s) == first) {
                Some((_, d, _)) => Output::Device(*d),
                None => Output::Host,
            }
        }));
        Ok(())
    }

    /// Host-side outputs of `index`, or the error that says why there are none.
    fn host_output(&self, index: usize) -> Result<()> {
        match self.outputs.get(index) {
            Some(Output::Host) => Ok(()),
            Some(Output::Device(_)) => Err(Error::DeviceSampled {
                index,
                reason: "its sequence has a device sampler, so its logits stayed on the device (use Sampler::sample or sampled_token)",
            }),
            _ => Err(Error::NoOutput { index }),
        }
    }

    // ----------------------------------------------------------- device sampling

    /// Runs `step` inside the compute graph for every output of sequence `seq` from the
    /// next decode on (`None` detaches it). Returns `false` when llama.cpp cannot run it
    /// on the backend (unsupported op, tensor split mode): nothing is attached then and
    /// outputs keep their logits. Outputs of such a sequence have no host logits; read
    /// them with [`Sampler::sample`](crate::Sampler::sample), [`Context::sampled_token`] or
    /// [`Context::sampled_candidates`].
    ///
    /// ```
    /// use llama_rs::{Batch, DeviceSampler};
    /// let model = llama_rs::Model::load(llama_rs::default_model_path()?, Default::default())?;
    /// let mut ctx = model.context(Default::default())?;
    /// assert!(ctx.set_device_sampler(0, Some(DeviceSampler::Greedy))?);
    /// let mut batch = Batch::new(512, 1)?;
    /// batch.add_sequence(&model.vocab().tokenize("The capital of France is", true, false)?, 0, 0, true)?;
    /// ctx.decode(&mut batch)?;
    /// let next = ctx.sampled_token(batch.len() - 1)?;
    /// assert!(ctx.logits(batch.len() - 1).is_err()); // never copied off the device
    /// # let _ = next;
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn set_device_sampler(&mut self, seq: SeqId, step: Option<DeviceSampler>) -> Result<bool> {
        self.check_seq(seq)?;
        if step.is_some() && self.params.embeddings {
            return Err(Error::InvalidParam("device samplers need a context without embeddings".into()));
        }
        if let Some(DeviceSampler::TopK(k)) = step {
            // With several sequences llama.cpp's reserve graph hands the sampler a logits
            // tensor smaller than the vocabulary (measured: k = n_vocab / 2 + 1 asserts
            // `a->ne[0] >= k` with n_seq_max 2, at attach time); n_vocab / n_seq_max is a
            // bound that held in every measured case. A k that large gains nothing on a
            // device anyway.
            let max = (self.n_vocab as i64 / self.params.n_seq_max.max(1) as i64).max(1);
            if k == 0 || k as i64 > max {
                return Err(Error::InvalidParam(format!(
                    "device top-k needs 1 <= k <= n_vocab / n_seq_max ({max}), got {k}"
                )));
            }
        }
        if self.device_samplers.iter().any(|(s, ..)| *s == seq) {
            // SAFETY: valid context; NULL detaches. Done before the old chain is freed.
            unsafe { sys::llama_set_sampler(self.ptr.as_ptr(), seq, std::ptr::null_mut()) };
            self.device_samplers.retain(|(s, ..)| *s != seq);
        }
        self.outputs.clear(); // earlier outputs' device results may be re-laid out
        let Some(step) = step else { return Ok(true) };
        let chain = step.chain(self.n_vocab)?;
        // SAFETY: valid context and chain; the chain is kept alive in `device_samplers`
        // until it is detached or the context is freed.
        let on = unsafe { sys::llama_set_sampler(self.ptr.as_ptr(), seq, chain.0.as_ptr()) };
        if on {
            self.device_samplers.push((seq, step, chain));
        }
        Ok(on)
    }

    /// The device sampler attached to `seq`, if any.
    pub fn device_sampler(&self, seq: SeqId) -> Option<DeviceSampler> {
        self.device_samplers.iter().find(|(s, ..)| *s == seq).map(|(_, d, _)| *d)
    }

    /// Which device sampler produced the result of batch entry `index` (`None`: it has
    /// host logits). Errors if the entry produced no output.
    pub fn device_sampled(&self, index: usize) -> Result<Option<DeviceSampler>> {
        match self.outputs.get(index) {
            Some(Output::Host) => Ok(None),
            Some(Output::Device(d)) => Ok(Some(*d)),
            _ => Err(Error::NoOutput { index }),
        }
    }

    /// The token a [`DeviceSampler::Greedy`] chose for batch entry `index`.
    pub fn sampled_token(&self, index: usize) -> Result<Token> {
        if self.device_sampled(index)? != Some(DeviceSampler::Greedy) {
            return Err(Error::DeviceSampled { index, reason: "no device sampler chose a token for it" });
        }
        // SAFETY: `index` is an output of the last decode and its sequence has a sampler.
        let t = unsafe { sys::llama_get_sampled_token_ith(self.ptr.as_ptr(), index as i32) };
        if t < 0 || t >= self.n_vocab {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned no sampled token" });
        }
        Ok(Token(t))
    }

    /// The candidates a [`DeviceSampler::TopK`] kept for batch entry `index`: token ids and
    /// their logits (same length, unordered). Borrowed until the next `&mut self` call.
    pub fn sampled_candidates(&self, index: usize) -> Result<(&[Token], &[f32])> {
        if !matches!(self.device_sampled(index)?, Some(DeviceSampler::TopK(_))) {
            return Err(Error::DeviceSampled { index, reason: "no device top-k ran for it" });
        }
        let ctx = self.ptr.as_ptr();
        // SAFETY: `index` is an output of the last decode whose sequence has a top-k
        // sampler; the getters return NULL (not abort) on anything unexpected.
        let (ids, n_ids, logits, n_logits) = unsafe {
            (
                sys::llama_get_sampled_candidates_ith(ctx, index as i32),
                sys::llama_get_sampled_candidates_count_ith(ctx, index as i32),
                sys::llama_get_sampled_logits_ith(ctx, index as i32),
                sys::llama_get_sampled_logits_count_ith(ctx, index as i32),
            )
        };
        if ids.is_null() || logits.is_null() || n_ids != n_logits || n_ids == 0 {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned no sampled candidates" });
        }
        // SAFETY: llama.cpp owns `n` ids and `n` logits for this row until the next
        // decode (which needs `&mut self`); `Token` is `repr(transparent)` over i32.
        let (ids, logits) = unsafe {
            (
                std::slice::from_raw_parts(ids as *const Token, n_ids as usize),
                std::slice::from_raw_parts(logits as *const f32, n_logits as usize),
            )
        };
        if ids.iter().any(|t| t.0 < 0 || t.0 >= self.n_vocab) {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned out-of-range candidates" });
        }
        Ok((ids, logits))
    }

    /// Logits (`n_vocab` floats) of batch entry `index` of the last decode. Borrowed,
    /// not copied; valid until the next `&mut self` call.
    pub fn logits(&self, index: usize) -> Result<&[f32]> {
        self.host_output(index)?;
        // SAFETY: `index` produced an output in the last successful decode.
        let p = unsafe { sys::llama_get_logits_ith(self.ptr.as_ptr(), index as i32) };
        if p.is_null() {
            return Err(Error::NoOutput { index });
        }
        // SAFETY: llama.cpp guarantees n_vocab floats per output row, alive until the
        // next decode, which needs `&mut self` and so ends this borrow first.
        Ok(unsafe { std::slice::from_raw_parts(p, self.n_vocab as usize) })
    }

    /// Logits of the last entry marked for output in the last decode.
    pub fn logits_last(&self) -> Result<&[f32]> {
        let i = self.outputs.iter().rposition(|&o| o != Output::None).ok_or(Error::NoOutput { index: 0 })?;
        self.logits(i)
    }

    /// Per-token embedding of batch entry `index` (contexts with `embeddings(true)`).
    pub fn embeddings(&self, index: usize) -> Result<&[f32]> {
        if !self.params.embeddings {
            return Err(Error::NoEmbeddings);
        }
        self.host_output(index)?;
        // SAFETY: embeddings enabled and `index` produced an output.
        let p = unsafe { sys::llama_get_embeddings_ith(self.ptr.as_ptr(), index as i32) };
        if p.is_null() {
            return Err(Error::NoOutput { index });
        }
        // SAFETY: n_embd_out floats per output row, valid until the next `&mut self` call.
        Ok(unsafe { std::slice::from_raw_parts(p, self.model.n_embd_out()) })
    }

    /// Pooled embedding of a sequence (pooling other than `None`).
    pub fn embeddings_seq(&self, seq_id: SeqId) -> Result<&[f32]> {
        if !self.params.embeddings {
            return Err(Error::NoEmbeddings);
        }
        self.check_seq(seq_id)?;
        // SAFETY: valid context and sequence id.
        let p = unsafe { sys::llama_get_embeddings_seq(self.ptr.as_ptr(), seq_id) };
        if p.is_null() {
            return Err(Error::NoOutput { index: seq_id.max(0) as usize });
        }
        let n = if self.params.pooling == crate::Pooling::Rank {
            // SAFETY: const query.
            (unsafe { sys::llama_model_n_cls_out(self.model.as_ptr()) } as usize).max(1)
        } else {
            self.model.n_embd_out()
        };
        // SAFETY: llama.cpp stores n_embd_out floats (n_cls_out for Rank pooling) per
        // pooled sequence, valid until the next `&mut self` call.
        Ok(unsafe { std::slice::from_raw_parts(p, n) })
    }

    // ----------------------------------------------------------------- memory (KV)

    fn mem(&self) -> sys::llama_memory_t {
        // SAFETY: valid context; the memory handle lives as long as the context.
        unsafe { sys::llama_get_memory(self.ptr.as_ptr()) }
    }

    /// Clears the KV cache (`data`: also zero the buffers).
    pub fn clear_memory(&mut self, data: bool) {
        // SAFETY: valid memory handle.
        unsafe { sys::llama_memory_clear(self.mem(), data) };
        self.outputs.clear();
    }

    /// Removes positions `range` of `seq` (`None` = every sequence). Returns `false` when
    /// the memory cannot remove a partial range (recurrent models).
    ///
    /// ```
    /// # let model = llama_rs::Model::load(llama_rs::default_model_path()?, Default::default())?;
    /// # let mut ctx = model.context(Default::default())?;
    /// # let mut b = llama_rs::Batch::new(16, 1)?;
    /// # b.add_sequence(&[llama_rs::Token(2); 16], 0, 0, true)?;
    /// # ctx.decode(&mut b)?;
    /// ctx.seq_rm(Some(0), 10..)?; // drop everything after the first 10 tokens
    /// assert_eq!(ctx.seq_pos_max(0), Some(9));
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn seq_rm(&mut self, seq: Option<SeqId>, range: impl RangeBounds<Pos>) -> Result<bool> {
        if let Some(s) = seq {
            self.check_seq(s)?;
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: sequence id checked (or -1 = all).
        Ok(unsafe { sys::llama_memory_seq_rm(self.mem(), seq.unwrap_or(-1), p0, p1) })
    }

    /// Makes `dst` share `src`'s cells in `range` (no copy within one KV stream).
    pub fn seq_cp(&mut self, src: SeqId, dst: SeqId, range: impl RangeBounds<Pos>) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        let (p0, p1) = range_to_c(range);
        // Separate per-sequence KV streams can only copy a whole sequence.
        let per_seq_streams = !self.params.kv_unified && self.params.n_seq_max > 1;
        if per_seq_streams && src != dst && (p0 > 0 || p1 >= 0) {
            return Err(Error::InvalidParam(
                "seq_cp of a partial range needs kv_unified(true) (each sequence has its own KV stream)".into(),
            ));
        }
        // SAFETY: ids checked; range restriction checked for cross-stream copies.
        unsafe { sys::llama_memory_seq_cp(self.mem(), src, dst, p0, p1) };
        Ok(())
    }

    /// Removes every sequence except `seq`.
    pub fn seq_keep(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        // SAFETY: id checked.
        unsafe { sys::llama_memory_seq_keep(self.mem(), seq) };
        Ok(())
    }

    /// Whether positions can be shifted (`seq_add`, `seq_div`). Not for a BF16 K cache:
    /// llama.cpp ropes it in place (only quantized types are converted first), and
    /// ggml's CPU rope has no BF16 kernel (a fatal error at the next decode).
    pub fn can_shift(&self) -> bool {
        // SAFETY: valid memory handle.
        self.params.type_k != KvType::Bf16 && unsafe { sys::llama_memory_can_shift(self.mem()) }
    }

    /// Adds `delta` to the positions in `range` of `seq` (context shifting).
    pub fn seq_add(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, delta: Pos) -> Result<()> {
        self.check_seq(seq)?;
        if !self.can_shift() {
            return Err(Error::InvalidParam("this model's memory cannot shift positions".into()));
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: id checked, shifting supported.
        unsafe { sys::llama_memory_seq_add(self.mem(), seq, p0, p1, delta) };
        Ok(())
    }

    /// Divides the positions in `range` of `seq` by `d` (> 1) (self-extend).
    pub fn seq_div(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, d: i32) -> Result<()> {
        self.check_seq(seq)?;
        if d <= 1 {
            return Err(Error::InvalidParam(format!("seq_div divisor must be > 1, got {d}")));
        }
        if !self.can_shift() {
            return Err(Error::InvalidParam("this model's memory cannot shift positions".into()));
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: id checked, d > 1, shifting supported.
        unsafe { sys::llama_memory_seq_div(self.mem(), seq, p0, p1, d) };
        Ok(())
    }

    /// Smallest position of `seq` in memory, `None` if empty.
    pub fn seq_pos_min(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { sys::llama_memory_seq_pos_min(self.mem(), seq) };
        (p >= 0).then_some(p)
    }

    /// Largest position of `seq` in memory, `None` if empty.
    pub fn seq_pos_max(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { sys::llama_memory_seq_pos_max(self.mem(), seq) };
        (p >= 0).then_some(p)
    }

    // ------------------------------------------------------------------- perf

    /// Prompt / generation token counts and times since creation or `reset_perf`.
    pub fn perf(&self) -> Perf {
        // SAFETY: const query on a valid context.
        let d = unsafe { sys::llama_perf_context(self.ptr.as_ptr()) };
        Perf {
            load_ms: d.t_load_ms,
            prompt_tokens: d.n_p_eval,
            prompt_ms: d.t_p_eval_ms,
            eval_tokens: d.n_eval,
            eval_ms: d.t_eval_ms,
            reused: d.n_reused,
        }
    }

    /// Resets the perf counters.
    pub fn reset_perf(&mut self) {
        // SAFETY: valid context.
        unsafe { sys::llama_perf_context_reset(self.ptr.as_ptr()) }
    }

    pub(crate) fn forget_outputs(&mut self) {
        self.outputs.clear();
    }
}
