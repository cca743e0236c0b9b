//! A step's outputs: each sequence's next token sampled (or its drafts verified) by its
//! generation core, and what that leads to.

use super::*;

/// What sampling one sequence's output led to.
pub(super) enum Outcome {
    Continue,
    Finish(Piece),
    Fail(Error),
}

impl Scheduler {
    /// Counts what the decode put in the cache and, where the chunk produced an output,
    /// samples the next token and turns it into events.
    pub(super) fn sample_one(&mut self, s: &Scheduled, now: Instant) -> Outcome {
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
        let t0 = Instant::now();
        // A panic in a sampler (a custom stage) fails this request, not the engine.
        let sampled = catch_unwind(AssertUnwindSafe(|| r.a.core.sample(ctx, idx)));
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
