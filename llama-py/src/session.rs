//! `Core`: one context with one sequence and its cache of tokens (prefix reuse, state),
//! generations started on it, and llama-cpp-python's low-level sampling and logits
//! processors.

use super::*;

pub(crate) fn ggml_kv_type(t: Option<i32>) -> PyResult<KvType> {
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

/// A context with one sequence and its cache of tokens: generation with prefix reuse,
/// state save/load. Shared with the generation thread of a stream.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct Core {
    session: Arc<Mutex<Session>>,
    model: RsModel,
    n_ctx: u32,
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
        lock_session(&self.session).tokens().iter().map(|t| t.0).collect()
    }

    fn reset(&self) {
        lock_session(&self.session).reset();
    }

    /// The whole state (cache, tokens) as bytes.
    fn save_state<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.session.clone();
        let bytes = py.allow_threads(move || lock_session(&s).save_state()).map_err(err)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Saves the cache into a `DiskCache` (unless an entry holds it already).
    fn save_to(&self, py: Python<'_>, cache: &crate::cache::DiskCache) -> PyResult<bool> {
        let (s, c) = (self.session.clone(), cache.inner.clone());
        py.allow_threads(move || lock_session(&s).save_to(&c)).map_err(err)
    }

    /// Restores the stored prefix of `tokens` from a `DiskCache` when it beats what the
    /// cache holds; returns the tokens restored (0: none).
    fn restore_from(&self, py: Python<'_>, cache: &crate::cache::DiskCache, tokens: Vec<i32>) -> PyResult<usize> {
        let (s, c) = (self.session.clone(), cache.inner.clone());
        let toks: Vec<Token> = tokens.into_iter().map(Token).collect();
        py.allow_threads(move || lock_session(&s).restore_from(&c, &toks)).map_err(err)
    }

    /// Keep only prefixes a cold run computes alike (`Session::set_exact_reuse`).
    fn set_exact_reuse(&self, on: bool) {
        lock_session(&self.session).set_exact_reuse(on);
    }

    /// Restores a state from `save_state`.
    fn load_state(&self, py: Python<'_>, state: Vec<u8>) -> PyResult<()> {
        let s = self.session.clone();
        py.allow_threads(move || lock_session(&s).load_state(&state)).map_err(err)
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
        lock_session(&self.session).set_draft_model(d);
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
        lock_session(&self.session).set_mtp(head).map_err(err)
    }

    /// Decodes `tokens` after the cached ones (llama-cpp-python's `eval`); returns the
    /// logits after the last one as little-endian f32 bytes.
    fn eval<'py>(&self, py: Python<'py>, tokens: Vec<i32>) -> PyResult<Bound<'py, PyBytes>> {
        let s = self.session.clone();
        let t: Vec<Token> = tokens.into_iter().map(Token).collect();
        let row = py.allow_threads(move || lock_session(&s).eval(&t)).map_err(err)?;
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
        let prompt = llama_rs::Prompt::Tokens(prompt.into_iter().map(Token).collect());
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
        let failed: Arc<Mutex<Option<PyErr>>> = Arc::default();
        let first = self.processor(processor, &job.prompt, &failed);
        // A prompt with media goes as it is (the session's projector reads it).
        let prompt = job.prompt();
        Stream::start(self.session.clone(), prompt, params, first, failed, collect)
    }

    /// Loads a multimodal projector (`mmproj`) for this core's model: chat messages may
    /// then carry images (and audio, where the projector reads it).
    #[pyo3(signature = (path, n_threads=None, use_gpu=true))]
    fn set_projector(
        &self,
        py: Python<'_>,
        path: std::path::PathBuf,
        n_threads: Option<i32>,
        use_gpu: bool,
    ) -> PyResult<()> {
        let mut pp = llama_rs::ProjectorParams::default().use_gpu(use_gpu);
        if let Some(n) = n_threads {
            pp = pp.n_threads(n);
        }
        let m = self.model.clone();
        let proj = py.allow_threads(|| llama_rs::Projector::load(&path, &m, pp)).map_err(err)?;
        lock_session(&self.session).set_projector(Some(proj)).map_err(err)
    }

    /// A `ChatJob` for this core: the request's media are read with its projector.
    #[pyo3(signature = (model, request_json, n_ctx, template=None))]
    fn chat_job(
        &self,
        model: &Model,
        request_json: &str,
        n_ctx: usize,
        template: Option<&str>,
    ) -> PyResult<chat::ChatJob> {
        chat::ChatJob::build(model, request_json, n_ctx, template, Some(&*self.session))
    }

    /// `(vision, audio)`: what the projector reads; `(False, False)` without one.
    fn media_support(&self) -> (bool, bool) {
        lock_session(&self.session).projector().map_or((false, false), |p| (p.supports_vision(), p.supports_audio()))
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
pub(crate) fn speculation_of(
    speculation: Option<(String, usize, usize)>,
    max_draft: usize,
) -> PyResult<Option<Speculation>> {
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
pub(crate) struct SampleOpts {
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
    pub(crate) fn config(&self) -> SamplerConfig {
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
            seed: self.seed.unwrap_or(llama_rs::DEFAULT_SEED),
            logit_bias: self.logit_bias.iter().map(|&(t, b)| (Token(t), b)).collect(),
            grammar: self.grammar.clone().map(Grammar::new),
            ..SamplerConfig::default()
        }
    }
}

pub(crate) fn f32_bytes(row: &[f32]) -> Vec<u8> {
    row.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// One token from a row of logits (llama-cpp-python's `sample`): the chain of `opts`,
/// after the last `penalty_last_n` tokens of `history` for the penalties.
#[pyfunction]
pub(crate) fn sample(
    py: Python<'_>,
    model: &Model,
    logits: &[u8],
    history: Vec<i32>,
    opts: SampleOpts,
) -> PyResult<i32> {
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
pub(crate) struct PyProcessor {
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
