//! Prefix reuse: how much of what a sequence's KV cache holds a new prompt can keep.
//! One rule for `Session` and the engine.

use crate::context::Context;
use crate::error::Result;
use crate::token::{SeqId, Token};

/// The number of leading tokens of `prompt` already in sequence `seq`'s cache that can be
/// kept (`cached` is what the cache holds, from position 0). Removes the rest of the
/// sequence from the cache; what is returned is then exactly what remains.
///
/// The last prompt token is always decoded again (its logits are needed). A
/// sliding-window cache (without `swa_full`) drops positions older than the window, so
/// continuing at `keep` needs the window before it to still be present; otherwise nothing
/// is kept. A cache that cannot remove a partial range (recurrent models) is cleared.
pub(crate) fn reuse(ctx: &mut Context, seq: SeqId, cached: &[Token], prompt: &[Token]) -> Result<usize> {
    let common = common_prefix(cached, prompt);
    let mut keep = common.min(prompt.len().saturating_sub(1));
    if keep < cached.len() && !ctx.seq_rm(Some(seq), keep as i32..)? {
        ctx.seq_rm(Some(seq), ..)?;
        keep = 0;
    }
    if keep > 0 && !window_present(ctx, seq, keep) {
        ctx.seq_rm(Some(seq), ..)?;
        keep = 0;
    }
    Ok(keep)
}

/// Whether a sequence whose cache holds positions `..keep` can continue at `keep`: for a
/// sliding-window model without a full-size cache, the window before `keep` must still be
/// there.
pub(crate) fn window_present(ctx: &Context, seq: SeqId, keep: usize) -> bool {
    let n_swa = ctx.model().n_swa() as usize;
    if n_swa == 0 || ctx.params().swa_full {
        return true;
    }
    let min = ctx.seq_pos_min(seq).map_or(0, |p| p as usize);
    min <= keep.saturating_sub(n_swa)
}

/// Length of the common prefix of two token lists.
pub(crate) fn common_prefix(a: &[Token], b: &[Token]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
