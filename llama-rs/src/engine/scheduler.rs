//! The engine thread: admission, prefix reuse, continuous batching, eviction and
//! preemption. Owns the context; talks to handles through channels only.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::Sender;

use super::{Admitted, Command, EngineParams, Event, Metrics, Timings, Usage};
use crate::batch::Batch;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::generate::prefix::{common_prefix, window_present};
use crate::generate::{FinishReason, Piece};
use crate::speculative::{keep_target_tokens, DraftModel, Mtp, Want};
use crate::token::{SeqId, Token};

/// One sequence id of the context: the tokens its cache holds, and the request using it.
struct Slot {
    /// What the cache holds for this sequence, from position 0 (a reusable prefix while
    /// no request runs here; `tokens[..n_cached]` of the request while one does).
    cached: Vec<Token>,
    /// Step of the last use, for least-recently-used eviction.
    last_used: u64,
    req: Option<Running>,
}

/// A request that holds a sequence.
struct Running {
    a: Box<Admitted>,
    /// Prompt + generated tokens that belong in the cache (the last may still wait to be
    /// decoded); the output of `tokens.last()` is what the next token is sampled from.
    tokens: Vec<Token>,
    /// How many of `tokens` the cache holds.
    n_cached: usize,
    /// Events not yet accepted by the bounded channel (the request is paused meanwhile).
    outbox: VecDeque<Result<Event>>,
    /// Admission order: the youngest is preempted first.
    order: u64,
    cached_tokens: usize,
    preemptions: u32,
    started: Option<Instant>,
    last_token: Option<Instant>,
    ttft_ms: Option<f64>,
}

impl Running {
    /// Records that tokens came out at `now`: the first gives the time to first token,
    /// later ones the inter-token latency.
    fn token_time(&mut self, now: Instant, m: &mut Metrics) {
        match self.last_token {
            None => {
                let ms = now.duration_since(self.a.submitted).as_secs_f64() * 1e3;
                self.ttft_ms = Some(ms);
                m.ttft_ms.record(ms);
            }
            Some(prev) => m.itl_ms.record(now.duration_since(prev).as_secs_f64() * 1e3),
        }
        self.last_token = Some(now);
    }
}

/// A sequence's cache copied to host memory (`EngineParams::ram_cache_bytes`).
struct Saved {
    tokens: Vec<Token>,
    /// `Context::save_seq_state` of those tokens.
    state: Vec<u8>,
    last_used: u64,
}

/// Shorter prompts are not copied out (recomputing them costs little).
const RAM_MIN: usize = 32;
/// A saved prompt is copied back when it gives at least this many more cached tokens
/// than the cells at hand, and at least 1/256 of what is copied (a copied token costs
/// far less than a computed one).
const RESTORE_GAIN: usize = 8;

/// Events of finished requests that the consumer has not taken yet.
struct Draining {
    tx: Sender<Result<Event>>,
    outbox: VecDeque<Result<Event>>,
}

pub(crate) struct Scheduler {
    ctx: Context,
    params: Arc<EngineParams>,
    metrics: Arc<Mutex<Metrics>>,
    batch: Batch,
    slots: Vec<Slot>,
    queue: VecDeque<Box<Admitted>>,
    draining: Vec<Draining>,
    step: u64,
    next_order: u64,
    /// `Some(drain)` once shutdown was asked for.
    shutdown: Option<bool>,
    /// Most tokens one request may hold.
    cap: usize,
    local: Metrics,
    /// The engine's draft model (one draft sequence per slot), if it has one.
    draft: Option<DraftModel>,
    /// The model's MTP head (one sequence per slot), fed the tokens of `DraftKind::Mtp`
    /// requests after every decode.
    mtp: Option<Mtp>,
    /// Seconds per token of recent steps of at least `RATE_MIN` tokens (moving average),
    /// for `EngineParams::prefill_step_ms`.
    token_s: Option<f64>,
    /// Steps left that decode one request at a time: after a decode of several requests
    /// failed, each runs alone so that only the one that fails alone is failed.
    isolate: usize,
    /// Prompt tokens a bounded step may always take (`PROMPT_MIN`, or a micro-batch).
    prompt_min: usize,
    /// The host-memory prompt cache, least recently used first out.
    saved: Vec<Saved>,
}

/// Prompt tokens a step may always take on the CPU, however slow the machine (smaller
/// chunks cost more per token than they save in latency). On an accelerator the floor is
/// a whole micro-batch: a GPU computes fewer tokens far less efficiently, and llama.cpp
/// computes a step in micro-batches anyway, so cutting there costs nothing.
const PROMPT_MIN: usize = 32;
/// Steps smaller than this say little about the cost of a prompt token.
const RATE_MIN: usize = 32;

/// What sampling one sequence's output led to.
enum Outcome {
    Continue,
    Finish(Piece),
    Fail(Error),
}

/// Where one scheduled sequence's tokens are in the batch.
struct Scheduled {
    slot: usize,
    n: usize,
    /// Batch index of its first token.
    row0: usize,
    /// Batch index of its output, if this chunk ends its pending tokens.
    output: Option<usize>,
    /// Drafted tokens decoded after the pending one (speculative requests), each with an
    /// output after `output`.
    drafts: Vec<Token>,
}

impl Scheduler {
    pub(crate) fn new(
        ctx: Context,
        params: Arc<EngineParams>,
        metrics: Arc<Mutex<Metrics>>,
        draft: Option<DraftModel>,
        mtp: Option<Mtp>,
    ) -> Result<Scheduler> {
        let n_seq = ctx.n_seq_max() as usize;
        let batch = Batch::new(ctx.n_batch() as usize, 1)?;
        let n_ctx = ctx.n_ctx() as usize;
        let seq_ctx = ctx.n_ctx_seq() as usize;
        let cap = params.max_request_tokens.map_or(seq_ctx, |c| (c as usize).min(seq_ctx));
        let slots = (0..n_seq).map(|_| Slot { cached: Vec::new(), last_used: 0, req: None }).collect();
        let local = Metrics { kv_total: n_ctx, ..Default::default() };
        // The deterministic profile reuses no prefixes: how a prompt is split into chunks
        // changes llama.cpp's logits (docs/ENGINE.md), and under load the cache's
        // contents, and so the split, depend on the other requests.
        let params = if params.deterministic && params.prefix_cache {
            Arc::new(EngineParams { prefix_cache: false, ..(*params).clone() })
        } else {
            params
        };
        Ok(Scheduler {
            params,
            metrics,
            batch,
            slots,
            queue: VecDeque::new(),
            draining: Vec::new(),
            step: 0,
            next_order: 0,
            shutdown: None,
            cap,
            local,
            draft,
            prompt_min: if ctx.model().output_on_device() {
                (ctx.n_ubatch() as usize).max(PROMPT_MIN)
            } else {
                PROMPT_MIN
            },
            mtp,
            token_s: None,
            isolate: 0,
            saved: Vec::new(),
            ctx,
        })
    }

    pub(crate) fn run(mut self, rx: Receiver<Command>) {
        loop {
            let idle = self.queue.is_empty() && self.slots.iter().all(|s| s.req.is_none());
            if idle && self.draining.is_empty() {
                if self.shutdown.is_some() {
                    break;
                }
                match rx.recv() {
                    Ok(c) => self.command(c),
                    Err(_) => break, // every handle and the engine are gone
                }
            }
            loop {
                match rx.try_recv() {
                    Ok(c) => self.command(c),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.shutdown.get_or_insert(false);
                        break;
                    }
                }
            }
            if self.shutdown == Some(false) {
                self.cancel_all();
            }
            self.flush();
            self.reap();
            self.admit();
            let worked = self.decode_step();
            self.publish();
            if self.shutdown.is_some() && self.queue.is_empty() && self.slots.iter().all(|s| s.req.is_none()) {
                // Leftover events go out if the consumers are there to take them; a
                // consumer that stopped reading does not keep the thread alive.
                self.flush();
                break;
            }
            if !worked {
                // Everything runnable is paused on full channels (or waits for a slot):
                // wait for a command or a consumer to make room.
                match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(c) => self.command(c),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => {
                        self.shutdown.get_or_insert(false);
                    }
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::Submit(a) => {
                if self.shutdown.is_some() {
                    let mut a = a;
                    let piece = a.core.finish(FinishReason::Cancelled);
                    let _ = a.tx.try_send(Ok(Event::Piece(piece)));
                    let _ = a.tx.try_send(Ok(done(&a, FinishReason::Cancelled, 0, Timings::default())));
                } else {
                    self.queue.push_back(a);
                }
            }
            Command::Shutdown { drain } => {
                self.shutdown = Some(drain && self.shutdown != Some(false));
            }
        }
    }

    /// Ends every queued and running request with `Cancelled`.
    fn cancel_all(&mut self) {
        for a in &self.queue {
            a.cancel.store(true, Ordering::Release);
        }
        for s in &self.slots {
            if let Some(r) = &s.req {
                r.a.cancel.store(true, Ordering::Release);
            }
        }
        let queued: Vec<_> = self.queue.drain(..).collect();
        for a in queued {
            self.end_queued(a);
        }
        self.reap();
    }

    /// Ends a request that never ran with `Cancelled` (its last piece and `Done`, as a
    /// running request's stream ends), through the draining outboxes: a channel of
    /// capacity 1 holds one of the two events at a time.
    fn end_queued(&mut self, mut a: Box<Admitted>) {
        if a.tx.is_closed() {
            return;
        }
        let piece = a.core.finish(FinishReason::Cancelled);
        let timings = Timings {
            total_ms: a.submitted.elapsed().as_secs_f64() * 1e3,
            queued_ms: a.submitted.elapsed().as_secs_f64() * 1e3,
            ..Timings::default()
        };
        let mut outbox = VecDeque::from([Ok(Event::Piece(piece)), Ok(done(&a, FinishReason::Cancelled, 0, timings))]);
        let mut tx = a.tx.clone();
        if push_out(&mut tx, &mut outbox).is_ok() && !outbox.is_empty() {
            self.draining.push(Draining { tx, outbox });
        }
    }

    /// Hands queued events to the channels; a full channel pauses its request.
    fn flush(&mut self) {
        for s in &mut self.slots {
            if let Some(r) = &mut s.req {
                if push_out(&mut r.a.tx, &mut r.outbox).is_err() {
                    r.a.cancel.store(true, Ordering::Release);
                }
            }
        }
        self.draining.retain_mut(|d| push_out(&mut d.tx, &mut d.outbox).is_ok() && !d.outbox.is_empty());
    }

    /// Frees the sequences of cancelled requests (a dropped stream cancels too).
    fn reap(&mut self) {
        for i in 0..self.slots.len() {
            let cancelled =
                self.slots[i].req.as_ref().is_some_and(|r| r.a.cancel.load(Ordering::Acquire) || r.a.tx.is_closed());
            if cancelled {
                let piece = self.slots[i].req.as_mut().map(|r| r.a.core.finish(FinishReason::Cancelled));
                if let Some(p) = piece {
                    self.finish(i, p);
                }
            }
        }
    }

    /// Gives queued requests a sequence, reusing the longest cached prefix.
    fn admit(&mut self) {
        let mut i = 0;
        while i < self.queue.len() {
            let gone = self.queue[i].cancel.load(Ordering::Acquire) || self.queue[i].tx.is_closed();
            if gone {
                let a = self.queue.remove(i).expect("index checked");
                self.end_queued(a);
                continue;
            }
            if self.wait_for_prefix(&self.queue[i].prompt) {
                i += 1;
                continue;
            }
            let Some(free) = self.pick_slot(&self.queue[i].prompt) else { break };
            let a = self.queue.remove(i).expect("index checked");
            // Most of what this slot caches is about to go: keep a copy in host memory
            // (as llama-server does; a slot that keeps most of it stays a good source).
            if common_prefix(&self.slots[free].cached, &a.prompt) * 2 < self.slots[free].cached.len() {
                self.stash(free);
            }
            let mut keep = self.place(free, &a.prompt);
            if let Some(n) = self.restore(free, &a.prompt, keep) {
                keep = n;
                self.local.ram_cache_hits += 1;
            }
            if let (true, Some(m)) = (a.mtp, self.mtp.as_mut()) {
                // The head starts this request afresh (the slot's cells may come from
                // another request or be shared from another slot).
                m.forget(free as SeqId);
            }
            let seq = free as SeqId;
            if keep == 0 {
                let _ = self.ctx.seq_rm(Some(seq), ..);
            }
            self.slots[free].cached.truncate(keep);
            if keep > 0 {
                self.local.prefix_hits += 1;
                self.local.cached_tokens += keep as u64;
            }
            self.next_order += 1;
            let tokens = a.prompt.clone();
            self.slots[free].req = Some(Running {
                a,
                tokens,
                n_cached: keep,
                outbox: VecDeque::new(),
                order: self.next_order,
                cached_tokens: keep,
                preemptions: 0,
                started: None,
                last_token: None,
                ttft_ms: None,
            });
        }
    }

    /// Whether a request should wait because a running sequence is still decoding a
    /// prefix it shares (at least `SHARE_MIN` tokens, e.g. a system prompt sent with
    /// several requests at once, or `n` completions of one prompt): once that prefix is in
    /// the cache the request shares its cells instead of decoding it again. Only with the
    /// unified pool, where cells can be shared.
    fn wait_for_prefix(&self, prompt: &[Token]) -> bool {
        const SHARE_MIN: usize = 32;
        if !self.params.prefix_cache || !self.ctx.params().kv_unified {
            return false;
        }
        let limit = prompt.len() - 1;
        self.slots.iter().filter_map(|s| s.req.as_ref()).any(|r| {
            let common = common_prefix(&r.tokens, prompt).min(limit);
            common >= SHARE_MIN && r.n_cached < common
        })
    }

    /// A free sequence for the request with `prompt`. With the unified pool: an empty one
    /// (the prefix is then shared from wherever it is cached, leaving that cache intact),
    /// else the idle one sharing the longest prefix, else the least recently used. With a
    /// stream per sequence prefixes cannot be shared: the longest prefix wins first.
    fn pick_slot(&self, prompt: &[Token]) -> Option<usize> {
        let shared = self.ctx.params().kv_unified;
        let free = self.slots.iter().enumerate().filter(|(_, s)| s.req.is_none());
        free.max_by_key(|(_, s)| {
            let common = if self.params.prefix_cache { common_prefix(&s.cached, prompt) } else { 0 };
            let lru = std::cmp::Reverse(s.last_used);
            if shared {
                (s.cached.is_empty() as usize, common, lru)
            } else {
                (common, s.cached.is_empty() as usize, lru)
            }
        })
        .map(|(i, _)| i)
    }

    /// Makes sequence `dst`'s cache hold the longest reusable prefix of `prompt` — its
    /// own, or another sequence's shared through `seq_cp` — and returns its length.
    fn place(&mut self, dst: usize, prompt: &[Token]) -> usize {
        if !self.params.prefix_cache {
            return 0;
        }
        let limit = prompt.len() - 1; // the last prompt token is decoded for its logits
        let own = common_prefix(&self.slots[dst].cached, prompt).min(limit);
        let best_other = (0..self.slots.len())
            .filter(|&i| i != dst)
            .map(|i| {
                let held = match &self.slots[i].req {
                    Some(r) => &r.tokens[..r.n_cached],
                    None => &self.slots[i].cached[..],
                };
                (common_prefix(held, prompt).min(limit), i)
            })
            .max();
        let seq = dst as SeqId;
        // Sharing cells across sequences needs the one unified pool (with a stream per
        // sequence llama.cpp would copy whole streams).
        let shared = self.ctx.params().kv_unified;
        if let Some((n, src)) = best_other.filter(|&(n, _)| shared && n > own) {
            let src_seq = src as SeqId;
            if window_present(&self.ctx, src_seq, n)
                && self.ctx.seq_rm(Some(seq), ..).is_ok()
                && self.ctx.seq_cp(src_seq, seq, 0..n as i32).is_ok()
            {
                self.slots[dst].cached = prompt[..n].to_vec();
                return n;
            }
        }
        if own > 0 && self.ctx.seq_rm(Some(seq), own as i32..).unwrap_or(false) && window_present(&self.ctx, seq, own) {
            return own;
        }
        0
    }

    /// Copies what idle `slot` caches into the host-memory prompt cache (unless a saved
    /// entry already holds it), dropping the least recently used entries to fit.
    fn stash(&mut self, slot: usize) {
        let budget = self.params.ram_cache_bytes;
        let tokens = &self.slots[slot].cached;
        if budget == 0 || !self.params.prefix_cache || tokens.len() < RAM_MIN || self.slots[slot].req.is_some() {
            return;
        }
        if self.saved.iter().any(|s| s.tokens.starts_with(tokens)) {
            return;
        }
        let tokens = tokens.clone();
        let Ok(state) = self.ctx.save_seq_state(slot as SeqId, &tokens) else { return };
        if state.len() > budget {
            return;
        }
        // Entries this one extends are no longer needed.
        self.saved.retain(|s| !tokens.starts_with(&s.tokens));
        let mut used: usize = self.saved.iter().map(|s| s.state.len()).sum();
        while used + state.len() > budget && !self.saved.is_empty() {
            let lru = (0..self.saved.len()).min_by_key(|&i| self.saved[i].last_used).expect("not empty");
            used -= self.saved.swap_remove(lru).state.len();
        }
        self.step += 1;
        self.saved.push(Saved { tokens, state, last_used: self.step });
        self.local.ram_cache_bytes = used + self.saved.last().map_or(0, |s| s.state.len());
    }

    /// Copies the saved entry sharing the longest prefix with `prompt` into sequence
    /// `dst` when that pays over the `keep` tokens it already holds (`RESTORE_GAIN`);
    /// returns the prefix now cached. A failed copy leaves the sequence empty (`Some(0)`).
    fn restore(&mut self, dst: usize, prompt: &[Token], keep: usize) -> Option<usize> {
        if !self.params.prefix_cache {
            return None;
        }
        let limit = prompt.len() - 1; // the last prompt token is decoded for its logits
        let (n, i) =
            (0..self.saved.len()).map(|i| (common_prefix(&self.saved[i].tokens, prompt).min(limit), i)).max()?;
        let gain = n.saturating_sub(keep);
        if gain < RESTORE_GAIN || gain * 256 < self.saved[i].tokens.len() {
            return None;
        }
        let seq = dst as SeqId;
        let _ = self.ctx.seq_rm(Some(seq), ..);
        self.slots[dst].cached.clear();
        self.step += 1;
        self.saved[i].last_used = self.step;
        let ok = self.ctx.load_seq_state(seq, &self.saved[i].state).is_ok()
            && self.ctx.seq_rm(Some(seq), n as i32..).unwrap_or(false)
            && window_present(&self.ctx, seq, n);
        if !ok {
            log::debug!("engine: restoring a saved prompt into sequence {seq} failed");
            let _ = self.ctx.seq_rm(Some(seq), ..);
            return Some(0);
        }
        self.slots[dst].cached = prompt[..n].to_vec();
        Some(n)
    }

    /// Builds and decodes one batch, then samples and hands out what it produced.
    /// Returns whether any work was done.
    fn decode_step(&mut self) -> bool {
        loop {
            let scheduled = self.build_batch();
            if scheduled.is_empty() {
                return false;
            }
            let t0 = Instant::now();
            let r = self.ctx.decode(&mut self.batch);
            let step_s = t0.elapsed().as_secs_f64();
            self.local.busy_s += step_s;
            self.local.steps += 1;
            match r {
                Ok(()) => {
                    self.isolate = self.isolate.saturating_sub(1);
                    let n = self.batch.len();
                    if n >= RATE_MIN {
                        let s = step_s / n as f64;
                        self.token_s = Some(self.token_s.map_or(s, |a| 0.7 * a + 0.3 * s));
                    }
                    self.after_decode(&scheduled, step_s);
                    return true;
                }
                Err(Error::ContextFull) => {
                    self.resync(&scheduled);
                    if !self.make_room() {
                        // Only one request runs and it alone does not fit: end it.
                        let i = scheduled[0].slot;
                        if let Some(p) = self.slots[i].req.as_mut().map(|r| r.a.core.finish(FinishReason::Length)) {
                            self.finish(i, p);
                        }
                    }
                }
                Err(e) if scheduled.len() > 1 => {
                    // Inputs are checked before they reach the batch, but one request
                    // must never fail another: run them one at a time to find which
                    // fails on its own.
                    log::warn!(
                        "engine: a decode of {} requests failed ({e}); retrying them one by one",
                        scheduled.len()
                    );
                    self.resync(&scheduled);
                    self.isolate = scheduled.len();
                }
                Err(e) => {
                    log::error!("engine: decode failed: {e}");
                    self.resync(&scheduled);
                    self.isolate = self.isolate.saturating_sub(1);
                    let code = match e {
                        Error::Backend { code, .. } => code,
                        _ => None,
                    };
                    for s in &scheduled {
                        self.fail(s.slot, Error::Backend { op: "llama_decode", code });
                    }
                    return true;
                }
            }
        }
    }

    /// Fills the batch: every running sequence's next token first (inter-token latency),
    /// then prompt chunks, oldest request first, within the step's token budget.
    fn build_batch(&mut self) -> Vec<Scheduled> {
        self.batch.clear();
        let budget = self.batch.capacity();
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].req.as_ref().is_some_and(|r| r.outbox.is_empty()))
            .collect();
        // Who gets the budget: decoding sequences (one pending token) before prompts;
        // older before younger.
        order.sort_by_key(|&i| {
            let r = self.slots[i].req.as_ref().expect("filtered above");
            (r.tokens.len() - r.n_cached > 1, r.order)
        });
        let contenders = order.len();
        let mut plan = Vec::new();
        let mut model_wants = Vec::new();
        let mut used = 0;
        // Tokens this step may hold once prompts join (decoding sequences come first).
        let mut prompt_limit = None;
        for i in order {
            if used == budget || (self.isolate > 0 && !plan.is_empty()) {
                break;
            }
            // A request at its token cap ends before its next token is decoded.
            let at_cap = self.slots[i].req.as_ref().is_some_and(|r| r.tokens.len() > self.cap);
            if at_cap {
                if let Some(p) = self.slots[i].req.as_mut().map(|r| r.a.core.finish(FinishReason::Length)) {
                    self.finish(i, p);
                }
                continue;
            }
            let pending = self.slots[i].req.as_ref().map_or(0, |r| r.tokens.len() - r.n_cached);
            if pending == 0 {
                continue;
            }
            let limit = match pending {
                1 => budget,
                _ => *prompt_limit.get_or_insert_with(|| self.prompt_limit(used, contenders)),
            };
            if used >= limit {
                break; // only prompts are left, and this step is full
            }
            let r = self.slots[i].req.as_mut().expect("filtered above");
            let n = pending.min(limit - used);
            used += n;
            // A decoding sequence with speculation: its draft joins the batch, each
            // drafted token with an output, within the step's budget and the cap.
            // Drafts from the engine's draft model are made below, for all at once.
            let mut drafts = Vec::new();
            if let (true, Some((spec, drafter))) = (pending == 1, r.a.spec.as_mut()) {
                let room = (budget - used).min(self.cap.saturating_sub(r.tokens.len() + 1));
                let want = if room > 0 { spec.plan(room) } else { 0 };
                match drafter {
                    _ if want == 0 => {}
                    None if r.a.mtp => {
                        let t = Instant::now();
                        if let Some(m) = self.mtp.as_mut() {
                            drafts = m.draft_seq(i as SeqId, &r.tokens, want).unwrap_or_default();
                        }
                        spec.stats.draft_s += t.elapsed().as_secs_f64();
                        drafts.truncate(want);
                    }
                    Some(d) => {
                        let t = Instant::now();
                        drafts = d.draft(&r.tokens, want).unwrap_or_default();
                        spec.stats.draft_s += t.elapsed().as_secs_f64();
                        drafts.truncate(want);
                    }
                    None => model_wants.push((plan.len(), want)),
                }
                used += want;
            }
            plan.push(Scheduled { slot: i, n, row0: 0, output: (n == pending).then_some(0), drafts });
        }
        if let (false, Some(dm)) = (model_wants.is_empty(), self.draft.as_mut()) {
            let wants: Vec<Want> = model_wants
                .iter()
                .map(|&(p, max)| {
                    let slot = plan[p].slot;
                    let r = self.slots[slot].req.as_ref().expect("planned above");
                    Want { seq: slot as SeqId, history: &r.tokens, max }
                })
                .collect();
            let t = Instant::now();
            let drafted = dm.draft_many(&wants);
            let share = t.elapsed().as_secs_f64() / wants.len() as f64;
            for (&(p, max), mut d) in model_wants.iter().zip(drafted) {
                d.truncate(max);
                let slot = plan[p].slot;
                if let Some((spec, _)) = self.slots[slot].req.as_mut().and_then(|r| r.a.spec.as_mut()) {
                    spec.stats.draft_s += share;
                }
                plan[p].drafts = d;
            }
        }
        let n_vocab = self.ctx.model().n_vocab();
        for p in &mut plan {
            keep_target_tokens(&mut p.drafts, n_vocab);
        }
        // The order of sequences in the batch picks llama.cpp's attention path when each
        // sequence has its own KV stream (measured, 8 one-token sequences): in increasing
        // id order the streams are read in place; in any other order they are gathered
        // first, which takes 2x as long but gives each sequence the numbers it gets when
        // it runs alone. The deterministic profile takes the gathered path.
        if self.params.deterministic {
            plan.sort_by_key(|s| std::cmp::Reverse(s.slot));
        } else {
            plan.sort_by_key(|s| s.slot);
        }
        let mut out = Vec::with_capacity(plan.len());
        for mut s in plan {
            let r = self.slots[s.slot].req.as_mut().expect("planned above");
            let seq = s.slot as SeqId;
            let chunk = &r.tokens[r.n_cached..r.n_cached + s.n];
            s.row0 = self.batch.len();
            if self.batch.add_sequence(chunk, r.n_cached as i32, seq, s.output.is_some()).is_err() {
                break;
            }
            if s.output.is_some() {
                s.output = Some(self.batch.len() - 1);
            }
            for (j, &d) in s.drafts.iter().enumerate() {
                if self.batch.add(d, (r.tokens.len() + j) as i32, &[seq], true).is_err() {
                    s.drafts.truncate(j);
                    break;
                }
            }
            r.started.get_or_insert_with(Instant::now);
            out.push(s);
        }
        out
    }

    /// The tokens a step may hold when `used` are already planned and prompt chunks are
    /// next: what decodes in `prefill_step_ms` at the measured rate, at least
    /// `prompt_min` prompt tokens more, at most the batch. A prompt that has the engine to itself
    /// (`contenders` sequences have work) takes the whole batch: shorter steps would only
    /// slow it down. Only with the unified pool: with a stream per sequence llama.cpp cuts
    /// a step into one micro-batch per run of consecutive sequences with equal token
    /// counts, so steps that mix prompt chunks with next tokens cost several graph runs
    /// (measured: 0.87x llama-server's throughput at 16 clients, TTFT p50 worse).
    fn prompt_limit(&self, used: usize, contenders: usize) -> usize {
        let budget = self.batch.capacity();
        let ms = self.params.prefill_step_ms;
        let unified = self.ctx.params().kv_unified;
        match self.token_s {
            Some(s) if ms > 0 && contenders > 1 && unified && !self.params.deterministic => {
                let fits = (ms as f64 / 1e3 / s) as usize;
                fits.max(used + self.prompt_min).min(budget)
            }
            _ => budget,
        }
    }

    /// After a failed decode, the caches hold what they held before (llama.cpp places a
    /// whole batch or none of it); the counts are re-read to be sure.
    fn resync(&mut self, scheduled: &[Scheduled]) {
        for s in scheduled {
            let held = self.ctx.seq_pos_max(s.slot as SeqId).map_or(0, |p| p as usize + 1);
            if let Some(r) = &mut self.slots[s.slot].req {
                r.n_cached = r.n_cached.min(held);
            }
        }
    }

    /// Frees KV cells: first a cached prefix of an idle sequence (least recently used),
    /// then the youngest running request (recomputed from its tokens later). Returns
    /// false when nothing can be freed.
    fn make_room(&mut self) -> bool {
        let idle = (0..self.slots.len())
            .filter(|&i| self.slots[i].req.is_none() && !self.slots[i].cached.is_empty())
            .min_by_key(|&i| self.slots[i].last_used);
        if let Some(i) = idle {
            self.stash(i);
            let _ = self.ctx.seq_rm(Some(i as SeqId), ..);
            self.slots[i].cached.clear();
            self.local.evictions += 1;
            return true;
        }
        let running: Vec<usize> =
            (0..self.slots.len()).filter(|&i| self.slots[i].req.as_ref().is_some_and(|r| r.n_cached > 0)).collect();
        if running.len() < 2 {
            return false;
        }
        let youngest = *running.iter().max_by_key(|&&i| self.slots[i].req.as_ref().map(|r| r.order)).expect("two");
        let _ = self.ctx.seq_rm(Some(youngest as SeqId), ..);
        if let Some(r) = &mut self.slots[youngest].req {
            r.n_cached = 0;
            r.preemptions += 1;
            // Recomputing counts as prompt work, not as a cache hit.
            r.cached_tokens = r.cached_tokens.min(r.a.prompt.len());
        }
        self.slots[youngest].cached.clear();
        self.local.preemptions += 1;
        true
    }

    fn after_decode(&mut self, scheduled: &[Scheduled], step_s: f64) {
        let now = Instant::now();
        for s in scheduled {
            // A speculative request's statistics, counted as `Session` counts them: each
            // sampled token is generated; each step that decoded a generated token of it
            // (a verification, or a plain step without a draft) is a target decode.
            if let (Some(r), Some(_)) = (self.slots[s.slot].req.as_mut(), s.output) {
                let generating = r.tokens.len() > r.a.prompt.len();
                if let Some((spec, _)) = r.a.spec.as_mut() {
                    if generating {
                        spec.stats.target_decodes += 1;
                        spec.stats.verify_s += step_s;
                    }
                    if s.drafts.is_empty() {
                        spec.stats.generated += 1;
                    }
                }
            }
            match self.sample_one(s, now) {
                Outcome::Continue => {}
                Outcome::Finish(p) => self.finish(s.slot, p),
                Outcome::Fail(e) => self.fail(s.slot, e),
            }
        }
        self.flush();
    }

    /// Counts what the decode put in the cache and, where the chunk produced an output,
    /// samples the next token and turns it into events.
    fn sample_one(&mut self, s: &Scheduled, now: Instant) -> Outcome {
        let Some(r) = self.slots[s.slot].req.as_mut() else { return Outcome::Continue };
        let prompt_part = r.a.prompt.len().min(r.n_cached + s.n).saturating_sub(r.n_cached);
        self.local.prompt_tokens += prompt_part as u64;
        if let (true, Some(m)) = (r.a.mtp, self.mtp.as_mut()) {
            let fed = &r.tokens[r.n_cached..r.n_cached + s.n];
            if let Err(e) = m.observe(&self.ctx, s.slot as SeqId, fed, r.n_cached, s.row0) {
                // Drafts are guesses: the head starts over, the text does not change.
                log::debug!("engine: mtp: {e}");
                m.forget(s.slot as SeqId);
            }
        }
        r.n_cached += s.n;
        let Some(idx) = s.output else { return Outcome::Continue };
        if !s.drafts.is_empty() {
            return self.verify_one(s, idx, now);
        }
        if r.a.core.exhausted() {
            // `max_tokens: Some(0)`: the prompt is processed (and cached), nothing sampled.
            return Outcome::Finish(r.a.core.finish(FinishReason::Length));
        }
        let ctx = &self.ctx;
        // A panic in a sampler (a custom stage) fails this request, not the engine.
        let t = match catch_unwind(AssertUnwindSafe(|| r.a.core.sample(ctx, idx))) {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Outcome::Fail(e),
            Err(_) => return Outcome::Fail(Error::InvalidParam("a sampler panicked".into())),
        };
        self.local.generated_tokens += 1;
        r.token_time(now, &mut self.local);
        let goes_on = r.a.core.continues_after();
        if goes_on {
            r.tokens.push(t);
        }
        match r.a.core.emit(t) {
            Ok(Some(p)) if p.finish_reason.is_some() => Outcome::Finish(p),
            Ok(p) => {
                if let Some(p) = p {
                    r.outbox.push_back(Ok(Event::Piece(p)));
                }
                if goes_on {
                    Outcome::Continue
                } else {
                    Outcome::Finish(r.a.core.finish(FinishReason::Length))
                }
            }
            Err(e) => Outcome::Fail(e),
        }
    }

    /// Verifies a speculative request's draft: keeps the drafted tokens the target
    /// sampled, drops the others from the cache, hands out the pieces.
    fn verify_one(&mut self, s: &Scheduled, idx: usize, now: Instant) -> Outcome {
        let seq = s.slot as SeqId;
        let Some(r) = self.slots[s.slot].req.as_mut() else { return Outcome::Continue };
        let Some((spec, _)) = r.a.spec.as_mut() else { return Outcome::Continue };
        let ctx = &self.ctx;
        let v = match catch_unwind(AssertUnwindSafe(|| spec.verify(&mut r.a.core, ctx, idx, &s.drafts, s.drafts.len())))
        {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Outcome::Fail(e),
            Err(_) => return Outcome::Fail(Error::InvalidParam("a sampler panicked".into())),
        };
        self.local.draft_tokens += s.drafts.len() as u64;
        self.local.draft_accepted_tokens += v.accepted as u64;
        let gained = v.accepted + v.next.is_some() as usize;
        self.local.generated_tokens += gained.max(1) as u64;
        r.token_time(now, &mut self.local);
        // The kept drafts are in the cache after the pending token; the rest leave it.
        if let (true, Some(m)) = (r.a.mtp, self.mtp.as_mut()) {
            let kept = &s.drafts[..v.accepted];
            if let Err(e) = m.observe(&self.ctx, seq, kept, r.n_cached, s.row0 + 1) {
                log::debug!("engine: mtp: {e}");
                m.forget(seq);
            }
        }
        r.tokens.extend_from_slice(&s.drafts[..v.accepted]);
        r.n_cached += v.accepted;
        let _ = self.ctx.seq_rm(Some(seq), r.n_cached as i32..);
        let mut last = None;
        for p in v.pieces {
            if p.finish_reason.is_some() {
                last = Some(p);
            } else {
                r.outbox.push_back(Ok(Event::Piece(p)));
            }
        }
        if let Some(p) = last {
            return Outcome::Finish(p);
        }
        match v.next {
            Some(t) => {
                r.tokens.push(t);
                Outcome::Continue
            }
            None => Outcome::Finish(r.a.core.finish(FinishReason::Length)),
        }
    }

    /// Ends the request in `slot` with its final piece; its cache stays as a reusable
    /// prefix (prefix cache on) or is dropped.
    fn finish(&mut self, slot: usize, last: Piece) {
        let Some(mut r) = self.slots[slot].req.take() else { return };
        let reason = last.finish_reason.unwrap_or(FinishReason::Stop);
        log::debug!("engine: request {} finished ({reason:?})", r.a.id);
        r.outbox.push_back(Ok(Event::Piece(last)));
        let now = Instant::now();
        let timings = Timings {
            queued_ms: r.started.map_or(0.0, |s| s.duration_since(r.a.submitted).as_secs_f64() * 1e3),
            ttft_ms: r.ttft_ms.unwrap_or(0.0),
            total_ms: now.duration_since(r.a.submitted).as_secs_f64() * 1e3,
            preemptions: r.preemptions,
        };
        r.outbox.push_back(Ok(done(&r.a, reason, r.cached_tokens, timings)));
        self.retire(slot, r);
    }

    /// Ends the request in `slot` with an error.
    fn fail(&mut self, slot: usize, e: Error) {
        let Some(mut r) = self.slots[slot].req.take() else { return };
        r.a.core.finish(FinishReason::Stop);
        r.outbox.push_back(Err(e));
        self.retire(slot, r);
    }

    fn retire(&mut self, slot: usize, mut r: Running) {
        self.local.finished += 1;
        self.step += 1;
        let s = &mut self.slots[slot];
        s.last_used = self.step;
        if self.params.prefix_cache {
            s.cached = r.tokens[..r.n_cached].to_vec();
        } else {
            let _ = self.ctx.seq_rm(Some(slot as SeqId), ..);
            s.cached.clear();
        }
        self.publish();
        let _ = push_out(&mut r.a.tx, &mut r.outbox);
        if !r.outbox.is_empty() {
            self.draining.push(Draining { tx: r.a.tx, outbox: r.outbox });
        }
    }

    /// Copies the counters into the shared snapshot.
    fn publish(&mut self) {
        self.local.queued = self.queue.len();
        self.local.active = self.slots.iter().filter(|s| s.req.is_some()).count();
        self.local.kv_used = self
            .slots
            .iter()
            .map(|s| match &s.req {
                Some(r) => r.n_cached,
                None => s.cached.len(),
            })
            .sum();
        if let Ok(mut m) = self.metrics.lock() {
            m.clone_from(&self.local);
        }
    }
}

/// The `Done` event of a request.
fn done(a: &Admitted, reason: FinishReason, cached: usize, timings: Timings) -> Event {
    let (prompt_tokens, completion_tokens) = a.core.usage();
    let (drafted, accepted) = a.spec.as_ref().map_or((0, 0), |(s, _)| (s.stats.drafted, s.stats.accepted));
    let usage = Usage {
        prompt_tokens,
        cached_tokens: cached,
        completion_tokens,
        accepted_draft_tokens: accepted,
        rejected_draft_tokens: drafted - accepted,
    };
    let spec = a.spec.as_ref().map(|(s, _)| s.stats.clone());
    Event::Done { finish_reason: reason, usage, timings, stop_word: a.core.stop_word().map(str::to_string), spec }
}

/// Moves events into the channel until it is full. `Err` when the receiver is gone.
fn push_out(tx: &mut Sender<Result<Event>>, outbox: &mut VecDeque<Result<Event>>) -> std::result::Result<(), ()> {
    while let Some(ev) = outbox.pop_front() {
        match tx.try_send(ev) {
            Ok(()) => {}
            Err(e) if e.is_full() => {
                outbox.push_front(e.into_inner());
                return Ok(());
            }
            Err(_) => {
                outbox.clear();
                return Err(());
            }
        }
    }
    Ok(())
}
