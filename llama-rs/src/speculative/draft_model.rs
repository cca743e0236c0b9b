//! A smaller model drafting for a larger one: its own context, kept in sync with the
//! target's accepted tokens (each sequence's cache holds exactly that sequence's history;
//! rejected drafts are removed before the next draft). One context serves every
//! sequence of an engine: the drafts of all sequences that draft in a step are made
//! together, one draft-model decode per drafted position, not one per sequence.

use super::Drafter;
use crate::batch::Batch;
use crate::context::prefix;
use crate::context::{Context, ContextParams};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampling::argmax;
use crate::token::{SeqId, Token};

/// How far the draft and target vocabularies may differ in size (llama.cpp's own rule:
/// padding tokens at the end).
const MAX_VOCAB_SIZE_DIFF: i32 = 128;

/// A draft model: greedy drafts from its own context, for one sequence
/// (`Session::set_draft_model`) or for each of an engine's sequences
/// (`Engine::with_draft_model`; the context's `n_seq_max` sequences).
///
/// ```
/// use llama_rs::*;
/// let target = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let draft = DraftModel::new(&target, &target, ContextParams::default().n_ctx(1024))?; // same vocabulary
/// # let _ = draft;
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct DraftModel {
    ctx: Context,
    /// What the draft context's cache holds, per sequence.
    cached: Vec<Vec<Token>>,
    batch: Batch,
}

/// One sequence's request for a draft: its id, its whole history, the most tokens wanted.
pub(crate) struct Want<'a> {
    pub(crate) seq: SeqId,
    pub(crate) history: &'a [Token],
    pub(crate) max: usize,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached: Vec<usize> = self.cached.iter().map(Vec::len).collect();
        f.debug_struct("DraftModel").field("cached", &cached).finish_non_exhaustive()
    }
}

impl DraftModel {
    /// A drafter over `draft` for `target` with one sequence, after checking that the two
    /// share a vocabulary: tokenizer type, special tokens, size (within llama.cpp's
    /// padding allowance) and every token's text.
    pub fn new(target: &Model, draft: &Model, params: ContextParams) -> Result<DraftModel> {
        DraftModel::with_sequences(target, draft, params.n_seq_max(1))
    }

    /// A drafter for `params.n_seq_max` sequences sharing one draft context (what
    /// `Engine::with_draft_model` makes).
    pub(crate) fn with_sequences(target: &Model, draft: &Model, params: ContextParams) -> Result<DraftModel> {
        check_vocabularies(target, draft)?;
        let ctx = draft.context(params)?;
        let n_seq = ctx.n_seq_max() as usize;
        let batch = Batch::new(ctx.n_batch() as usize, 1)?;
        Ok(DraftModel { ctx, cached: vec![Vec::new(); n_seq], batch })
    }

    /// Drafts for several sequences at once: first every sequence's cache is brought to
    /// its history (reusing the common prefix; the new tokens of all sequences share
    /// decodes), then one decode per drafted position extends every sequence still
    /// drafting. A sequence stops at `max` tokens or at an end-of-generation token.
    /// When the draft context is full, sequences not drafting now lose their cache and it
    /// is tried once more; drafting then fails soft (empty drafts), as a draft is only a
    /// guess.
    pub(crate) fn draft_many(&mut self, wants: &[Want]) -> Vec<Vec<Token>> {
        match self.try_draft_many(wants) {
            Ok(d) => d,
            Err(Error::ContextFull) => {
                for seq in 0..self.cached.len() {
                    if !wants.iter().any(|w| w.seq as usize == seq) && !self.cached[seq].is_empty() {
                        let _ = self.ctx.seq_rm(Some(seq as SeqId), ..);
                        self.cached[seq].clear();
                    }
                }
                self.try_draft_many(wants).unwrap_or_else(|e| self.reset(e, wants.len()))
            }
            Err(e) => self.reset(e, wants.len()),
        }
    }

    /// After a failed draft decode: forgets every cache (what a failed decode left is not
    /// worth reasoning about) and drafts nothing.
    fn reset(&mut self, e: Error, n: usize) -> Vec<Vec<Token>> {
        log::warn!("draft model: {e}; drafting nothing this step");
        let _ = self.ctx.seq_rm(None, ..);
        self.cached.iter_mut().for_each(Vec::clear);
        vec![Vec::new(); n]
    }

    fn try_draft_many(&mut self, wants: &[Want]) -> Result<Vec<Vec<Token>>> {
        let n_ctx_seq = self.ctx.n_ctx_seq() as usize;
        let mut max = Vec::with_capacity(wants.len());
        for w in wants {
            let seq = w.seq as usize;
            if seq >= self.cached.len() {
                return Err(Error::invalid("", format!("draft model has no sequence {seq}")));
            }
            let room = n_ctx_seq.saturating_sub(w.history.len() + 1);
            let m = if w.history.is_empty() { 0 } else { w.max.min(room) };
            if m > 0 {
                let keep = prefix::reuse(&mut self.ctx, w.seq, &self.cached[seq], w.history)?;
                self.cached[seq].truncate(keep);
            }
            max.push(m);
        }
        // Bring every drafting sequence's cache to its history; the logits of its last
        // token give its first drafted token.
        let mut next: Vec<Option<Token>> = vec![None; wants.len()];
        let n_batch = self.batch.capacity();
        loop {
            self.batch.clear();
            let mut ends = Vec::new();
            for (i, w) in wants.iter().enumerate() {
                let cached = &mut self.cached[w.seq as usize];
                if max[i] == 0 || cached.len() == w.history.len() {
                    continue;
                }
                let room = n_batch - self.batch.len();
                if room == 0 {
                    break;
                }
                let chunk = &w.history[cached.len()..(cached.len() + room).min(w.history.len())];
                let is_last = cached.len() + chunk.len() == w.history.len();
                self.batch.add_sequence(chunk, cached.len() as i32, w.seq, is_last)?;
                cached.extend_from_slice(chunk);
                if is_last {
                    ends.push((i, self.batch.len() - 1));
                }
            }
            if self.batch.is_empty() {
                break;
            }
            self.decode_batch(wants)?;
            for (i, idx) in ends {
                next[i] = Some(argmax(self.ctx.logits(idx)?));
            }
        }
        // Draft: each step takes every sequence's next token and decodes it for the one
        // after.
        let model = self.ctx.model().clone();
        let vocab = model.vocab();
        let mut out = vec![Vec::new(); wants.len()];
        loop {
            self.batch.clear();
            let mut rows = Vec::new();
            for (i, w) in wants.iter().enumerate() {
                let Some(t) = next[i].take() else { continue };
                if vocab.is_eog(t) {
                    continue;
                }
                out[i].push(t);
                if out[i].len() < max[i] {
                    let cached = &mut self.cached[w.seq as usize];
                    self.batch.add(t, cached.len() as i32, &[w.seq], true)?;
                    cached.push(t);
                    rows.push((i, self.batch.len() - 1));
                }
            }
            if rows.is_empty() {
                break;
            }
            self.decode_batch(wants)?;
            for (i, idx) in rows {
                next[i] = Some(argmax(self.ctx.logits(idx)?));
            }
        }
        Ok(out)
    }

    /// Decodes the batch; on failure the caches of the sequences in it are re-read (the
    /// tokens counted as cached were not all placed).
    fn decode_batch(&mut self, wants: &[Want]) -> Result<()> {
        let r = self.ctx.decode(&mut self.batch);
        if r.is_err() {
            for w in wants {
                let held = self.ctx.seq_pos_max(w.seq).map_or(0, |p| p as usize + 1);
                self.cached[w.seq as usize].truncate(held);
            }
        }
        r
    }
}

impl Drafter for DraftModel {
    /// Fails soft, as in the engine: a draft decode that fails drafts nothing this step.
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>> {
        Ok(self.draft_many(&[Want { seq: 0, history, max }]).pop().unwrap_or_default())
    }
}

fn check_vocabularies(target: &Model, draft: &Model) -> Result<()> {
    let (t, d) = (target.vocab(), draft.vocab());
    let bad =
        |why: String| Err(Error::invalid("", format!("the draft model's vocabulary differs from the target's: {why}")));
    if t.kind() != d.kind() {
        return bad(format!("tokenizer type {} vs {}", d.kind(), t.kind()));
    }
    if (t.bos(), t.eos(), t.add_bos(), t.add_eos()) != (d.bos(), d.eos(), d.add_bos(), d.add_eos()) {
        return bad("special tokens (BOS/EOS or whether they are added) differ".into());
    }
    if (t.n_tokens() - d.n_tokens()).abs() > MAX_VOCAB_SIZE_DIFF {
        return bad(format!("{} tokens vs {}", d.n_tokens(), t.n_tokens()));
    }
    for i in 0..t.n_tokens().min(d.n_tokens()) {
        if t.text(Token(i))? != d.text(Token(i))? {
            return bad(format!("token {i} is {:?} vs {:?}", d.text(Token(i))?, t.text(Token(i))?));
        }
    }
    Ok(())
}
