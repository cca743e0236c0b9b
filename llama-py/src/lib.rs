//! `llama_rs._llama_rs`: the native half of the Python module. It exposes llama-rs's
//! model, session (one context, prefix reuse, the one generation core), chat templates,
//! embeddings and grammars; `python/llama_rs/` builds llama-cpp-python's API on top.
//!
//! Every decode runs with the GIL released, so several `Llama` objects generate in
//! parallel from Python threads; a streamed generation runs on its own thread and hands
//! pieces over a bounded channel, and Ctrl-C (KeyboardInterrupt) cancels it within a
//! token, leaving the object usable.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llama_rs::{
    CancelHandle, Candidates, ChatMessage, ChatTemplate, ContextParams, CustomSampler, DraftKind, DraftModel,
    FinishReason, FlashAttn, GenerateParams, GpuLayers, Grammar, KvType, LoadMode, Model as RsModel, ModelParams,
    Piece, RenderOptions, SamplerConfig, Session, Speculation, SplitMode, Token,
};
mod chat;
mod errors;

use errors::err;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

fn ggml_kv_type(t: Option<i32>) -> PyResult<KvType> {
    // llama-cpp-python passes GGML_TYPE_* integers.
    Ok(match t {
        None | Some(1) => KvType::F16,
        Some(0) => KvType::F32,
        Some(30) => KvType::Bf16,
        Some(8) => KvType::Q8_0,
        Some(2) => KvType::Q4_0,
        Some(3) => KvType::Q4_1,
        Some(20) => KvType::Iq4Nl,
        Some(6) => KvType::Q5_0,
        Some(7) => KvType::Q5_1,
        Some(x) => return Err(PyValueError::new_err(format!("type_k/type_v {x}: not a KV cache type"))),
    })
}

/// A loaded GGUF model.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct Model {
    pub(crate) inner: RsModel,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, n_gpu_layers=0, split_mode=1, main_gpu=0, tensor_split=None, vocab_only=false, use_mmap=true, use_mlock=false, kv_overrides=None, mtp=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        path: std::path::PathBuf,
        n_gpu_layers: i32,
        split_mode: i32,
        main_gpu: i32,
        tensor_split: Option<Vec<f32>>,
        vocab_only: bool,
        use_mmap: bool,
        use_mlock: bool,
        kv_overrides: Option<Bound<'_, PyDict>>,
        mtp: bool,
    ) -> PyResult<Model> {
        if !path.is_file() {
            return Err(PyValueError::new_err(format!("Model path does not exist: {}", path.display())));
        }
        let gpu = if n_gpu_layers < 0 { GpuLayers::All } else { GpuLayers::Count(n_gpu_layers as u32) };
        let split = match split_mode {
            0 => SplitMode::None,
            2 => SplitMode::Row,
            _ => SplitMode::Layer,
        };
        let mut p = ModelParams::default().gpu_layers(gpu).split_mode(split).main_gpu(main_gpu).mtp(mtp);
        p.vocab_only = vocab_only;
        p.load_mode = match (use_mmap, use_mlock) {
            (true, false) => LoadMode::Auto,
            (false, false) => LoadMode::None,
            (true, true) => LoadMode::MmapMlock,
            (false, true) => LoadMode::Mlock,
        };
        if let Some(ts) = tensor_split.filter(|t| t.iter().any(|&x| x > 0.0)) {
            p = p.tensor_split(ts);
        }
        if let Some(d) = kv_overrides {
            for (k, v) in d.iter() {
                let key: String = k.extract()?;
                let ov = if let Ok(b) = v.downcast::<pyo3::types::PyBool>() {
                    llama_rs::KvOverride::Bool(b.is_true())
                } else if let Ok(i) = v.extract::<i64>() {
                    llama_rs::KvOverride::Int(i)
                } else if let Ok(f) = v.extract::<f64>() {
                    llama_rs::KvOverride::Float(f)
                } else {
                    llama_rs::KvOverride::Str(v.extract::<String>()?)
                };
                p = p.kv_override(key, ov);
            }
        }
        let inner = py.allow_threads(|| RsModel::load(&path, p)).map_err(err)?;
        Ok(Model { inner })
    }

    /// Tokens of UTF-8 `text` (llama-cpp-python: `tokenize(text: bytes, add_bos, special)`).
    #[pyo3(signature = (text, add_bos=true, special=false))]
    fn tokenize(&self, text: &[u8], add_bos: bool, special: bool) -> PyResult<Vec<i32>> {
        let s = String::from_utf8_lossy(text);
        let t = self.inner.vocab().tokenize_unbounded(&s, add_bos, special).map_err(err)?;
        Ok(t.into_iter().map(|t| t.0).collect())
    }

    /// The bytes of `tokens` (pieces concatenated; partial UTF-8 stays as bytes).
    #[pyo3(signature = (tokens, special=false))]
    fn detokenize<'py>(&self, py: Python<'py>, tokens: Vec<i32>, special: bool) -> PyResult<Bound<'py, PyBytes>> {
        let vocab = self.inner.vocab();
        let (mut out, mut piece) = (Vec::new(), Vec::new());
        for t in tokens {
            vocab.token_to_piece_bytes(Token(t), special, &mut piece).map_err(err)?;
            out.extend_from_slice(&piece);
        }
        Ok(PyBytes::new(py, &out))
    }

    fn n_vocab(&self) -> i32 {
        self.inner.n_vocab()
    }
    fn n_ctx_train(&self) -> u32 {
        self.inner.n_ctx_train()
    }
    fn n_embd(&self) -> usize {
        self.inner.n_embd()
    }
    fn n_params(&self) -> u64 {
        self.inner.n_params()
    }
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn description(&self) -> String {
        self.inner.description()
    }
    fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        self.inner.metadata()
    }
    fn token_bos(&self) -> i32 {
        self.inner.vocab().bos().map_or(-1, |t| t.0)
    }
    fn token_eos(&self) -> i32 {
        self.inner.vocab().eos().map_or(-1, |t| t.0)
    }
    fn token_nl(&self) -> i32 {
        self.inner.vocab().nl().map_or(-1, |t| t.0)
    }
    fn add_bos(&self) -> bool {
        self.inner.vocab().add_bos()
    }
    /// Fill-in-the-middle tokens (prefix, suffix, middle), where the model has them.
    fn fim_tokens(&self) -> Option<(i32, i32, i32)> {
        let v = self.inner.vocab();
        Some((v.fim_pre()?.0, v.fim_suf()?.0, v.fim_mid()?.0))
    }

    fn is_eog(&self, t: i32) -> bool {
        self.inner.vocab().is_eog(Token(t))
    }
    #[pyo3(signature = (name=None))]
    fn chat_template(&self, name: Option<&str>) -> Option<String> {
        self.inner.chat_template(name)
    }

    /// Renders chat `messages` (JSON list) with the GGUF template, a built-in template
    /// by name, or a Jinja source.
    #[pyo3(signature = (messages_json, add_generation_prompt=true, tools_json=None, template=None))]
    fn render_chat(
        &self,
        messages_json: &str,
        add_generation_prompt: bool,
        tools_json: Option<&str>,
        template: Option<&str>,
    ) -> PyResult<String> {
        let messages: Vec<ChatMessage> =
            serde_json::from_str(messages_json).map_err(|e| PyValueError::new_err(format!("messages: {e}")))?;
        let tools: Option<Vec<serde_json::Value>> = match tools_json {
            Some(t) => Some(serde_json::from_str(t).map_err(|e| PyValueError::new_err(format!("tools: {e}")))?),
            None => None,
        };
        let tmpl = chat::template(&self.inner, template).map_err(err)?;
        let opts = RenderOptions { add_generation_prompt, tools, ..Default::default() };
        tmpl.render(&messages, &opts).map_err(err)
    }
}

/// A context with one sequence and its cache of tokens: generation with prefix reuse,
/// state save/load. Shared with the generation thread of a stream.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
struct Core {
    session: Arc<Mutex<Session>>,
    model: RsModel,
    n_ctx: u32,
}

fn lock(s: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

#[pymethods]
impl Core {
    #[new]
    #[pyo3(signature = (model, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=None, n_threads_batch=None, flash_attn=None, type_k=None, type_v=None, offload_kqv=true, swa_full=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_ctx: u32,
        n_batch: u32,
        n_ubatch: u32,
        n_threads: Option<u32>,
        n_threads_batch: Option<u32>,
        flash_attn: Option<bool>,
        type_k: Option<i32>,
        type_v: Option<i32>,
        offload_kqv: bool,
        swa_full: Option<bool>,
    ) -> PyResult<Core> {
        let n_ctx = if n_ctx == 0 { model.inner.n_ctx_train() } else { n_ctx };
        let n_batch = n_batch.clamp(1, n_ctx);
        let mut p =
            ContextParams::default().n_ctx(n_ctx).n_batch(n_batch).n_ubatch(n_ubatch.clamp(1, n_batch)).flash_attn(
                match flash_attn {
                    Some(true) => FlashAttn::On,
                    Some(false) => FlashAttn::Off,
                    None => FlashAttn::Auto,
                },
            );
        let cores = std::thread::available_parallelism().map_or(4, |n| n.get() as u32);
        p = p.n_threads(n_threads.unwrap_or((cores / 2).max(1)));
        p.n_threads_batch = n_threads_batch.unwrap_or(cores);
        p.type_k = ggml_kv_type(type_k)?;
        p.type_v = ggml_kv_type(type_v)?;
        p.offload_kqv = offload_kqv;
        if let Some(s) = swa_full {
            p.swa_full = s;
        }
        let m = model.inner.clone();
        let session = py.allow_threads(|| m.context(p).and_then(Session::new)).map_err(err)?;
        Ok(Core { session: Arc::new(Mutex::new(session)), model: model.inner.clone(), n_ctx })
    }

    fn n_ctx(&self) -> u32 {
        self.n_ctx
    }

    /// Tokens in the cache.
    fn tokens(&self) -> Vec<i32> {
        lock(&self.session).tokens().iter().map(|t| t.0).collect()
    }

    fn reset(&self) {
        lock(&self.session).reset();
    }

    /// The whole state (cache, tokens) as bytes.
    fn save_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.session.clone();
        let bytes = py.allow_threads(move || lock(&s).save_state()).map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Restores a state from `save_state`.
    fn load_state(&self, py: Python<'_>, state: Vec<u8>) -> PyResult<()> {
        let s = self.session.clone();
        py.allow_threads(move || lock(&s).load_state(&state)).map_err(err)
    }

    /// Uses `draft` to draft tokens (speculative decoding with a second model).
    #[pyo3(signature = (draft, n_ctx=None))]
    fn set_draft_model(&self, py: Python<'_>, draft: Option<&Model>, n_ctx: Option<u32>) -> PyResult<()> {
        let d = match draft {
            Some(d) => {
                let p = ContextParams::default().n_ctx(n_ctx.unwrap_or(self.n_ctx));
                let (t, dm) = (self.model.clone(), d.inner.clone());
                Some(py.allow_threads(move || DraftModel::new(&t, &dm, p)).map_err(err)?)
            }
            None => None,
        };
        lock(&self.session).set_draft_model(d);
        Ok(())
    }

    /// Drafts with the model's own MTP head (`on`), or stops (the model must have been
    /// loaded with `mtp=True`).
    fn set_mtp(&self, py: Python<'_>, on: bool) -> PyResult<()> {
        let head = match on {
            true => {
                let (m, p) = (self.model.clone(), ContextParams::default().n_ctx(self.n_ctx));
                Some(py.allow_threads(move || llama_rs::Mtp::new(&m, p)).map_err(err)?)
            }
            false => None,
        };
        lock(&self.session).set_mtp(head).map_err(err)
    }

    /// Decodes `tokens` after the cached ones (llama-cpp-python's `eval`); returns the
    /// logits after the last one as little-endian f32 bytes.
    fn eval<'py>(&self, py: Python<'py>, tokens: Vec<i32>) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.session.clone();
        let t: Vec<Token> = tokens.into_iter().map(Token).collect();
        let row = py.allow_threads(move || lock(&s).eval(&t)).map_err(err)?;
        Ok(PyBytes::new(py, &f32_bytes(&row)))
    }

    /// Starts a generation after `prompt` (token ids); returns a `Stream` of pieces.
    /// `opts` holds llama-cpp-python's sampling arguments; `processor`, when given, is
    /// called as `processor(token_ids, scores_f32_bytes) -> (scores_bytes | None, stop)`
    /// before every sampling step (logits processors and stopping criteria).
    #[pyo3(signature = (prompt, opts, max_tokens=None, stop=Vec::new(), logprobs=None, ignore_eos=false, speculation=None, max_draft=8, processor=None, collect=false))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        prompt: Vec<i32>,
        opts: SampleOpts,
        max_tokens: Option<usize>,
        stop: Vec<String>,
        logprobs: Option<usize>,
        ignore_eos: bool,
        speculation: Option<(String, usize, usize)>,
        max_draft: usize,
        processor: Option<PyObject>,
        collect: bool,
    ) -> PyResult<Stream> {
        let speculation = speculation_of(speculation, max_draft)?;
        let params = GenerateParams {
            max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            sampler: opts.config(),
            logprobs,
            ignore_eos,
            speculation,
            ..Default::default()
        };
        let failed: Arc<Mutex<Option<PyErr>>> = Arc::default();
        let first = self.processor(processor, &prompt, &failed);
        let prompt: Vec<Token> = prompt.into_iter().map(Token).collect();
        Stream::start(self.session.clone(), prompt, params, first, failed, collect)
    }

    /// Starts the generation of a `ChatJob` (its parameters as the protocol layer built
    /// them: sampling, grammar, stop strings, reasoning budget, log-probabilities);
    /// `processor` and `speculation` as in `generate` (speculation is off under a grammar).
    #[pyo3(signature = (job, speculation=None, max_draft=8, processor=None, collect=false))]
    fn generate_job(
        &self,
        job: &chat::ChatJob,
        speculation: Option<(String, usize, usize)>,
        max_draft: usize,
        processor: Option<PyObject>,
        collect: bool,
    ) -> PyResult<Stream> {
        let mut params = job.inner.job.params.clone();
        if params.sampler.grammar.is_none() {
            params.speculation = speculation_of(speculation, max_draft)?;
        }
        let prompt = job.prompt.clone();
        let failed: Arc<Mutex<Option<PyErr>>> = Arc::default();
        let first = self.processor(processor, &prompt, &failed);
        let prompt: Vec<Token> = prompt.into_iter().map(Token).collect();
        Stream::start(self.session.clone(), prompt, params, first, failed, collect)
    }
}

impl Core {
    /// A Python logits processor / stopping criteria callable as the first sampler.
    fn processor(
        &self,
        processor: Option<PyObject>,
        prompt: &[i32],
        failed: &Arc<Mutex<Option<PyErr>>>,
    ) -> Option<Box<dyn CustomSampler>> {
        processor.map(|f| {
            Box::new(PyProcessor {
                f,
                prompt: prompt.to_vec(),
                ids: prompt.to_vec(),
                eos: self.model.vocab().eos().map_or(-1, |t| t.0),
                n_vocab: self.model.n_vocab() as usize,
                failed: failed.clone(),
            }) as Box<dyn CustomSampler>
        })
    }
}

/// `speculation=(kind, a, b)` of `generate`: the drafter and its two numbers.
fn speculation_of(speculation: Option<(String, usize, usize)>, max_draft: usize) -> PyResult<Option<Speculation>> {
    let Some((kind, a, b)) = speculation else { return Ok(None) };
    Ok(Some(Speculation {
        drafter: match kind.as_str() {
            "ngram" => DraftKind::Ngram { n_min: a, n_max: b },
            "ngram-map" => DraftKind::NgramMap { n: a, min_count: u32::try_from(b).unwrap_or(u32::MAX) },
            "model" => DraftKind::Model,
            "mtp" => DraftKind::Mtp,
            k => return Err(PyValueError::new_err(format!("speculation kind {k:?}"))),
        },
        max_draft,
        ..Default::default()
    }))
}

/// llama-cpp-python's sampling arguments (a dict from the Python side).
#[derive(FromPyObject)]
#[pyo3(from_item_all)]
struct SampleOpts {
    temperature: f32,
    top_k: i32,
    top_p: f32,
    min_p: f32,
    typical_p: f32,
    repeat_penalty: f32,
    frequency_penalty: f32,
    presence_penalty: f32,
    penalty_last_n: i32,
    mirostat_mode: u8,
    mirostat_tau: f32,
    mirostat_eta: f32,
    seed: Option<u32>,
    logit_bias: Vec<(i32, f32)>,
    grammar: Option<String>,
}

impl SampleOpts {
    fn config(&self) -> SamplerConfig {
        SamplerConfig {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            typical_p: self.typical_p,
            repeat_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.penalty_last_n,
            mirostat: self.mirostat_mode,
            mirostat_tau: self.mirostat_tau,
            mirostat_eta: self.mirostat_eta,
            seed: self.seed.unwrap_or(llama_rs::sys::LLAMA_DEFAULT_SEED),
            logit_bias: self.logit_bias.iter().map(|&(t, b)| (Token(t), b)).collect(),
            grammar: self.grammar.clone().map(Grammar::new),
            ..SamplerConfig::default()
        }
    }
}

fn f32_bytes(row: &[f32]) -> Vec<u8> {
    row.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One token from a row of logits (llama-cpp-python's `sample`): the chain of `opts`,
/// after the last `penalty_last_n` tokens of `history` for the penalties.
#[pyfunction]
fn sample(py: Python<'_>, model: &Model, logits: &[u8], history: Vec<i32>, opts: SampleOpts) -> PyResult<i32> {
    let n_vocab = model.inner.n_vocab() as usize;
    if logits.len() != n_vocab * 4 {
        return Err(PyValueError::new_err(format!("logits: {} floats, the model has {n_vocab}", logits.len() / 4)));
    }
    if opts.grammar.is_some() {
        return Err(PyValueError::new_err(
            "sample(grammar=...): a grammar needs the tokens it has accepted; use generate() or create_completion()",
        ));
    }
    let row: Vec<f32> = logits.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    let m = model.inner.clone();
    py.allow_threads(move || {
        let mut s = opts.config().build(&m)?;
        let keep = usize::try_from(opts.penalty_last_n.max(0)).unwrap_or(0).min(history.len());
        for &t in &history[history.len() - keep..] {
            m.vocab().check(Token(t))?;
            s.accept(Token(t))?;
        }
        s.sample_logits(&row).map(|t| t.0)
    })
    .map_err(err)
}

/// llama-cpp-python's `logits_processor` and `stopping_criteria`, first in the sampler
/// chain: the Python callable gets the token ids so far and the whole row of scores.
/// A Python exception empties the candidates (the step fails with `Rejected`) and is
/// raised from the stream in place of that error.
struct PyProcessor {
    f: PyObject,
    prompt: Vec<i32>,
    ids: Vec<i32>,
    eos: i32,
    n_vocab: usize,
    failed: Arc<Mutex<Option<PyErr>>>,
}

impl CustomSampler for PyProcessor {
    fn apply(&mut self, c: &mut Candidates<'_>) {
        let mut row = vec![f32::NEG_INFINITY; self.n_vocab];
        for (t, l) in c.iter() {
            if let Some(x) = row.get_mut(t.0 as usize) {
                *x = l;
            }
        }
        let r: PyResult<(Option<Vec<u8>>, bool)> = Python::with_gil(|py| {
            let bytes = PyBytes::new(py, &f32_bytes(&row));
            self.f.call1(py, (self.ids.clone(), bytes))?.extract(py)
        });
        match r {
            Ok((scores, stop)) => {
                if let Some(b) = scores {
                    if b.len() != row.len() * 4 {
                        let e = PyValueError::new_err(format!(
                            "logits_processor returned {} scores, expected {}",
                            b.len() / 4,
                            row.len()
                        ));
                        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        c.truncate(0);
                        return;
                    }
                    for i in 0..c.len() {
                        let t = c.token(i).0 as usize * 4;
                        if let Some(x) = b.get(t..t + 4) {
                            c.set_logit(i, f32::from_le_bytes(x.try_into().unwrap()));
                        }
                    }
                }
                if stop {
                    // Stopping criteria met: only end-of-generation remains.
                    for i in 0..c.len() {
                        if c.token(i).0 != self.eos {
                            c.set_logit(i, f32::NEG_INFINITY);
                        }
                    }
                }
            }
            Err(e) => {
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                c.truncate(0);
            }
        }
    }
    fn accept(&mut self, token: Token) {
        self.ids.push(token.0);
    }
    fn reset(&mut self) {
        self.ids = self.prompt.clone();
    }
}

/// One generation's pieces: `(text, token ids, logprobs, finish_reason)` tuples, where
/// logprobs is a list of `(token, logprob, [(token, logprob), ...])`.
#[pyclass(module = "llama_rs._llama_rs")]
struct Stream {
    /// `None` once the stream ended (a Mutex only to make the class `Sync`).
    rx: Mutex<Option<Receiver<Msg>>>,
    cancel: Arc<Mutex<Option<CancelHandle>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    usage: Arc<Mutex<(usize, usize)>>,
    /// The exception a Python logits processor raised (it ends the generation).
    failed: Arc<Mutex<Option<PyErr>>>,
    /// Pieces received in one message (`collect` mode), handed out one per `__next__`.
    held: std::collections::VecDeque<Piece>,
}

enum Msg {
    Piece(Piece),
    /// Every piece of a generation at once (`collect` mode).
    Pieces(Vec<Piece>),
    Err(llama_rs::Error),
}

/// `(token, logprob, [(token, logprob), ...])`: a chosen token and the most likely ones.
type LogprobTuple = (i32, f32, Vec<(i32, f32)>);
type PieceTuple = (String, Vec<i32>, Vec<LogprobTuple>, Option<&'static str>);

fn piece_tuple(p: Piece) -> PieceTuple {
    let lp = logprob_tuples(&p.logprobs);
    (p.text, p.tokens.iter().map(|t| t.0).collect(), lp, p.finish_reason.map(finish_str))
}

fn logprob_tuples(lps: &[llama_rs::TokenLogprob]) -> Vec<LogprobTuple> {
    lps.iter().map(|l| (l.token.0, l.logprob, l.top.iter().map(|&(t, x)| (t.0, x)).collect())).collect()
}

impl Stream {
    fn start(
        session: Arc<Mutex<Session>>,
        prompt: Vec<Token>,
        params: GenerateParams,
        first: Option<Box<dyn CustomSampler>>,
        failed: Arc<Mutex<Option<PyErr>>>,
        collect: bool,
    ) -> PyResult<Stream> {
        let (tx, rx) = sync_channel::<Msg>(64);
        let cancel: Arc<Mutex<Option<CancelHandle>>> = Arc::default();
        let usage: Arc<Mutex<(usize, usize)>> = Arc::default();
        let (c2, u2) = (cancel.clone(), usage.clone());
        let thread = std::thread::Builder::new()
            .name("llama-rs-generate".into())
            .spawn(move || {
                let mut s = lock(&session);
                let mut g = match s.generate_with(prompt, &params, first) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Msg::Err(e));
                        return;
                    }
                };
                *c2.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.cancel_handle());
                // `collect`: one message at the end, so the waiting Python thread does
                // not wake (and take a core from the decode) once per token.
                let mut all = Vec::new();
                for p in g.by_ref() {
                    let m = match p {
                        Ok(p) if collect => {
                            all.push(p);
                            continue;
                        }
                        Ok(p) => Msg::Piece(p),
                        Err(e) => Msg::Err(e),
                    };
                    if !all.is_empty() && tx.send(Msg::Pieces(std::mem::take(&mut all))).is_err() {
                        break;
                    }
                    if tx.send(m).is_err() {
                        break; // the Python side went away
                    }
                }
                if !all.is_empty() {
                    let _ = tx.send(Msg::Pieces(all));
                }
                *u2.lock().unwrap_or_else(|p| p.into_inner()) = g.usage();
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Stream { rx: Mutex::new(Some(rx)), cancel, thread: Some(thread), usage, failed, held: Default::default() })
    }

    fn stop(&mut self, py: Python<'_>) {
        if let Some(c) = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.cancel();
        }
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None; // the thread's next send fails
        if let Some(t) = self.thread.take() {
            // Without the GIL: a logits processor on that thread may be waiting for it.
            let _ = py.allow_threads(|| t.join());
        }
    }

    /// The stream's error: the Python exception a logits processor raised, if that is
    /// what ended it.
    fn error(&self, e: llama_rs::Error) -> PyErr {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| err(e))
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PieceTuple>> {
        loop {
            if let Some(p) = self.held.pop_front() {
                return Ok(Some(piece_tuple(p)));
            }
            // Wait without the GIL, waking up to let Python deliver Ctrl-C.
            let rx = &self.rx;
            let r = py.allow_threads(|| {
                rx.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|rx| rx.recv_timeout(Duration::from_millis(50)))
            });
            let Some(r) = r else { return Ok(None) };
            match r {
                Ok(Msg::Piece(p)) => return Ok(Some(piece_tuple(p))),
                Ok(Msg::Pieces(v)) => self.held.extend(v),
                Ok(Msg::Err(e)) => {
                    self.stop(py);
                    return Err(self.error(e));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Ended on its own: join (without the GIL), nothing to cancel.
                    *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if let Some(t) = self.thread.take() {
                        let _ = py.allow_threads(|| t.join());
                    }
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        // KeyboardInterrupt: cancel within a token, keep the object usable.
                        self.stop(py);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// (prompt tokens, generated tokens) once the stream has ended.
    fn usage(&self) -> (usize, usize) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the generation (also on garbage collection).
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        Python::with_gil(|py| self.stop(py));
    }
}

/// The engine: many requests at once over one model (continuous batching, prefix
/// reuse, the same generation core as `Core`). Backs `AsyncLlama` and `n` > 1.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
struct Engine {
    inner: Mutex<Option<llama_rs::Engine>>,
    handle: llama_rs::EngineHandle,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (model, n_ctx=8192, slots=8, step_tokens=512, n_threads=None, flash_attn=None, type_k=None, type_v=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_ctx: u32,
        slots: u32,
        step_tokens: u32,
        n_threads: Option<u32>,
        flash_attn: Option<bool>,
        type_k: Option<i32>,
        type_v: Option<i32>,
    ) -> PyResult<Engine> {
        let p = llama_rs::EngineParams {
            n_ctx,
            slots,
            step_tokens,
            n_threads: n_threads.unwrap_or(0),
            flash_attn: match flash_attn {
                Some(true) => FlashAttn::On,
                Some(false) => FlashAttn::Off,
                None => FlashAttn::Auto,
            },
            type_k: ggml_kv_type(type_k)?,
            type_v: ggml_kv_type(type_v)?,
            ..Default::default()
        };
        let m = model.inner.clone();
        let e = py.allow_threads(move || llama_rs::Engine::new(&m, p)).map_err(err)?;
        Ok(Engine { handle: e.handle(), inner: Mutex::new(Some(e)) })
    }

    /// Submits one request `n` times (independent samples; the prompt is decoded once
    /// and shared); returns one `EngineStream` per sample.
    #[pyo3(signature = (prompt, opts, max_tokens=None, stop=Vec::new(), logprobs=None, n=1))]
    fn submit(
        &self,
        prompt: Vec<i32>,
        opts: SampleOpts,
        max_tokens: Option<usize>,
        stop: Vec<String>,
        logprobs: Option<usize>,
        n: usize,
    ) -> PyResult<Vec<EngineStream>> {
        let params = GenerateParams {
            max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            sampler: opts.config(),
            logprobs,
            ..Default::default()
        };
        let req = llama_rs::Request::tokens(prompt.into_iter().map(Token).collect(), params);
        let streams = self.handle.submit_n(req, n).map_err(err)?;
        Ok(streams
            .into_iter()
            .map(|s| EngineStream { canceller: s.canceller(), stream: Mutex::new(Some(s)), rx: Mutex::new(None) })
            .collect())
    }

    /// Submits `n` choices of a `ChatJob` (seeds seed, seed + 1, ...).
    #[pyo3(signature = (job, n=1))]
    fn submit_job(&self, job: &chat::ChatJob, n: usize) -> PyResult<Vec<EngineStream>> {
        let req =
            llama_rs::Request::tokens(job.prompt.iter().map(|&t| Token(t)).collect(), job.inner.job.params.clone());
        let streams = self.handle.submit_n(req, n).map_err(err)?;
        Ok(streams
            .into_iter()
            .map(|s| EngineStream { canceller: s.canceller(), stream: Mutex::new(Some(s)), rx: Mutex::new(None) })
            .collect())
    }

    /// Requests waiting, running; tokens generated so far.
    fn metrics(&self) -> (usize, usize, u64) {
        let m = self.handle.metrics();
        (m.queued, m.active, m.generated_tokens)
    }

    /// Stops the engine (running requests end with `cancelled`).
    fn shutdown(&self, py: Python<'_>) {
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = e {
            py.allow_threads(move || e.shutdown(false));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The engine thread is joined here: without the GIL, which it may wait for (a log
        // record, a stream's callback).
        if let Some(e) = self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            Python::with_gil(|py| py.allow_threads(move || e.shutdown(false)));
        }
    }
}

/// One engine request's events, read either by `next_event` (blocking, with a timeout
/// so Ctrl-C gets through) or pushed to a callback from a thread of its own (`pump`,
/// for asyncio). Events: `("piece", text, token_ids, logprobs, finish)`,
/// `("done", finish, prompt_tokens, completion_tokens, cached_tokens)`,
/// `("error", exception)`; `None` once ended; `("wait",)` when `next_event` timed out.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
struct EngineStream {
    stream: Mutex<Option<llama_rs::RequestStream>>,
    rx: Mutex<Option<Receiver<llama_rs::Result<llama_rs::Event>>>>,
    canceller: llama_rs::RequestCanceller,
}

fn event_tuple(py: Python<'_>, ev: llama_rs::Result<llama_rs::Event>) -> PyResult<PyObject> {
    use pyo3::IntoPyObjectExt;
    match ev {
        Ok(llama_rs::Event::Piece(p)) => {
            let lp = logprob_tuples(&p.logprobs);
            let toks: Vec<i32> = p.tokens.iter().map(|t| t.0).collect();
            ("piece", p.text, toks, lp, p.finish_reason.map(finish_str)).into_py_any(py)
        }
        Ok(llama_rs::Event::Done { finish_reason, usage, .. }) => {
            ("done", finish_str(finish_reason), usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
                .into_py_any(py)
        }
        Err(e) => ("error", err(e).into_value(py)).into_py_any(py),
    }
}

#[pymethods]
impl EngineStream {
    /// The next event, waiting at most `timeout_ms` (without the GIL).
    #[pyo3(signature = (timeout_ms=50))]
    fn next_event(&self, py: Python<'_>, timeout_ms: u64) -> PyResult<Option<PyObject>> {
        use pyo3::IntoPyObjectExt;
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if rx.is_none() {
            let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return Ok(None); // pumped to a callback, or ended
            };
            let (tx, r) = sync_channel(64);
            std::thread::Builder::new()
                .name("llama-rs-request".into())
                .spawn(move || {
                    for ev in stream {
                        if tx.send(ev).is_err() {
                            break; // dropping `stream` cancels the request
                        }
                    }
                })
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
            *rx = Some(r);
        }
        drop(rx);
        let rx = &self.rx;
        let got = py.allow_threads(|| {
            rx.lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|r| r.recv_timeout(Duration::from_millis(timeout_ms)))
        });
        match got {
            None => Ok(None),
            Some(Ok(ev)) => event_tuple(py, ev).map(Some),
            Some(Err(RecvTimeoutError::Timeout)) => ("wait",).into_py_any(py).map(Some),
            Some(Err(RecvTimeoutError::Disconnected)) => {
                *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(None)
            }
        }
    }

    /// Calls `callback(event)` from a thread of its own for every event, then
    /// `callback(None)` (for asyncio: `loop.call_soon_threadsafe`).
    fn pump(&self, callback: PyObject) -> PyResult<()> {
        let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(PyValueError::new_err("this stream is already being read"));
        };
        std::thread::Builder::new()
            .name("llama-rs-request".into())
            .spawn(move || {
                for ev in stream {
                    let ok = Python::with_gil(|py| {
                        event_tuple(py, ev).and_then(|t| callback.call1(py, (t,))).map_err(|e| e.print(py)).is_ok()
                    });
                    if !ok {
                        break;
                    }
                }
                Python::with_gil(|py| {
                    if let Err(e) = callback.call1(py, (py.None(),)) {
                        e.print(py);
                    }
                });
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(())
    }

    /// Stops the request; its stream ends with `cancelled`.
    fn cancel(&self) {
        self.canceller.cancel();
    }
}

/// Embeddings with the model's pooling (a context of its own).
#[pyclass(module = "llama_rs._llama_rs")]
struct Embedder {
    inner: Mutex<llama_rs::Embedder>,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model, normalize=false, n_threads=None))]
    fn new(py: Python<'_>, model: &Model, normalize: bool, n_threads: Option<u32>) -> PyResult<Embedder> {
        let mut p = llama_rs::EmbedParams {
            normalize: if normalize { llama_rs::Normalize::L2 } else { llama_rs::Normalize::None },
            ..Default::default()
        };
        if let Some(t) = n_threads {
            p.n_threads = t;
        }
        let m = model.inner.clone();
        let e = py.allow_threads(move || llama_rs::Embedder::new(&m, p)).map_err(err)?;
        Ok(Embedder { inner: Mutex::new(e) })
    }

    /// One vector per input (token lists).
    fn embed(&self, py: Python<'_>, inputs: Vec<Vec<i32>>) -> PyResult<Vec<Vec<f32>>> {
        let toks: Vec<Vec<Token>> = inputs.into_iter().map(|v| v.into_iter().map(Token).collect()).collect();
        py.allow_threads(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).embed_tokens(&toks)).map_err(err)
    }

    /// Relevance scores of `documents` for `query` (a model with a ranking head; others
    /// raise `UnsupportedError`).
    fn rerank(&self, py: Python<'_>, query: &str, documents: Vec<String>) -> PyResult<Vec<f32>> {
        let docs: Vec<&str> = documents.iter().map(String::as_str).collect();
        py.allow_threads(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).rerank(query, &docs)).map_err(err)
    }
}

/// GBNF of a JSON schema (an unsupported keyword is a ValueError naming it).
#[pyfunction]
fn json_schema_to_gbnf(schema_json: &str) -> PyResult<String> {
    let v: serde_json::Value = serde_json::from_str(schema_json).map_err(|e| PyValueError::new_err(e.to_string()))?;
    llama_rs::json_schema::to_gbnf(&v).map_err(err)
}

/// Checks a GBNF grammar (ValueError with the reason when it does not parse).
#[pyfunction]
fn check_grammar(model: &Model, gbnf: &str) -> PyResult<()> {
    llama_rs::SamplerBuilder::new(&model.inner).grammar(Grammar::new(gbnf)).build().map(drop).map_err(err)
}

/// Tool calls in a model's output: `(content, [(name, arguments_json, id)])`.
#[pyfunction]
fn parse_tool_calls(text: &str) -> (String, Vec<(String, String, Option<String>)>) {
    let (content, calls) = llama_rs::parse_tool_calls(text);
    (content, calls.into_iter().map(|c| (c.function.name, c.function.arguments.to_string(), c.id)).collect())
}

/// Whether this build can offload layers to a GPU.
/// llama.cpp's system-info line, after the CPU backend in use (a wheel's CPU variant).
#[pyfunction]
fn system_info() -> String {
    llama_rs::backend::system_info()
}

#[pyfunction]
fn supports_gpu_offload() -> bool {
    llama_rs::Device::all().iter().any(|d| !matches!(d.kind, llama_rs::DeviceType::Cpu))
}

/// Runs llama-rs-server in this process until Ctrl-C (`python -m llama_rs.server`).
/// `argv` uses the server's own flags (llama-server's names); the address is printed
/// once the model is loaded.
#[pyfunction]
fn serve(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    let args = llama_rs_server::args::parse_from(std::iter::once("llama-rs-server".to_string()).chain(argv))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    let server = llama_rs_server::Server::spawn(args).map_err(|e| PyOSError::new_err(e.to_string()))?;
    py.allow_threads(|| server.wait_ready(Duration::from_secs(3600))).map_err(PyRuntimeError::new_err)?;
    println!("llama_rs.server: listening on http://{}", server.addr());
    loop {
        py.allow_threads(|| std::thread::sleep(Duration::from_millis(100)));
        if let Err(e) = py.check_signals() {
            server.stop();
            return if e.is_instance_of::<PyKeyboardInterrupt>(py) { Ok(()) } else { Err(e) };
        }
    }
}

/// llama.cpp's (and llama-rs's) log records into Python's `logging`: a `log::Log` that
/// calls `llama_rs._log(level, target, message)`. Off until `set_log_level` turns it on
/// (`Llama(verbose=True)`), so a quiet process never calls into Python from a log line.
/// A record from another thread waits for the GIL: every native call that waits on
/// other threads releases it first (streams, engine shutdown, drops).
struct PyLogger;

static LOGGER: PyLogger = PyLogger;

impl log::Log for PyLogger {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if !self.enabled(r.metadata()) {
            return;
        }
        let level = match r.level() {
            log::Level::Error => 40,
            log::Level::Warn => 30,
            log::Level::Info => 20,
            _ => 10,
        };
        Python::with_gil(|py| {
            let sent = py
                .import("llama_rs")
                .and_then(|m| m.getattr("_log"))
                .and_then(|f| f.call1((level, r.target(), r.args().to_string())));
            if let Err(e) = sent {
                e.print(py);
            }
        });
    }
    fn flush(&self) {}
}

/// Forwards records at `level` (Python's numbers: 10 debug … 40 error) and above to
/// `logging`; 0 or above 40 turns forwarding off.
#[pyfunction]
fn set_log_level(level: u32) {
    log::set_max_level(match level {
        1..=10 => log::LevelFilter::Debug,
        11..=20 => log::LevelFilter::Info,
        21..=30 => log::LevelFilter::Warn,
        31..=40 => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    });
}

/// Names of llama.cpp's built-in chat templates.
#[pyfunction]
fn builtin_templates() -> Vec<String> {
    ChatTemplate::builtin_names()
}

#[pymodule]
fn _llama_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Core>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Embedder>()?;
    m.add_class::<Engine>()?;
    m.add_class::<EngineStream>()?;
    m.add_class::<chat::ChatJob>()?;
    m.add_class::<chat::ChatAnswer>()?;
    m.add_function(wrap_pyfunction!(json_schema_to_gbnf, m)?)?;
    m.add_function(wrap_pyfunction!(check_grammar, m)?)?;
    m.add_function(wrap_pyfunction!(parse_tool_calls, m)?)?;
    m.add_function(wrap_pyfunction!(supports_gpu_offload, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    // Another logger may already be installed (an embedding Rust program): keep it.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Off);
    }
    m.add("LLAMA_CPP_COMMIT", llama_rs::sys::LLAMA_CPP_COMMIT)?;
    Ok(())
}
