//! The batch of one step: pending prompt chunks and generated tokens (with drafts) of
//! the running requests, bounded by the step budget, and room made when the cache is full.

use super::*;

/// Prompt tokens a step may always take on the CPU, however slow the machine (smaller
/// chunks cost more per token than they save in latency). On an accelerator the floor is
/// a whole micro-batch: a GPU computes fewer tokens far less efficiently, and llama.cpp
/// computes a step in micro-batches anyway, so cutting there costs nothing.
pub(super) const PROMPT_MIN: usize = 32;

/// Steps smaller than this say little about the cost of a prompt token.
pub(super) const RATE_MIN: usize = 32;

/// Where one scheduled sequence's tokens are in the batch.
pub(super) struct Scheduled {
    pub(super) slot: usize,
    pub(super) n: usize,
    /// Batch index of its first token.
    pub(super) row0: usize,
    /// Batch index of its output, if this chunk ends its pending tokens.
    pub(super) output: Option<usize>,
    /// Drafted tokens decoded after the pending one (speculative requests), each with an
    /// output after `output`.
    pub(super) drafts: Vec<Token>,
}

impl Scheduler {
    /// Fills the batch: every running sequence's next token first (inter-token latency),
    /// then prompt chunks, oldest request first, within the step's token budget.
    pub(super) fn build_batch(&mut self) -> Vec<Scheduled> {
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
            // A prompt's text runs up to its next medium (decoded on its own).
            let text_run = self.slots[i].req.as_ref().map_or(0, |r| {
                r.tokens[r.n_cached..].iter().take_while(|&&t| !crate::media::is_placeholder(t)).count()
            });
            if pending == 0 || text_run == 0 {
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
            let n = pending.min(limit - used).min(text_run);
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
    pub(super) fn prompt_limit(&self, used: usize, contenders: usize) -> usize {
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
    pub(super) fn resync(&mut self, scheduled: &[Scheduled]) {
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
    pub(super) fn make_room(&mut self) -> bool {
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
}
