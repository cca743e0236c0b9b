//! Drafting with the target model's own multi-token-prediction (MTP, "NextN") head: a
//! small block that takes the trunk's hidden state after token `p - 1` and the embedding
//! of token `p` and predicts token `p + 1`. Fed its own output, it drafts several tokens.
//!
//! The head runs in a second context over the same model (`LLAMA_CONTEXT_TYPE_MTP`), whose
//! cache holds the head's own attention state. After every target decode the accepted
//! tokens enter it, each paired with the target's hidden state of the token before it
//! (the target keeps those rows: `Context::set_mtp_source`). Only models converted with
//! their MTP layers have a head (GLM-4.5, DeepSeek-V3, Qwen3.5, MiMo, ... in llama.cpp).

use std::ptr::NonNull;

use llama_sys as sys;

use super::Drafter;
use crate::context::{Context, ContextParams};
use crate::error::{backend_error, Error, Result};
use crate::model::Model;
use crate::token::{SeqId, Token};

/// One `llama_batch_ext` (the batch that carries a hidden state per token).
struct ExtBatch(NonNull<sys::llama_batch_ext>);

impl ExtBatch {
    fn new(ctx: &Context) -> Result<ExtBatch> {
        // SAFETY: valid context; the batch is sized from it (n_batch entries).
        let p = unsafe { sys::llama_batch_ext_init(ctx.as_ptr()) };
        NonNull::new(p).map(ExtBatch).ok_or(Error::Backend { op: "llama_batch_ext_init", code: None })
    }

    fn clear(&mut self) {
        // SAFETY: valid batch.
        unsafe { sys::llama_batch_ext_clear(self.0.as_ptr()) }
    }

    /// Adds `token` at `pos` of sequence `seq` with the hidden state `h` (`h` must stay
    /// alive and unmoved until the batch is processed: the batch keeps a view of it).
    fn add(&mut self, token: Token, pos: usize, seq: SeqId, h: &[f32], output: bool) -> Result<()> {
        let b = self.0.as_ptr();
        // SAFETY: valid batch; `seq` is below the context's n_seq_max (the caller's
        // check); the index comes from the add; `h` outlives the batch's use (the
        // caller's contract); the position array has one entry for a text token.
        let ok = unsafe {
            let idx = sys::llama_batch_ext_add_token(b, seq, token.0);
            idx >= 0 && {
                let p = pos as sys::llama_pos;
                let embd = sys::llama_embd { data: h.as_ptr(), n_rows: 1, n_embd: h.len() };
                sys::llama_batch_ext_set_pos(b, idx, &p)
                    && sys::llama_batch_ext_set_embd_token(b, idx, embd)
                    && (!output || sys::llama_batch_ext_set_output_logits(b, idx, true))
            }
        };
        if !ok {
            return Err(Error::Backend { op: "llama_batch_ext_add_token", code: None });
        }
        Ok(())
    }

    fn process(&mut self, ctx: &Context) -> Result<()> {
        // SAFETY: valid context and batch, built for this context.
        let r = unsafe { sys::llama_process(ctx.as_ptr(), sys::LLAMA_PROCESS_TYPE_DECODE, self.0.as_ptr()) };
        if r != 0 {
            return Err(backend_error("llama_decode", Some(r)));
        }
        Ok(())
    }
}

impl Drop for ExtBatch {
    fn drop(&mut self) {
        // SAFETY: created by llama_batch_ext_init, freed once.
        unsafe { sys::llama_batch_ext_free(self.0.as_ptr()) }
    }
}

// SAFETY: (contract) the batch is plain host memory owned by this handle; it is used only
// through `&mut self` together with the `Mtp` that owns it, never shared.
unsafe impl Send for ExtBatch {}

/// The MTP head of a model, as a drafter for [`Session`](crate::Session)
/// ([`DraftKind::Mtp`](crate::DraftKind::Mtp) with [`Session::set_mtp`](crate::Session::set_mtp)).
///
/// ```
/// use llama_rs::*;
/// // A model with an MTP block: here a synthetic one (GLM-4.5 layout, random weights);
/// // in use, a GGUF converted with its MTP layers (GLM-4.5-Air, DeepSeek-V3, ...).
/// let path = std::env::temp_dir().join("mtp-doc-example.gguf");
/// let vocab = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp/models/ggml-vocab-qwen2.gguf");
/// let shape = llama_testkit::SyntheticShape::named("mtp-tiny").unwrap();
/// llama_testkit::write_synthetic_qwen2(shape, &vocab, &path, 1, 1)?;
/// let model = Model::load(&path, ModelParams::default().mtp(true))?;
/// let cp = ContextParams::default().n_ctx(512);
/// let mut s = Session::new(model.context(cp.clone())?)?;
/// s.set_mtp(Some(Mtp::new(&model, cp)?))?;
/// let spec = Speculation { drafter: DraftKind::Mtp, ..Default::default() };
/// let p = GenerateParams { max_tokens: Some(8), speculation: Some(spec), sampler: SamplerConfig::greedy(), ..Default::default() };
/// let mut g = s.generate("Hello", &p)?;
/// while let Some(piece) = g.next() {
///     piece?;
/// }
/// assert!(g.spec_stats().drafted > 0);
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Mtp {
    ctx: Context,
    batch: ExtBatch,
    n_embd: usize,
    /// Per sequence: the target's hidden state after the last token that entered the
    /// head's cache, and how many positions (from 0) follow the target's tokens.
    seqs: Vec<SeqState>,
    /// Hidden states of the tokens being added (the batch holds views into it).
    rows: Vec<f32>,
}

#[derive(Clone)]
struct SeqState {
    pending: Vec<f32>,
    synced: usize,
}

impl std::fmt::Debug for Mtp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mtp").field("n_embd", &self.n_embd).field("sequences", &self.seqs.len()).finish()
    }
}

impl Mtp {
    /// The MTP head of `model` in a context of `params` (its `n_ctx` and `n_batch` should
    /// be the target context's; one sequence). Errors: the model has no MTP layers, was
    /// loaded without them (`ModelParams::mtp`), or has several (chained heads are not
    /// supported yet).
    pub fn new(model: &Model, params: ContextParams) -> Result<Mtp> {
        Mtp::with_sequences(model, params.n_seq_max(1))
    }

    /// A head with `params.n_seq_max` sequences (the engine's: one per slot).
    pub(crate) fn with_sequences(model: &Model, params: ContextParams) -> Result<Mtp> {
        let n = model.n_mtp_layers();
        if n == 0 {
            return Err(Error::invalid(
                "",
                format!(
                "{} has no multi-token-prediction (MTP/NextN) layers: MTP drafting needs a model converted with them \
                 (use an n-gram drafter or a draft model instead)",
                model.path().display()
            ),
            ));
        }
        if !model.mtp_loaded() {
            return Err(Error::invalid(
                "",
                "the model was loaded without its MTP layers: load it with ModelParams::mtp(true)".into(),
            ));
        }
        if n != 1 {
            return Err(Error::invalid("", format!("the model has {n} MTP layers; only one MTP head is supported")));
        }
        let ctx = Context::new_mtp(model, params)?;
        // The head's own hidden state, for the outputs only: it feeds the next draft step.
        // SAFETY: valid context; the shim catches every exception.
        if unsafe { sys::llama_rs_set_embeddings_nextn(ctx.as_ptr(), true, true) } != 0 {
            return Err(Error::Backend { op: "llama_set_embeddings_nextn", code: None });
        }
        let batch = ExtBatch::new(&ctx)?;
        let n_embd = model.n_embd_out();
        let seqs = vec![SeqState { pending: vec![0.0; n_embd], synced: 0 }; ctx.n_seq_max() as usize];
        Ok(Mtp { ctx, batch, n_embd, seqs, rows: Vec::new() })
    }

    /// The target's tokens `tokens` of sequence `seq` at `pos0..` were decoded (batch
    /// entries `row0..`) and kept: they enter the head's cache, each with the hidden
    /// state of the one before.
    pub(crate) fn observe(
        &mut self,
        target: &Context,
        seq: SeqId,
        tokens: &[Token],
        pos0: usize,
        row0: usize,
    ) -> Result<()> {
        let Some(st) = self.seqs.get_mut(seq as usize) else {
            return Err(Error::InvalidSeqId { seq_id: seq, n_seq_max: self.seqs.len() as u32 });
        };
        if tokens.is_empty() {
            return Ok(());
        }
        // Where the target reused a cached prefix the head did not see (or saw more of),
        // the head continues from its own cache: drafts are only guesses.
        st.synced = st.synced.min(pos0);
        let n = self.n_embd;
        self.rows.clear();
        self.rows.extend_from_slice(&st.pending);
        for i in 0..tokens.len() - 1 {
            self.rows.extend_from_slice(target.mtp_hidden(row0 + i)?);
        }
        st.pending.copy_from_slice(target.mtp_hidden(row0 + tokens.len() - 1)?);
        self.ctx.seq_rm(Some(seq), pos0 as i32..)?;
        for chunk in (0..tokens.len()).collect::<Vec<_>>().chunks(self.ctx.n_batch() as usize) {
            self.batch.clear();
            for &i in chunk {
                self.batch.add(tokens[i], pos0 + i, seq, &self.rows[i * n..(i + 1) * n], false)?;
            }
            self.batch.process(&self.ctx)?;
        }
        self.seqs[seq as usize].synced = pos0 + tokens.len();
        Ok(())
    }

    /// Up to `max` tokens after the last of `history` (not decoded by the target yet) for
    /// sequence `seq`, when the head has seen every token before it (else none: it would
    /// guess from another text). A failed head decode drafts nothing (a draft is a guess).
    pub(crate) fn draft_seq(&mut self, seq: SeqId, history: &[Token], max: usize) -> Result<Vec<Token>> {
        let Some((&last, before)) = history.split_last() else { return Ok(Vec::new()) };
        let Some(st) = self.seqs.get(seq as usize) else { return Ok(Vec::new()) };
        if before.len() != st.synced || max == 0 {
            return Ok(Vec::new());
        }
        match self.draft_after(seq, last, before.len(), max) {
            Ok(d) => Ok(d),
            Err(Error::Aborted) => Err(Error::Aborted),
            Err(e) => {
                log::debug!("mtp: draft failed: {e}");
                Ok(Vec::new())
            }
        }
    }

    fn draft_after(&mut self, seq: SeqId, last: Token, pos: usize, max: usize) -> Result<Vec<Token>> {
        self.ctx.seq_rm(Some(seq), pos as i32..)?;
        let mut h = self.seqs[seq as usize].pending.clone();
        let mut tok = last;
        let mut out = Vec::with_capacity(max);
        for j in 0..max {
            self.batch.clear();
            self.batch.add(tok, pos + j, seq, &h, true)?;
            self.batch.process(&self.ctx)?;
            // SAFETY: the decode just made an output at batch entry 0.
            let (logits, hidden) = unsafe {
                (
                    sys::llama_get_logits_ith(self.ctx.as_ptr(), 0),
                    sys::llama_rs_get_embeddings_nextn_ith(self.ctx.as_ptr(), 0),
                )
            };
            if logits.is_null() || hidden.is_null() {
                return Err(Error::NoOutput { index: 0 });
            }
            // SAFETY: n_vocab logits and n_embd hidden values for that output, valid until
            // the next decode of this context (after they are used here).
            let (logits, hidden) = unsafe {
                (
                    std::slice::from_raw_parts(logits, self.ctx.model().n_vocab() as usize),
                    std::slice::from_raw_parts(hidden, self.n_embd),
                )
            };
            let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as i32);
            let Some(best) = best else { break };
            tok = Token(best);
            out.push(tok);
            h.copy_from_slice(hidden);
        }
        Ok(out)
    }

    /// The model the head belongs to.
    pub(crate) fn model_ptr(&self) -> *const sys::llama_model {
        self.ctx.model().as_ptr()
    }

    /// Forgets what the head holds of sequence `seq` (a new request in an engine slot).
    pub(crate) fn forget(&mut self, seq: SeqId) {
        if let Some(st) = self.seqs.get_mut(seq as usize) {
            let _ = self.ctx.seq_rm(Some(seq), ..);
            st.synced = 0;
            st.pending.fill(0.0);
        }
    }

    /// Forgets the head's cache (after the target's was cleared or replaced).
    pub(crate) fn reset(&mut self) {
        self.ctx.clear_memory(false);
        for st in &mut self.seqs {
            st.synced = 0;
            st.pending.fill(0.0);
        }
    }
}

impl Drafter for Mtp {
    /// Drafts for sequence 0 (a `Session`'s).
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>> {
        self.draft_seq(0, history, max)
    }
}
