//! The generation core: what happens to one sequence's output, independent of how its
//! tokens are decoded. Sampling (with grammar state), log-probabilities, end-of-generation,
//! the token limit, UTF-8 piece assembly, stop strings held back, the finish reason and
//! usage live here once; [`Session`](super::Session) drives one core over sequence 0 and
//! the engine drives one per request. The core owns no context and borrows nothing, so
//! it can live in a `'static` stream, a Python object or an engine slot.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sampling::Sampler;
use crate::token::Token;
use crate::vocab::PieceDecoder;

use super::budget::BudgetState;
use super::stop::StopMatcher;
use super::{FinishReason, GenerateParams, Piece, TokenLogprob};

/// One sequence's output state machine.
///
/// The driver's loop, for each step of the sequence:
/// 1. stop if [`is_cancelled`](Self::finish) by the caller, or [`exhausted`](Self::exhausted)
///    → [`finish`](Self::finish) with `Cancelled` / `Length`;
/// 2. [`sample`](Self::sample) a token from the context's output row;
/// 3. decode it next if [`continues_after`](Self::continues_after) says so;
/// 4. [`emit`](Self::emit) its text: a [`Piece`] when text is ready, the final piece when
///    an end-of-generation token or a stop string ended the sequence.
pub(crate) struct GenerationCore {
    model: Model,
    sampler: Sampler,
    remaining: Option<usize>,
    stop: StopMatcher,
    decoder: PieceDecoder,
    piece_buf: Vec<u8>,
    logprobs: Option<usize>,
    ignore_eos: bool,
    finish: Option<FinishReason>,
    n_prompt: usize,
    n_generated: usize,
    /// Tokens (and their log-probabilities) sampled since the last piece was handed out.
    tokens: Vec<Token>,
    lps: Vec<TokenLogprob>,
    /// The last sampled token ends the generation (end-of-generation token).
    eog: bool,
    /// The stop string that ended the generation.
    stop_word: Option<String>,
    /// The thinking budget, when one applies.
    budget: Option<BudgetState>,
    /// A token's text with special tokens rendered (for the budget's tag search).
    special_buf: Vec<u8>,
}

impl std::fmt::Debug for GenerationCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationCore")
            .field("remaining", &self.remaining)
            .field("finish", &self.finish)
            .field("n_prompt", &self.n_prompt)
            .field("n_generated", &self.n_generated)
            .finish_non_exhaustive()
    }
}

impl GenerationCore {
    /// A core for one generation with `params` after a prompt of `n_prompt` tokens.
    /// Errors when the sampler configuration cannot be built (a value llama.cpp would
    /// reject, a grammar that does not parse).
    pub fn new(model: &Model, params: &GenerateParams, n_prompt: usize) -> Result<GenerationCore> {
        Ok(Self::with_sampler(model, params.sampler.build(model)?, params, n_prompt))
    }

    /// As [`new`](Self::new), with a sampler built by the caller (custom stages).
    pub fn with_sampler(model: &Model, sampler: Sampler, params: &GenerateParams, n_prompt: usize) -> GenerationCore {
        // A grammar decides the text itself: forcing the end tag could break it.
        let budget = match params.reasoning_budget {
            Some(b) if params.sampler.grammar.is_none() => {
                BudgetState::new(model, &b).map_err(|e| log::warn!("reasoning budget not applied: {e}")).ok()
            }
            _ => None,
        };
        GenerationCore {
            model: model.clone(),
            sampler,
            remaining: params.max_tokens,
            stop: StopMatcher::new(&params.stop),
            decoder: PieceDecoder::default(),
            piece_buf: Vec::new(),
            logprobs: params.logprobs,
            ignore_eos: params.ignore_eos,
            finish: None,
            n_prompt,
            n_generated: 0,
            tokens: Vec::new(),
            lps: Vec::new(),
            stop_word: None,
            eog: false,
            budget,
            special_buf: Vec::new(),
        }
    }

    /// The sampler (its device step decides where the first sampling step runs).
    pub fn sampler(&self) -> &Sampler {
        &self.sampler
    }

    /// Whether the token limit is reached: the driver finishes with `Length`.
    pub fn exhausted(&self) -> bool {
        self.remaining == Some(0)
    }

    /// Why the generation ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Tokens in the prompt / generated so far.
    pub fn usage(&self) -> (usize, usize) {
        (self.n_prompt, self.n_generated)
    }

    /// Samples the next token from output row `index` of the context's last decode,
    /// accepts it into the sampler (penalties, grammar) and counts it.
    pub fn sample(&mut self, ctx: &Context, index: usize) -> Result<Token> {
        self.sample_from(Output::Context(ctx, index))
    }

    /// [`sample`](Self::sample) from a row of host logits already read off the
    /// context: what the engine hands to other threads, which may not use the context.
    pub fn sample_row(&mut self, logits: &[f32]) -> Result<Token> {
        self.sample_from(Output::Row(logits))
    }

    fn sample_from(&mut self, out: Output<'_>) -> Result<Token> {
        if self.exhausted() {
            // Drivers check first; sampling past the limit would run without one.
            return Err(Error::invalid("", "the token limit is reached: nothing more may be sampled".into()));
        }
        // A spent thinking budget forces the block's end tag, token by token.
        let forced = self.budget.as_mut().and_then(BudgetState::forced);
        let t = match (forced, self.logprobs) {
            (Some(t), Some(n)) => {
                self.lps.push(logprob(out.logits()?, t, n));
                t
            }
            (Some(t), None) => t,
            (None, Some(n)) => {
                let logits = out.logits()?;
                let t = self.sampler.sample_logits(logits)?;
                self.lps.push(logprob(logits, t, n));
                t
            }
            (None, None) => match out {
                Output::Context(ctx, index) => self.sampler.sample(ctx, index)?,
                Output::Row(logits) => self.sampler.sample_logits(logits)?,
            },
        };
        self.sampler.accept(t)?;
        self.n_generated += 1;
        if let Some(r) = self.remaining.as_mut() {
            *r -= 1;
        }
        self.eog = self.model.vocab().is_eog(t) && !self.ignore_eos;
        self.tokens.push(t);
        Ok(t)
    }

    /// Whether the generation goes on after the token just sampled, as far as is known
    /// before its text: not an end-of-generation token and the limit not reached. (A stop
    /// string may still end it in [`emit`](Self::emit).) The driver decodes the token
    /// only then.
    pub fn continues_after(&self) -> bool {
        !self.eog && !self.exhausted()
    }

    /// Turns the token just sampled into text. `Some(piece)` when there is text to hand
    /// out or the generation ended (then `piece.finish_reason` is set); `None` while the
    /// text is held back (an incomplete UTF-8 character, a possible stop string).
    pub fn emit(&mut self, t: Token) -> Result<Option<Piece>> {
        if self.eog {
            let held = self.stop.flush();
            return Ok(Some(self.finish_with(FinishReason::Stop, held)));
        }
        self.model.vocab().token_to_piece_bytes(t, false, &mut self.piece_buf)?;
        if let Some(b) = self.budget.as_mut().filter(|b| b.watching()) {
            self.model.vocab().token_to_piece_bytes(t, true, &mut self.special_buf)?;
            b.push(&String::from_utf8_lossy(&self.special_buf));
        }
        let text = self.decoder.push(&self.piece_buf);
        let (emit, stopped) = self.stop.push(&text);
        if stopped.is_some() {
            self.stop_word = stopped;
            self.decoder.finish(); // bytes after the stop string are dropped
            return Ok(Some(self.finish_with(FinishReason::Stop, emit)));
        }
        if emit.is_empty() {
            return Ok(None);
        }
        Ok(Some(Piece {
            text: emit,
            tokens: std::mem::take(&mut self.tokens),
            logprobs: std::mem::take(&mut self.lps),
            finish_reason: None,
        }))
    }

    /// The stop string that ended the generation (`None` for an end-of-generation token,
    /// the limit, a cancel, or while it runs).
    pub fn stop_word(&self) -> Option<&str> {
        self.stop_word.as_deref()
    }

    /// Ends the generation for a reason the driver knows (length, cancel, a full
    /// context): the final piece carries what was held back.
    pub fn finish(&mut self, reason: FinishReason) -> Piece {
        self.finish_with(reason, String::new())
    }

    fn finish_with(&mut self, reason: FinishReason, mut text: String) -> Piece {
        text += &self.decoder.finish();
        if reason != FinishReason::Stop {
            text += &self.stop.flush();
        }
        self.finish = Some(reason);
        Piece {
            text,
            tokens: std::mem::take(&mut self.tokens),
            logprobs: std::mem::take(&mut self.lps),
            finish_reason: Some(reason),
        }
    }
}

/// log-softmax of `t` and the `n` most likely tokens, from the raw logits.
fn logprob(logits: &[f32], t: Token, n: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let lse = max + sum.ln() as f32;
    let mut top = Vec::new();
    if n > 0 {
        let mut buf = Vec::new();
        crate::sampling::top_k_into(logits, n, &mut buf);
        top = buf.iter().map(|c| (Token(c.id), c.logit - lse)).collect();
    }
    TokenLogprob { token: t, logprob: logits[t.0 as usize] - lse, top }
}

/// Where a sampled row comes from: an output of the context's last decode (host logits,
/// or a device sampler's result), or host logits read off it before.
enum Output<'a> {
    Context(&'a Context, usize),
    Row(&'a [f32]),
}

impl Output<'_> {
    fn logits(&self) -> Result<&[f32]> {
        match self {
            Output::Context(ctx, index) => ctx.logits(*index),
            Output::Row(logits) => Ok(logits),
        }
    }
}
