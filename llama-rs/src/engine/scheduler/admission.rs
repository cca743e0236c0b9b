//! Admission: which queued request starts next, in which slot (the one whose cache
//! shares the longest prefix with its prompt), and how much of that cache it keeps.

use super::*;

impl Scheduler {
    /// Gives queued requests a sequence, reusing the longest cached prefix.
    pub(super) fn admit(&mut self) {
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
            if let Some(n) = self.restore_disk(free, &a.prompt, keep) {
                keep = n;
            }
            if let (true, Some(m)) = (a.mtp, self.mtp.as_mut()) {
                // The head starts this request afresh (the slot's cells may come from
                // another request or be shared from another slot).
                m.forget(free as SeqId);
            }
            let seq = free as SeqId;
            if let Some(mp) = &a.media {
                // A medium is decoded whole: the kept prefix may not end inside one.
                let cut = crate::media::whole_media_prefix(mp, keep);
                if cut < keep {
                    let _ = self.ctx.seq_rm(Some(seq), cut as i32..);
                    keep = cut;
                }
            }
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
    pub(super) fn wait_for_prefix(&self, prompt: &[Token]) -> bool {
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
    pub(super) fn pick_slot(&self, prompt: &[Token]) -> Option<usize> {
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
    pub(super) fn place(&mut self, dst: usize, prompt: &[Token]) -> usize {
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
}
