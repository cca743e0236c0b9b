//! Speculative decoding: a drafter proposes the next tokens, the target model verifies
//! them all in one batch, and the longest prefix the target agrees with is kept.
//!
//! Verification samples each position from the target with the request's own sampler
//! (through the generation core, `generate::GenerationCore`, which drives this module's
//! `Speculator`; nothing here depends on `generate`) and keeps a drafted token only if
//! the target sampled exactly it. Every kept token was therefore drawn from the target's distribution, and
//! the sampler's random stream is consumed once per position in the same order as
//! without speculation: with greedy sampling, and with a seeded sampler, the text is the
//! text of plain decoding (where the kernels give the same logits for a batch of k + 1
//! tokens as for one: see docs/ENGINE.md). For drafts from a point distribution (n-gram
//! drafters, a greedy draft model) this is the standard rejection rule: a drafted x is
//! kept with probability p(x) = min(1, p(x)/q(x)) for q(x) = 1.
//!
//! ```
//! use llama_rs::*;
//! let model = Model::load(llama_testkit::default_model_path()?, ModelParams::default())?;
//! let mut s = Session::new(model.context(ContextParams::default())?)?;
//! let spec = Speculation { drafter: DraftKind::Ngram { n_min: 2, n_max: 4 }, ..Default::default() };
//! let p = GenerateParams { max_tokens: Some(32), speculation: Some(spec), sampler: SamplerConfig::greedy(), ..Default::default() };
//! let mut g = s.generate("1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2,", &p)?;
//! let text: String = g.by_ref().map(|p| p.map(|p| p.text)).collect::<Result<_>>()?;
//! assert!(g.spec_stats().target_decodes <= 32);
//! # let _ = text;
//! # Ok::<(), llama_rs::Error>(())
//! ```

mod draft_model;
mod mtp;
mod ngram;

use serde::{Deserialize, Serialize};

use crate::error::{check_arg, check_param, Result};
use crate::token::Token;

pub use draft_model::DraftModel;
pub(crate) use draft_model::Want;
pub use mtp::Mtp;
pub use ngram::{NgramDrafter, NgramMapDrafter, MAX_NGRAM};

/// Proposes tokens that may follow a sequence.
pub trait Drafter: Send {
    /// Up to `max` tokens likely to follow `history` (the whole sequence: prompt and
    /// generated tokens). An empty draft means "decode normally this step".
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>>;
}

/// Which drafter a generation uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DraftKind {
    /// Longest earlier match of the last `n_max` down to `n_min` tokens (prompt lookup).
    Ngram {
        /// Shortest match.
        n_min: usize,
        /// Longest match.
        n_max: usize,
    },
    /// The most frequent continuation of the last `n` tokens, seen at least `min_count`
    /// times.
    NgramMap {
        /// Key length.
        n: usize,
        /// Occurrences needed.
        min_count: u32,
    },
    /// The draft model set with [`Session::set_draft_model`](crate::Session::set_draft_model).
    Model,
    /// The model's own multi-token-prediction head, set with
    /// [`Session::set_mtp`](crate::Session::set_mtp) (`Session` only, for now).
    Mtp,
}

/// Speculative decoding settings of a generation.
///
/// ```
/// let s = llama_rs::Speculation::default();
/// assert_eq!(s.max_draft, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Speculation {
    /// Where drafts come from.
    pub drafter: DraftKind,
    /// Most tokens drafted per step (1..=64; other values are an error). The draft length
    /// adapts below it: doubled after a fully accepted draft, the accepted length + 1
    /// after a rejection.
    pub max_draft: usize,
    /// Below this acceptance rate (over the recent drafts) drafting stops probing; above
    /// it, drafts are made only when the measured costs say they pay (see `Speculator`).
    pub min_acceptance: f32,
    /// `Some(n)`: every step verifies exactly `n` drafted tokens (a shorter draft, or none,
    /// is padded by repeating its last token; padding is verified like any draft, so the
    /// text is unchanged). For GPUs that replay a captured graph per batch shape (CUDA
    /// graphs): alternating one-token decodes and verifications of other sizes makes
    /// llama.cpp capture its graph again and again, which measured more than the drafts
    /// saved (docs/SPECULATIVE.md). `Session` only; the engine ignores it.
    pub fixed_batch: Option<usize>,
}

impl Default for Speculation {
    fn default() -> Self {
        Speculation {
            drafter: DraftKind::Ngram { n_min: 2, n_max: 6 },
            max_draft: 8,
            min_acceptance: 0.2,
            fixed_batch: None,
        }
    }
}

impl Speculation {
    /// Checks every setting (the error names it): `max_draft` and `fixed_batch` in
    /// 1..=64, `min_acceptance` a number in 0..=1, n-gram lengths in 1..=16 with
    /// `n_min <= n_max`. Nothing is clamped or silently turned off.
    ///
    /// ```
    /// use llama_rs::{DraftKind, Speculation};
    /// assert!(Speculation::default().check().is_ok());
    /// let bad = Speculation { drafter: DraftKind::Ngram { n_min: 6, n_max: 2 }, ..Default::default() };
    /// assert!(bad.check().is_err());
    /// assert!(Speculation { min_acceptance: f32::NAN, ..Default::default() }.check().is_err());
    /// ```
    pub fn check(&self) -> Result<()> {
        check_param("speculation.max_draft", (1..=64).contains(&self.max_draft), || {
            format!("speculation.max_draft must be in 1..=64, got {}", self.max_draft)
        })?;
        check_param("speculation.fixed_batch", self.fixed_batch.is_none_or(|n| (1..=64).contains(&n)), || {
            format!("speculation.fixed_batch must be in 1..=64, got {:?}", self.fixed_batch)
        })?;
        check_param("speculation.min_acceptance", (0.0..=1.0).contains(&self.min_acceptance), || {
            format!("speculation.min_acceptance must be a number in 0..=1, got {}", self.min_acceptance)
        })?;
        self.own_drafter().map(drop)
    }

    /// Starts speculation for one generation (`Session` and the engine alike): checks
    /// the settings and that the drafter exists where it runs (`has_draft`, `has_mtp`;
    /// the hints say how to provide one), caps drafts at a fixed batch shape, and
    /// returns the adaptive speculator and the request's own drafter (n-grams), if any.
    pub(crate) fn start(
        &self,
        has_draft: bool,
        has_mtp: bool,
        draft_hint: &str,
        mtp_hint: &str,
    ) -> Result<(Speculator, Option<Box<dyn Drafter>>)> {
        self.check()?;
        let own = self.own_drafter()?;
        match self.drafter {
            DraftKind::Ngram { .. } | DraftKind::NgramMap { .. } => {}
            DraftKind::Model => {
                check_arg(has_draft, || format!("speculation with DraftKind::Model needs {draft_hint}"))?
            }
            DraftKind::Mtp => check_arg(has_mtp, || format!("speculation with DraftKind::Mtp needs {mtp_hint}"))?,
        }
        // A fixed batch shape caps the drafts at its size.
        let capped = Speculation { max_draft: self.fixed_batch.unwrap_or(64).clamp(1, self.max_draft), ..self.clone() };
        Ok((Speculator::new(&capped), own))
    }

    /// The drafter this speculation makes for itself (the n-gram kinds; `None` for a
    /// draft model or MTP head, which the session or engine owns), checked.
    pub(crate) fn own_drafter(&self) -> Result<Option<Box<dyn Drafter>>> {
        Ok(match self.drafter {
            DraftKind::Ngram { n_min, n_max } => Some(Box::new(NgramDrafter::new(n_min, n_max)?)),
            DraftKind::NgramMap { n, min_count } => Some(Box::new(NgramMapDrafter::new(n, min_count)?)),
            DraftKind::Model | DraftKind::Mtp => None,
        })
    }
}

/// Cuts a draft at its first token the target's vocabulary does not have: a draft
/// model's vocabulary may be larger (llama.cpp allows 128 more tokens), and a custom
/// [`Drafter`] may return anything. Such a token in a shared batch would fail the whole
/// decode, every request in it included; cut here, it only ends one draft early.
pub(crate) fn keep_target_tokens(draft: &mut Vec<Token>, n_vocab: i32) {
    if let Some(bad) = draft.iter().position(|t| t.0 < 0 || t.0 >= n_vocab) {
        draft.truncate(bad);
    }
}

/// What speculation did for one generation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpecStats {
    /// Drafted tokens sent for verification.
    pub drafted: usize,
    /// Drafted tokens the target agreed with.
    pub accepted: usize,
    /// Per draft position: (drafted, accepted).
    pub per_position: Vec<(usize, usize)>,
    /// Target decodes after the prompt (verifications and plain single-token decodes).
    pub target_decodes: usize,
    /// Tokens generated (with or without a draft).
    pub generated: usize,
    /// Seconds spent drafting.
    pub draft_s: f64,
    /// Seconds spent in target decodes.
    pub verify_s: f64,
}

impl SpecStats {
    /// Accepted / drafted.
    pub fn acceptance(&self) -> f64 {
        if self.drafted == 0 {
            0.0
        } else {
            self.accepted as f64 / self.drafted as f64
        }
    }
}

/// The adaptive draft length, the pause rule and the statistics of one sequence's
/// speculation (the drafter is passed in: a draft model outlives a generation).
///
/// Draft length: doubled after a fully accepted draft, the accepted length + 1 after a
/// rejection (runs of repeated text are long, so acceptance comes in bursts). Whether a
/// draft of that length pays is decided from measured costs: with `a` the recent chance
/// that a drafted token is kept given the ones before it were, a draft of `j` tokens
/// yields `1 + a + ... + a^j` tokens per verification, which must beat one token per
/// single-token decode at the measured (or interpolated) time of a `j + 1`-token decode.
/// The longest length up to the adaptive one that pays best is drafted; on a CPU a batch
/// of 8 costs several single decodes (every drafted position computes its logits over
/// the whole vocabulary: 262k rows for Gemma 3), on a GPU about one, so the same drafts
/// pay off differently. When no length pays, drafting pauses for a number of steps that
/// doubles each time (up to 64), then probes again.
pub(crate) struct Speculator {
    max_draft: usize,
    k: usize,
    min_acceptance: f32,
    /// Exponentially weighted acceptance of recent drafts.
    recent: f32,
    /// Drafted tokens kept, and tokens tried (kept + the first rejected), decayed
    /// per verification: their ratio is the chance `a` above.
    kept: f64,
    tried: f64,
    /// Seconds of a single-token target decode (EWMA); 0 until measured.
    single_s: f64,
    /// Seconds of a target decode of `n` tokens (EWMA), by `n`; 0 until measured.
    batch_s: Vec<f64>,
    paused: usize,
    backoff: usize,
    pub(crate) stats: SpecStats,
}

impl Speculator {
    pub(crate) fn new(s: &Speculation) -> Speculator {
        let max_draft = s.max_draft.clamp(1, 64);
        Speculator {
            max_draft,
            k: max_draft.min(4),
            min_acceptance: s.min_acceptance,
            recent: 1.0,
            kept: 0.0,
            tried: 0.0,
            single_s: 0.0,
            batch_s: vec![0.0; max_draft + 2],
            paused: 0,
            backoff: 4,
            stats: SpecStats::default(),
        }
    }

    /// Records the time of a plain single-token decode.
    pub(crate) fn record_single(&mut self, seconds: f64) {
        self.single_s = ewma(self.single_s, seconds);
    }

    /// Seconds of a target decode of `n` tokens: measured, else interpolated between the
    /// nearest measured sizes (a single-token decode counting as size 1), else extended
    /// along the line from the single decode to the nearest measured size.
    fn cost(&self, n: usize) -> Option<f64> {
        if self.batch_s[n] > 0.0 {
            return Some(self.batch_s[n]);
        }
        let at = |i: usize| if i == 1 { self.single_s } else { self.batch_s[i] };
        let lo = (1..n).rev().find(|&i| at(i) > 0.0);
        let hi = (n + 1..self.batch_s.len()).find(|&i| at(i) > 0.0);
        let line = |(l, cl): (usize, f64), (h, ch): (usize, f64)| cl + (ch - cl) * (n - l) as f64 / (h - l) as f64;
        match (lo, hi) {
            (Some(l), Some(h)) => Some(line((l, at(l)), (h, at(h)))),
            (Some(l), None) if l > 1 => Some(line((1, self.single_s), (l, at(l))).max(at(l))),
            (None, Some(h)) => Some(at(h)),
            _ => None,
        }
    }

    /// Tokens a draft of `j` tokens is expected to yield per verification.
    fn expected(&self, j: usize) -> f64 {
        let a = if self.tried > 0.0 { self.kept / self.tried } else { 1.0 };
        (0..=j).map(|i| a.powi(i as i32)).sum()
    }

    /// The draft length up to `k` expected to give the most tokens per second, if any
    /// beats plain decoding (unmeasured costs: `k`, to measure them).
    fn best_length(&self, k: usize) -> Option<usize> {
        if self.single_s == 0.0 {
            return Some(k);
        }
        let mut best = (1.0 / self.single_s, None);
        for j in 1..=k {
            match self.cost(j + 1) {
                None => return Some(k),
                Some(c) => {
                    let rate = self.expected(j) / c;
                    if rate > best.0 {
                        best = (rate, Some(j));
                    }
                }
            }
        }
        best.1
    }

    /// How many tokens to draft now, at most `room`: 0 while paused or when drafting is
    /// not expected to pay (which starts a pause).
    pub(crate) fn plan(&mut self, room: usize) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        let best = self.best_length(self.k.min(room).max(1));
        match best {
            Some(j) if self.recent >= self.min_acceptance => j.min(room),
            _ => {
                self.paused = self.backoff;
                self.backoff = (self.backoff * 2).min(64);
                self.recent = self.recent.max(self.min_acceptance);
                self.k = self.k.min(2);
                // Probe afresh: the acceptance of the text before the pause says little.
                self.kept = 0.0;
                self.tried = 0.0;
                0
            }
        }
    }

    /// A draft of at most `room` tokens of the target's vocabulary (`n_vocab`) to
    /// follow `history`; empty while paused.
    pub(crate) fn draft(
        &mut self,
        drafter: &mut dyn Drafter,
        history: &[Token],
        room: usize,
        n_vocab: i32,
    ) -> Result<Vec<Token>> {
        let max = self.plan(room);
        if max == 0 {
            return Ok(Vec::new());
        }
        let t = std::time::Instant::now();
        let mut d = drafter.draft(history, max)?;
        self.stats.draft_s += t.elapsed().as_secs_f64();
        d.truncate(max);
        keep_target_tokens(&mut d, n_vocab);
        Ok(d)
    }

    /// Records the time of the target decode of `n` tokens that verified a draft.
    pub(crate) fn record_batch(&mut self, n: usize, seconds: f64) {
        if let Some(c) = self.batch_s.get_mut(n) {
            *c = ewma(*c, seconds);
        }
    }

    /// Counts a verified draft: `accepted` of the first `drafted` tokens were kept.
    pub(crate) fn record(&mut self, drafted: usize, accepted: usize) {
        let s = &mut self.stats;
        s.drafted += drafted;
        s.accepted += accepted;
        if s.per_position.len() < drafted {
            s.per_position.resize(drafted, (0, 0));
        }
        for (i, p) in s.per_position.iter_mut().enumerate().take(drafted) {
            p.0 += 1;
            if i < accepted {
                p.1 += 1;
            }
        }
        let rate = accepted as f32 / drafted.max(1) as f32;
        self.recent = 0.7 * self.recent + 0.3 * rate;
        self.kept = 0.8 * self.kept + accepted as f64;
        self.tried = 0.8 * self.tried + (accepted + usize::from(accepted < drafted)) as f64;
        if accepted == drafted {
            // Runs of copied text are long: double up to the limit.
            self.k = (self.k * 2).min(self.max_draft);
            self.backoff = 4;
        } else {
            self.k = (accepted + 1).min(self.max_draft);
        }
    }
}

/// Exponentially weighted moving average (the first sample is taken as is).
fn ewma(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        0.8 * old + 0.2 * new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn drafts_stop_at_tokens_the_target_lacks() {
        let mut d = vec![Token(5), Token(99), Token(100), Token(7)];
        keep_target_tokens(&mut d, 100);
        assert_eq!(d, vec![Token(5), Token(99)]);
        let mut d = vec![Token(-1), Token(3)];
        keep_target_tokens(&mut d, 100);
        assert!(d.is_empty());
    }

    use super::*;

    fn speculator(single: f64, batches: &[(usize, f64)]) -> Speculator {
        let mut s = Speculator::new(&Speculation { max_draft: 8, ..Default::default() });
        s.single_s = single;
        for &(n, c) in batches {
            s.batch_s[n] = c;
        }
        s
    }

    #[test]
    fn costs_interpolate_from_the_single_decode() {
        let s = speculator(0.010, &[(3, 0.020), (9, 0.050)]);
        assert_eq!(s.cost(3), Some(0.020));
        assert!((s.cost(2).unwrap() - 0.015).abs() < 1e-12);
        assert!((s.cost(6).unwrap() - 0.035).abs() < 1e-12);
        // Beyond the largest measured size: the line from the single decode, extended.
        let s = speculator(0.010, &[(3, 0.020)]);
        assert!((s.cost(5).unwrap() - 0.030).abs() < 1e-12);
        assert_eq!(speculator(0.010, &[]).cost(4), None);
    }

    #[test]
    fn drafts_are_as_long_as_pays_and_pause_when_none_does() {
        // Verification costs 1 + 0.5 per drafted token (a CPU with a large vocabulary).
        let costs: Vec<(usize, f64)> = (2..=9).map(|n| (n, 0.010 * (1.0 + 0.5 * (n - 1) as f64))).collect();
        let mut s = speculator(0.010, &costs);
        s.k = 8;
        // Every draft kept: the longest draft pays best.
        (s.kept, s.tried) = (10.0, 10.0);
        assert_eq!(s.plan(64), 8);
        assert_eq!(s.plan(3), 3, "bounded by the room left");
        // Half kept: 1 + 0.5 + 0.25 + ... never beats 1 token per 10 ms at these costs.
        (s.kept, s.tried) = (5.0, 10.0);
        assert_eq!(s.plan(64), 0);
        assert_eq!((s.paused, s.k), (4, 2));
        // On a GPU (a batch costs what one token costs) the same acceptance pays.
        let mut s = speculator(0.010, &(2..=9).map(|n| (n, 0.011)).collect::<Vec<_>>());
        s.k = 8;
        (s.kept, s.tried) = (5.0, 10.0);
        assert!(s.plan(64) >= 4);
    }
}
