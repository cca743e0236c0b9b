//! [`Context`]: one inference state (KV cache, outputs) over a [`Model`].
//!
//! The type and its decode/outputs live here; its other concerns have their own files:
//! `params` (what a context is created with), `memory` (the KV cache), `state` (save and
//! restore), `adapter` (LoRA and control vectors), `device_sampling` (sampling inside the
//! graph), `plan` (what a model + context will cost in memory before loading) and
//! `prefix` (how much of a sequence's cache a new prompt keeps).

mod adapter;
mod device_sampling;
mod memory;
mod params;
mod plan;
pub(crate) mod prefix;
mod state;

pub use adapter::{ControlVector, LoraAdapter};
pub use device_sampling::{DeviceSampler, DEVICE_TOP_K_MAX};
pub use params::{AttentionType, ContextParams, FlashAttn, KvType, Pooling, RopeScaling};
pub use plan::{MemoryEntry, MemoryPlan};

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use llama_sys as sys;
use serde::Serialize;

use crate::batch::Batch;
use crate::error::{backend_error, Error, Result};
use crate::ffi::RawSampler;
use crate::model::Model;
use crate::token::{Pos, SeqId};

/// Stops a running (or the next) `decode` from any thread.
///
/// ```
/// # let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
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
    /// Time spent loading the model, in milliseconds.
    pub load_ms: f64,
    /// Prompt tokens processed (batches of more than one token).
    pub prompt_tokens: i32,
    /// Time spent on prompt batches, in milliseconds.
    pub prompt_ms: f64,
    /// Tokens generated one at a time.
    pub eval_tokens: i32,
    /// Time spent on single-token decodes, in milliseconds.
    pub eval_ms: f64,
    /// Times a graph was reused instead of rebuilt.
    pub reused: i32,
}

/// The owner of a `llama_context*`. Holds a [`Model`] clone, so it cannot outlive the
/// weights. `Send` (move it to a worker thread), not `Sync` (one decode at a time).
///
/// ```
/// use llama_rs::{Batch, ContextParams, Model, ModelParams};
/// let model = Model::load(llama_testkit::default_model_path()?, ModelParams::default())?;
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
    pub(crate) applied_loras: Vec<(LoraAdapter, f32)>,
    /// Hash of the control vector applied now (0: none), for `state_key`.
    pub(crate) applied_cvec: u64,
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
            return Err(Error::invalid(
                "",
                format!(
                    "with pooled embeddings, n_ubatch ({n_tokens} after llama.cpp's clamping) must be a multiple of \
                 n_seq_max ({})",
                    p.n_seq_max
                ),
            ));
        }
    }
    Ok(())
}

impl Context {
    /// Creates a context after checking `params` against what llama.cpp would reject.
    pub fn new(model: &Model, params: ContextParams) -> Result<Context> {
        Context::of_type(model, params, sys::LLAMA_CONTEXT_TYPE_DEFAULT)
    }

    /// A context that runs the model's multi-token-prediction head (`Mtp` checks the
    /// model has one, loaded, first: llama.cpp asserts on a missing block).
    pub(crate) fn new_mtp(model: &Model, params: ContextParams) -> Result<Context> {
        Context::of_type(model, params, sys::LLAMA_CONTEXT_TYPE_MTP)
    }

    fn of_type(model: &Model, params: ContextParams, ctx_type: sys::llama_context_type) -> Result<Context> {
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
        let mut raw = params.to_raw();
        raw.ctx_type = ctx_type;
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
            applied_cvec: 0,
            params,
        })
    }

    /// Switches causal attention (media chunks that attend to themselves run with it off);
    /// the batch checks follow the setting.
    pub(crate) fn causal_attn(&self) -> bool {
        self.causal
    }
    pub(crate) fn set_causal_attn(&mut self, causal: bool) {
        // SAFETY: valid context; takes effect for the next decode.
        unsafe { sys::llama_set_causal_attn(self.ptr.as_ptr(), causal) };
        self.causal = causal;
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
    /// The micro-batch size llama.cpp applied (at most `n_batch`).
    pub fn n_ubatch(&self) -> u32 {
        self.params.n_ubatch
    }
    /// The number of sequences llama.cpp applied.
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
            return Err(Error::invalid("", format!("thread counts must be in 1..={max}")));
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
                    .ok_or_else(|| Error::invalid("", format!("sequence {s}: position {p} is out of range")))?;
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
        // The shim's barrier: a backend that throws (a failed RPC server) is an error.
        let code = unsafe { sys::llama_rs_decode(self.ptr.as_ptr(), raw) };
        self.finish_compute("llama_decode", code, batch)
    }

    /// Runs the encoder (encoder-decoder models, or non-causal embedding models).
    pub fn encode(&mut self, batch: &mut Batch) -> Result<()> {
        // llama_encode builds the graph with no memory context: a decoder-only model whose
        // context has a KV cache dereferences that missing context (SIGSEGV in
        // `get_base`), whatever the attention and pooling. It is for encoders and for
        // contexts without memory (embedding models; llama_decode routes those to it too).
        // SAFETY: valid context; the memory handle is only compared with NULL.
        let has_memory = !unsafe { sys::llama_get_memory(self.ptr.as_ptr()) }.is_null();
        if !self.model.has_encoder() && has_memory {
            return Err(Error::invalid(
                "",
                "encode needs an encoder-decoder model or a context without a KV cache (an embedding model); \
                 use decode"
                    .into(),
            ));
        }
        self.validate_batch(batch, true)?;
        self.outputs.clear();
        let raw = batch.as_raw();
        // SAFETY: as in `decode`; n_tokens <= n_ubatch is checked for the encoder.
        let code = unsafe { sys::llama_rs_encode(self.ptr.as_ptr(), raw) };
        self.finish_compute("llama_encode", code, batch)
    }

    fn finish_compute(&mut self, op: &'static str, code: i32, batch: &Batch) -> Result<()> {
        if code != 0 {
            if code == 2 {
                self.abort.store(false, Ordering::Release);
            }
            return Err(backend_error(op, Some(code)));
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

    /// Waits for the last decode's outputs. Decodes can finish asynchronously (GPUs,
    /// RPC servers): a backend that fails after `decode` returned fails here, as an
    /// error rather than inside llama.cpp's own synchronization (which would throw
    /// through the C API).
    pub(crate) fn sync(&self) -> Result<()> {
        // SAFETY: valid context; the shim catches exceptions.
        match unsafe { sys::llama_rs_synchronize(self.ptr.as_ptr()) } {
            0 => Ok(()),
            c => Err(backend_error("llama_synchronize", Some(c))),
        }
    }

    /// Host-side outputs of `index`, or the error that says why there are none.
    fn host_output(&self, index: usize) -> Result<()> {
        self.sync()?;
        match self.outputs.get(index) {
            Some(Output::Host) => Ok(()),
            Some(Output::Device(_)) => Err(Error::DeviceSampled {
                index,
                reason: "its sequence has a device sampler, so its logits stayed on the device (use Sampler::sample or sampled_token)",
            }),
            _ => Err(Error::NoOutput { index }),
        }
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

    /// Whether decodes also keep the hidden state of every batch entry, for a
    /// multi-token-prediction head ([`Mtp`](crate::Mtp)) to read. Takes effect at the
    /// next decode.
    pub(crate) fn set_mtp_source(&mut self, on: bool) -> Result<()> {
        // SAFETY: valid context; the shim catches every exception.
        let r = unsafe { sys::llama_rs_set_embeddings_nextn(self.ptr.as_ptr(), on, false) };
        if r != 0 {
            return Err(Error::Backend { op: "llama_set_embeddings_nextn", code: Some(r) });
        }
        Ok(())
    }

    /// The hidden state (n_embd_out floats) after batch entry `index` of the last decode,
    /// with [`set_mtp_source`](Self::set_mtp_source) on.
    pub(crate) fn mtp_hidden(&self, index: usize) -> Result<&[f32]> {
        if index >= self.outputs.len() {
            return Err(Error::NoOutput { index });
        }
        // SAFETY: valid context; `index` is an entry of the last decode; the shim returns
        // NULL (catching every exception) when there is no such row.
        let p = unsafe { sys::llama_rs_get_embeddings_nextn_ith(self.ptr.as_ptr(), index as i32) };
        if p.is_null() {
            return Err(Error::NoOutput { index });
        }
        // SAFETY: n_embd_out floats per row (llama.cpp's nextn buffer), valid until the
        // next decode, which needs `&mut self` and so ends this borrow first.
        Ok(unsafe { std::slice::from_raw_parts(p, self.model.n_embd_out()) })
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
        self.sync()?;
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
