//! A step's outputs: each sequence's next token sampled (or its drafts verified) by its
//! generation core, and what that leads to.

use super::*;
use crate::generate::GenerationCore;

/// What sampling one sequence's output led to.
pub(super) enum Outcome {
    Continue,
    Finish(Piece),
    Fail(Error),
}

/// A token sampled ahead by [`Scheduler::presample`] (a panic in a sampler caught).
pub(super) type Presampled = std::thread::Result<Result<Token>>;

/// Rows × vocabulary from which a step's sampling is spread over threads: below it,
/// starting the threads costs more than they save.
const PARALLEL_MIN: usize = 1 << 22;

/// Most threads a step's sampling takes by default (reading the logits soon saturates
/// memory).
const SAMPLE_THREADS: usize = 8;

impl Scheduler {
    /// Samples the step's outputs on several threads when there are many, from host
    /// logits. One core takes ~130 µs to sample a row of a 152k vocabulary, so 128
    /// sequences spent 17 ms a step sampling on an H100's host, as long as the GPU's
    /// whole step (docs/BENCHMARKS.md). Returns a result per entry of `scheduled` that
    /// was sampled here; the rest (few outputs, drafts to verify, outputs without host
    /// logits, a spent token limit) are sampled by `sample_one`.
    pub(super) fn presample(&mut self, scheduled: &[Scheduled]) -> Vec<Option<Presampled>> {
        let mut out: Vec<Option<Presampled>> = (0..scheduled.len()).map(|_| None).collect();
        let n_vocab = self.ctx.model().n_vocab() as usize;
        let plain = |s: &Scheduled| s.output.is_some() && s.drafts.is_empty();
        let n_out = scheduled.iter().filter(|s| plain(s)).count();
        let threads = match self.params.sample_threads {
            0 if self.ctx.model().fully_offloaded() => {
                std::thread::available_parallelism().map_or(1, |n| n.get()).min(SAMPLE_THREADS)
            }
            0 => 1,
            n => n,
        };
        if n_out * n_vocab < PARALLEL_MIN || threads < 2 {
            return out;
        }
        let t0 = Instant::now();
        let mut entry = vec![None; self.slots.len()];
        for (k, s) in scheduled.iter().enumerate().filter(|(_, s)| plain(s)) {
            entry[s.slot] = Some(k);
        }
        let ctx = &self.ctx;
        let mut jobs: Vec<(usize, &mut GenerationCore, &[f32])> = Vec::with_capacity(n_out);
        for (slot, k) in self.slots.iter_mut().zip(entry) {
            let (Some(k), Some(r)) = (k, slot.req.as_mut()) else { continue };
            let Some(Ok(row)) = scheduled[k].output.map(|i| ctx.logits(i)) else { continue };
            if !r.a.core.exhausted() {
                jobs.push((k, &mut r.a.core, row));
            }
        }
        let per = jobs.len().div_ceil(threads).max(1);
        let done: Vec<Vec<(usize, Presampled)>> = std::thread::scope(|sc| {
            let workers: Vec<_> = jobs
                .chunks_mut(per)
                .map(|chunk| {
                    sc.spawn(move || {
                        let sample = |(k, core, row): &mut (usize, &mut GenerationCore, &[f32])| {
                            // A panic in a sampler (a custom stage) fails its request only.
                            (*k, catch_unwind(AssertUnwindSafe(|| core.sample_row(row))))
                        };
                        chunk.iter_mut().map(sample).collect()
                    })
                })
                .collect();
            // Panics are caught inside: a worker itself always returns.
            workers.into_iter().map(|w| w.join().unwrap_or_default()).collect()
        });
        for (k, r) in done.into_iter().flatten() {
            out[k] = Some(r);
        }
        self.local.host.sample_s += t0.elapsed().as_secs_f64();
        out
    }

    /// Counts what the decode put in the cache and, where the chunk produced an output,
    /// samples the next token (unless `presampled`) and turns it into events.
    pub(super) fn sample_one(&mut self, s: &Scheduled, now: Instant, presampled: Option<Presampled>) -> Outcome {
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
        if presampled.is_none() && r.a.core.exhausted() {
            // `max_tokens: Some(0)`: the prompt is processed (and cached), nothing sampled.
            return Outcome::Finish(r.a.core.finish(FinishReason::Length));
        }
        let ctx = &self.ctx;
        let t0 = Instant::now();
        // A panic in a sampler (a custom stage) fails this request, not the engine.
        let sampled = presampled.unwrap_or_else(|| catch_unwind(AssertUnwindSafe(|| r.a.core.sample(ctx, idx))));
        self.local.host.sample_s += t0.elapsed().as_secs_f64();
        let t = match sampled {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => return Outcome::Fail(e),
            Err(_) => {
                return Outcome::Fail(Error::Panicked(
                    "a sampler (a custom sampler or logits processor) panicked".into(),
                ))
            }
        };
        self.local.generated_tokens += 1;
        r.token_time(now, &mut self.local);
        let goes_on = r.a.core.continues_after();
        if goes_on {
            r.tokens.push(t);
        }
        let t0 = Instant::now();
        let emitted = r.a.core.emit(t);
        self.local.host.emit_s += t0.elapsed().as_secs_f64();
        match emitted {
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
    pub(super) fn verify_one(&mut self, s: &Scheduled, idx: usize, now: Instant) -> Outcome {
        let seq = s.slot as SeqId;
        let Some(r) = self.slots[s.slot].req.as_mut() else { return Outcome::Continue };
        let Some((spec, _)) = r.a.spec.as_mut() else { return Outcome::Continue };
        let ctx = &self.ctx;
        let v = match catch_unwind(AssertUnwindSafe(|| r.a.core.verify(spec, ctx, idx, &s.drafts, s.drafts.len()))) {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return Outcome::Fail(e),
            Err(_) => {
                return Outcome::Fail(Error::Panicked(
                    "a sampler (a custom sampler or logits processor) panicked".into(),
                ))
            }
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
}
