//! Sampling: a typed chain over llama.cpp's samplers, grammars, custom samplers in Rust,
//! and fast paths that avoid copying the whole vocabulary every token.
//!
//! `config` is the serializable description ([`SamplerConfig`], [`Stage`], [`Grammar`]);
//! this file builds and runs it ([`SamplerBuilder`], [`Sampler`]); `custom` holds Rust
//! samplers inside llama.cpp's chain; `gbnf_check` and `json_schema` bound and produce
//! grammars before llama.cpp parses them.
//!
//! Grammar-constrained sampling follows llama.cpp's own `common_sampler`: sample without
//! the grammar first, check the chosen token against it, and only if it is rejected run
//! the grammar over the full vocabulary. Tokens are only ever accepted into a grammar
//! after it has allowed them: llama.cpp aborts the process otherwise.

use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;

use llama_sys as sys;

use crate::context::Context;
use crate::context::DeviceSampler;
use crate::error::{backend_error, check_arg, check_finite, Error, Result};
use crate::ffi::{c_string, RawSampler};
use crate::model::Model;
use crate::token::Token;
use config::{check_last_n, prob, resolve_last_n};
use custom::{CustomState, CUSTOM_IFACE};

mod config;
mod custom;
mod gbnf_check;
pub mod json_schema;
mod trigger;

pub use config::{Grammar, SamplerConfig, Stage, MAX_PENALTY_LAST_N};
pub use custom::{Candidates, CustomSampler};
pub use gbnf_check::{
    MAX_DEPTH as GRAMMAR_MAX_DEPTH, MAX_EXPANDED as GRAMMAR_MAX_EXPANDED, MAX_LEFT_CHAIN as GRAMMAR_MAX_LEFT_CHAIN,
    MAX_REPETITION as GRAMMAR_MAX_REPETITION,
};
use trigger::Triggers;
pub use trigger::MAX_TRIGGER_PATTERN;

/// Builds a [`Sampler`] stage by stage.
///
/// ```
/// use llama_rs::{Model, SamplerBuilder, Stage};
/// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let sampler = SamplerBuilder::new(&model)
///     .stage(Stage::TopK(40))
///     .stage(Stage::TopP { p: 0.9, min_keep: 1 })
///     .stage(Stage::Temp(0.7))
///     .stage(Stage::Dist { seed: 7 })
///     .build()?;
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct SamplerBuilder {
    model: Model,
    stages: Vec<BuilderStage>,
    grammar: Option<Grammar>,
}

enum BuilderStage {
    Std(Stage),
    Custom(Box<dyn CustomSampler>),
}

impl SamplerBuilder {
    /// An empty builder for `model` (no stages, no grammar).
    pub fn new(model: &Model) -> Self {
        SamplerBuilder { model: model.clone(), stages: vec![], grammar: None }
    }
    /// Appends a llama.cpp sampler.
    pub fn stage(mut self, s: Stage) -> Self {
        self.stages.push(BuilderStage::Std(s));
        self
    }
    /// Appends a sampler written in Rust.
    pub fn custom(self, c: impl CustomSampler + 'static) -> Self {
        self.custom_boxed(Box::new(c))
    }
    /// [`custom`](Self::custom) for a sampler already boxed (chosen at run time).
    pub fn custom_boxed(mut self, c: Box<dyn CustomSampler>) -> Self {
        self.stages.push(BuilderStage::Custom(c));
        self
    }
    /// Constrains output with a grammar.
    pub fn grammar(mut self, g: Grammar) -> Self {
        self.grammar = Some(g);
        self
    }

    /// The sampler; adds `Dist` with seed 0 if no stage selects a token, and fails on values llama.cpp would reject.
    pub fn build(mut self) -> Result<Sampler> {
        if self.model.is_vocab_only() {
            return Err(Error::VocabOnly);
        }
        let n_vocab = self.model.n_vocab();
        if !self.stages.iter().any(|s| matches!(s, BuilderStage::Std(st) if st.selects())) {
            self.stages.push(BuilderStage::Std(Stage::Dist { seed: sys::LLAMA_DEFAULT_SEED }));
        }
        let fast = fast_path(&self.stages);
        let greedy_only = matches!(self.stages.as_slice(), [BuilderStage::Std(Stage::Greedy)]);
        let has_custom = self.stages.iter().any(|s| matches!(s, BuilderStage::Custom(_)));

        let chain_full = RawSampler::chain()?;
        let mut customs = Vec::new();
        for s in self.stages.drain(..) {
            match s {
                BuilderStage::Std(st) => {
                    let p = make_stage(&self.model, &st, n_vocab)?;
                    // SAFETY: valid chain and sampler; the chain takes ownership of `p`.
                    unsafe { sys::llama_sampler_chain_add(chain_full.0.as_ptr(), p.as_ptr()) };
                }
                BuilderStage::Custom(c) => {
                    let state = Box::into_raw(Box::new(CustomState { inner: c, panic: None, emptied: false }));
                    // SAFETY: the interface is a static with valid callbacks; ownership of
                    // `state` passes to the sampler, reclaimed by `custom_free`.
                    let p =
                        unsafe { sys::llama_sampler_init(&CUSTOM_IFACE as *const _ as *mut _, state as *mut c_void) };
                    let p = NonNull::new(p).ok_or_else(|| backend_error("llama_sampler_init", None))?;
                    customs.push(state);
                    // SAFETY: as above.
                    unsafe { sys::llama_sampler_chain_add(chain_full.0.as_ptr(), p.as_ptr()) };
                }
            }
        }
        let grammar = match &self.grammar {
            Some(g) => Some(make_grammar(&self.model, g)?),
            None => None,
        };
        let triggers = match &self.grammar {
            Some(g) => Triggers::new(&g.trigger_patterns)?,
            None => None,
        };
        Ok(Sampler {
            model: self.model,
            chain: chain_full,
            fast,
            greedy_only,
            has_custom,
            customs,
            grammar,
            grammar_def: self.grammar.take(),
            triggers,
            grammar_broken: false,
            cand: Vec::new(),
            one: [sys::llama_token_data { id: 0, logit: 0.0, p: 0.0 }],
            force_full: false,
        })
    }
}

/// When the chain can run on a few candidates instead of the whole vocabulary.
///
/// A chain `[sparse stages..] TopK(k) ..` only ever looks at the k best tokens after
/// the sparse stages. Stages that can only lower a bounded number of logits (repetition
/// penalties with factors >= 1 over the last n tokens, negative logit biases) can push
/// at most that many tokens out of the raw top-k; positive biases can pull named tokens
/// in. So the raw top-(k + lowered) plus the raised tokens hold every token the full
/// path could pick, and running the same chain on them gives the same result.
#[derive(Debug, Clone)]
struct FastPath {
    n_candidates: usize,
    raised: Vec<Token>,
}

fn fast_path(stages: &[BuilderStage]) -> Option<FastPath> {
    let mut lowered = 0usize;
    let mut raised = Vec::new();
    for s in stages {
        match s {
            BuilderStage::Std(Stage::TopK(k)) if *k > 0 => {
                let n = *k as usize + lowered;
                return (n <= 4096).then_some(FastPath { n_candidates: n, raised });
            }
            BuilderStage::Std(Stage::Penalties { last_n, repeat, freq, present })
                if *repeat >= 1.0 && *freq >= 0.0 && *present >= 0.0 && (0..=4096).contains(last_n) =>
            {
                lowered += *last_n as usize;
            }
            BuilderStage::Std(Stage::LogitBias(b)) => {
                for (t, v) in b {
                    if *v > 0.0 {
                        raised.push(*t);
                    } else if *v < 0.0 {
                        lowered += 1;
                    }
                }
            }
            _ => return None,
        }
    }
    None
}

fn make_stage(model: &Model, st: &Stage, n_vocab: i32) -> Result<NonNull<sys::llama_sampler>> {
    let fin = check_finite;
    // SAFETY: (all arms) each init function takes plain values (validated here) or
    // pointers valid for the call, and returns a new owned sampler or NULL.
    let p = unsafe {
        match st {
            Stage::Greedy => sys::llama_sampler_init_greedy(),
            Stage::Dist { seed } => sys::llama_sampler_init_dist(*seed),
            Stage::TopK(k) => sys::llama_sampler_init_top_k(*k),
            Stage::TopP { p, min_keep } => {
                prob("top_p", *p)?;
                sys::llama_sampler_init_top_p(*p, *min_keep)
            }
            Stage::MinP { p, min_keep } => {
                prob("min_p", *p)?;
                sys::llama_sampler_init_min_p(*p, *min_keep)
            }
            Stage::Typical { p, min_keep } => {
                prob("typical_p", *p)?;
                sys::llama_sampler_init_typical(*p, *min_keep)
            }
            Stage::Temp(t) => {
                fin("temperature", *t)?;
                sys::llama_sampler_init_temp(*t)
            }
            Stage::TempExt { t, delta, exponent } => {
                fin("temperature", *t)?;
                fin("dynatemp_range", *delta)?;
                fin("dynatemp_exponent", *exponent)?;
                sys::llama_sampler_init_temp_ext(*t, *delta, *exponent)
            }
            Stage::Xtc { p, t, min_keep, seed } => {
                prob("xtc_probability", *p)?;
                prob("xtc_threshold", *t)?;
                sys::llama_sampler_init_xtc(*p, *t, *min_keep, *seed)
            }
            Stage::TopNSigma(n) => {
                fin("top_n_sigma", *n)?;
                sys::llama_sampler_init_top_n_sigma(*n)
            }
            Stage::Mirostat { seed, tau, eta, m } => {
                fin("mirostat_tau", *tau)?;
                fin("mirostat_eta", *eta)?;
                check_arg(*m > 0, || format!("mirostat m must be > 0, got {m}"))?;
                sys::llama_sampler_init_mirostat(n_vocab, *seed, *tau, *eta, *m)
            }
            Stage::MirostatV2 { seed, tau, eta } => {
                fin("mirostat_tau", *tau)?;
                fin("mirostat_eta", *eta)?;
                sys::llama_sampler_init_mirostat_v2(*seed, *tau, *eta)
            }
            Stage::Penalties { last_n, repeat, freq, present } => {
                check_arg(repeat.is_finite() && *repeat > 0.0, || format!("repeat_penalty must be > 0, got {repeat}"))?;
                fin("frequency_penalty", *freq)?;
                fin("presence_penalty", *present)?;
                check_last_n("penalty_last_n", *last_n)?;
                let last_n = resolve_last_n(model, *last_n);
                sys::llama_sampler_init_penalties(n_vocab, last_n, *repeat, *freq, *present)
            }
            Stage::Dry { multiplier, base, allowed_length, last_n, breakers } => {
                fin("dry_multiplier", *multiplier)?;
                check_arg(base.is_finite() && *base >= 1.0, || format!("dry_base must be >= 1, got {base}"))?;
                check_arg(*allowed_length >= 0, || format!("dry_allowed_length must be >= 0, got {allowed_length}"))?;
                check_last_n("dry_penalty_last_n", *last_n)?;
                let last_n = resolve_last_n(model, *last_n);
                let cs: Vec<CString> = breakers.iter().map(|b| c_string(b, b)).collect::<Result<_>>()?;
                let mut ptrs: Vec<*const c_char> = cs.iter().map(|c| c.as_ptr()).collect();
                let vocab = model.vocab();
                sys::llama_sampler_init_dry(
                    vocab.as_raw(),
                    *multiplier,
                    *base,
                    *allowed_length,
                    last_n,
                    ptrs.as_mut_ptr(),
                    ptrs.len(),
                )
            }
            Stage::LogitBias(b) => {
                let vocab = model.vocab();
                for (t, v) in b {
                    vocab.check(*t)?;
                    check_arg(!v.is_nan(), || format!("logit bias for {t} is NaN"))?;
                }
                let raw: Vec<sys::llama_logit_bias> =
                    b.iter().map(|(t, v)| sys::llama_logit_bias { token: t.0, bias: *v }).collect();
                sys::llama_sampler_init_logit_bias(n_vocab, raw.len() as i32, raw.as_ptr())
            }
            Stage::Infill => sys::llama_sampler_init_infill(model.vocab().as_raw()),
        }
    };
    NonNull::new(p).ok_or_else(|| Error::invalid("", format!("llama.cpp refused sampler {st:?}")))
}

fn make_grammar(model: &Model, g: &Grammar) -> Result<RawSampler> {
    if g.gbnf.trim().is_empty() {
        return Err(Error::Grammar("empty grammar".into()));
    }
    // Depth, repetition bounds, nullable repetitions, left chains: llama.cpp hangs,
    // overflows its stack or silently changes the grammar on them.
    gbnf_check::check(&g.gbnf)?;
    let vocab = model.vocab();
    for t in &g.trigger_tokens {
        vocab.check(*t)?;
    }
    // Trigger patterns are searched in Rust (`trigger`): llama.cpp gets the trigger
    // tokens only, and the pattern's match when it fires (`grammar_from`).
    grammar_sampler(model, g, g.is_lazy().then_some(&[]))
}

/// A llama.cpp grammar sampler for `g`: lazy with `patterns` (and `g`'s trigger
/// tokens) when given, else active from the start.
fn grammar_sampler(model: &Model, g: &Grammar, patterns: Option<&[String]>) -> Result<RawSampler> {
    let gbnf = c_string(&g.gbnf, "grammar")?;
    let root = c_string(&g.root, &g.root)?;
    let vocab = model.vocab();
    let p = match patterns {
        Some(patterns) => {
            let pats: Vec<CString> = patterns.iter().map(|p| c_string(p, p)).collect::<Result<_>>()?;
            let mut pp: Vec<*const c_char> = pats.iter().map(|c| c.as_ptr()).collect();
            let toks: Vec<i32> = g.trigger_tokens.iter().map(|t| t.0).collect();
            // SAFETY: all pointers valid for the call; llama.cpp parses the grammar
            // (catching its own parse exceptions), the shim catches the rest; NULL on failure.
            unsafe {
                sys::llama_rs_sampler_init_grammar_lazy_patterns(
                    vocab.as_raw(),
                    gbnf.as_ptr(),
                    root.as_ptr(),
                    pp.as_mut_ptr(),
                    pp.len(),
                    toks.as_ptr(),
                    toks.len(),
                )
            }
        }
        // SAFETY: as above.
        None => unsafe { sys::llama_sampler_init_grammar(vocab.as_raw(), gbnf.as_ptr(), root.as_ptr()) },
    };
    NonNull::new(p)
        .map(RawSampler)
        .ok_or_else(|| Error::Grammar("llama.cpp could not parse the grammar (undefined rule, syntax error, left recursion or missing root; see the llama.cpp log)".into()))
}

/// A configured sampler: a llama.cpp chain plus an optional grammar, with the fast paths.
/// Not `Sync`: one thread samples at a time.
///
/// ```
/// use llama_rs::*;
/// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let mut ctx = model.context(ContextParams::default())?;
/// let mut sampler = SamplerConfig { seed: 1, ..Default::default() }.build(&model)?;
/// let mut batch = Batch::new(16, 1)?;
/// batch.add_sequence(&model.vocab().tokenize("Hello", true, false)?, 0, 0, true)?;
/// ctx.decode(&mut batch)?;
/// let token = sampler.sample(&ctx, batch.len() - 1)?;
/// sampler.accept(token)?;
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Sampler {
    model: Model,
    chain: RawSampler,
    fast: Option<FastPath>,
    greedy_only: bool,
    has_custom: bool,
    customs: Vec<*mut CustomState>,
    grammar: Option<RawSampler>,
    /// What `grammar` was made from (a pattern trigger replaces it; reset restores it).
    grammar_def: Option<Grammar>,
    /// A lazy grammar's trigger patterns, searched here while it waits.
    triggers: Option<Triggers>,
    /// A grammar accept failed (a lazy grammar's trigger text it cannot parse): llama.cpp
    /// has emptied the grammar's stacks, and its next apply would abort
    /// (`GGML_ASSERT(!stacks.empty())`). Nothing reaches the grammar until `reset`.
    grammar_broken: bool,
    /// Reused candidate buffer (no per-token allocation).
    cand: Vec<sys::llama_token_data>,
    one: [sys::llama_token_data; 1],
    force_full: bool,
}

// SAFETY: (contract) the llama.cpp samplers and the custom states (`customs` point into
// boxes owned by the chain) are only touched through `&mut self`; llama.cpp samplers
// have no thread affinity. Custom samplers are `Send` by the trait bound.
unsafe impl Send for Sampler {}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler")
            .field("fast", &self.fast)
            .field("greedy_only", &self.greedy_only)
            .field("grammar", &self.grammar.is_some())
            .finish()
    }
}

impl Sampler {
    /// Disables the fast paths (for tests and benchmarks comparing them).
    pub fn set_full_vocab(&mut self, on: bool) {
        self.force_full = on;
    }

    /// Samples from the outputs of batch entry `index` of the last decode: its logits,
    /// or what the context's [`DeviceSampler`] produced for it on the device. Does not
    /// accept the token.
    pub fn sample(&mut self, ctx: &Context, index: usize) -> Result<Token> {
        match ctx.device_sampled(index)? {
            None => self.sample_logits(ctx.logits(index)?),
            Some(step) => {
                if !self.accepts_device(step) {
                    return Err(Error::invalid("", format!(
                        "batch entry {index} was sampled on the device with {step:?}, which this sampler's chain does not start with ({:?})",
                        self.device_step()
                    )));
                }
                match step {
                    DeviceSampler::Greedy => ctx.sampled_token(index),
                    DeviceSampler::TopK(_) => {
                        let (ids, logits) = ctx.sampled_candidates(index)?;
                        self.sample_candidates(ids, logits)
                    }
                }
            }
        }
    }

    /// The first step of this chain that can run on the device with the same result:
    /// `Greedy` for a greedy chain, `TopK(n)` when the chain only ever looks at the `n`
    /// best raw logits (see the fast path), `None` with a grammar or custom stages.
    pub fn device_step(&self) -> Option<DeviceSampler> {
        if self.grammar.is_some() || self.has_custom {
            return None;
        }
        if self.greedy_only {
            return Some(DeviceSampler::Greedy);
        }
        match &self.fast {
            Some(f) if f.raised.is_empty() && f.n_candidates <= crate::context::DEVICE_TOP_K_MAX as usize => {
                Some(DeviceSampler::TopK(f.n_candidates.min(self.model.n_vocab() as usize) as u32))
            }
            _ => None,
        }
    }

    /// Whether this chain gives the same result from what `step` computed on the device:
    /// its own step, or a top-k at least as wide as it needs (greedy needs k >= 1).
    pub fn accepts_device(&self, step: DeviceSampler) -> bool {
        match (self.device_step(), step) {
            (Some(a), b) if a == b => true,
            (Some(DeviceSampler::Greedy), DeviceSampler::TopK(k)) => k >= 1,
            (Some(DeviceSampler::TopK(n)), DeviceSampler::TopK(m)) => m >= n,
            _ => false,
        }
    }

    /// Finishes the chain on candidates the device picked (`ids[i]` has `logits[i]`).
    fn sample_candidates(&mut self, ids: &[Token], logits: &[f32]) -> Result<Token> {
        self.check_grammar_usable()?;
        if ids.is_empty() || ids.len() != logits.len() {
            return Err(Error::invalid("", format!("{} device candidates with {} logits", ids.len(), logits.len())));
        }
        self.cand.clear();
        self.cand.extend(ids.iter().zip(logits).map(|(t, &l)| sys::llama_token_data { id: t.0, logit: l, p: 0.0 }));
        self.run_chain(false)
    }

    /// Samples from a logits vector (`n_vocab` floats). Does not accept the token.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<Token> {
        self.check_grammar_usable()?;
        let n_vocab = self.model.n_vocab() as usize;
        if logits.len() != n_vocab {
            return Err(Error::invalid("", format!("{} logits for a vocabulary of {n_vocab}", logits.len())));
        }
        if self.greedy_only && self.grammar.is_none() && !self.force_full {
            let t = argmax(logits);
            // The argmax skips NaN unless the whole row is NaN: then there is no pick.
            // A row of -inf allows no token, as the other chains say.
            let l = logits[t.0 as usize];
            if l.is_nan() {
                return Err(Error::NanLogits);
            }
            if l == f32::NEG_INFINITY {
                return Err(Error::GrammarRejectedAll);
            }
            return Ok(t);
        }
        let sorted = match &self.fast {
            Some(f) if !self.force_full => {
                top_k_into(logits, f.n_candidates, &mut self.cand);
                for &t in &f.raised {
                    if !self.cand.iter().any(|c| c.id == t.0) {
                        self.cand.push(sys::llama_token_data { id: t.0, logit: logits[t.0 as usize], p: 0.0 });
                    }
                }
                f.raised.is_empty()
            }
            _ => {
                fill_all(logits, &mut self.cand);
                false
            }
        };
        let t = self.run_chain(sorted)?;
        if let Some(g) = &self.grammar {
            if !grammar_allows(g, &mut self.one, t) {
                // Rejected: constrain the whole vocabulary, then sample again.
                fill_all(logits, &mut self.cand);
                let mut arr = array(&mut self.cand);
                // SAFETY: valid grammar sampler and candidate array.
                unsafe { sys::llama_sampler_apply(g.0.as_ptr(), &mut arr) };
                self.cand.retain(|c| c.logit != f32::NEG_INFINITY);
                if self.cand.is_empty() {
                    return Err(Error::GrammarRejectedAll);
                }
                return self.run_chain(false);
            }
        }
        Ok(t)
    }

    /// Applies the chain to `self.cand` (`sorted`: the candidates are in descending
    /// order, which spares the chain's top-k a sort).
    fn run_chain(&mut self, sorted: bool) -> Result<Token> {
        let mut arr = array(&mut self.cand);
        arr.sorted = sorted;
        // SAFETY: valid chain; `arr` points at `self.cand`, alive and unaliased for the call.
        unsafe { sys::llama_sampler_apply(self.chain.0.as_ptr(), &mut arr) };
        self.resume_custom_panic();
        if self.has_custom && self.custom_emptied() {
            return Err(Error::invalid("", "a custom sampler left no candidates".into()));
        }
        if arr.selected < 0 || arr.selected as usize >= arr.size {
            return Err(Error::GrammarRejectedAll);
        }
        // SAFETY: selected < size, and samplers only shrink `size` / move `data` within
        // our buffer (top-k etc. truncate, never reallocate).
        let chosen = unsafe { *arr.data.add(arr.selected as usize) };
        if chosen.logit.is_nan() {
            return Err(Error::NanLogits);
        }
        if chosen.logit == f32::NEG_INFINITY {
            return Err(Error::GrammarRejectedAll);
        }
        Ok(Token(chosen.id))
    }

    fn resume_custom_panic(&mut self) {
        if !self.has_custom {
            return;
        }
        for &c in &self.customs {
            // SAFETY: the state is alive while the chain (owned by self) is.
            if let Some(p) = unsafe { (*c).panic.take() } {
                std::panic::resume_unwind(p);
            }
        }
    }

    /// Whether a custom stage left no candidates in the last apply (and clears that).
    fn custom_emptied(&mut self) -> bool {
        let mut any = false;
        for &c in &self.customs {
            // SAFETY: the state is alive while the chain (owned by self) is.
            any |= unsafe { std::mem::take(&mut (*c).emptied) };
        }
        any
    }

    /// Records `token` as generated: updates penalties, mirostat, grammar state. A token
    /// the grammar does not allow is refused (llama.cpp would abort).
    pub fn accept(&mut self, token: Token) -> Result<()> {
        self.model.vocab().check(token)?;
        self.check_grammar_usable()?;
        if let Some(g) = &self.grammar {
            if !grammar_allows(g, &mut self.one, token) {
                return Err(Error::GrammarRejected(token.0));
            }
            let def = self.grammar_def.as_ref().expect("a grammar has its definition");
            match &mut self.triggers {
                Some(t) if t.awaiting() && !def.trigger_tokens.contains(&token) => {
                    // llama.cpp's lazy grammar ignores output until a trigger: it only
                    // sees the trigger token, or the output from a pattern's match on.
                    let mut piece = Vec::new();
                    self.model.vocab().token_to_piece_bytes(token, true, &mut piece)?;
                    if let Some(replay) = t.push(token, &piece) {
                        self.start_grammar(replay)?;
                    }
                }
                t => {
                    if let Some(t) = t {
                        t.fire(); // a trigger token, or already triggered
                    }
                    let g = g.0.as_ptr();
                    self.grammar_accept(g, token)?;
                }
            }
        }
        // SAFETY: valid chain; token in range; exceptions are caught by the shim.
        if unsafe { sys::llama_rs_sampler_accept(self.chain.0.as_ptr(), token.0) } != 0 {
            return Err(Error::invalid("", format!("llama.cpp's sampler chain failed accepting token {}", token.0)));
        }
        self.resume_custom_panic();
        Ok(())
    }

    /// Resets penalties, RNG-independent state and the grammar to the start.
    pub fn reset(&mut self) {
        self.grammar_broken = false;
        // SAFETY: valid chain.
        unsafe { sys::llama_sampler_reset(self.chain.0.as_ptr()) };
        if let Some(t) = &mut self.triggers {
            // The grammar may be one a pattern started: back to the waiting one.
            t.reset();
            let def = self.grammar_def.as_ref().expect("a grammar has its definition");
            match make_grammar(&self.model, def) {
                Ok(g) => self.grammar = Some(g),
                Err(_) => self.grammar_broken = true, // it was made before: not expected
            }
        } else if let Some(g) = &self.grammar {
            // SAFETY: valid sampler.
            unsafe { sys::llama_sampler_reset(g.0.as_ptr()) };
        }
        self.resume_custom_panic();
    }

    /// Accepts `token` into the llama.cpp grammar `g`; a failure (a text the grammar
    /// cannot continue with) leaves it unusable until `reset`.
    fn grammar_accept(&mut self, g: *mut sys::llama_sampler, token: Token) -> Result<()> {
        // SAFETY: `g` is this sampler's valid grammar sampler; the shim catches exceptions.
        if unsafe { sys::llama_rs_sampler_accept(g, token.0) } != 0 {
            self.grammar_broken = true;
            return Err(Error::Grammar(format!(
                "the grammar cannot continue with token {} (a lazy grammar's trigger text it does not parse); \
                 reset the sampler to use it again",
                token.0
            )));
        }
        Ok(())
    }

    /// A trigger pattern matched: the grammar starts on the tokens from the match on,
    /// the first one's piece without the `skip` bytes before it. A fresh llama.cpp
    /// grammar gets them: active from the start (no skip), or lazy with a pattern that
    /// matches the first piece alone (std::regex over one piece, never the output).
    fn start_grammar(&mut self, replay: trigger::Replay) -> Result<()> {
        let def = self.grammar_def.as_ref().expect("a grammar has its definition");
        let patterns = [trigger::skip_pattern(replay.skip)];
        let fresh = grammar_sampler(&self.model, def, (replay.skip > 0).then_some(&patterns[..]))?;
        let g = fresh.0.as_ptr();
        self.grammar = Some(fresh);
        for (i, t) in replay.tokens.into_iter().enumerate() {
            // The grammar's own check first (an end-of-generation token it cannot end on
            // is an abort inside llama.cpp's accept, not an exception). The first token of
            // a mid-piece start goes to a grammar that is still waiting: it allows it.
            let waiting = i == 0 && replay.skip > 0;
            let allowed = waiting || self.grammar.as_ref().is_some_and(|fresh| grammar_allows(fresh, &mut self.one, t));
            if !allowed {
                self.grammar_broken = true;
                return Err(Error::Grammar(format!(
                    "the grammar rejects token {} of its trigger text; reset the sampler to use it again",
                    t.0
                )));
            }
            self.grammar_accept(g, t)?;
        }
        Ok(())
    }

    /// Whether a grammar constrains this sampler.
    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    fn check_grammar_usable(&self) -> Result<()> {
        if self.grammar_broken {
            return Err(Error::Grammar(
                "the grammar failed on an earlier token and must be reset (Sampler::reset) before use".into(),
            ));
        }
        Ok(())
    }

    /// Whether the grammar (if any) allows `token` now (never, once it has failed).
    pub fn grammar_allows(&mut self, token: Token) -> bool {
        if self.grammar_broken {
            return false;
        }
        match &self.grammar {
            Some(g) => self.model.vocab().check(token).is_ok() && grammar_allows(g, &mut self.one, token),
            None => true,
        }
    }
}

fn array(c: &mut [sys::llama_token_data]) -> sys::llama_token_data_array {
    sys::llama_token_data_array { data: c.as_mut_ptr(), size: c.len(), selected: -1, sorted: false }
}

fn grammar_allows(g: &RawSampler, one: &mut [sys::llama_token_data; 1], t: Token) -> bool {
    one[0] = sys::llama_token_data { id: t.0, logit: 1.0, p: 0.0 };
    let mut arr = array(one);
    // SAFETY: valid grammar sampler; a one-element array of a valid token.
    unsafe { sys::llama_sampler_apply(g.0.as_ptr(), &mut arr) };
    arr.size == 1 && one[0].logit != f32::NEG_INFINITY
}

fn fill_all(logits: &[f32], out: &mut Vec<sys::llama_token_data>) {
    out.clear();
    out.extend(logits.iter().enumerate().map(|(i, &l)| sys::llama_token_data { id: i as i32, logit: l, p: 0.0 }));
}

/// The `k` largest logits, sorted descending (ties: lower token id first), in one pass
/// with a small sorted buffer: no full-vocabulary array.
pub(crate) fn top_k_into(logits: &[f32], k: usize, out: &mut Vec<sys::llama_token_data>) {
    out.clear();
    let k = k.min(logits.len());
    if k == 0 {
        return;
    }
    let mut threshold = f32::NEG_INFINITY;
    let offer = |out: &mut Vec<sys::llama_token_data>, i: usize, l: f32, threshold: &mut f32| {
        // `!(l > t)`, not `l <= t`: a NaN logit is never offered.
        #[allow(clippy::neg_cmp_op_on_partial_ord)]
        if out.len() == k && !(l > *threshold) {
            return;
        }
        let pos = out.partition_point(|c| c.logit >= l);
        if out.len() == k {
            out.pop();
        }
        out.insert(pos, sys::llama_token_data { id: i as i32, logit: l, p: 0.0 });
        if out.len() == k {
            *threshold = out[k - 1].logit;
        }
    };
    // Most blocks of 16 hold nothing above the current k-th value: test a whole block
    // with a branch-free (vectorized) reduction before looking at single entries.
    let mut base = 0;
    for block in logits.chunks(16) {
        let full = out.len() == k;
        let hit = !full || block.iter().fold(false, |a, &l| a | (l > threshold));
        if hit {
            for (j, &l) in block.iter().enumerate() {
                offer(out, base + j, l, &mut threshold);
            }
        }
        base += block.len();
    }
}

/// Index of the largest value (greedy sampling). Ties go to the lowest index.
///
/// ```
/// assert_eq!(llama_rs::argmax(&[0.1, 3.0, -1.0, 3.0]), llama_rs::Token(1));
/// ```
pub fn argmax(logits: &[f32]) -> Token {
    // Two passes beat one branchy pass: the maximum over 8 independent lanes compiles to
    // vector max instructions, then one scan finds its first index. NaNs never win.
    let mut lanes = [f32::NEG_INFINITY; 8];
    let chunks = logits.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            lanes[i] = if c[i] > lanes[i] { c[i] } else { lanes[i] };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &v in lanes.iter().chain(rest) {
        if v > max {
            max = v;
        }
    }
    Token(logits.iter().position(|&v| v == max).unwrap_or(0) as i32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_matches_a_full_sort() {
        let logits: Vec<f32> = (0..5000u32).map(|i| ((i.wrapping_mul(2654435761) >> 7) % 1000) as f32 / 7.0).collect();
        let mut out = Vec::new();
        for k in [1, 2, 40, 999, 5000] {
            top_k_into(&logits, k, &mut out);
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            idx.sort_by(|&a, &b| logits[b].partial_cmp(&logits[a]).unwrap().then(a.cmp(&b)));
            let want: Vec<i32> = idx[..k].iter().map(|&i| i as i32).collect();
            let got: Vec<i32> = out.iter().map(|c| c.id).collect();
            assert_eq!(got, want, "k = {k}");
        }
    }
}
