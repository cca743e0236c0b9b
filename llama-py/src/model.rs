//! `Model`: a loaded GGUF (tokenizer, metadata, chat templates).

use super::*;

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
        let tmpl = self::template(&self.inner, template).map_err(err)?;
        let opts = RenderOptions { add_generation_prompt, tools, ..Default::default() };
        tmpl.render(&messages, &opts).map_err(err)
    }
}

/// The chat template: the GGUF's, a built-in one by name, or a Jinja source.
pub(crate) fn template(model: &RsModel, name: Option<&str>) -> llama_rs::Result<ChatTemplate> {
    match name {
        None => ChatTemplate::from_model(model),
        Some(t) if ChatTemplate::builtin_names().iter().any(|n| n == t) => ChatTemplate::builtin(t),
        Some(src) => {
            let v = model.vocab();
            let piece = |t: Option<Token>| t.and_then(|t| v.token_to_piece(t, true).ok()).unwrap_or_default();
            ChatTemplate::jinja(src, piece(v.bos()), piece(v.eos()))
        }
    }
}
