//! A smaller model drafting for a larger one: its own context, kept in sync with the
//! target's accepted tokens (its cache holds exactly the sequence's history; rejected
//! drafts are removed before the next draft).

use super::Drafter;
use crate::batch::Batch;
use crate::context::{Context, ContextParams};
use crate::error::{Error, Result};
use crate::generate::prefix;
use crate::model::Model;
use crate::sampling::argmax;
use crate::token::Token;

/// How far the draft and target vocabularies may differ in size (llama.cpp's own rule:
/// padding tokens at the end).
const MAX_VOCAB_SIZE_DIFF: i32 = 128;

/// A draft model for one sequence: greedy drafts from its own context.
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
    /// What the draft context's cache holds for sequence 0.
    cached: Vec<Token>,
    batch: Batch,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel").field("cached", &self.cached.len()).finish_non_exhaustive()
    }
}

impl DraftModel {
    /// A drafter over `draft` for `target`, after checking that the two share a
    /// vocabulary: tokenizer type, special tokens, size (within llama.cpp's padding
    /// allowance) and every token's text.
    pub fn new(target: &Model, draft: &Model, params: ContextParams) -> Result<DraftModel> {
        check_vocabularies(target, draft)?;
        let ctx = draft.context(params.n_seq_max(1))?;
        let batch = Batch::new(ctx.n_batch() as usize, 1)?;
        Ok(DraftModel { ctx, cached: Vec::new(), batch })
    }

    /// Brings the cache to `history` (reusing the common prefix) and returns the logits
    /// row of its last token.
    fn sync(&mut self, history: &[Token]) -> Result<()> {
        let keep = prefix::reuse(&mut self.ctx, 0, &self.cached, history)?;
        self.cached.truncate(keep);
        let n_batch = self.batch.capacity();
        for chunk in history[keep..].chunks(n_batch) {
            self.batch.clear();
            let is_last = self.cached.len() + chunk.len() == history.len();
            self.batch.add_sequence(chunk, self.cached.len() as i32, 0, is_last)?;
            self.ctx.decode(&mut self.batch)?;
            self.cached.extend_from_slice(chunk);
        }
        Ok(())
    }
}

impl Drafter for DraftModel {
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>> {
        let room = (self.ctx.n_ctx_seq() as usize).saturating_sub(history.len() + 1);
        let max = max.min(room);
        if max == 0 || history.is_empty() {
            return Ok(Vec::new());
        }
        self.sync(history)?;
        let model = self.ctx.model().clone();
        let eog = |t| model.vocab().is_eog(t);
        let mut out = Vec::with_capacity(max);
        let mut next = argmax(self.ctx.logits(self.batch.len() - 1)?);
        loop {
            if eog(next) {
                break;
            }
            out.push(next);
            if out.len() == max {
                break;
            }
            self.batch.clear();
            self.batch.add(next, self.cached.len() as i32, &[0], true)?;
            self.ctx.decode(&mut self.batch)?;
            self.cached.push(next);
            next = argmax(self.ctx.logits(0)?);
        }
        Ok(out)
    }
}

fn check_vocabularies(target: &Model, draft: &Model) -> Result<()> {
    let (t, d) = (target.vocab(), draft.vocab());
    let bad = |why: String| {
        Err(Error::InvalidParam(format!("the draft model's vocabulary differs from the target's: {why}")))
    };
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
