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
    CancelHandle, ChatMessage, ChatTemplate, ContextParams, DraftKind, DraftModel, FinishReason, FlashAttn,
    GenerateParams, GpuLayers, Grammar, KvType, LoadMode, Model as RsModel, ModelParams, Piece, RenderOptions,
    SamplerConfig, Session, Speculation, SplitMode, Token,
};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

/// A llama-rs error as the Python exception a llama-cpp-python user expects.
fn err(e: llama_rs::Error) -> PyErr {
    use llama_rs::ErrorKind as K;
    let msg = e.to_string();
    match e.kind() {
        K::NotFound | K::Io => PyValueError::new_err(msg),
        K::InvalidArgument | K::OutOfRange | K::ContextFull | K::Rejected | K::Unsupported | K::Corrupt => {
            PyValueError::new_err(msg)
        }
        K::LimitExceeded => PyMemoryError::new_err(msg),
        K::Cancelled => PyKeyboardInterrupt::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

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
struct Model {
    inner: RsModel,
}

#[pymethods]
impl Model {
    #[new]
    #[pyo3(signature = (path, n_gpu_layers=0, split_mode=1, main_gpu=0, tensor_split=None, vocab_only=false, use_mmap=true, use_mlock=false, kv_overrides=None))]
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
        let mut p = ModelParams::default().gpu_layers(gpu).split_mode(split).main_gpu(main_gpu);
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
        let tmpl = match template {
            None => ChatTemplate::from_model(&self.inner),
            Some(t) if ChatTemplate::builtin_names().iter().any(|n| n == t) => ChatTemplate::builtin(t),
            Some(src) => {
                let v = self.inner.vocab();
                let piece = |t: Option<Token>| t.and_then(|t| v.token_to_piece(t, true).ok()).unwrap_or_default();
                ChatTemplate::jinja(src, piece(v.bos()), piece(v.eos()))
            }
        }
        .map_err(err)?;
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

    /// Starts a generation after `prompt` (token ids); returns a `Stream` of pieces. The
    /// sampling arguments are llama-cpp-python's.
    #[pyo3(signature = (prompt, max_tokens=None, stop=Vec::new(), temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, typical_p=1.0, repeat_penalty=1.0, frequency_penalty=0.0, presence_penalty=0.0, penalty_last_n=64, mirostat_mode=0, mirostat_tau=5.0, mirostat_eta=0.1, seed=None, logit_bias=Vec::new(), grammar=None, logprobs=None, ignore_eos=false, speculation=None, max_draft=8))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        prompt: Vec<i32>,
        max_tokens: Option<usize>,
        stop: Vec<String>,
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
        logprobs: Option<usize>,
        ignore_eos: bool,
        speculation: Option<(String, usize, usize)>,
        max_draft: usize,
    ) -> PyResult<Stream> {
        let sampler = SamplerConfig {
            temperature,
            top_k,
            top_p,
            min_p,
            typical_p,
            repeat_penalty,
            frequency_penalty,
            presence_penalty,
            penalty_last_n,
            mirostat: mirostat_mode,
            mirostat_tau,
            mirostat_eta,
            seed: seed.unwrap_or(llama_rs::sys::LLAMA_DEFAULT_SEED),
            logit_bias: logit_bias.into_iter().map(|(t, b)| (Token(t), b)).collect(),
            grammar: grammar.map(Grammar::new),
            ..SamplerConfig::default()
        };
        let speculation = match speculation {
            None => None,
            Some((kind, a, b)) => Some(Speculation {
                drafter: match kind.as_str() {
                    "ngram" => DraftKind::Ngram { n_min: a.max(1), n_max: b.max(a.max(1)) },
                    "ngram-map" => DraftKind::NgramMap { n: a.max(1), min_count: b.max(1) as u32 },
                    "model" => DraftKind::Model,
                    k => return Err(PyValueError::new_err(format!("speculation kind {k:?}"))),
                },
                max_draft,
                ..Default::default()
            }),
        };
        let params = GenerateParams {
            max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            sampler,
            logprobs,
            ignore_eos,
            speculation,
            ..Default::default()
        };
        let prompt: Vec<Token> = prompt.into_iter().map(Token).collect();
        Stream::start(self.session.clone(), prompt, params)
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
}

enum Msg {
    Piece(Piece),
    Err(llama_rs::Error),
}

type PieceTuple = (String, Vec<i32>, Vec<(i32, f32, Vec<(i32, f32)>)>, Option<&'static str>);

impl Stream {
    fn start(session: Arc<Mutex<Session>>, prompt: Vec<Token>, params: GenerateParams) -> PyResult<Stream> {
        let (tx, rx) = sync_channel::<Msg>(64);
        let cancel: Arc<Mutex<Option<CancelHandle>>> = Arc::default();
        let usage: Arc<Mutex<(usize, usize)>> = Arc::default();
        let (c2, u2) = (cancel.clone(), usage.clone());
        let thread = std::thread::Builder::new()
            .name("llama-rs-generate".into())
            .spawn(move || {
                let mut s = lock(&session);
                let mut g = match s.generate(prompt, &params) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Msg::Err(e));
                        return;
                    }
                };
                *c2.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.cancel_handle());
                for p in g.by_ref() {
                    let m = match p {
                        Ok(p) => Msg::Piece(p),
                        Err(e) => Msg::Err(e),
                    };
                    if tx.send(m).is_err() {
                        break; // the Python side went away
                    }
                }
                *u2.lock().unwrap_or_else(|p| p.into_inner()) = g.usage();
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Stream { rx: Mutex::new(Some(rx)), cancel, thread: Some(thread), usage })
    }

    fn stop(&mut self) {
        if let Some(c) = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.cancel();
        }
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None; // the thread's next send fails
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
                Ok(Msg::Piece(p)) => {
                    let lp = p
                        .logprobs
                        .iter()
                        .map(|l| (l.token.0, l.logprob, l.top.iter().map(|&(t, x)| (t.0, x)).collect()))
                        .collect();
                    return Ok(Some((
                        p.text,
                        p.tokens.iter().map(|t| t.0).collect(),
                        lp,
                        p.finish_reason.map(finish_str),
                    )));
                }
                Ok(Msg::Err(e)) => {
                    self.stop();
                    return Err(err(e));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if let Some(t) = self.thread.take() {
                        let _ = t.join();
                    }
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        // KeyboardInterrupt: cancel within a token, keep the object usable.
                        self.stop();
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
    fn close(&mut self) {
        self.stop();
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.stop();
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
    m.add_function(wrap_pyfunction!(json_schema_to_gbnf, m)?)?;
    m.add_function(wrap_pyfunction!(check_grammar, m)?)?;
    m.add_function(wrap_pyfunction!(parse_tool_calls, m)?)?;
    m.add_function(wrap_pyfunction!(supports_gpu_offload, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add("LLAMA_CPP_COMMIT", llama_rs::sys::LLAMA_CPP_COMMIT)?;
    Ok(())
}
