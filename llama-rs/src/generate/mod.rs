//! Text generation: [`Session`] (a context plus the tokens in its KV cache, reused as a
//! prefix between calls) and [`Generator`], an `Iterator` of text [`Piece`]s with stop
//! strings, token limits, finish reasons, log-probabilities and cancellation.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::context::DeviceSampler;
use crate::context::{AbortHandle, Context};
use crate::error::{check_arg, Error, Result};
use crate::sampling::{CustomSampler, Sampler, SamplerConfig};
use crate::speculative::{DraftKind, DraftModel, Drafter, Mtp, SpecStats, Speculation, Speculator};
use crate::token::Token;

mod budget;
mod core;
mod stop;
mod verify;

pub use self::budget::ReasoningBudget;
pub(crate) use self::core::GenerationCore;

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached, or the context is full.
    Length,
    /// Cancelled through a [`CancelHandle`].
    Cancelled,
}

/// A prompt: text (tokenized with the params' flags) or tokens.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    /// Text, tokenized with the params' `add_special` / `parse_special` flags.
    Text(String),
    /// Tokens, used as they are.
    Tokens(Vec<Token>),
    /// Text with one media marker ([`Projector::marker`](crate::Projector::marker)) per
    /// medium, and the media in order. Needs a projector (`Session::set_projector`,
    /// `EngineParams::mmproj`).
    Media {
        /// The text, tokenized with the params' `add_special` flag (special tokens parsed).
        text: String,
        /// The images and audio clips.
        media: Vec<Arc<crate::Media>>,
    },
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.into())
    }
}
impl From<String> for Prompt {
    fn from(s: String) -> Self {
        Prompt::Text(s)
    }
}
impl From<Vec<Token>> for Prompt {
    fn from(t: Vec<Token>) -> Self {
        Prompt::Tokens(t)
    }
}
impl From<&[Token]> for Prompt {
    fn from(t: &[Token]) -> Self {
        Prompt::Tokens(t.to_vec())
    }
}

/// Options of one generation.
///
/// ```
/// let p = llama_rs::GenerateParams { max_tokens: Some(32), stop: vec!["\n".into()], ..Default::default() };
/// assert!(p.add_special);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateParams {
    /// `None`: until end-of-generation or a full context.
    pub max_tokens: Option<usize>,
    /// Output ends before the first occurrence of any of these (not included).
    pub stop: Vec<String>,
    /// How each token is chosen.
    pub sampler: SamplerConfig,
    /// `Some(n)`: report the chosen token's log-probability and the `n` most likely.
    pub logprobs: Option<usize>,
    /// Add BOS (etc.) when tokenizing a text prompt.
    pub add_special: bool,
    /// Turn special-token text in the prompt into special tokens.
    pub parse_special: bool,
    /// Keep going past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Where the sampler's first step (greedy argmax or top-k) runs.
    pub device_sampling: DeviceSampling,
    /// Speculative decoding (see [`Speculation`](crate::Speculation)); `None`: off.
    pub speculation: Option<Speculation>,
    /// Decode each token as soon as it is sampled, before its piece is handed out, so a
    /// GPU computes the next token while the caller handles this one. `None`: when the
    /// whole model is offloaded (there llama_decode only queues work; on the CPU it would
    /// delay every piece by one forward pass). The tokens are the same either way; a
    /// generation that ends on a stop string then leaves that last token in the cache.
    /// With speculation, only on the steps after which no draft follows (the drafter found
    /// none, or the skip rule pauses drafting).
    pub eager_decode: Option<bool>,
    /// Thinking models: the most tokens inside a `<think>` block before its end is
    /// forced. `None`: no limit. Not applied with a grammar (the grammar decides the text).
    pub reasoning_budget: Option<ReasoningBudget>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: Some(256),
            stop: vec![],
            sampler: SamplerConfig::default(),
            logprobs: None,
            add_special: true,
            parse_special: false,
            ignore_eos: false,
            device_sampling: DeviceSampling::Auto,
            speculation: None,
            eager_decode: None,
            reasoning_budget: None,
        }
    }
}

/// Whether generation runs the sampler's first step (greedy argmax or top-k) inside the
/// compute graph, so only a token id or k candidates leave the device instead of the
/// whole logits row (see [`DeviceSampler`](crate::DeviceSampler)). The tokens are the same
/// either way. Never used with `logprobs`, a grammar or custom sampler stages, which need
/// the logits.
///
/// ```
/// use llama_rs::{DeviceSampling, GenerateParams};
/// let p = GenerateParams { device_sampling: DeviceSampling::Off, ..Default::default() };
/// assert_ne!(p.device_sampling, GenerateParams::default().device_sampling);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceSampling {
    /// When the logits are computed on a GPU or RPC server (measured: on the CPU the
    /// graph's single-threaded argmax / top-k is slower than reading the logits). On
    /// Vulkan a greedy chain runs as top-1.
    #[default]
    Auto,
    /// Whenever the sampler allows.
    On,
    /// Always sample on the host from the logits.
    Off,
}

/// Log-probability of one generated token, with the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TokenLogprob {
    /// The token that was generated.
    pub token: Token,
    /// Its natural-log probability under the model's (unfiltered) distribution.
    pub logprob: f32,
    /// `(token, logprob)`, most likely first.
    pub top: Vec<(Token, f32)>,
}

/// A chunk of generated text and the tokens that produced it. The text never ends in
/// the middle of a UTF-8 character or a possible stop string.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Piece {
    /// The text (valid UTF-8; may be empty when all tokens were held back).
    pub text: String,
    /// The tokens that produced it.
    pub tokens: Vec<Token>,
    /// One entry per token when `logprobs` was asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Set on the last piece.
    pub finish_reason: Option<FinishReason>,
}

/// Stops a generation from any thread; an in-flight decode is aborted too.
#[derive(Debug, Clone)]
pub struct CancelHandle {
    flag: Arc<AtomicBool>,
    abort: AbortHandle,
}

impl CancelHandle {
    /// Stops the generation; the next step (or an in-flight decode) ends it with `Cancelled`.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.abort.abort();
    }
    /// Whether `cancel` was called.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// A context plus the tokens its KV cache holds for sequence 0. A new prompt that
/// shares a prefix with them only decodes the rest.
///
/// ```
/// use llama_rs::*;
/// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let mut session = Session::new(model.context(ContextParams::default())?)?;
/// let params = GenerateParams { max_tokens: Some(8), sampler: SamplerConfig::greedy(), ..Default::default() };
/// let (text, finish) = session.generate("The capital of France is", &params)?.text()?;
/// assert_eq!(finish, FinishReason::Length);
/// assert!(text.starts_with(" the capital"));
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Session {
    ctx: Context,
    tokens: Vec<Token>,
    batch: Batch,
    /// llama.cpp refused a device sampler once: do not retry on every generation.
    device_refused: bool,
    /// The draft model for `DraftKind::Model` (kept between generations: its cache).
    draft: Option<DraftModel>,
    /// The model's MTP head for `DraftKind::Mtp` (fed every decode while set).
    mtp: Option<Mtp>,
    /// Leading cached tokens computed as whole micro-batches from position 0 (by a
    /// prefill): the part of the cache a cold run of the same prompt computes alike.
    exact: usize,
    /// Keep only an exact prefix (`set_exact_reuse`).
    exact_reuse: bool,
    /// Reads the media of `Prompt::Media` prompts.
    projector: Option<crate::Projector>,
}

impl Session {
    /// Errors only when the prompt batch (the context's applied `n_batch` entries)
    /// cannot be allocated.
    pub fn new(ctx: Context) -> Result<Session> {
        let n = ctx.n_batch() as usize;
        Ok(Session {
            ctx,
            tokens: Vec::new(),
            batch: Batch::new(n, 1)?,
            device_refused: false,
            draft: None,
            mtp: None,
            exact: 0,
            exact_reuse: false,
            projector: None,
        })
    }

    /// Sets (or removes) the projector that reads the media of [`Prompt::Media`]
    /// prompts. It must be loaded for this session's model.
    pub fn set_projector(&mut self, projector: Option<crate::Projector>) -> Result<()> {
        if let Some(p) = &projector {
            check_arg(std::ptr::eq(p.model().as_ptr(), self.ctx.model().as_ptr()), || {
                "the projector was loaded for another model than the session's".into()
            })?;
        }
        self.projector = projector;
        Ok(())
    }

    /// The projector, if one is set.
    pub fn projector(&self) -> Option<&crate::Projector> {
        self.projector.as_ref()
    }
    /// Sets (or removes) the MTP head that `DraftKind::Mtp` speculation drafts with. It
    /// must be the head of this session's model; while set, every decode also feeds it
    /// (what is already cached is not: it sees a text from the next prompt on).
    pub fn set_mtp(&mut self, mtp: Option<Mtp>) -> Result<()> {
        if let Some(m) = &mtp {
            check_arg(m.model_ptr() == self.ctx.model().as_ptr(), || {
                "the MTP head belongs to another model than the session's".to_string()
            })?;
        }
        self.ctx.set_mtp_source(mtp.is_some())?;
        self.mtp = mtp;
        Ok(())
    }
    /// The MTP head set with [`set_mtp`](Self::set_mtp) (e.g. to draft by hand through
    /// [`Drafter::draft`]).
    pub fn mtp_mut(&mut self) -> Option<&mut Mtp> {
        self.mtp.as_mut()
    }
    /// Feeds the MTP head (if set) the tokens just decoded at `pos0..` (batch entries
    /// `0..`). A failure resets the head: drafts are guesses, the text does not depend
    /// on them.
    fn feed_mtp(&mut self, tokens: &[Token], pos0: usize) {
        if let Some(m) = self.mtp.as_mut() {
            if let Err(e) = m.observe(&self.ctx, 0, tokens, pos0, 0) {
                log::debug!("mtp: {e}; its cache starts over");
                m.reset();
            }
        }
    }
    /// Sets (or removes) the draft model that `DraftKind::Model` speculation uses.
    pub fn set_draft_model(&mut self, draft: Option<DraftModel>) {
        self.draft = draft;
    }
    /// The underlying context.
    pub fn context(&self) -> &Context {
        &self.ctx
    }
    /// Tokens currently in the KV cache (sequence 0).
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }
    /// Makes prefix reuse exact: a prompt keeps only the cached tokens that a cold run
    /// would compute alike — whole micro-batches (`n_ubatch`) counted from position 0,
    /// computed by a prefill — and decodes the rest in the chunk shapes a cold run uses.
    /// Greedy answers and logits then do not depend on what ran before (llama.cpp's CPU
    /// kernels pick their path by batch shape, so a reused prefix otherwise changes the
    /// numbers; docs/ENGINE.md). Costs up to `n_ubatch - 1` recomputed prompt tokens per
    /// call, and generated tokens are never reused (they were decoded one at a time).
    /// Off by default (as llama.cpp and llama-cpp-python reuse).
    ///
    /// ```
    /// # use llama_rs::*;
    /// # let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// let mut s = Session::new(model.context(ContextParams::default().n_ctx(512).n_ubatch(8))?)?;
    /// s.set_exact_reuse(true);
    /// let p = GenerateParams { max_tokens: Some(4), sampler: SamplerConfig::greedy(), ..Default::default() };
    /// let prompt = "Paris is the capital of France, and the capital of Italy is";
    /// let cold = s.generate(prompt, &p)?.text()?.0;
    /// let warm = s.generate(prompt, &p)?.text()?.0; // whole micro-batches of 8 reused
    /// assert_eq!(cold, warm);
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn set_exact_reuse(&mut self, on: bool) {
        self.exact_reuse = on;
    }

    /// The part of a reusable prefix of `keep` tokens that exact reuse keeps.
    fn exact_keep(&self, keep: usize) -> usize {
        if !self.exact_reuse {
            return keep;
        }
        let ub = self.ctx.n_ubatch() as usize;
        keep.min(self.exact) / ub * ub
    }

    /// Saves the cache (its tokens from position 0) into `cache`, unless an entry already
    /// holds them; `Ok(false)` when nothing was written.
    pub fn save_to(&mut self, cache: &crate::DiskCache) -> Result<bool> {
        let tokens = self.tokens.clone();
        let exact = (self.exact.min(tokens.len()), self.ctx.n_ubatch() as usize);
        cache.store_seq(&mut self.ctx, 0, &tokens, exact)
    }

    /// Restores from `cache` the saved prefix of `prompt` when it is longer than what
    /// the session can reuse already (with exact reuse: only its exact part); returns the
    /// tokens restored (0: none). The next `generate` of `prompt` then decodes only the
    /// rest.
    pub fn restore_from(&mut self, cache: &crate::DiskCache, prompt: &[Token]) -> Result<usize> {
        if prompt.len() < 2 {
            return Ok(0);
        }
        let limit = prompt.len() - 1; // the last prompt token is decoded for its logits
        let held = self.exact_keep(crate::context::prefix::common_prefix(&self.tokens, prompt).min(limit));
        let (exact, ub) = (self.exact_reuse, self.ctx.n_ubatch() as usize);
        let usable = |f: &crate::Found| {
            let n = f.common.min(limit);
            match exact {
                false => n,
                true if f.exact.1 == ub => n.min(f.exact.0) / ub * ub,
                true => 0,
            }
        };
        let Some((n, n_exact)) = cache.restore_seq(&mut self.ctx, 0, prompt, held, usable)? else { return Ok(0) };
        if let Some(m) = self.mtp.as_mut() {
            m.reset();
        }
        self.tokens = prompt[..n].to_vec();
        self.exact = n_exact;
        Ok(n)
    }

    /// Forgets the cache.
    pub fn reset(&mut self) {
        self.ctx.clear_memory(false);
        self.tokens.clear();
        self.exact = 0;
        if let Some(m) = self.mtp.as_mut() {
            m.reset();
        }
    }
    /// The whole state (KV cache and the cached tokens) as bytes, for
    /// [`load_state`](Self::load_state).
    pub fn save_state(&mut self) -> Result<Vec<u8>> {
        let tokens = self.tokens.clone();
        self.ctx.save_state(&tokens)
    }
    /// Restores a state from [`save_state`](Self::save_state); on an error the session is
    /// reset (the cache may hold part of the state).
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some(m) = self.mtp.as_mut() {
            m.reset();
        }
        match self.ctx.load_state(bytes) {
            Ok(t) => {
                self.tokens = t;
                self.exact = 0;
                Ok(())
            }
            Err(e) => {
                self.reset();
                Err(e)
            }
        }
    }
    /// Gives the context back.
    pub fn into_context(self) -> Context {
        self.ctx
    }

    /// Decodes `prompt` reusing the cached prefix; returns the batch index of the last
    /// prompt token's logits.
    fn prefill(&mut self, prompt: &[Token], media: Option<&crate::MediaPrompt>) -> Result<usize> {
        if prompt.is_empty() {
            return Err(Error::invalid("", "empty prompt".into()));
        }
        let n_ctx = self.ctx.n_ctx_seq() as usize;
        if prompt.len() >= n_ctx {
            return Err(Error::PromptTooLong { n_prompt: prompt.len(), n_ctx });
        }
        let mut keep = crate::context::prefix::reuse(&mut self.ctx, 0, &self.tokens, prompt)?;
        let exact = self.exact_keep(keep);
        if exact < keep {
            self.ctx.seq_rm(Some(0), exact as i32..)?;
            keep = exact;
        }
        if let Some(mp) = media {
            // A medium is decoded whole: a kept prefix may not end inside one.
            let cut = crate::media::whole_media_prefix(mp, keep);
            if cut < keep {
                self.ctx.seq_rm(Some(0), cut as i32..)?;
                keep = cut;
            }
        }
        self.tokens.truncate(keep);
        self.exact = self.exact.min(keep);
        if let Some(mp) = media {
            return self.prefill_media(prompt, mp, keep).inspect_err(|_| self.resync());
        }
        let n_batch = self.batch.capacity();
        let ub = self.ctx.n_ubatch() as usize;
        let mut last = 0;
        for chunk in prompt[keep..].chunks(n_batch) {
            self.batch.clear();
            let start = self.tokens.len() as i32;
            let is_last = self.tokens.len() + chunk.len() == prompt.len();
            self.batch.add_sequence(chunk, start, 0, is_last)?;
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.resync();
                return Err(e);
            }
            self.feed_mtp(chunk, start as usize);
            if self.exact == start as usize && n_batch % ub == 0 {
                // llama.cpp cut this chunk into micro-batches from its start.
                self.exact += chunk.len() / ub * ub;
            }
            self.tokens.extend_from_slice(chunk);
            last = chunk.len() - 1;
        }
        Ok(last)
    }

    /// Decodes the chunks of a media prompt after the `keep` positions already cached
    /// (`prompt` is its flattened form): text as token batches, media through the
    /// projector. Returns the batch index of the last entry's logits.
    fn prefill_media(&mut self, prompt: &[Token], mp: &crate::MediaPrompt, keep: usize) -> Result<usize> {
        let proj = self.projector.as_mut().ok_or_else(|| Error::Unsupported("no projector is set".into()))?;
        let n_batch = self.batch.capacity();
        let (mut off, mut last) = (0, 0);
        let n_chunks = mp.chunks().len();
        for (i, c) in mp.chunks().iter().enumerate() {
            let n = c.n_pos;
            if off + n <= keep {
                off += n;
                continue;
            }
            if c.kind == crate::ChunkKind::Text {
                let from = keep.max(off) - off;
                for piece in c.tokens[from..].chunks(n_batch) {
                    self.batch.clear();
                    let start = self.tokens.len();
                    let is_last = start + piece.len() == prompt.len();
                    self.batch.add_sequence(piece, start as i32, 0, is_last)?;
                    self.ctx.decode(&mut self.batch)?;
                    self.tokens.extend_from_slice(piece);
                    last = piece.len() - 1;
                }
            } else {
                let start = self.tokens.len() as i32;
                last = proj.decode_media(&mut self.ctx, mp, i, start, 0, i + 1 == n_chunks)?.1;
                self.tokens.extend_from_slice(&prompt[off..off + n]);
            }
            off += n;
        }
        Ok(last)
    }

    /// Decodes one generated token at the end of the sequence. `ContextFull` when it
    /// would fill the context; after other failures `tokens` matches the cache again.
    fn decode_next(&mut self, t: Token) -> Result<()> {
        if self.tokens.len() + 1 >= self.ctx.n_ctx_seq() as usize {
            return Err(Error::ContextFull);
        }
        self.batch.clear();
        self.batch.add(t, self.tokens.len() as i32, &[0], true)?;
        match self.ctx.decode(&mut self.batch) {
            Ok(()) => {
                self.feed_mtp(&[t], self.tokens.len());
                self.tokens.push(t);
                Ok(())
            }
            Err(e) => {
                self.resync();
                Err(e)
            }
        }
    }

    /// After a failed decode, make `tokens` match what the KV cache really holds.
    fn resync(&mut self) {
        let n = self.ctx.seq_pos_max(0).map_or(0, |p| p as usize + 1);
        self.tokens.truncate(n);
        self.exact = self.exact.min(n);
    }

    /// Decodes `tokens` after those the session holds (llama-cpp-python's `eval`) and
    /// returns the logits after the last one. Fails with `ContextFull` when they would
    /// not fit; after another failure `tokens()` matches the cache again.
    ///
    /// ```
    /// # use llama_rs::*;
    /// # let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// let mut s = Session::new(model.context(ContextParams::default().n_ctx(256))?)?;
    /// let logits = s.eval(&model.vocab().tokenize("The sky is", true, false)?)?;
    /// assert_eq!(logits.len(), model.n_vocab() as usize);
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn eval(&mut self, tokens: &[Token]) -> Result<Vec<f32>> {
        if tokens.is_empty() {
            return Err(Error::invalid("", "eval of no tokens".into()));
        }
        let v = self.ctx.model().vocab();
        for &t in tokens {
            v.check(t)?;
        }
        if self.tokens.len() + tokens.len() >= self.ctx.n_ctx_seq() as usize {
            return Err(Error::ContextFull);
        }
        self.ctx.clear_abort(); // a cancelled generation before must not abort this
        let n_batch = self.batch.capacity();
        let mut last = 0;
        for (i, chunk) in tokens.chunks(n_batch).enumerate() {
            self.batch.clear();
            let is_last = (i + 1) * n_batch >= tokens.len();
            self.batch.add_sequence(chunk, self.tokens.len() as i32, 0, is_last)?;
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.resync();
                return Err(e);
            }
            self.feed_mtp(chunk, self.tokens.len());
            self.tokens.extend_from_slice(chunk);
            last = chunk.len() - 1;
        }
        Ok(self.ctx.logits(last)?.to_vec())
    }

    /// Starts generating after `prompt`. Nothing is decoded until the first `next()`
    /// beyond the prompt.
    pub fn generate(&mut self, prompt: impl Into<Prompt>, params: &GenerateParams) -> Result<Generator<'_>> {
        self.generate_with(prompt, params, None)
    }

    /// [`generate`](Self::generate) with a sampler written in Rust ahead of the
    /// configured stages (it sees the whole row of logits each step, e.g. a bridge to
    /// llama-cpp-python's `logits_processor`; see [`SamplerConfig::build_with`]).
    pub fn generate_with(
        &mut self,
        prompt: impl Into<Prompt>,
        params: &GenerateParams,
        first: Option<Box<dyn CustomSampler>>,
    ) -> Result<Generator<'_>> {
        let mut media = None;
        let tokens = match prompt.into() {
            Prompt::Text(t) => self.ctx.model().vocab().tokenize(&t, params.add_special, params.parse_special)?,
            Prompt::Tokens(t) => {
                let v = self.ctx.model().vocab();
                for &tok in &t {
                    v.check(tok)?;
                }
                t
            }
            Prompt::Media { text, media: m } => {
                let proj = self.projector.as_ref().ok_or_else(|| {
                    Error::Unsupported("a prompt with media needs a projector (Session::set_projector)".into())
                })?;
                if params.speculation.is_some() || self.mtp.is_some() {
                    return Err(Error::Unsupported("speculative decoding of prompts with media".into()));
                }
                let refs: Vec<&crate::Media> = m.iter().map(|m| &**m).collect();
                let mp = proj.tokenize(&text, &refs, params.add_special)?;
                proj.check_decodable(&self.ctx, &mp)?;
                let flat = proj.prompt_tokens(&mp);
                media = Some(mp);
                flat
            }
        };
        let sampler = params.sampler.build_with(self.ctx.model(), first)?;
        let core = GenerationCore::with_sampler(self.ctx.model(), sampler, params, tokens.len());
        let spec = match &params.speculation {
            None => None,
            Some(sp) => Some(sp.start(
                self.draft.is_some(),
                self.mtp.is_some(),
                "Session::set_draft_model first",
                "Session::set_mtp first",
            )?),
        };
        // A verification samples up to max_draft + 1 outputs of the sequence in one
        // decode: on the device only when the context lets its sampler take that many
        // (`ContextParams::n_outputs_max_per_seq`), else from host logits.
        let spec_outputs = params.speculation.as_ref().map(|s| s.max_draft + 1);
        let step = match params.device_sampling {
            _ if spec_outputs.is_some_and(|n| n > self.ctx.params().n_outputs_max_per_seq as usize) => None,
            _ if params.logprobs.is_some() || self.device_refused => None,
            DeviceSampling::Auto => self.ctx.model().output_backend().and_then(|b| auto_step(core.sampler(), &b)),
            DeviceSampling::On => core.sampler().device_step(),
            DeviceSampling::Off => None,
        };
        // Attaching makes llama.cpp rebuild its graph, so an unchanged step stays attached.
        if self.ctx.device_sampler(0) != step && !self.ctx.set_device_sampler(0, step)? {
            self.device_refused = true;
        }
        self.ctx.clear_abort(); // a cancel of an earlier generation must not leak into this one
        let logits_index = self.prefill(&tokens, media.as_ref())?;
        // See `GenerateParams::eager_decode`.
        let eager = params.eager_decode.unwrap_or_else(|| self.ctx.model().fully_offloaded());
        let cancel = CancelHandle { flag: Arc::new(AtomicBool::new(false)), abort: self.ctx.abort_handle() };
        Ok(Generator {
            core,
            logits_index,
            pending: None,
            eager,
            decoded: None,
            cancel,
            spec,
            queued: std::collections::VecDeque::new(),
            next_draft: None,
            fixed_batch: params.speculation.as_ref().and_then(|s| s.fixed_batch).filter(|&n| n > 0),
            mtp: params.speculation.as_ref().is_some_and(|s| s.drafter == DraftKind::Mtp),
            session: self,
        })
    }
}

/// What `DeviceSampling::Auto` runs on a device of `backend`. Measured on an H100
/// (docs/BENCHMARKS.md): Vulkan's argmax over a 262k vocabulary is slower than reading
/// the logits, while its top-k is faster, so greedy chains take the top-1 there.
fn auto_step(sampler: &Sampler, backend: &str) -> Option<DeviceSampler> {
    match sampler.device_step()? {
        DeviceSampler::Greedy if backend.eq_ignore_ascii_case("vulkan") => Some(DeviceSampler::TopK(1)),
        step => Some(step),
    }
}

/// Streams the generated text as [`Piece`]s. Dropping it stops generation; the session
/// keeps every token that was decoded. The per-sequence logic is the generation core (`GenerationCore`, shared with the engine);
/// this drives it over sequence 0 of the session's context.
pub struct Generator<'s> {
    session: &'s mut Session,
    core: GenerationCore,
    logits_index: usize,
    /// Sampled, not yet decoded (decoded at the start of the next step, so text is
    /// handed out before the next forward pass).
    pending: Option<Token>,
    /// Whether each sampled token is decoded right away (see `Session::generate`).
    eager: bool,
    /// The outcome of that eager decode, acted on at the start of the next step.
    decoded: Option<Result<()>>,
    cancel: CancelHandle,
    /// Speculation state, and the drafter unless it is the session's draft model.
    spec: Option<(Speculator, Option<Box<dyn Drafter>>)>,
    /// Pieces produced by one verification beyond the one handed out.
    queued: std::collections::VecDeque<Piece>,
    /// A draft made when the pending token was sampled (eager decoding), verified next.
    next_draft: Option<Vec<Token>>,
    /// `Speculation::fixed_batch`: drafts padded to this length.
    fixed_batch: Option<usize>,
    /// The drafter is the session's MTP head (not its draft model).
    mtp: bool,
}

impl Generator<'_> {
    /// A handle that cancels this generation from another thread.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }
    /// Why it ended (after the last piece).
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.core.finish_reason()
    }
    /// Tokens in the prompt / generated so far.
    pub fn usage(&self) -> (usize, usize) {
        self.core.usage()
    }
    /// What speculation did so far (all zero without it).
    pub fn spec_stats(&self) -> SpecStats {
        self.spec.as_ref().map(|(s, _)| s.stats.clone()).unwrap_or_default()
    }
    /// Runs to the end; returns all text and the finish reason.
    pub fn text(mut self) -> Result<(String, FinishReason)> {
        let mut s = String::new();
        for p in &mut self {
            s += &p?.text;
        }
        Ok((s, self.core.finish_reason().unwrap_or(FinishReason::Stop)))
    }

    fn end(&mut self, reason: FinishReason) -> Piece {
        self.session.ctx.clear_abort();
        self.core.finish(reason)
    }

    /// The draft to follow the sampled token `t` (empty: none this step).
    fn draft_after(&mut self, t: Token) -> Result<Vec<Token>> {
        let Some((spec, own)) = self.spec.as_mut() else { return Ok(Vec::new()) };
        let n_past = self.session.tokens.len();
        // Room in the context and in the batch for `t` plus the draft.
        let room =
            (self.session.ctx.n_ctx_seq() as usize).saturating_sub(n_past + 2).min(self.session.batch.capacity() - 1);
        let mut history = Vec::with_capacity(n_past + 1);
        history.extend_from_slice(&self.session.tokens);
        history.push(t);
        let n_vocab = self.session.ctx.model().n_vocab();
        let drafter: &mut dyn Drafter = match own {
            Some(d) => d.as_mut(),
            None if self.mtp => match self.session.mtp.as_mut() {
                Some(m) => m,
                None => return Ok(Vec::new()),
            },
            None => match self.session.draft.as_mut() {
                Some(d) => d,
                None => return Ok(Vec::new()),
            },
        };
        spec.draft(drafter, &history, room, n_vocab)
    }

    /// Verifies a draft after the pending token `t` (made now, or when `t` was sampled)
    /// with one decode of `t` and the drafted tokens. `Ok(false)`: no draft this step
    /// (decode normally).
    fn speculate(&mut self, t: Token) -> Result<bool> {
        let mut drafts = match self.next_draft.take() {
            Some(d) => d,
            None => self.draft_after(t)?,
        };
        let n_past = self.session.tokens.len();
        let real = drafts.len();
        if let Some(n) = self.fixed_batch {
            // One batch shape for every step (see `Speculation::fixed_batch`).
            let room = (self.session.ctx.n_ctx_seq() as usize).saturating_sub(n_past + 2);
            let n = n.min(room).min(self.session.batch.capacity() - 1);
            let fill = drafts.last().copied().unwrap_or(t);
            drafts.resize(n, fill);
        }
        let Some((spec, _)) = self.spec.as_mut() else { return Ok(false) };
        if drafts.is_empty() {
            return Ok(false);
        }
        let s = &mut *self.session;
        s.batch.clear();
        s.batch.add(t, n_past as i32, &[0], true)?;
        for (i, &d) in drafts.iter().enumerate() {
            s.batch.add(d, (n_past + 1 + i) as i32, &[0], true)?;
        }
        // Timed through the sampling of every position: on a GPU `decode` only launches
        // the graph, and the time is spent where the results are read.
        let t0 = std::time::Instant::now();
        if let Err(e) = s.ctx.decode(&mut s.batch) {
            s.resync();
            return Err(e);
        }
        let v = self.core.verify(spec, &s.ctx, 0, &drafts, real)?;
        let dt = t0.elapsed().as_secs_f64();
        spec.stats.verify_s += dt;
        spec.stats.target_decodes += 1;
        spec.record_batch(drafts.len() + 1, dt);
        let kept: Vec<Token> = std::iter::once(t).chain(drafts[..v.accepted].iter().copied()).collect();
        s.feed_mtp(&kept, n_past);
        s.tokens.extend_from_slice(&kept);
        // Drafts the target did not take leave the cache.
        s.ctx.seq_rm(Some(0), s.tokens.len() as i32..)?;
        self.pending = v.next;
        self.queued.extend(v.pieces);
        Ok(true)
    }

    fn step(&mut self) -> Result<Option<Piece>> {
        loop {
            if let Some(p) = self.queued.pop_front() {
                if p.finish_reason.is_some() {
                    self.pending = None;
                    self.session.ctx.clear_abort();
                }
                return Ok(Some(p));
            }
            if self.core.finish_reason().is_some() {
                return Ok(None);
            }
            if self.cancel.is_cancelled() {
                return Ok(Some(self.end(FinishReason::Cancelled)));
            }
            // Checked before decoding the pending token: the last token of a length-limited
            // generation is never decoded (it stays out of `Session::tokens`; a follow-up
            // prompt that contains it decodes it then), which saves one decode per call.
            if self.core.exhausted() {
                return Ok(Some(self.end(FinishReason::Length)));
            }
            if let Some(t) = self.pending {
                if self.decoded.is_none() && self.spec.is_some() {
                    match self.speculate(t) {
                        Ok(true) => continue,
                        Ok(false) => {}
                        Err(Error::Aborted) => return Ok(Some(self.end(FinishReason::Cancelled))),
                        Err(Error::ContextFull) => return Ok(Some(self.end(FinishReason::Length))),
                        Err(e) => return Err(e),
                    }
                }
            }
            // A plain decode's time for the speculation cost model runs to the sampled
            // token, as a verification's does (GPU decodes are asynchronous).
            let mut single_t0 = None;
            let decoded = match (self.decoded.take(), self.pending.take()) {
                (Some(r), _) => Some(r),
                (None, Some(t)) => {
                    let t0 = std::time::Instant::now();
                    let r = self.session.decode_next(t);
                    if let Some((spec, _)) = self.spec.as_mut() {
                        spec.stats.target_decodes += 1;
                        single_t0 = Some(t0);
                    }
                    Some(r)
                }
                (None, None) => None,
            };
            match decoded {
                None | Some(Ok(())) => {}
                Some(Err(Error::Aborted)) => return Ok(Some(self.end(FinishReason::Cancelled))),
                Some(Err(Error::ContextFull)) => return Ok(Some(self.end(FinishReason::Length))),
                Some(Err(e)) => return Err(e),
            }
            if decoded.is_some() {
                self.logits_index = 0;
            }
            let t = self.core.sample(&self.session.ctx, self.logits_index)?;
            if let Some((spec, _)) = self.spec.as_mut() {
                spec.stats.generated += 1;
                if let Some(t0) = single_t0 {
                    spec.record_single(t0.elapsed().as_secs_f64());
                }
            }
            if self.core.continues_after() {
                // With speculation only when no draft follows `t` (the drafter found none,
                // or the skip rule pauses): a draft must be decoded with the token, in one
                // batch; it is made now and kept for the next step.
                let ahead = self.eager
                    && self.fixed_batch.is_none()
                    && match self.spec.is_some() {
                        false => true,
                        true => {
                            let d = self.draft_after(t)?;
                            if d.is_empty() {
                                if let Some((spec, _)) = self.spec.as_mut() {
                                    spec.stats.target_decodes += 1;
                                }
                                true
                            } else {
                                self.next_draft = Some(d);
                                false
                            }
                        }
                    };
                if ahead {
                    // Launch the next forward pass now: on a GPU it runs while this token
                    // is detokenized and handed out; its outcome is acted on next step.
                    self.decoded = Some(self.session.decode_next(t));
                } else {
                    self.pending = Some(t);
                }
            }
            match self.core.emit(t)? {
                Some(p) if p.finish_reason.is_some() => {
                    self.pending = None;
                    self.session.ctx.clear_abort();
                    return Ok(Some(p));
                }
                Some(p) => return Ok(Some(p)),
                None => {}
            }
        }
    }
}

impl Iterator for Generator<'_> {
    type Item = Result<Piece>;

    fn next(&mut self) -> Option<Self::Item> {
        // Pieces of a verification that ended the generation are still queued then.
        if self.core.finish_reason().is_some() && self.queued.is_empty() {
            return None;
        }
        match self.step() {
            Ok(p) => p.map(Ok),
            Err(e) => {
                self.core.finish(FinishReason::Stop);
                Some(Err(e))
            }
        }
    }
}
