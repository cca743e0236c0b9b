//! The engine: many concurrent requests in one context, on a thread of its own.
//!
//! Continuous batching: every step decodes one batch holding the next token of every
//! running sequence plus chunks of waiting prompts, within a token budget, so a long
//! prompt does not stall running streams. One KV pool: any request may use up to the whole
//! context. A request's prompt reuses the longest cached prefix of any sequence (in
//! place, or shared with `seq_cp`). When the pool is full, cached prefixes are evicted
//! first, then the youngest running request is preempted (its cache dropped and
//! recomputed later) — a request never fails because others filled the cache. Each
//! sequence runs the same generation core (`generate::GenerationCore`) as [`Session`](crate::Session).
//!
//! ```
//! use llama_rs::{Engine, EngineParams, GenerateParams, Model, Request, SamplerConfig};
//! let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
//! let engine = Engine::new(&model, EngineParams::default())?;
//! let params = GenerateParams { max_tokens: Some(8), sampler: SamplerConfig::greedy(), ..Default::default() };
//! let a = engine.submit(Request::text("The capital of France is", params.clone()))?;
//! let b = engine.submit(Request::text("Once upon a time", params))?;
//! let (ta, tb) = (a.text()?, b.text()?); // both ran in the same batches
//! assert!(ta.text.starts_with(" the capital"));
//! assert_eq!(tb.usage.completion_tokens, 8);
//! # Ok::<(), llama_rs::Error>(())
//! ```

mod metrics;
mod scheduler;
mod stream;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};

use crate::chat::{ChatMessage, ChatTemplate, RenderOptions};
use crate::context::{ContextParams, FlashAttn, KvType};
use crate::error::{check_arg, check_param, Error, Result};
use crate::generate::{FinishReason, GenerateParams, GenerationCore, Piece, Prompt};
use crate::model::Model;
use crate::speculative::{DraftKind, DraftModel, Drafter, SpecStats, Speculator};
use crate::token::Token;

pub use metrics::{Latency, Metrics, StepTimes};
pub use stream::{RequestCanceller, RequestStream};

/// The largest [`EngineParams::channel_capacity`]: events one request may buffer.
pub const MAX_CHANNEL_CAPACITY: usize = 1 << 24;

/// How an [`Engine`] is set up.
///
/// ```
/// let p = llama_rs::EngineParams { slots: 8, n_ctx: 16384, ..Default::default() };
/// assert!(p.prefix_cache);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineParams {
    /// Tokens in the KV pool, shared by all sequences.
    pub n_ctx: u32,
    /// Sequences that run at once (more requests queue).
    pub slots: u32,
    /// Tokens decoded per step at most (running sequences' next tokens first, then prompt
    /// chunks). Smaller keeps inter-token latency low while long prompts arrive.
    pub step_tokens: u32,
    /// How long a step that decodes prompt tokens should take while several sequences
    /// have work, in milliseconds; 0: no bound (a step takes every waiting prompt token up
    /// to `step_tokens`). Prompt chunks are then cut to what the engine measured it
    /// decodes in that time (at least 32 prompt tokens a step on the CPU, a micro-batch
    /// on a GPU), so a burst of prompts is read oldest first in short steps: the first
    /// answers start while later prompts are still being read, and running sequences
    /// keep their pace while a long prompt arrives. A prompt alone in the engine always takes the whole step. Only with
    /// `kv_unified` (with a stream per sequence, mixed steps cost llama.cpp several graph
    /// runs), and not in the deterministic profile (the split of a prompt would depend on
    /// timing).
    pub prefill_step_ms: u32,
    /// Micro-batch size (`n_ubatch`); `None`: `step_tokens`. `Some(1)` computes one token
    /// at a time: slow, but logits then do not depend on how tokens were batched
    /// (docs/ENGINE.md), which makes speculative decoding bit-exact.
    pub ubatch_tokens: Option<u32>,
    /// Most tokens (prompt + generated) one request may hold; `None`: the whole pool.
    pub max_request_tokens: Option<u32>,
    /// Events buffered per request before the engine pauses that request (backpressure:
    /// a slow consumer stops its own sequence, never the others). An event is one piece
    /// of text (a token or a few), so 1024 holds a long answer read after the fact.
    /// At most [`MAX_CHANNEL_CAPACITY`].
    pub channel_capacity: usize,
    /// Reuse cached prompt prefixes across requests.
    pub prefix_cache: bool,
    /// Bytes of host memory for prompts whose cells were reused for other requests
    /// (llama-server's `--cache-ram`): a sequence's cache is copied out before another
    /// request overwrites it, and copied back when a later prompt starts with it (a copy,
    /// not a recomputation). 0: off. Only with `prefix_cache`.
    pub ram_cache_bytes: usize,
    /// A directory for the prompt cache on disk ([`DiskCache`](crate::DiskCache)): when a
    /// request ends, its sequence's cache (prompt and answer) is written there by a
    /// background thread (unless an entry already holds it), and a later request — in
    /// this process or a new one, after a restart — whose prompt starts with a stored
    /// prefix restores it instead of recomputing it. `None`: off. Only with
    /// `prefix_cache`; several processes may share one directory.
    pub disk_cache: Option<std::path::PathBuf>,
    /// Bytes of entries the disk cache keeps (least recently used go first).
    pub disk_cache_bytes: u64,
    /// A multimodal projector (`mmproj`) for the model: requests may then carry images
    /// or audio ([`Prompt::Media`]). Media are keyed by content in the prefix caches, so a
    /// second question about the same image reuses its cells.
    pub mmproj: Option<std::path::PathBuf>,
    /// Run the projector on the GPU when there is one (llama-server's `--mmproj-offload`).
    pub mmproj_gpu: bool,
    /// One KV pool shared by all sequences (a request may use all of it; prefixes are
    /// shared between sequences). Off: one stream of `n_ctx / slots` cells per slot, as
    /// llama-batched-bench and older llama-server builds use (each sequence's attention
    /// only reads its own cells: faster on CPUs with many long sequences).
    pub kv_unified: bool,
    /// Keep sliding-window layers' cache at full size, so prefixes longer than the
    /// window stay reusable (docs/ENGINE.md: memory cost measured). Off: window-sized
    /// caches; a prefix is then reused only while its window is still cached.
    pub swa_full: bool,
    /// Threads (0 = all cores).
    pub n_threads: u32,
    /// Threads that sample a step with many outputs (at least 4M logits, e.g. 28 rows
    /// of a 152k vocabulary). 0: up to 8 when every layer runs on an accelerator (the
    /// cores are idle while it computes), else 1 (llama.cpp's threads hold the cores).
    pub sample_threads: usize,
    /// Flash attention.
    pub flash_attn: FlashAttn,
    /// Element type of the K cache.
    pub type_k: KvType,
    /// Element type of the V cache (quantized types need flash attention).
    pub type_v: KvType,
    /// Greedy results that do not depend on what else runs (CPU). A profile that
    /// overrides other fields: one KV stream per slot (`kv_unified` off: each request gets
    /// at most `n_ctx / slots` tokens), no flash attention, no prefix reuse; and the model
    /// must be loaded with `ModelParams::no_repack(true)` (the engine checks). See
    /// docs/ENGINE.md for what was measured.
    pub deterministic: bool,
}

impl Default for EngineParams {
    fn default() -> Self {
        EngineParams {
            n_ctx: 8192,
            slots: 8,
            step_tokens: 512,
            prefill_step_ms: 200,
            ubatch_tokens: None,
            max_request_tokens: None,
            channel_capacity: 1024,
            prefix_cache: true,
            ram_cache_bytes: 1 << 30,
            disk_cache: None,
            disk_cache_bytes: 16 << 30,
            mmproj: None,
            mmproj_gpu: true,
            kv_unified: true,
            swa_full: true,
            n_threads: 0,
            sample_threads: 0,
            flash_attn: FlashAttn::Auto,
            type_k: KvType::F16,
            type_v: KvType::F16,
            deterministic: false,
        }
    }
}

impl EngineParams {
    /// The context the engine creates: one unified KV pool over `slots` sequences, the
    /// full-size sliding-window cache (`swa_full`); with
    /// `deterministic`, one KV stream per slot and no flash attention.
    pub fn context_params(&self) -> ContextParams {
        let mut p = ContextParams::default()
            .n_ctx(self.n_ctx)
            .n_batch(self.step_tokens)
            .n_ubatch(self.ubatch_tokens.unwrap_or(self.step_tokens).min(self.step_tokens))
            .n_seq_max(self.slots)
            .flash_attn(self.flash_attn);
        p.kv_unified = self.kv_unified;
        p.swa_full = self.swa_full;
        p.type_k = self.type_k;
        p.type_v = self.type_v;
        if self.deterministic {
            // Measured (docs/ENGINE.md): in one unified cache a sequence's cells sit among
            // other sequences' cells, which changes how the attention sums are grouped;
            // and CPU flash attention takes another path for many queries than for one.
            // Per-sequence KV streams without flash attention are batch- and
            // chunk-invariant (with weights that are not repacked).
            p.kv_unified = false;
            p.flash_attn = FlashAttn::Off;
        }
        if self.n_threads > 0 {
            p = p.n_threads(self.n_threads);
        }
        p
    }
}

/// A request: a prompt and how to generate after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The prompt (text is tokenized with `params.add_special` / `parse_special`).
    pub prompt: Prompt,
    /// Sampling, limits, stop strings, log-probabilities.
    pub params: GenerateParams,
}

impl Request {
    /// A text prompt.
    pub fn text(prompt: impl Into<String>, params: GenerateParams) -> Request {
        Request { prompt: Prompt::Text(prompt.into()), params }
    }
    /// A token prompt.
    pub fn tokens(prompt: Vec<Token>, params: GenerateParams) -> Request {
        Request { prompt: Prompt::Tokens(prompt), params }
    }
    /// Chat messages, rendered with the model's chat template (with the generation
    /// prompt); special tokens in the rendered text are parsed, BOS is the template's.
    pub fn chat(model: &Model, messages: &[ChatMessage], mut params: GenerateParams) -> Result<Request> {
        let opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
        let text = ChatTemplate::from_model(model)?.render(messages, &opts)?;
        params.add_special = false;
        params.parse_special = true;
        Ok(Request { prompt: Prompt::Text(text), params })
    }
}

/// Token counts of a finished request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens taken from the prefix cache instead of decoded.
    pub cached_tokens: usize,
    /// Tokens generated.
    pub completion_tokens: usize,
    /// Speculative decoding: drafted tokens the target kept (OpenAI's
    /// `accepted_prediction_tokens`).
    pub accepted_draft_tokens: usize,
    /// Speculative decoding: drafted tokens the target rejected.
    pub rejected_draft_tokens: usize,
}

/// Times of a finished request, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Timings {
    /// From submission to the first step that worked on it.
    pub queued_ms: f64,
    /// From submission to the first generated token.
    pub ttft_ms: f64,
    /// From submission to the end.
    pub total_ms: f64,
    /// Times the request was preempted (its cache dropped and recomputed).
    pub preemptions: u32,
}

/// What a request's stream yields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Event {
    /// Generated text; the last piece has its `finish_reason` set and is followed by
    /// [`Event::Done`].
    Piece(Piece),
    /// The request ended.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
        /// Times.
        timings: Timings,
        /// The stop string that ended the output, when one did (`finish_reason` is then
        /// `Stop`; an end-of-generation token leaves this `None`).
        stop_word: Option<String>,
        /// What speculative decoding did for this request (with `speculation` set): drafted
        /// and kept tokens, acceptance per draft position, target decodes it took part in,
        /// seconds drafting and in those decodes.
        spec: Option<SpecStats>,
    },
}

/// A whole completion, collected from a stream by [`RequestStream::text`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// All generated text.
    pub text: String,
    /// All generated tokens.
    pub tokens: Vec<Token>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Times.
    pub timings: Timings,
    /// Speculative decoding's statistics (see [`Event::Done`]).
    pub spec: Option<SpecStats>,
}

/// A request on its way to the engine thread: validated, tokenized, its core built.
pub(crate) struct Admitted {
    pub(crate) id: u64,
    pub(crate) prompt: Vec<Token>,
    /// The chunks of a prompt with media (`prompt` then holds placeholder ids for them).
    pub(crate) media: Option<Arc<crate::MediaPrompt>>,
    pub(crate) core: GenerationCore,
    /// Speculative decoding for this request: its state and drafter.
    /// `None` as the drafter: the engine's draft model, or its MTP head (`mtp`).
    pub(crate) spec: Option<(Speculator, Option<Box<dyn Drafter>>)>,
    /// Drafts come from the engine's MTP head (`DraftKind::Mtp`).
    pub(crate) mtp: bool,
    pub(crate) tx: futures::channel::mpsc::Sender<Result<Event>>,
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) submitted: std::time::Instant,
}

pub(crate) enum Command {
    Submit(Box<Admitted>),
    /// A slot file action; the answer goes to `reply`.
    Slot {
        slot: usize,
        op: SlotOp,
        reply: mpsc::SyncSender<Result<SlotFile>>,
    },
    /// Stop taking work; `drain`: finish what is queued and running, else cancel it.
    Shutdown {
        drain: bool,
    },
}

/// A slot file action (llama-server's `/slots/{id}?action=save|restore|erase`).
pub(crate) enum SlotOp {
    Save(std::path::PathBuf),
    Restore(std::path::PathBuf),
    Erase,
}

/// What a slot action did: tokens saved, restored or erased, bytes written or read,
/// milliseconds taken.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SlotFile {
    /// Tokens of the slot's cache saved, restored or erased.
    pub tokens: usize,
    /// Bytes written or read (0 for erase).
    pub bytes: u64,
    /// Milliseconds the action took on the engine thread.
    pub ms: f64,
}

/// A cloneable, `Send + Sync` handle that submits requests to an [`Engine`].
#[derive(Clone)]
pub struct EngineHandle {
    model: Model,
    params: Arc<EngineParams>,
    /// Most tokens one request may hold (prompt + generated).
    cap: usize,
    tx: mpsc::Sender<Command>,
    next_id: Arc<AtomicU64>,
    metrics: Arc<Mutex<Metrics>>,
    /// Whether the engine has a draft model (`DraftKind::Model` requests need one).
    has_draft: bool,
    /// Whether it has an MTP head (`DraftKind::Mtp` requests need one).
    has_mtp: bool,
    /// The projector of `EngineParams::mmproj`: media are tokenized with it here, and
    /// encoded with it on the engine thread.
    projector: Option<Arc<Mutex<crate::Projector>>>,
    /// The context's applied `n_batch` and `n_ubatch` (a medium must fit both).
    batch_sizes: (u32, u32),
}

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle").field("params", &self.params).finish_non_exhaustive()
    }
}

/// Many concurrent requests over one model and one context (see the module docs). The
/// context lives on the engine's own thread; [`EngineHandle`]s submit to it from any
/// thread or async runtime. Dropping the engine cancels what is in flight and joins the
/// thread; [`Engine::shutdown`] can drain instead.
///
/// Determinism: with greedy sampling a request's text does not depend on what else is
/// running when the CPU kernels are batch-invariant; see `deterministic` in
/// [`EngineParams`] and docs/ENGINE.md for what holds where.
pub struct Engine {
    handle: EngineHandle,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("params", &self.handle.params).finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates the context (on the calling thread, so errors come back here) and starts
    /// the engine thread. A model loaded with its MTP layers (`ModelParams::mtp`) also
    /// gets its MTP head, for requests with [`DraftKind::Mtp`]; only their sequences feed
    /// it.
    pub fn new(model: &Model, params: EngineParams) -> Result<Engine> {
        Engine::start(model, params, None)
    }

    /// An engine whose requests may draft with `draft`, a smaller model with the target's
    /// vocabulary (checked), for speculative decoding with [`DraftKind::Model`]. The draft
    /// model gets a context like the engine's (same pool size, one sequence per slot); in
    /// each step the drafts of all drafting requests are made together, one draft decode
    /// per drafted position.
    ///
    /// ```
    /// use llama_rs::*;
    /// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// let engine = Engine::with_draft_model(&model, EngineParams { n_ctx: 2048, slots: 2, ..Default::default() }, &model)?;
    /// let spec = Speculation { drafter: DraftKind::Model, ..Default::default() };
    /// let params = GenerateParams { max_tokens: Some(8), speculation: Some(spec), sampler: SamplerConfig::greedy(), ..Default::default() };
    /// let out = engine.submit(Request::text("The capital of France is", params))?.text()?;
    /// assert!(out.usage.accepted_draft_tokens > 0); // a model drafting for itself
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn with_draft_model(model: &Model, params: EngineParams, draft: &Model) -> Result<Engine> {
        Engine::start(model, params, Some(draft))
    }

    fn start(model: &Model, params: EngineParams, draft: Option<&Model>) -> Result<Engine> {
        check_arg(params.slots >= 1, || format!("slots must be at least 1, got {}", params.slots))?;
        check_arg(params.step_tokens >= 1, || format!("step_tokens must be at least 1, got {}", params.step_tokens))?;
        // futures' channel panics on a buffer it cannot size (usize::MAX); a bound far
        // above any use (events a consumer has not read yet) keeps that out of submit.
        check_arg((1..=MAX_CHANNEL_CAPACITY).contains(&params.channel_capacity), || {
            format!("channel_capacity must be in 1..={MAX_CHANNEL_CAPACITY}, got {}", params.channel_capacity)
        })?;
        if params.deterministic && !model.no_repack() {
            return Err(Error::invalid(
                "",
                "deterministic engines need weights without repacked CPU layouts: load the model with \
                 ModelParams::no_repack(true)"
                    .into(),
            ));
        }
        let disk = match &params.disk_cache {
            Some(dir) if params.prefix_cache => Some(Arc::new(crate::DiskCache::open(dir, params.disk_cache_bytes)?)),
            _ => None,
        };
        let mut ctx = model.context(params.context_params())?;
        let projector = match &params.mmproj {
            Some(path) => {
                let pp = crate::ProjectorParams::default().use_gpu(params.mmproj_gpu);
                let pp = if params.n_threads > 0 { pp.n_threads(params.n_threads as i32) } else { pp };
                Some(Arc::new(Mutex::new(crate::Projector::load(path, model, pp)?)))
            }
            None => None,
        };
        let batch_sizes = (ctx.n_batch(), ctx.n_ubatch());
        let mtp = match model.mtp_loaded() {
            true => {
                ctx.set_mtp_source(true)?;
                Some(crate::speculative::Mtp::with_sequences(model, params.context_params())?)
            }
            false => None,
        };
        let has_mtp = mtp.is_some();
        let draft = match draft {
            // The draft context: the engine's shape (pool, slots, batch, cache types).
            Some(d) => Some(DraftModel::with_sequences(model, d, params.context_params())?),
            None => None,
        };
        let has_draft = draft.is_some();
        let seq_ctx = ctx.n_ctx_seq();
        let cap = params.max_request_tokens.map_or(seq_ctx, |c| c.min(seq_ctx)) as usize;
        let metrics = Arc::new(Mutex::new(Metrics::default()));
        let (tx, rx) = mpsc::channel();
        let params = Arc::new(params);
        let sched =
            scheduler::Scheduler::new(ctx, params.clone(), metrics.clone(), draft, mtp, disk, projector.clone())?;
        let thread = std::thread::Builder::new()
            .name("llama-rs-engine".into())
            .spawn(move || sched.run(rx))
            .map_err(|e| Error::Limit { what: "engine thread", detail: e.to_string() })?;
        let handle = EngineHandle {
            model: model.clone(),
            params,
            cap,
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            metrics,
            has_draft,
            has_mtp,
            projector,
            batch_sizes,
        };
        Ok(Engine { handle, thread: Some(thread) })
    }

    /// A handle for other threads or tasks.
    pub fn handle(&self) -> EngineHandle {
        self.handle.clone()
    }

    /// Submits a request (see [`EngineHandle::submit`]).
    pub fn submit(&self, req: Request) -> Result<RequestStream> {
        self.handle.submit(req)
    }

    /// Submits `n` completions of one request (see [`EngineHandle::submit_n`]).
    pub fn submit_n(&self, req: Request, n: usize) -> Result<Vec<RequestStream>> {
        self.handle.submit_n(req, n)
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> Metrics {
        self.handle.metrics()
    }

    /// Stops the engine: `drain` finishes queued and running requests first, otherwise
    /// they end with `Cancelled`. Joins the thread.
    pub fn shutdown(mut self, drain: bool) {
        self.stop(drain);
    }

    fn stop(&mut self, drain: bool) {
        let _ = self.handle.tx.send(Command::Shutdown { drain });
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop(false);
    }
}

impl EngineHandle {
    /// Validates, tokenizes and queues a request. Errors here (never later) for invalid
    /// parameters, a prompt that can never fit (`PromptTooLong`), or a stopped engine.
    /// The returned stream is a blocking `Iterator` and a `futures::Stream` of events;
    /// dropping it cancels the request.
    pub fn submit(&self, req: Request) -> Result<RequestStream> {
        let vocab = self.model.vocab();
        let mut media = None;
        let prompt = match req.prompt {
            Prompt::Text(t) => vocab.tokenize(&t, req.params.add_special, req.params.parse_special)?,
            Prompt::Tokens(t) => {
                for &tok in &t {
                    vocab.check(tok)?;
                }
                t
            }
            Prompt::Media { text, media: m } => {
                let (flat, mp) = self.media_prompt(&text, &m, &req.params)?;
                media = Some(Arc::new(mp));
                flat
            }
        };
        if prompt.is_empty() {
            return Err(Error::invalid("", "empty prompt".into()));
        }
        if prompt.len() >= self.cap {
            return Err(Error::PromptTooLong { n_prompt: prompt.len(), n_ctx: self.cap });
        }
        let core = GenerationCore::new(&self.model, &req.params, prompt.len())?;
        let spec = match &req.params.speculation {
            None => None,
            Some(sp) => Some(sp.start(
                self.has_draft,
                self.has_mtp,
                "an engine made with Engine::with_draft_model",
                "an engine over a model loaded with its MTP layers (ModelParams::mtp(true))",
            )?),
        };
        let (tx, rx) = futures::channel::mpsc::channel(self.params.channel_capacity - 1);
        let cancel = Arc::new(AtomicBool::new(false));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mtp = req.params.speculation.as_ref().is_some_and(|s| s.drafter == DraftKind::Mtp);
        let admitted = Admitted {
            id,
            prompt,
            media,
            core,
            spec,
            mtp,
            tx,
            cancel: cancel.clone(),
            submitted: std::time::Instant::now(),
        };
        self.tx.send(Command::Submit(Box::new(admitted))).map_err(|_| Error::EngineStopped)?;
        Ok(RequestStream::new(rx, cancel))
    }

    /// Tokenizes a prompt with media with the engine's projector; returns it flattened
    /// (media as placeholder ids, for the prefix caches) and in chunks.
    fn media_prompt(
        &self,
        text: &str,
        media: &[Arc<crate::Media>],
        params: &GenerateParams,
    ) -> Result<(Vec<Token>, crate::MediaPrompt)> {
        let proj = self.projector.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this engine reads no images or audio: it was started without a projector (mmproj)".into(),
            )
        })?;
        if params.speculation.is_some() {
            return Err(Error::Unsupported("speculative decoding of prompts with media".into()));
        }
        let proj = proj.lock().unwrap_or_else(|p| p.into_inner());
        let refs: Vec<&crate::Media> = media.iter().map(|m| &**m).collect();
        let mp = proj.tokenize(text, &refs, params.add_special)?;
        proj.check_chunks(&mp, self.batch_sizes.0 as usize, self.batch_sizes.1 as usize)?;
        if mp.chunks().last().is_some_and(|c| c.kind != crate::ChunkKind::Text) {
            return Err(Error::invalid("", "a prompt must not end with a medium: text must follow it".into()));
        }
        Ok((proj.prompt_tokens(&mp), mp))
    }

    /// What the engine's projector reads: `(images, audio)`; `(false, false)` without one.
    pub fn media_support(&self) -> (bool, bool) {
        self.projector.as_ref().map_or((false, false), |p| {
            let p = p.lock().unwrap_or_else(|p| p.into_inner());
            (p.supports_vision(), p.supports_audio())
        })
    }

    /// The positions a prompt with media takes (text tokens plus each medium's).
    pub fn media_prompt_len(&self, text: &str, media: &[Arc<crate::Media>]) -> Result<usize> {
        Ok(self.media_prompt_tokens(text, media)?.len())
    }

    /// A prompt with media as the engine holds it: text tokens, and each medium's
    /// positions as placeholder ids (see [`Projector::prompt_tokens`](crate::Projector::prompt_tokens)).
    pub fn media_prompt_tokens(&self, text: &str, media: &[Arc<crate::Media>]) -> Result<Vec<Token>> {
        let params = GenerateParams { add_special: false, ..Default::default() };
        Ok(self.media_prompt(text, media, &params)?.0)
    }

    /// Decodes an encoded image or audio file with the engine's projector (see
    /// [`Projector::media`](crate::Projector::media)).
    pub fn media(&self, bytes: &[u8]) -> Result<crate::Media> {
        let proj = self.projector.as_ref().ok_or_else(|| {
            Error::Unsupported(
                "this engine reads no images or audio: it was started without a projector (mmproj)".into(),
            )
        })?;
        proj.lock().unwrap_or_else(|p| p.into_inner()).media(bytes)
    }

    /// The projector's media marker (`<__media__>`), if the engine has a projector.
    pub fn media_marker(&self) -> Option<String> {
        self.projector.as_ref().map(|p| p.lock().unwrap_or_else(|p| p.into_inner()).marker().to_string())
    }

    /// `n` completions of one request, as `n` requests whose samplers are seeded
    /// `seed, seed + 1, ...`: the prompt is decoded once and its cells shared (unified
    /// pool). All or nothing: an invalid request fails before any is queued.
    pub fn submit_n(&self, req: Request, n: usize) -> Result<Vec<RequestStream>> {
        check_arg((1..=self.params.slots as usize * 64).contains(&n), || {
            format!("n must be in 1..={}, got {n}", self.params.slots as usize * 64)
        })?;
        let mut reqs = Vec::with_capacity(n);
        for i in 0..n {
            let mut r = req.clone();
            r.params.sampler.seed = r.params.sampler.seed.wrapping_add(i as u32);
            // Validate every copy before queueing any (a copy differs only by its seed).
            GenerationCore::new(&self.model, &r.params, 1)?;
            reqs.push(r);
        }
        reqs.into_iter().map(|r| self.submit(r)).collect()
    }

    /// A snapshot of the engine's counters.
    pub fn metrics(&self) -> Metrics {
        self.metrics.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Saves what idle slot `slot` caches (its tokens and KV cells) to a state file
    /// (written atomically; `Context::save_seq_state_file`'s format). Blocks until the
    /// engine thread has done it, between two steps.
    ///
    /// ```
    /// # use llama_rs::*;
    /// # let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// let engine = Engine::new(&model, EngineParams { slots: 1, n_ctx: 512, ..Default::default() })?;
    /// let p = GenerateParams { max_tokens: Some(2), ..Default::default() };
    /// engine.submit(Request::text("The sky is", p))?.text()?;
    /// let path = std::env::temp_dir().join(format!("doc-slot-{}.bin", std::process::id()));
    /// let saved = engine.handle().save_slot(0, &path)?;
    /// engine.handle().erase_slot(0)?;
    /// let restored = engine.handle().restore_slot(0, &path)?;   // the cells are back
    /// assert_eq!((saved.tokens, saved.bytes), (restored.tokens, restored.bytes));
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn save_slot(&self, slot: u32, path: impl AsRef<std::path::Path>) -> Result<SlotFile> {
        self.slot_op(slot, SlotOp::Save(path.as_ref().into()))
    }

    /// Restores a file from [`save_slot`](Self::save_slot) into idle slot `slot` (what
    /// it cached before is dropped); later requests reuse it as a cached prefix.
    pub fn restore_slot(&self, slot: u32, path: impl AsRef<std::path::Path>) -> Result<SlotFile> {
        self.slot_op(slot, SlotOp::Restore(path.as_ref().into()))
    }

    /// Drops what idle slot `slot` caches.
    pub fn erase_slot(&self, slot: u32) -> Result<SlotFile> {
        self.slot_op(slot, SlotOp::Erase)
    }

    fn slot_op(&self, slot: u32, op: SlotOp) -> Result<SlotFile> {
        let n = self.params.slots;
        check_param("id_slot", slot < n, || format!("slot {slot} does not exist (slots: 0..{n})"))?;
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Command::Slot { slot: slot as usize, op, reply })
            .map_err(|_| Error::InvalidState("the engine has stopped".into()))?;
        rx.recv().map_err(|_| Error::InvalidState("the engine has stopped".into()))?
    }
}
