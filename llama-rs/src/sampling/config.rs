//! The serializable description of a sampler: [`SamplerConfig`], [`Stage`], [`Grammar`].

use serde::{Deserialize, Serialize};

use llama_sys as sys;

use super::{CustomSampler, Sampler, SamplerBuilder};
use crate::error::{check_finite, check_param, Result};
use crate::model::Model;
use crate::token::Token;

/// A GBNF grammar, optionally lazy (inactive until a trigger appears in the output).
///
/// ```
/// let g = llama_rs::Grammar::new(r#"root ::= "yes" | "no""#);
/// assert_eq!(g.root, "root");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grammar {
    /// The grammar in GBNF (llama.cpp's grammar format).
    pub gbnf: String,
    /// The rule generation starts from (usually `root`).
    pub root: String,
    /// Regex patterns (matched from the start of the output) that activate the grammar.
    #[serde(default)]
    pub trigger_patterns: Vec<String>,
    /// Tokens that activate the grammar.
    #[serde(default)]
    pub trigger_tokens: Vec<Token>,
}

impl Grammar {
    /// A grammar from GBNF text, starting at `root`, active from the first token.
    pub fn new(gbnf: impl Into<String>) -> Grammar {
        Grammar { gbnf: gbnf.into(), root: "root".into(), trigger_patterns: vec![], trigger_tokens: vec![] }
    }

    /// A grammar that only starts constraining once the output matches a pattern
    /// (e.g. `[\s\S]*?<tool_call>`) or contains a trigger token.
    pub fn lazy(gbnf: impl Into<String>, patterns: Vec<String>, tokens: Vec<Token>) -> Grammar {
        Grammar { gbnf: gbnf.into(), root: "root".into(), trigger_patterns: patterns, trigger_tokens: tokens }
    }

    /// A grammar accepting JSON documents valid under `schema` (see [`crate::json_schema`]).
    pub fn from_json_schema(schema: &serde_json::Value) -> Result<Grammar> {
        Ok(Grammar::new(crate::json_schema::to_gbnf(schema)?))
    }

    /// [`Grammar::from_json_schema`] with the given whitespace between JSON tokens.
    pub fn from_json_schema_with(schema: &serde_json::Value, space: crate::json_schema::JsonSpace) -> Result<Grammar> {
        Ok(Grammar::new(crate::json_schema::to_gbnf_with(schema, space)?))
    }

    pub(super) fn is_lazy(&self) -> bool {
        !self.trigger_patterns.is_empty() || !self.trigger_tokens.is_empty()
    }
}

/// One stage of a sampler chain, applied in order. The last stage should select a
/// token (greedy, dist, mirostat); `SamplerBuilder::build` adds `Dist` if none does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stage {
    /// Always the most likely token.
    Greedy,
    /// Sample from the distribution with a seeded RNG.
    Dist {
        /// The RNG seed (the same seed gives the same choices).
        seed: u32,
    },
    /// Keep the `k` most likely tokens (`k <= 0`: all).
    TopK(i32),
    /// Keep the most likely tokens whose probabilities add up to `p` (nucleus sampling).
    TopP {
        /// Cumulative probability to keep, in `(0, 1]`.
        p: f32,
        /// Keep at least this many tokens.
        min_keep: usize,
    },
    /// Drop tokens less likely than `p` times the most likely one.
    MinP {
        /// Relative probability threshold, in `[0, 1]`.
        p: f32,
        /// Keep at least this many tokens.
        min_keep: usize,
    },
    /// Locally typical sampling.
    Typical {
        /// Typical mass to keep, in `(0, 1]`.
        p: f32,
        /// Keep at least this many tokens.
        min_keep: usize,
    },
    /// Divide the logits by this temperature (0 = greedy).
    Temp(f32),
    /// Dynamic temperature in `[t - delta, t + delta]`.
    TempExt {
        /// The base temperature.
        t: f32,
        /// How far the temperature may move from `t`.
        delta: f32,
        /// How strongly entropy moves it.
        exponent: f32,
    },
    /// Exclude Top Choices: with probability `p`, drop the top tokens above threshold `t` but the least likely of them.
    Xtc {
        /// Probability that XTC acts on a token, in `[0, 1]`.
        p: f32,
        /// Probability threshold of the tokens it may remove.
        t: f32,
        /// Keep at least this many tokens.
        min_keep: usize,
        /// The RNG seed.
        seed: u32,
    },
    /// Keep tokens within this many standard deviations of the largest logit.
    TopNSigma(f32),
    /// Mirostat (v1): targets a surprise of `tau`.
    Mirostat {
        /// The RNG seed.
        seed: u32,
        /// Target surprise (entropy).
        tau: f32,
        /// Learning rate.
        eta: f32,
        /// Tokens used to estimate the distribution (100 in the paper).
        m: i32,
    },
    /// Mirostat 2.0: targets a surprise of `tau`.
    MirostatV2 {
        /// The RNG seed.
        seed: u32,
        /// Target surprise (entropy).
        tau: f32,
        /// Learning rate.
        eta: f32,
    },
    /// Repetition penalties over the last `last_n` tokens.
    Penalties {
        /// Window in tokens (-1 = the model's context length, 0 = off).
        last_n: i32,
        /// Divide logits of repeated tokens by this (1 = off).
        repeat: f32,
        /// Subtract this times the token's count (0 = off).
        freq: f32,
        /// Subtract this once for any token that appeared (0 = off).
        present: f32,
    },
    /// DRY ("don't repeat yourself"): penalizes tokens that extend a repeated sequence.
    Dry {
        /// Penalty strength (0 = off).
        multiplier: f32,
        /// Growth of the penalty with the repeat's length.
        base: f32,
        /// Repeats up to this long are free.
        allowed_length: i32,
        /// Window in tokens (-1 = the model's context length, 0 = off).
        last_n: i32,
        /// Strings that end a repeat (e.g. newline, `:`).
        breakers: Vec<String>,
    },
    /// Add a bias to given tokens' logits (`-inf` bans a token).
    LogitBias(Vec<(Token, f32)>),
    /// Fill-in-the-middle helper (after top-k/top-p).
    Infill,
}

impl Stage {
    pub(super) fn selects(&self) -> bool {
        matches!(self, Stage::Greedy | Stage::Dist { .. } | Stage::Mirostat { .. } | Stage::MirostatV2 { .. })
    }
}

/// The common sampling knobs of llama-cpp-python / llama-server, turned into a chain in
/// llama.cpp's usual order. `temperature <= 0` means greedy.
///
/// ```
/// let c = llama_rs::SamplerConfig { temperature: 0.7, top_k: 40, seed: 42, ..Default::default() };
/// let stages = c.stages();
/// assert!(matches!(stages.last(), Some(llama_rs::Stage::Dist { seed: 42 })));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Temperature (0 or less = greedy).
    pub temperature: f32,
    /// Dynamic temperature range (0 = off).
    pub dynatemp_range: f32,
    /// Dynamic temperature exponent.
    pub dynatemp_exponent: f32,
    /// Top-k (0 or less = off).
    pub top_k: i32,
    /// Top-p (1 = off).
    pub top_p: f32,
    /// Min-p (0 = off).
    pub min_p: f32,
    /// Locally typical p (1 = off).
    pub typical_p: f32,
    /// XTC probability (0 = off).
    pub xtc_probability: f32,
    /// XTC threshold.
    pub xtc_threshold: f32,
    /// Top-n-sigma (negative = off).
    pub top_n_sigma: f32,
    /// Repeat penalty (1 = off).
    pub repeat_penalty: f32,
    /// Frequency penalty (0 = off).
    pub frequency_penalty: f32,
    /// Presence penalty (0 = off).
    pub presence_penalty: f32,
    /// Window of the three penalties (-1 = context length, 0 = off).
    pub penalty_last_n: i32,
    /// DRY multiplier (0 = off).
    pub dry_multiplier: f32,
    /// DRY base.
    pub dry_base: f32,
    /// DRY allowed length.
    pub dry_allowed_length: i32,
    /// DRY window (-1 = context length, 0 = off).
    pub dry_penalty_last_n: i32,
    /// DRY sequence breakers.
    pub dry_sequence_breakers: Vec<String>,
    /// 0 = off, 1 = Mirostat, 2 = Mirostat 2.0.
    pub mirostat: u8,
    /// Mirostat target surprise.
    pub mirostat_tau: f32,
    /// Mirostat learning rate.
    pub mirostat_eta: f32,
    /// Logit biases per token.
    pub logit_bias: Vec<(Token, f32)>,
    /// Seed of the sampling RNG.
    pub seed: u32,
    /// A grammar every token must satisfy.
    pub grammar: Option<Grammar>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        // llama-cpp-python's create_completion defaults.
        SamplerConfig {
            temperature: 0.8,
            dynatemp_range: 0.0,
            dynatemp_exponent: 1.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            typical_p: 1.0,
            xtc_probability: 0.0,
            xtc_threshold: 0.1,
            top_n_sigma: -1.0,
            repeat_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            dry_multiplier: 0.0,
            dry_base: 1.75,
            dry_allowed_length: 2,
            dry_penalty_last_n: -1,
            dry_sequence_breakers: vec!["\n".into(), ":".into(), "\"".into(), "*".into()],
            mirostat: 0,
            mirostat_tau: 5.0,
            mirostat_eta: 0.1,
            logit_bias: vec![],
            seed: sys::LLAMA_DEFAULT_SEED,
            grammar: None,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding (temperature 0).
    pub fn greedy() -> Self {
        SamplerConfig { temperature: 0.0, ..Default::default() }
    }

    /// Every value is either honoured or an error naming it: `stages()` leaves out a
    /// stage whose value means "off" (top_p 1, min_p 0, ...), so a NaN or out-of-range
    /// value would otherwise vanish without a word.
    pub fn validate(&self) -> Result<()> {
        // (name, value, is a probability): probabilities must lie in 0..=1, the rest be finite.
        for (name, v, p) in [
            ("top_p", self.top_p, true),
            ("min_p", self.min_p, true),
            ("typical_p", self.typical_p, true),
            ("xtc_probability", self.xtc_probability, true),
            ("xtc_threshold", self.xtc_threshold, true),
            ("temperature", self.temperature, false),
            ("repeat_penalty", self.repeat_penalty, false),
            ("frequency_penalty", self.frequency_penalty, false),
            ("presence_penalty", self.presence_penalty, false),
            ("dry_multiplier", self.dry_multiplier, false),
            ("dry_base", self.dry_base, false),
            ("dynatemp_range", self.dynatemp_range, false),
            ("dynatemp_exponent", self.dynatemp_exponent, false),
            ("top_n_sigma", self.top_n_sigma, false),
            ("mirostat_tau", self.mirostat_tau, false),
            ("mirostat_eta", self.mirostat_eta, false),
        ] {
            if p {
                prob(name, v)?;
            } else {
                check_finite(name, v)?;
            }
        }
        check_param("top_k", self.top_k >= 0, || format!("top_k must be >= 0 (0 = off), got {}", self.top_k))?;
        check_param("mirostat", matches!(self.mirostat, 0..=2), || {
            format!("mirostat must be 0, 1 or 2, got {}", self.mirostat)
        })?;
        check_last_n("penalty_last_n", self.penalty_last_n)?;
        check_last_n("dry_penalty_last_n", self.dry_penalty_last_n)?;
        check_param("dry_allowed_length", self.dry_allowed_length >= 0, || {
            format!("dry_allowed_length must be >= 0, got {}", self.dry_allowed_length)
        })?;
        Ok(())
    }

    /// The chain this configuration stands for (the grammar is kept separately).
    pub fn stages(&self) -> Vec<Stage> {
        let mut s = Vec::new();
        if !self.logit_bias.is_empty() {
            s.push(Stage::LogitBias(self.logit_bias.clone()));
        }
        if self.temperature <= 0.0 {
            s.push(Stage::Greedy);
            return s;
        }
        if self.penalty_last_n != 0
            && (self.repeat_penalty != 1.0 || self.frequency_penalty != 0.0 || self.presence_penalty != 0.0)
        {
            s.push(Stage::Penalties {
                last_n: self.penalty_last_n,
                repeat: self.repeat_penalty,
                freq: self.frequency_penalty,
                present: self.presence_penalty,
            });
        }
        if self.dry_multiplier > 0.0 {
            s.push(Stage::Dry {
                multiplier: self.dry_multiplier,
                base: self.dry_base,
                allowed_length: self.dry_allowed_length,
                last_n: self.dry_penalty_last_n,
                breakers: self.dry_sequence_breakers.clone(),
            });
        }
        match self.mirostat {
            1 => {
                s.push(Stage::Temp(self.temperature));
                s.push(Stage::Mirostat { seed: self.seed, tau: self.mirostat_tau, eta: self.mirostat_eta, m: 100 });
                return s;
            }
            2 => {
                s.push(Stage::Temp(self.temperature));
                s.push(Stage::MirostatV2 { seed: self.seed, tau: self.mirostat_tau, eta: self.mirostat_eta });
                return s;
            }
            _ => {}
        }
        if self.top_n_sigma > 0.0 {
            s.push(Stage::TopNSigma(self.top_n_sigma));
        }
        if self.top_k > 0 {
            s.push(Stage::TopK(self.top_k));
        }
        if self.typical_p < 1.0 {
            s.push(Stage::Typical { p: self.typical_p, min_keep: 1 });
        }
        if self.top_p < 1.0 {
            s.push(Stage::TopP { p: self.top_p, min_keep: 1 });
        }
        if self.min_p > 0.0 {
            s.push(Stage::MinP { p: self.min_p, min_keep: 1 });
        }
        if self.xtc_probability > 0.0 {
            s.push(Stage::Xtc { p: self.xtc_probability, t: self.xtc_threshold, min_keep: 1, seed: self.seed });
        }
        if self.dynatemp_range > 0.0 {
            s.push(Stage::TempExt {
                t: self.temperature,
                delta: self.dynatemp_range,
                exponent: self.dynatemp_exponent,
            });
        } else {
            s.push(Stage::Temp(self.temperature));
        }
        s.push(Stage::Dist { seed: self.seed });
        s
    }

    /// Builds a [`Sampler`] for `model`.
    pub fn build(&self, model: &Model) -> Result<Sampler> {
        self.build_with(model, None)
    }

    /// [`build`](Self::build) with a sampler written in Rust ahead of every stage: it sees
    /// (and may change) the whole row of logits, as llama-cpp-python's
    /// `logits_processor` does.
    pub fn build_with(&self, model: &Model, first: Option<Box<dyn CustomSampler>>) -> Result<Sampler> {
        self.validate()?;
        let mut b = SamplerBuilder::new(model);
        if let Some(c) = first {
            b = b.custom_boxed(c);
        }
        for st in self.stages() {
            b = b.stage(st);
        }
        if let Some(g) = &self.grammar {
            b = b.grammar(g.clone());
        }
        b.build()
    }
}

/// Longest penalty window: llama.cpp allocates a ring buffer of this many tokens up
/// front (`i32::MAX` threw `std::bad_alloc` across the C API).
pub const MAX_PENALTY_LAST_N: i32 = 1 << 20;

pub(super) fn check_last_n(name: &str, n: i32) -> Result<()> {
    check_param(name, (-1..=MAX_PENALTY_LAST_N).contains(&n), || {
        format!("{name} must be in -1..={MAX_PENALTY_LAST_N} (-1 = the model's context length), got {n}")
    })
}

/// `-1` means the model's training context, for every penalty window (this llama.cpp
/// clamps DRY's -1 to 0, which silently turned DRY off).
pub(super) fn resolve_last_n(model: &Model, n: i32) -> i32 {
    if n == -1 {
        (model.n_ctx_train() as i32).clamp(1, MAX_PENALTY_LAST_N)
    } else {
        n
    }
}

pub(super) fn prob(name: &str, p: f32) -> Result<()> {
    check_param(name, p.is_finite() && (0.0..=1.0).contains(&p), || format!("{name} must be in 0..=1, got {p}"))
}
