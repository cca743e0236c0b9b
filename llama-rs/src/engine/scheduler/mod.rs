//! The engine thread: the loop (commands, steps, finished requests), over
//! `admission`, `batch_plan`, `outputs` and `prompt_cache`. Owns the context; talks to
//! handles through channels only.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::mpsc::Sender;

use super::{Admitted, Command, EngineParams, Event, Metrics, SlotFile, SlotOp, Timings, Usage};
use crate::batch::Batch;
use crate::context::prefix::{common_prefix, window_present};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::generate::{FinishReason, Piece};
use crate::speculative::{keep_target_tokens, DraftModel, Mtp, Want};
use crate::token::{SeqId, Token};

mod admission;
mod batch_plan;
mod outputs;
mod prompt_cache;

use batch_plan::{Scheduled, PROMPT_MIN, RATE_MIN};
use outputs::Outcome;
use prompt_cache::{DiskTier, Saved};

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
    /// Seconds of working loops so far (`Metrics::host.other_s` is what the phases
    /// leave of it).
    loop_s: f64,
    /// Steps left that decode one request at a time: after a decode of several requests
    /// failed, each runs alone so that only the one that fails alone is failed.
    isolate: usize,
    /// Prompt tokens a bounded step may always take (`PROMPT_MIN`, or a micro-batch).
    prompt_min: usize,
    /// The host-memory prompt cache, least recently used first out.
    saved: Vec<Saved>,
    /// Seconds per token of recent copies into `saved` (moving average), and the
    /// copies skipped since the last one (`prompt_cache::worth_copying`).
    copy_s: Option<f64>,
    copies_skipped: u32,
    /// The prompt cache on disk, with its writer thread.
    disk: Option<DiskTier>,
    /// Encodes the media of requests that carry some (`EngineParams::mmproj`).
    projector: Option<Arc<Mutex<crate::Projector>>>,
}

impl Scheduler {
    pub(crate) fn new(
        ctx: Context,
        params: Arc<EngineParams>,
        metrics: Arc<Mutex<Metrics>>,
        draft: Option<DraftModel>,
        mtp: Option<Mtp>,
        disk: Option<Arc<crate::DiskCache>>,
        projector: Option<Arc<Mutex<crate::Projector>>>,
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
            loop_s: 0.0,
            isolate: 0,
            saved: Vec::new(),
            copy_s: None,
            copies_skipped: 0,
            disk: disk.map(|d| DiskTier::new(d, ctx.state_key())).transpose()?,
            projector,
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
            let t_loop = Instant::now();
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
            let t = Instant::now();
            self.flush();
            self.reap();
            self.local.host.deliver_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            self.admit();
            self.local.host.admit_s += t.elapsed().as_secs_f64();
            let worked = self.decode_step();
            self.publish();
            let h = &mut self.local.host;
            let phases = h.admit_s + h.batch_s + h.decode_s + h.wait_s + h.sample_s + h.emit_s + h.deliver_s;
            h.other_s = (self.loop_s + t_loop.elapsed().as_secs_f64() - phases).max(0.0);
            self.loop_s += t_loop.elapsed().as_secs_f64();
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
            Command::Slot { slot, op, reply } => {
                let _ = reply.send(self.slot_op(slot, op));
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

    /// Builds and decodes one batch, then samples and hands out what it produced.
    /// Returns whether any work was done.
    fn decode_step(&mut self) -> bool {
        let media = self.decode_media();
        loop {
            let t = Instant::now();
            let scheduled = self.build_batch();
            self.local.host.batch_s += t.elapsed().as_secs_f64();
            if scheduled.is_empty() && media {
                return true;
            }
            if scheduled.is_empty() {
                return false;
            }
            let t0 = Instant::now();
            // Waiting for the device is its own phase: a failure that surfaces only
            // there is this decode's failure.
            let r = self.ctx.decode(&mut self.batch).and_then(|()| {
                self.local.host.decode_s += t0.elapsed().as_secs_f64();
                let t = Instant::now();
                let r = self.ctx.sync();
                self.local.host.wait_s += t.elapsed().as_secs_f64();
                r
            });
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

    /// Decodes the media that come next in running prompts, each on its own (a medium
    /// is encoded, then decoded whole, non-causally where the model wants it), before
    /// the step's token batch. Returns whether any was decoded.
    fn decode_media(&mut self) -> bool {
        let Some(proj) = self.projector.clone() else { return false };
        let mut any = false;
        for i in 0..self.slots.len() {
            let Some(r) = self.slots[i].req.as_ref() else { continue };
            let (Some(mp), true) = (r.a.media.clone(), r.n_cached < r.tokens.len()) else { continue };
            if !crate::media::is_placeholder(r.tokens[r.n_cached]) || !r.outbox.is_empty() {
                continue;
            }
            let at = r.n_cached;
            // Admission and reuse keep whole media, so a medium starts here.
            let Some(index) = crate::media::chunk_at(&mp, at) else { continue };
            let t0 = Instant::now();
            let mut p = proj.lock().unwrap_or_else(|p| p.into_inner());
            let res = p.decode_media(&mut self.ctx, &mp, index, at as i32, i as SeqId, false);
            drop(p);
            self.local.busy_s += t0.elapsed().as_secs_f64();
            any = true;
            match res {
                Ok((end, _)) => {
                    if let Some(r) = self.slots[i].req.as_mut() {
                        r.started.get_or_insert(t0);
                        r.n_cached = end as usize;
                    }
                }
                Err(Error::ContextFull) if self.make_room() => {}
                Err(e) => {
                    let held = self.ctx.seq_pos_max(i as SeqId).map_or(0, |p| p as usize + 1);
                    let _ = self.ctx.seq_rm(Some(i as SeqId), at.min(held) as i32..);
                    self.fail(i, e);
                }
            }
        }
        any
    }

    fn after_decode(&mut self, scheduled: &[Scheduled], step_s: f64) {
        let now = Instant::now();
        let mut presampled = self.presample(scheduled);
        for (s, presampled) in scheduled.iter().zip(&mut presampled) {
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
            let outcome = self.sample_one(s, now, presampled.take());
            let t = Instant::now();
            match outcome {
                Outcome::Continue => {}
                Outcome::Finish(p) => self.finish(s.slot, p),
                Outcome::Fail(e) => self.fail(s.slot, e),
            }
            self.local.host.deliver_s += t.elapsed().as_secs_f64();
        }
        let t = Instant::now();
        self.flush();
        self.local.host.deliver_s += t.elapsed().as_secs_f64();
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
            self.persist(slot);
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
        if let Some(d) = &self.disk {
            self.local.disk = d.cache.stats();
        }
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
