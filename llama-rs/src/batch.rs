//! [`Batch`]: tokens (or embeddings) with positions, sequence ids and output flags,
//! held in Rust memory and lent to llama.cpp only for a decode call.

use llama_sys as sys;

use crate::error::{try_vec, Error, Result};
use crate::token::{Pos, SeqId, Token};

/// A batch for `Context::decode` / `encode`. Its capacity is fixed at creation and
/// `add*` refuses to overfill it, so the C view handed to llama.cpp is always in bounds.
/// Token ids, sequence ids and positions are checked against the context at decode.
///
/// ```
/// use llama_rs::{Batch, Token};
/// let mut batch = Batch::new(512, 1)?;
/// let prompt = [Token(2), Token(651), Token(6037)];
/// batch.add_sequence(&prompt, 0, 0, true)?; // positions 0.., output for the last token
/// assert_eq!(batch.len(), 3);
/// assert_eq!(batch.output_indices().collect::<Vec<_>>(), vec![2]);
/// batch.clear();
/// assert!(batch.is_empty());
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug)]
pub struct Batch {
    capacity: usize,
    max_seqs: usize,
    /// Embedding width for embedding batches; 0 for token batches.
    n_embd: usize,
    tokens: Vec<Token>,
    embd: Vec<f32>,
    pos: Vec<Pos>,
    n_seq_id: Vec<i32>,
    /// `capacity * max_seqs` ids; token i's ids live at `i * max_seqs ..`.
    seq_ids: Vec<SeqId>,
    /// Pointers into `seq_ids`, one per slot; `seq_ids` never reallocates.
    seq_ptrs: Vec<*mut SeqId>,
    outputs: Vec<i8>,
}

// SAFETY: (contract) the raw pointers in `seq_ptrs` point into `seq_ids`, a heap buffer
// owned by this batch that is never reallocated; moving the Batch to another thread
// moves the owner of that buffer with it. There is no shared state.
unsafe impl Send for Batch {}
// SAFETY: `&Batch` gives read-only access; the pointers are only dereferenced by
// llama.cpp during `Context::decode(&mut Batch)`, which requires exclusive access.
unsafe impl Sync for Batch {}

impl Batch {
    /// A token batch of `capacity` tokens, each in up to `max_seqs` sequences.
    /// Errors: `capacity` over `i32::MAX` (llama.cpp counts in i32), `max_seqs` over
    /// llama.cpp's sequence limit, or memory that cannot be had (`Error::Limit`).
    pub fn new(capacity: usize, max_seqs: usize) -> Result<Batch> {
        Self::with_embd(capacity, 0, max_seqs)
    }

    /// An embedding batch: each entry is a vector of `n_embd` floats instead of a token.
    pub fn new_embd(capacity: usize, n_embd: usize, max_seqs: usize) -> Result<Batch> {
        Self::with_embd(capacity, n_embd.max(1), max_seqs)
    }

    fn with_embd(capacity: usize, n_embd: usize, max_seqs: usize) -> Result<Batch> {
        let max_seqs = max_seqs.max(1);
        // SAFETY: a pure query.
        let seq_limit = unsafe { sys::llama_max_parallel_sequences() };
        if capacity > i32::MAX as usize || max_seqs > seq_limit || n_embd > i32::MAX as usize {
            return Err(Error::invalid(
                "",
                format!(
                    "batch of {capacity} entries × {max_seqs} sequences × {n_embd} floats: capacity must be \
                 <= {}, max_seqs <= {seq_limit}",
                    i32::MAX
                ),
            ));
        }
        let n_ids = capacity.checked_mul(max_seqs);
        let n_floats = capacity.checked_mul(n_embd);
        let (Some(n_ids), Some(n_floats)) = (n_ids, n_floats) else {
            return Err(Error::Limit { what: "batch size", detail: "entry count overflows".into() });
        };
        let mut seq_ids = try_vec(n_ids, "batch sequence ids")?;
        seq_ids.resize(n_ids, 0);
        let base: *mut SeqId = seq_ids.as_mut_ptr();
        let mut seq_ptrs = try_vec(capacity, "batch")?;
        // SAFETY: i * max_seqs < capacity * max_seqs = seq_ids.len() (or capacity is 0).
        seq_ptrs.extend((0..capacity).map(|i| unsafe { base.add(i * max_seqs) }));
        Ok(Batch {
            capacity,
            max_seqs,
            n_embd,
            tokens: try_vec(if n_embd == 0 { capacity } else { 0 }, "batch")?,
            embd: try_vec(n_floats, "embedding batch")?,
            pos: try_vec(capacity, "batch")?,
            n_seq_id: try_vec(capacity, "batch")?,
            seq_ids,
            seq_ptrs,
            outputs: try_vec(capacity, "batch")?,
        })
    }

    /// Maximum number of entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Maximum sequence ids per entry.
    pub fn max_seqs(&self) -> usize {
        self.max_seqs
    }
    /// Embedding width (0 for a token batch).
    pub fn n_embd(&self) -> usize {
        self.n_embd
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.pos.len()
    }
    /// Whether the batch holds no tokens (or embeddings).
    pub fn is_empty(&self) -> bool {
        self.pos.is_empty()
    }
    /// Removes all entries, keeping the allocation.
    pub fn clear(&mut self) {
        self.tokens.clear();
        self.embd.clear();
        self.pos.clear();
        self.n_seq_id.clear();
        self.outputs.clear();
    }

    fn push_meta(&mut self, pos: Pos, seq_ids: &[SeqId], output: bool) -> Result<()> {
        if self.len() >= self.capacity {
            return Err(Error::BatchFull { capacity: self.capacity });
        }
        if seq_ids.is_empty() || seq_ids.len() > self.max_seqs {
            return Err(Error::BatchMismatch(format!(
                "{} sequence ids for one token; this batch allows 1..={}",
                seq_ids.len(),
                self.max_seqs
            )));
        }
        if pos < 0 {
            return Err(Error::InvalidPosition { seq_id: seq_ids[0], expected: 0, got: pos });
        }
        let i = self.len();
        self.seq_ids[i * self.max_seqs..i * self.max_seqs + seq_ids.len()].copy_from_slice(seq_ids);
        self.n_seq_id.push(seq_ids.len() as i32);
        self.pos.push(pos);
        self.outputs.push(output as i8);
        Ok(())
    }

    /// Adds one token at `pos` belonging to `seq_ids`; `output` requests its logits.
    pub fn add(&mut self, token: Token, pos: Pos, seq_ids: &[SeqId], output: bool) -> Result<()> {
        if self.n_embd != 0 {
            return Err(Error::BatchMismatch("token added to an embedding batch".into()));
        }
        self.push_meta(pos, seq_ids, output)?;
        self.tokens.push(token);
        Ok(())
    }

    /// Adds one embedding vector (`n_embd` floats) at `pos`.
    pub fn add_embd(&mut self, embd: &[f32], pos: Pos, seq_ids: &[SeqId], output: bool) -> Result<()> {
        if self.n_embd == 0 || embd.len() != self.n_embd {
            return Err(Error::BatchMismatch(format!(
                "embedding of {} floats, batch takes {}",
                embd.len(),
                self.n_embd
            )));
        }
        self.push_meta(pos, seq_ids, output)?;
        self.embd.extend_from_slice(embd);
        Ok(())
    }

    /// Adds `tokens` to one sequence at positions `start..`; only the last token is
    /// marked for output if `output_last`. All or nothing: on error nothing is added.
    pub fn add_sequence(&mut self, tokens: &[Token], start: Pos, seq_id: SeqId, output_last: bool) -> Result<()> {
        if tokens.len() > self.capacity - self.len() {
            return Err(Error::BatchFull { capacity: self.capacity });
        }
        let n = tokens.len();
        // Checked before anything is added, so an overflow leaves the batch as it was.
        if n > 0 && start.checked_add((n - 1) as Pos).is_none() || n > Pos::MAX as usize {
            return Err(Error::InvalidPosition { seq_id, expected: 0, got: start });
        }
        for (i, &t) in tokens.iter().enumerate() {
            let pos = start.checked_add(i as Pos).ok_or(Error::InvalidPosition { seq_id, expected: 0, got: start })?;
            self.add(t, pos, &[seq_id], output_last && i + 1 == n)?;
        }
        Ok(())
    }

    /// Marks (or unmarks) entry `i` for output.
    pub fn set_output(&mut self, i: usize, output: bool) -> Result<()> {
        let len = self.len();
        let o = self.outputs.get_mut(i).ok_or(Error::NoOutput { index: i })?;
        debug_assert!(i < len);
        *o = output as i8;
        Ok(())
    }

    /// Tokens of a token batch.
    pub fn tokens(&self) -> &[Token] {
        &self.tokens
    }
    /// Positions of all entries.
    pub fn positions(&self) -> &[Pos] {
        &self.pos
    }
    /// Sequence ids of entry `i`; empty past the filled length.
    pub fn seq_ids(&self, i: usize) -> &[SeqId] {
        match self.n_seq_id.get(i) {
            Some(&n) => &self.seq_ids[i * self.max_seqs..i * self.max_seqs + n as usize],
            None => &[],
        }
    }
    /// Whether entry `i` requests output.
    pub fn is_output(&self, i: usize) -> bool {
        self.outputs.get(i).is_some_and(|&o| o != 0)
    }
    /// Indices of entries that request output, in order.
    pub fn output_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.outputs.iter().enumerate().filter(|(_, &o)| o != 0).map(|(i, _)| i)
    }

    /// The C view. Valid while `self` is borrowed mutably and not modified.
    pub(crate) fn as_raw(&mut self) -> sys::llama_batch {
        let is_embd = self.n_embd != 0;
        sys::llama_batch {
            n_tokens: self.len() as i32,
            token: if is_embd { std::ptr::null_mut() } else { self.tokens.as_mut_ptr() as *mut i32 },
            embd: if is_embd { self.embd.as_mut_ptr() } else { std::ptr::null_mut() },
            pos: self.pos.as_mut_ptr(),
            n_seq_id: self.n_seq_id.as_mut_ptr(),
            seq_id: self.seq_ptrs.as_mut_ptr(),
            logits: self.outputs.as_mut_ptr(),
        }
    }
}
