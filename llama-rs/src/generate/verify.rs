//! Verifying a draft: the generation core samples the target at the drafted positions
//! with the request's own sampler and keeps drafts while they agree (the rule in
//! `speculative`'s docs). Here, not in `speculative`, so that `generate` drives the
//! speculator and `speculative` does not depend on `generate`.

use super::{GenerationCore, Piece};
use crate::context::Context;
use crate::error::Result;
use crate::speculative::Speculator;
use crate::token::Token;

/// The result of verifying one draft.
pub(crate) struct Verified {
    /// Drafted tokens kept (they are in the target's cache after the decode).
    pub(crate) accepted: usize,
    /// Pieces of text, in order (the last may be final).
    pub(crate) pieces: Vec<Piece>,
    /// The token sampled after the kept drafts, to decode next (`None` when the
    /// generation ended).
    pub(crate) next: Option<Token>,
}

impl GenerationCore {
    /// Samples the target at `first` and after each drafted token, keeping drafts while
    /// they agree. Only the first `real` drafts count in the statistics and the adaptive
    /// rules (the rest is padding of a fixed batch shape).
    pub(crate) fn verify(
        &mut self,
        spec: &mut Speculator,
        ctx: &Context,
        first: usize,
        drafts: &[Token],
        real: usize,
    ) -> Result<Verified> {
        let mut pieces = Vec::new();
        let mut accepted = 0;
        let mut next = None;
        for i in 0..=drafts.len() {
            let t = self.sample(ctx, first + i)?;
            spec.stats.generated += 1;
            let goes_on = self.continues_after();
            let piece = self.emit(t)?;
            let ended = piece.as_ref().is_some_and(|p| p.finish_reason.is_some());
            pieces.extend(piece);
            if ended || !goes_on {
                break;
            }
            if i < drafts.len() && t == drafts[i] {
                accepted += 1;
                continue;
            }
            next = Some(t);
            break;
        }
        let real = real.min(drafts.len());
        spec.record(real, accepted.min(real));
        Ok(Verified { accepted, pieces, next })
    }
}
