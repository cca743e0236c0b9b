//! The prompt caches below the KV pool: host memory (`EngineParams::ram_cache_bytes`: a
//! slot's cache copied out before it is reused, and copied back when a later prompt
//! shares more of it than the cells at hand) and disk (`EngineParams::disk_cache`: a
//! finished request's cache written by a background thread, restored by later requests
//! and later processes).

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

use super::*;
use crate::DiskCache;

/// The disk tier: the cache, its key for this context, and the thread that writes.
pub(super) struct DiskTier {
    pub(super) cache: Arc<DiskCache>,
    key: u64,
    /// States waiting to be written; full: a new one is dropped, never waited for.
    tx: Option<SyncSender<(Vec<Token>, Vec<u8>)>>,
    writer: Option<JoinHandle<()>>,
}

impl DiskTier {
    pub(super) fn new(cache: Arc<DiskCache>, key: u64) -> Result<DiskTier> {
        let (tx, rx) = sync_channel::<(Vec<Token>, Vec<u8>)>(2);
        let c = cache.clone();
        let writer = std::thread::Builder::new()
            .name("llama-rs-disk-cache".into())
            .spawn(move || {
                for (tokens, state) in rx {
                    if let Err(e) = c.write(key, &tokens, (0, 0), &state) {
                        log::warn!("disk cache: {e}");
                    }
                }
            })
            .map_err(|e| Error::Limit { what: "disk cache thread", detail: e.to_string() })?;
        Ok(DiskTier { cache, key, tx: Some(tx), writer: Some(writer) })
    }
}

impl Drop for DiskTier {
    /// Writes what is queued before the engine is gone (a restart finds it).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// A sequence's cache copied to host memory (`EngineParams::ram_cache_bytes`).
pub(super) struct Saved {
    pub(super) tokens: Vec<Token>,
    /// `Context::save_seq_state` of those tokens.
    pub(super) state: Vec<u8>,
    pub(super) last_used: u64,
}

/// Shorter prompts are not copied out (recomputing them costs little).
pub(super) const RAM_MIN: usize = 32;

/// A saved prompt is copied back when it gives at least this many more cached tokens
/// than the cells at hand, and at least 1/256 of what is copied (a copied token costs
/// far less than a computed one).
pub(super) const RESTORE_GAIN: usize = 8;

/// One copy in `PROBE` is made whatever the estimate (`Scheduler::worth_copying`).
const PROBE: u32 = 32;

/// Whether a copy out at `copy_s` seconds a token (measured, if any copy was made) pays
/// against recomputing at `compute_s`, after `skipped` copies skipped in a row.
fn copy_pays(copy_s: Option<f64>, compute_s: Option<f64>, skipped: u32) -> bool {
    let (Some(copy), Some(compute)) = (copy_s, compute_s) else { return true };
    2.0 * copy <= compute || skipped + 1 >= PROBE
}

impl Scheduler {
    /// Copies what idle `slot` caches into the host-memory prompt cache (unless a saved
    /// entry already holds it), dropping the least recently used entries to fit.
    pub(super) fn stash(&mut self, slot: usize) {
        let budget = self.params.ram_cache_bytes;
        let tokens = &self.slots[slot].cached;
        if budget == 0 || !self.params.prefix_cache || tokens.len() < RAM_MIN || self.slots[slot].req.is_some() {
            return;
        }
        if self.saved.iter().any(|s| s.tokens.starts_with(tokens)) {
            return;
        }
        let tokens = tokens.clone();
        if !self.worth_copying() {
            return;
        }
        let t0 = Instant::now();
        let Ok(state) = self.ctx.save_seq_state(slot as SeqId, &tokens) else { return };
        let s = t0.elapsed().as_secs_f64() / tokens.len() as f64;
        self.copy_s = Some(self.copy_s.map_or(s, |a| 0.7 * a + 0.3 * s));
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

    /// Whether copying a sequence out pays: copying it out and back must cost less than
    /// recomputing it. On a CPU a copied token costs microseconds against a computed
    /// token's hundreds. On a GPU with the unified pool, sequences decoded together hold
    /// interleaved cells and llama.cpp copies them one cell range, one layer, one
    /// synchronous transfer at a time: ~300 µs a token, more than the step's whole
    /// per-token cost (measured on an H100: 29 ms per admission, blocking every request).
    /// The cost depends on how the cells lie, so one copy in `PROBE` is made anyway to
    /// measure again.
    fn worth_copying(&mut self) -> bool {
        let copy = copy_pays(self.copy_s, self.token_s, self.copies_skipped);
        self.copies_skipped = if copy { 0 } else { self.copies_skipped + 1 };
        copy
    }

    /// Copies the saved entry sharing the longest prefix with `prompt` into sequence
    /// `dst` when that pays over the `keep` tokens it already holds (`RESTORE_GAIN`);
    /// returns the prefix now cached. A failed copy leaves the sequence empty (`Some(0)`).
    pub(super) fn restore(&mut self, dst: usize, prompt: &[Token], keep: usize) -> Option<usize> {
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
}

impl Scheduler {
    /// Queues what idle `slot` caches for the disk tier (unless an entry holds it).
    pub(super) fn persist(&mut self, slot: usize) {
        let Some(d) = &self.disk else { return };
        let tokens = &self.slots[slot].cached;
        if tokens.len() < RAM_MIN || d.cache.covers(d.key, tokens) {
            return;
        }
        let tokens = tokens.clone();
        let Ok(state) = self.ctx.save_seq_state(slot as SeqId, &tokens) else { return };
        if let Some(tx) = &d.tx {
            if tx.try_send((tokens, state)).is_err() {
                log::debug!("disk cache: writer busy, one entry not written");
            }
        }
    }

    /// Restores from disk into sequence `dst` the stored prefix of `prompt` when it
    /// gives `RESTORE_GAIN` more tokens than the `keep` at hand; returns the prefix now
    /// cached (0 after a failed restore).
    pub(super) fn restore_disk(&mut self, dst: usize, prompt: &[Token], keep: usize) -> Option<usize> {
        let d = self.disk.as_ref()?;
        let limit = prompt.len() - 1; // the last prompt token is decoded for its logits
        let r =
            d.cache.restore_seq(&mut self.ctx, dst as SeqId, prompt, keep + RESTORE_GAIN - 1, |f| f.common.min(limit));
        match r {
            Ok(Some((n, _))) => {
                self.slots[dst].cached = prompt[..n].to_vec();
                Some(n)
            }
            Ok(None) => None,
            Err(e) => {
                log::warn!("disk cache: restore failed: {e}");
                let _ = self.ctx.seq_rm(Some(dst as SeqId), ..);
                self.slots[dst].cached.clear();
                Some(0)
            }
        }
    }
}

impl Scheduler {
    /// A slot file action, between two steps.
    pub(super) fn slot_op(&mut self, slot: usize, op: SlotOp) -> Result<SlotFile> {
        if self.slots[slot].req.is_some() {
            return Err(Error::invalid("id_slot", format!("slot {slot} is processing a request")));
        }
        let t0 = Instant::now();
        let seq = slot as SeqId;
        let (tokens, bytes) = match op {
            SlotOp::Save(path) => {
                let tokens = self.slots[slot].cached.clone();
                self.ctx.save_seq_state_file(&path, seq, &tokens)?;
                (tokens.len(), std::fs::metadata(&path).map_or(0, |m| m.len()))
            }
            SlotOp::Restore(path) => {
                let _ = self.ctx.seq_rm(Some(seq), ..);
                self.slots[slot].cached.clear();
                let tokens = self.ctx.load_seq_state_file(&path, seq).inspect_err(|_| {
                    let _ = self.ctx.seq_rm(Some(seq), ..);
                })?;
                self.step += 1;
                self.slots[slot].last_used = self.step;
                let n = tokens.len();
                self.slots[slot].cached = tokens;
                (n, std::fs::metadata(&path).map_or(0, |m| m.len()))
            }
            SlotOp::Erase => {
                let n = self.slots[slot].cached.len();
                let _ = self.ctx.seq_rm(Some(seq), ..);
                self.slots[slot].cached.clear();
                (n, 0)
            }
        };
        self.publish();
        Ok(SlotFile { tokens, bytes, ms: t0.elapsed().as_secs_f64() * 1e3 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_pay_unless_measured_slower_than_recomputing() {
        // Nothing measured yet: copy (and measure).
        assert!(copy_pays(None, Some(1e-4), 0) && copy_pays(Some(1e-3), None, 0));
        // A CPU: 1 µs a copied token against 300 µs a computed one.
        assert!(copy_pays(Some(1e-6), Some(3e-4), 5));
        // A GPU with interleaved cells: 300 µs a copied token against 80 µs computed,
        // skipped but for one probe in PROBE.
        let skipped: Vec<bool> = (0..PROBE).map(|k| copy_pays(Some(3e-4), Some(8e-5), k)).collect();
        assert_eq!(skipped.iter().filter(|&&c| c).count(), 1);
        assert!(skipped[PROBE as usize - 1]);
    }
}
