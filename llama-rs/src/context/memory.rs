//! The KV cache / recurrent memory of a [`Context`]: clear, remove, copy, shift.

use std::ops::{Bound, RangeBounds};

use llama_sys as sys;

use super::{Context, KvType};
use crate::error::{Error, Result};
use crate::token::{Pos, SeqId};

fn range_to_c(r: impl RangeBounds<Pos>) -> (Pos, Pos) {
    let p0 = match r.start_bound() {
        Bound::Included(&p) => p,
        Bound::Excluded(&p) => p.saturating_add(1),
        Bound::Unbounded => -1,
    };
    let p1 = match r.end_bound() {
        Bound::Included(&p) => p.saturating_add(1),
        Bound::Excluded(&p) => p,
        Bound::Unbounded => -1,
    };
    (p0, p1)
}

impl Context {
    fn mem(&self) -> sys::llama_memory_t {
        // SAFETY: valid context; the memory handle lives as long as the context.
        unsafe { sys::llama_get_memory(self.ptr.as_ptr()) }
    }

    /// Clears the KV cache (`data`: also zero the buffers).
    pub fn clear_memory(&mut self, data: bool) {
        // SAFETY: valid memory handle.
        unsafe { sys::llama_memory_clear(self.mem(), data) };
        self.outputs.clear();
    }

    /// Removes positions `range` of `seq` (`None` = every sequence). Returns `false` when
    /// the memory cannot remove a partial range (recurrent models).
    ///
    /// ```
    /// # let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// # let mut ctx = model.context(Default::default())?;
    /// # let mut b = llama_rs::Batch::new(16, 1)?;
    /// # b.add_sequence(&[llama_rs::Token(2); 16], 0, 0, true)?;
    /// # ctx.decode(&mut b)?;
    /// ctx.seq_rm(Some(0), 10..)?; // drop everything after the first 10 tokens
    /// assert_eq!(ctx.seq_pos_max(0), Some(9));
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn seq_rm(&mut self, seq: Option<SeqId>, range: impl RangeBounds<Pos>) -> Result<bool> {
        if let Some(s) = seq {
            self.check_seq(s)?;
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: sequence id checked (or -1 = all).
        Ok(unsafe { sys::llama_memory_seq_rm(self.mem(), seq.unwrap_or(-1), p0, p1) })
    }

    /// Makes `dst` share `src`'s cells in `range` (no copy within one KV stream).
    pub fn seq_cp(&mut self, src: SeqId, dst: SeqId, range: impl RangeBounds<Pos>) -> Result<()> {
        self.check_seq(src)?;
        self.check_seq(dst)?;
        let (p0, p1) = range_to_c(range);
        // Separate per-sequence KV streams can only copy a whole sequence.
        let per_seq_streams = !self.params.kv_unified && self.params.n_seq_max > 1;
        if per_seq_streams && src != dst && (p0 > 0 || p1 >= 0) {
            return Err(Error::invalid(
                "",
                "seq_cp of a partial range needs kv_unified(true) (each sequence has its own KV stream)".into(),
            ));
        }
        // SAFETY: ids checked; range restriction checked for cross-stream copies.
        unsafe { sys::llama_memory_seq_cp(self.mem(), src, dst, p0, p1) };
        Ok(())
    }

    /// Removes every sequence except `seq`.
    pub fn seq_keep(&mut self, seq: SeqId) -> Result<()> {
        self.check_seq(seq)?;
        // SAFETY: id checked.
        unsafe { sys::llama_memory_seq_keep(self.mem(), seq) };
        Ok(())
    }

    /// Whether positions can be shifted (`seq_add`, `seq_div`). Not for a BF16 K cache:
    /// llama.cpp ropes it in place (only quantized types are converted first), and
    /// ggml's CPU rope has no BF16 kernel (a fatal error at the next decode).
    pub fn can_shift(&self) -> bool {
        // SAFETY: valid memory handle.
        self.params.type_k != KvType::Bf16 && unsafe { sys::llama_memory_can_shift(self.mem()) }
    }

    /// Adds `delta` to the positions in `range` of `seq` (context shifting).
    pub fn seq_add(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, delta: Pos) -> Result<()> {
        self.check_seq(seq)?;
        if !self.can_shift() {
            return Err(Error::invalid("", "this model's memory cannot shift positions".into()));
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: id checked, shifting supported.
        unsafe { sys::llama_memory_seq_add(self.mem(), seq, p0, p1, delta) };
        Ok(())
    }

    /// Divides the positions in `range` of `seq` by `d` (> 1) (self-extend).
    pub fn seq_div(&mut self, seq: SeqId, range: impl RangeBounds<Pos>, d: i32) -> Result<()> {
        self.check_seq(seq)?;
        if d <= 1 {
            return Err(Error::invalid("", format!("seq_div divisor must be > 1, got {d}")));
        }
        if !self.can_shift() {
            return Err(Error::invalid("", "this model's memory cannot shift positions".into()));
        }
        let (p0, p1) = range_to_c(range);
        // SAFETY: id checked, d > 1, shifting supported.
        unsafe { sys::llama_memory_seq_div(self.mem(), seq, p0, p1, d) };
        Ok(())
    }

    /// Smallest position of `seq` in memory, `None` if empty.
    pub fn seq_pos_min(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { sys::llama_memory_seq_pos_min(self.mem(), seq) };
        (p >= 0).then_some(p)
    }

    /// Largest position of `seq` in memory, `None` if empty.
    pub fn seq_pos_max(&self, seq: SeqId) -> Option<Pos> {
        self.check_seq(seq).ok()?;
        // SAFETY: id checked.
        let p = unsafe { sys::llama_memory_seq_pos_max(self.mem(), seq) };
        (p >= 0).then_some(p)
    }
}
