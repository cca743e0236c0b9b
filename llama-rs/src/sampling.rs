//! Sampling: a typed chain over llama.cpp's samplers, grammars, custom samplers in Rust,
//! and fast paths that avoid copying the whole vocabulary every token.
//!
//! Grammar-constrained sampling follows llama.cpp's own `common_sampler`: sample without
//! the grammar first, check the chosen token against it, and only if it is rejected run
//! the grammar over the full vocabulary. Tokens are only ever accepted into a grammar
//! after it has allowed them: llama.cpp aborts the process otherwise.

use std::any::Any;
use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::backend::guard;
use crate::context::Context;
use crate::error::{check_arg, Error, Result};
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
    pub gbnf: String,
    pub root: String,
    /// Regex patterns (matched from the start of the output) that activate the grammar.
    #[serde(default)]
    pub trigger_patterns: Vec<String>,
    /// Tokens that activate the grammar.
    #[serde(default)]
    pub trigger_tokens: Vec<Token>,
}

impl Grammar {
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

    fn is_lazy(&self) -> bool {
        !self.trigger_patterns.is_empty() || !self.trigger_tokens.is_empty()
    }
}

/// One stage of a sampler chain, applied in order. The last stage should select a
/// token (greedy, dist, mirostat); `SamplerBuilder::build` adds `Dist` if none does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stage {
    Greedy,
    /// Sample from the distribution with a seeded RNG.
    Dist {
        seed: u32,
    },
    TopK(i32),
    TopP {
        p: f32,
        min_keep: usize,
    },
    MinP {
        p: f32,
        min_keep: usize,
    },
    Typical {
        p: f32,
        min_keep: usize,
    },
    Temp(f32),
    /// Dynamic temperature in `[t - delta, t + delta]`.
    TempExt {
        t: f32,
        delta: f32,
        exponent: f32,
    },
    Xtc {
        p: f32,
        t: f32,
        min_keep: usize,
        seed: u32,
    },
    TopNSigma(f32),
    Mirostat {
        seed: u32,
        tau: f32,
        eta: f32,
        m: i32,
    },
    MirostatV2 {
        seed: u32,
        tau: f32,
        eta: f32,
    },
    Penalties {
        last_n: i32,
        repeat: f32,
        freq: f32,
        present: f32,
    },
    Dry {
        multiplier: f32,
        base: f32,
        allowed_length: i32,
        last_n: i32,
        breakers: Vec<String>,
    },
    LogitBias(Vec<(Token, f32)>),
    /// Fill-in-the-middle helper (after top-k/top-p).
    Infill,
}

impl Stage {
    fn selects(&self) -> bool {
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
    pub temperature: f32,
    pub dynatemp_range: f32,
    pub dynatemp_exponent: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub typical_p: f32,
    pub xtc_probability: f32,
    pub xtc_threshold: f32,
    pub top_n_sigma: f32,
    pub repeat_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    pub penalty_last_n: i32,
    pub dry_multiplier: f32,
    pub dry_base: f32,
    pub dry_allowed_length: i32,
    pub dry_penalty_last_n: i32,
    pub dry_sequence_breakers: Vec<String>,
    /// 0 = off, 1 = Mirostat, 2 = Mirostat 2.0.
    pub mirostat: u8,
    pub mirostat_tau: f32,
    pub mirostat_eta: f32,
    pub logit_bias: Vec<(Token, f32)>,
    pub seed: u32,
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
                check_arg(v.is_finite(), || format!("{name} must be finite, got {v}"))?;
            }
        }
        check_arg(self.top_k >= 0, || format!("top_k must be >= 0 (0 = off), got {}", self.top_k))?;
        check_arg(matches!(self.mirostat, 0..=2), || format!("mirostat must be 0, 1 or 2, got {}", self.mirostat))?;
        check_last_n("penalty_last_n", self.penalty_last_n)?;
        check_last_n("dry_penalty_last_n", self.dry_penalty_last_n)?;
        check_arg(self.dry_allowed_length >= 0, || {
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
        self.validate()?;
        let mut b = SamplerBuilder::new(model);
        for st in self.stages() {
            b = b.stage(st);
        }
        if let Some(g) = &self.grammar {
            b = b.grammar(g.clone());
        }
        b.build()
    }
}

/// Candidate tokens handed to a [`CustomSampler`]: a view of llama.cpp's
/// `llama_token_data_array`.
pub struct Candidates<'a> {
    raw: &'a mut sys::llama_token_data_array,
}

impl Candidates<'_> {
    fn data(&self) -> &[sys::llama_token_data] {
        if self.raw.size == 0 || self.raw.data.is_null() {
            return &[];
        }
        // SAFETY: llama.cpp passes `size` valid entries at `data` for this call.
        unsafe { std::slice::from_raw_parts(self.raw.data, self.raw.size) }
    }
    fn data_mut(&mut self) -> &mut [sys::llama_token_data] {
        if self.raw.size == 0 || self.raw.data.is_null() {
            return &mut [];
        }
        // SAFETY: as above, and we hold the only reference for this call.
        unsafe { std::slice::from_raw_parts_mut(self.raw.data, self.raw.size) }
    }
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.raw.size
    }
    pub fn is_empty(&self) -> bool {
        self.raw.size == 0
    }
    /// Token id of candidate `i`.
    pub fn token(&self, i: usize) -> Token {
        Token(self.data()[i].id)
    }
    /// Logit of candidate `i`.
    pub fn logit(&self, i: usize) -> f32 {
        self.data()[i].logit
    }
    /// Changes the logit of candidate `i` (marks the array unsorted).
    pub fn set_logit(&mut self, i: usize, logit: f32) {
        self.data_mut()[i].logit = logit;
        self.raw.sorted = false;
    }
    /// Iterates `(token, logit)`.
    pub fn iter(&self) -> impl Iterator<Item = (Token, f32)> + '_ {
        self.data().iter().map(|d| (Token(d.id), d.logit))
    }
    /// Keeps only the first `n` candidates.
    pub fn truncate(&mut self, n: usize) {
        self.raw.size = self.raw.size.min(n);
    }
    /// Selects candidate `i` as the sampled token (for samplers that choose).
    pub fn select(&mut self, i: usize) {
        if i < self.raw.size {
            self.raw.selected = i as i64;
        }
    }
}

/// A logits processor / sampler written in Rust, placed in the chain with
/// [`SamplerBuilder::custom`]. Panics are caught at the C boundary and resumed in the
/// caller of `Sampler::sample` once llama.cpp has returned.
///
/// ```
/// use llama_rs::{Candidates, CustomSampler, Token};
/// /// Forbids one token.
/// struct Ban(Token);
/// impl CustomSampler for Ban {
///     fn apply(&mut self, c: &mut Candidates<'_>) {
///         for i in 0..c.len() {
///             if c.token(i) == self.0 { c.set_logit(i, f32::NEG_INFINITY); }
///         }
///     }
/// }
/// ```
pub trait CustomSampler: Send {
    fn apply(&mut self, candidates: &mut Candidates<'_>);
    fn accept(&mut self, _token: Token) {}
    fn reset(&mut self) {}
}

struct CustomState {
    inner: Box<dyn CustomSampler>,
    panic: Option<Box<dyn Any + Send>>,
    /// The sampler left no candidates: later stages assert `cur_p->size > 0`, so the
    /// size was restored and the sample call returns an error.
    emptied: bool,
}

unsafe extern "C" fn custom_name(_: *const sys::llama_sampler) -> *const c_char {
    c"rust-custom".as_ptr()
}

unsafe extern "C" fn custom_apply(smpl: *mut sys::llama_sampler, cur_p: *mut sys::llama_token_data_array) {
    // SAFETY: `ctx` is the Box<CustomState> leaked in `SamplerBuilder::custom`, alive until
    // `custom_free`; llama.cpp calls samplers from one thread at a time (the Sampler is
    // not Sync); `cur_p` is valid for this call.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    // SAFETY: llama.cpp passes a valid candidate array, exclusively ours for this call.
    let raw = unsafe { &mut *cur_p };
    let inner = &mut st.inner;
    let size = raw.size;
    guard(&mut st.panic, (), || inner.apply(&mut Candidates { raw: &mut *raw }));
    if raw.size == 0 && size > 0 {
        raw.size = size;
        st.emptied = true;
    }
}

unsafe extern "C" fn custom_accept(smpl: *mut sys::llama_sampler, token: i32) {
    // SAFETY: as in `custom_apply`.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    let inner = &mut st.inner;
    guard(&mut st.panic, (), || inner.accept(Token(token)));
}

unsafe extern "C" fn custom_reset(smpl: *mut sys::llama_sampler) {
    // SAFETY: as in `custom_apply`.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    let inner = &mut st.inner;
    guard(&mut st.panic, (), || inner.reset());
}

unsafe extern "C" fn custom_free(smpl: *mut sys::llama_sampler) {
    // SAFETY: called once by llama_sampler_free; reclaims the Box leaked at creation.
    // Dropping user code may panic: never let that unwind into C.
    let st = unsafe { Box::from_raw((*smpl).ctx as *mut CustomState) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(st)));
}

static CUSTOM_IFACE: sys::llama_sampler_i = sys::llama_sampler_i {
    name: Some(custom_name),
    accept: Some(custom_accept),
    apply: Some(custom_apply),
    reset: Some(custom_reset),
    clone: None,
    free: Some(custom_free),
    backend_init: None,
    backend_accept: None,
    backend_apply: None,
    backend_set_input: None,
    backend_reset: None,
    copy_state: None,
};

/// Owner of one `llama_sampler*` (a chain or a grammar).
pub(crate) struct RawSampler(pub(crate) NonNull<sys::llama_sampler>);

/// A sampling step that runs inside the compute graph, on the device that holds the
/// output layer, so that only a token id or `k` candidates come back to the host
/// instead of the whole logits row (1 MiB per token for a 262k vocabulary, copied from
/// GPU memory). Attach one with [`Context::set_device_sampler`]; a [`Sampler`] whose
/// chain starts with the same step finishes on the host ([`Sampler::device_step`]).
///
/// ```
/// use llama_rs::{DeviceSampler, SamplerConfig};
/// let model = llama_rs::Model::load(llama_rs::default_model_path()?, Default::default())?;
/// let greedy = SamplerConfig::greedy().build(&model)?;
/// assert_eq!(greedy.device_step(), Some(DeviceSampler::Greedy));
/// let default = SamplerConfig::default().build(&model)?; // top-k 40 first
/// assert_eq!(default.device_step(), Some(DeviceSampler::TopK(40)));
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSampler {
    /// Argmax: the token id comes back.
    Greedy,
    /// The `k` largest logits and their token ids come back (unordered).
    TopK(u32),
}

impl DeviceSampler {
    /// A fresh llama.cpp chain for this step (a chain can be attached only once).
    pub(crate) fn chain(self, n_vocab: i32) -> Result<RawSampler> {
        let chain = new_chain()?;
        // SAFETY: plain-value constructors returning new owned samplers (k checked by
        // the caller to be in 1..=n_vocab).
        let stage = unsafe {
            match self {
                // A two-stage argmax (see the shim): llama.cpp's single argmax over a
                // large vocabulary runs in one thread block on GPUs.
                DeviceSampler::Greedy => sys::llama_rs_sampler_init_split_greedy(n_vocab),
                DeviceSampler::TopK(k) => {
                    debug_assert!(k >= 1 && k as i64 <= n_vocab as i64);
                    sys::llama_sampler_init_top_k(k as i32)
                }
            }
        };
        let stage = NonNull::new(stage)
            .ok_or_else(|| Error::InvalidParam("llama.cpp could not create the device sampler".into()))?;
        // SAFETY: both valid; the chain takes ownership of `stage`.
        unsafe { sys::llama_sampler_chain_add(chain.0.as_ptr(), stage.as_ptr()) };
        Ok(chain)
    }
}

impl Drop for RawSampler {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_*_init / chain_init, freed once here.
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

/// Builds a [`Sampler`] stage by stage.
///
/// ```
/// use llama_rs::{Model, SamplerBuilder, Stage};
/// let model = Model::load(llama_rs::default_model_path()?, Default::default())?;
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
    pub fn new(model: &Model) -> Self {
        SamplerBuilder { model: model.clone(), stages: vec![], grammar: None }
    }
    /// Appends a llama.cpp sampler.
    pub fn stage(mut self, s: Stage) -> Self {
        self.stages.push(BuilderStage::Std(s));
        self
    }
    /// Appends a sampler written in Rust.
    pub fn custom(mut self, c: impl CustomSampler + 'static) -> Self {
        self.stages.push(BuilderStage::Custom(Box::new(c)));
        self
    }
    /// Constrains output with a grammar.
    pub fn grammar(mut self, g: Grammar) -> Self {
        self.grammar = Some(g);
        self
    }

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

        let chain_full = new_chain()?;
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
                    let p = NonNull::new(p).ok_or_else(|| Error::InvalidParam("llama_sampler_init failed".into()))?;
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
        let lazy_patterns = self.grammar.as_ref().is_some_and(|g| !g.trigger_patterns.is_empty());
        Ok(Sampler {
            model: self.model,
            chain: chain_full,
            fast,
            greedy_only,
            has_custom,
            customs,
            grammar,
            lazy_patterns,
            accepted_bytes: 0,
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

fn new_chain() -> Result<RawSampler> {
    // SAFETY: plain struct by value; chain_init returns a new owned sampler.
    let p = unsafe { sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params()) };
    NonNull::new(p).map(RawSampler).ok_or_else(|| Error::InvalidParam("llama_sampler_chain_init failed".into()))
}

/// Longest penalty window: llama.cpp allocates a ring buffer of this many tokens up
/// front (`i32::MAX` threw `std::bad_alloc` across the C API).
pub const MAX_PENALTY_LAST_N: i32 = 1 << 20;

fn check_last_n(name: &str, n: i32) -> Result<()> {
    check_arg((-1..=MAX_PENALTY_LAST_N).contains(&n), || {
        format!("{name} must be in -1..={MAX_PENALTY_LAST_N} (-1 = the model's context length), got {n}")
    })
}

/// `-1` means the model's training context, for every penalty window (this llama.cpp
/// clamps DRY's -1 to 0, which silently turned DRY off).
fn resolve_last_n(model: &Model, n: i32) -> i32 {
    if n == -1 {
        (model.n_ctx_train() as i32).clamp(1, MAX_PENALTY_LAST_N)
    } else {
        n
    }
}

fn prob(name: &str, p: f32) -> Result<()> {
    check_arg(p.is_finite() && (0.0..=1.0).contains(&p), || format!("{name} must be in 0..=1, got {p}"))
}

fn make_stage(model: &Model, st: &Stage, n_vocab: i32) -> Result<NonNull<sys::llama_sampler>> {
    let fin = |name: &str, v: f32| check_arg(v.is_finite(), || format!("{name} must be finite, got {v}"));
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
                let cs: Vec<CString> = breakers
                    .iter()
                    .map(|b| CString::new(b.as_str()).map_err(|_| Error::Nul(b.clone())))
                    .collect::<Result<_>>()?;
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
    NonNull::new(p).ok_or_else(|| Error::InvalidParam(format!("llama.cpp refused sampler {st:?}")))
}

fn make_grammar(model: &Model, g: &Grammar) -> Result<RawSampler> {
    let gbnf = CString::new(g.gbnf.as_str()).map_err(|_| Error::Nul("grammar".into()))?;
    let root = CString::new(g.root.as_str()).map_err(|_| Error::Nul(g.root.clone()))?;
    if g.gbnf.trim().is_empty() {
        return Err(Error::Grammar("empty grammar".into()));
    }
    // Depth, repetition bounds, nullable repetitions: llama.cpp hangs, overflows its
    // stack or silently changes the grammar on them.
    crate::gbnf_check::check(&g.gbnf)?;
    let vocab = model.vocab();
    for t in &g.trigger_tokens {
        vocab.check(*t)?;
    }
    let p = if g.is_lazy() {
        let pats: Vec<CString> = g
            .trigger_patterns
            .iter()
            .map(|p| CString::new(p.as_str()).map_err(|_| Error::Nul(p.clone())))
            .collect::<Result<_>>()?;
        let mut pp: Vec<*const c_char> = pats.iter().map(|c| c.as_ptr()).collect();
        let toks: Vec<i32> = g.trigger_tokens.iter().map(|t| t.0).collect();
        // SAFETY: all pointers valid for the call; llama.cpp parses the grammar (catching
        // its own parse exceptions) and returns NULL on failure.
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
    } else {
        // SAFETY: as above.
        unsafe { sys::llama_sampler_init_grammar(vocab.as_raw(), gbnf.as_ptr(), root.as_ptr()) }
    };
    NonNull::new(p)
        .map(RawSampler)
        .ok_or_else(|| Error::Grammar("llama.cpp could not parse the grammar (undefined rule, syntax error, left recursion or missing root; see the llama.cpp log)".into()))
}

/// Output a lazy grammar may have searched for its trigger before the search runs on a
/// thread with a larger stack (std::regex recursion: ~500 bytes of stack per byte).
const LAZY_ACCEPT_ON_CALLER_MAX: usize = 2048;

/// A grammar sampler handed to the thread that accepts into it.
#[derive(Clone, Copy)]
struct SendSampler(NonNull<sys::llama_sampler>);
// SAFETY: (contract) llama.cpp samplers have no thread affinity; the `Sampler` owning
// this one is borrowed mutably for the whole scoped thread, so nothing else touches it.
unsafe impl Send for SendSampler {}

/// A configured sampler: a llama.cpp chain plus an optional grammar, with the fast paths.
/// Not `Sync`: one thread samples at a time.
///
/// ```
/// use llama_rs::*;
/// let model = Model::load(default_model_path()?, Default::default())?;
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
    /// The grammar waits for a trigger pattern: llama.cpp then runs std::regex over all
    /// output since the last reset on every accept, recursing per character.
    lazy_patterns: bool,
    /// Bytes accepted since the last reset (an upper bound of llama.cpp's trigger buffer).
    accepted_bytes: usize,
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
                    return Err(Error::InvalidParam(format!(
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
            Some(f) if f.raised.is_empty() => {
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
        if ids.is_empty() || ids.len() != logits.len() {
            return Err(Error::InvalidParam(format!("{} device candidates with {} logits", ids.len(), logits.len())));
        }
        self.cand.clear();
        self.cand.extend(ids.iter().zip(logits).map(|(t, &l)| sys::llama_token_data { id: t.0, logit: l, p: 0.0 }));
        self.run_chain(false)
    }

    /// Samples from a logits vector (`n_vocab` floats). Does not accept the token.
    pub fn sample_logits(&mut self, logits: &[f32]) -> Result<Token> {
        let n_vocab = self.model.n_vocab() as usize;
        if logits.len() != n_vocab {
            return Err(Error::InvalidParam(format!("{} logits for a vocabulary of {n_vocab}", logits.len())));
        }
        if self.greedy_only && self.grammar.is_none() && !self.force_full {
            let t = crate::argmax(logits);
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
            return Err(Error::InvalidParam("a custom sampler left no candidates".into()));
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
        if let Some(g) = &self.grammar {
            if !grammar_allows(g, &mut self.one, token) {
                return Err(Error::GrammarRejected(token.0));
            }
            if self.lazy_patterns {
                let mut piece = Vec::new();
                self.model.vocab().token_to_piece_bytes(token, true, &mut piece)?;
                self.accepted_bytes = self.accepted_bytes.saturating_add(piece.len());
            }
            let (grammar, id) = (SendSampler(g.0), token.0);
            // SAFETY: valid grammar sampler; the token is allowed (checked). A lazy grammar
            // can still throw on its trigger: the shim catches it.
            let accept = move || {
                let g = grammar; // the whole Send wrapper, not its field (closure capture)
                                 // SAFETY: see above.
                unsafe { sys::llama_rs_sampler_accept(g.0.as_ptr(), id) }
            };
            let rc = if self.lazy_patterns && self.accepted_bytes > LAZY_ACCEPT_ON_CALLER_MAX {
                // The trigger search recurses per character of the buffer (a 24 KB buffer
                // overflowed a test thread's stack): run it where the stack has room.
                let stack = (8 << 20) + self.accepted_bytes.saturating_mul(1024);
                std::thread::scope(|scope| {
                    std::thread::Builder::new()
                        .name("llama-rs-grammar".into())
                        .stack_size(stack)
                        .spawn_scoped(scope, accept)
                        .map(|h| h.join().unwrap_or(-1))
                        .unwrap_or(-2)
                })
            } else {
                accept()
            };
            if rc == -2 {
                return Err(Error::Limit {
                    what: "grammar",
                    detail: "no thread with room for the trigger search".into(),
                });
            }
            if rc != 0 {
                return Err(Error::Grammar(format!("llama.cpp failed accepting token {} into the grammar", token.0)));
            }
        }
        // SAFETY: valid chain; token in range; exceptions are caught by the shim.
        if unsafe { sys::llama_rs_sampler_accept(self.chain.0.as_ptr(), token.0) } != 0 {
            return Err(Error::InvalidParam(format!("llama.cpp's sampler chain failed accepting token {}", token.0)));
        }
        self.resume_custom_panic();
        Ok(())
    }

    /// Resets penalties, RNG-independent state and the grammar to the start.
    pub fn reset(&mut self) {
        self.accepted_bytes = 0;
        // SAFETY: valid samplers.
        unsafe {
            sys::llama_sampler_reset(self.chain.0.as_ptr());
            if let Some(g) = &self.grammar {
                sys::llama_sampler_reset(g.0.as_ptr());
            }
        }
        self.resume_custom_panic();
    }

    /// Whether a grammar constrains this sampler.
    pub fn has_grammar(&self) -> bool {
        self.grammar.is_some()
    }

    /// Whether the grammar (if any) allows `token` now.
    pub fn grammar_allows(&mut self, token: Token) -> bool {
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
