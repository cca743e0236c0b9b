//! Chat through the protocol layer: `ChatJob` is an OpenAI chat request made ready
//! (`llama_protocol::job::chat_job`, the server's code), `ChatAnswer` turns the pieces
//! of its choices into llama-cpp-python's (OpenAI's) response dicts and chunks
//! (`llama_protocol::answer`). Python passes the request as JSON and gets finished dicts.

use llama_protocol::answer::{self, ChatChoiceStream, Meta};
use llama_protocol::openai::ChatRequest;
use llama_protocol::{Defaults, Target};
use llama_rs::{FinishReason, Model as RsModel, Token, TokenLogprob};
use pyo3::prelude::*;

use crate::errors::{err, protocol_err, raise};
use crate::model::Model;
use crate::stream::LogprobTuple;

fn logprobs(v: Vec<LogprobTuple>) -> Vec<TokenLogprob> {
    v.into_iter()
        .map(|(t, lp, top)| TokenLogprob {
            token: Token(t),
            logprob: lp,
            top: top.into_iter().map(|(u, q)| (Token(u), q)).collect(),
        })
        .collect()
}

fn finish(s: Option<&str>) -> FinishReason {
    match s {
        Some("length") => FinishReason::Length,
        Some("cancelled") => FinishReason::Cancelled,
        _ => FinishReason::Stop,
    }
}

/// A typed body as the Python object its JSON reads as (dicts, lists, str, ...).
fn to_py(py: Python<'_>, v: &impl serde::Serialize) -> PyResult<PyObject> {
    let s = serde_json::to_string(v).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    Ok(py.import("json")?.call_method1("loads", (s,))?.unbind())
}

/// An OpenAI chat request made ready for a `Core` or the `Engine`.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct ChatJob {
    pub(crate) inner: llama_protocol::ChatJob,
    pub(crate) prompt: Vec<i32>,
    model: RsModel,
}

#[pymethods]
impl ChatJob {
    /// `request_json`: the request's body as OpenAI's `/v1/chat/completions` takes it;
    /// `n_ctx`: tokens the context holds (a prompt that does not fit is a
    /// `ContextFullError`); `template`: a built-in name or Jinja source (else the GGUF's).
    #[new]
    #[pyo3(signature = (model, request_json, n_ctx, template=None))]
    fn new(model: &Model, request_json: &str, n_ctx: usize, template: Option<&str>) -> PyResult<ChatJob> {
        ChatJob::build(model, request_json, n_ctx, template, None)
    }

    /// The prompt's tokens (the rendered template).
    #[getter]
    fn prompt_tokens(&self) -> Vec<i32> {
        self.prompt.clone()
    }

    /// Whether the answer is read for tool calls.
    #[getter]
    fn tools_on(&self) -> bool {
        self.inner.tools_on
    }

    /// Whether the job is constrained by a grammar (speculation is then off).
    #[getter]
    fn has_grammar(&self) -> bool {
        self.inner.job.params.sampler.grammar.is_some()
    }

    /// The rendered prompt.
    #[getter]
    fn prompt_text(&self) -> String {
        match &self.inner.job.prompt {
            llama_rs::Prompt::Text(t) | llama_rs::Prompt::Media { text: t, .. } => t.clone(),
            llama_rs::Prompt::Tokens(_) => String::new(),
        }
    }
}

/// What reads a chat request's media: a `Core`'s session (its projector) or an engine.
pub(crate) trait MediaSource: Sync {
    /// The projector's marker, if there is a projector.
    fn marker(&self) -> Option<String>;
    /// Decodes encoded media bytes with the projector.
    fn decode(&self, bytes: &[u8]) -> llama_rs::Result<llama_rs::Media>;
    /// The prompt's token list (media as placeholder positions), for counting.
    fn tokens(&self, text: &str, media: &[std::sync::Arc<llama_rs::Media>]) -> llama_rs::Result<Vec<Token>>;
}

/// A `Core`'s session: media are read under its lock (the core is not generating while
/// Python builds a job for it).
impl MediaSource for std::sync::Mutex<llama_rs::Session> {
    fn marker(&self) -> Option<String> {
        crate::stream::lock_session(self).projector().map(|p| p.marker().to_string())
    }
    fn decode(&self, bytes: &[u8]) -> llama_rs::Result<llama_rs::Media> {
        let s = crate::stream::lock_session(self);
        s.projector().ok_or_else(|| llama_rs::Error::Unsupported("no projector".into()))?.media(bytes)
    }
    fn tokens(&self, text: &str, media: &[std::sync::Arc<llama_rs::Media>]) -> llama_rs::Result<Vec<Token>> {
        let s = crate::stream::lock_session(self);
        let proj = s.projector().ok_or_else(|| llama_rs::Error::Unsupported("no projector".into()))?;
        let refs: Vec<&llama_rs::Media> = media.iter().map(|m| &**m).collect();
        Ok(proj.prompt_tokens(&proj.tokenize(text, &refs, false)?))
    }
}

impl MediaSource for llama_rs::EngineHandle {
    fn marker(&self) -> Option<String> {
        self.media_marker()
    }
    fn decode(&self, bytes: &[u8]) -> llama_rs::Result<llama_rs::Media> {
        self.media(bytes)
    }
    fn tokens(&self, text: &str, media: &[std::sync::Arc<llama_rs::Media>]) -> llama_rs::Result<Vec<Token>> {
        self.media_prompt_tokens(text, media)
    }
}

impl ChatJob {
    /// A job; with `media` (a core or an engine with a projector) the request's media
    /// (`image_url` data URLs, `input_audio`) are read with it.
    pub(crate) fn build(
        model: &Model,
        request_json: &str,
        n_ctx: usize,
        template: Option<&str>,
        media: Option<&dyn MediaSource>,
    ) -> PyResult<ChatJob> {
        let de = &mut serde_json::Deserializer::from_str(request_json);
        let req: ChatRequest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            raise(llama_rs::ErrorKind::InvalidArgument, format!("{path}: {}", e.inner()), Some(path))
        })?;
        let model = model.inner.clone();
        let tmpl = crate::model::template(&model, template);
        let why = tmpl.as_ref().err().map(|e| e.to_string()).unwrap_or_default();
        let marker = media.and_then(|m| m.marker());
        let decode = |b: &[u8]| media.expect("a marker implies a source").decode(b);
        let target = Target {
            model: &model,
            template: tmpl.as_ref().map_err(|_| why.as_str()),
            n_ctx,
            speculation: None,
            defaults: Defaults::default(),
            media: marker.as_deref().map(|marker| llama_protocol::media::MediaReader { marker, decode: &decode }),
        };
        let inner = llama_protocol::job::chat_job(&target, req).map_err(protocol_err)?;
        let prompt: Vec<i32> = match &inner.job.prompt {
            llama_rs::Prompt::Text(text) => {
                model.vocab().tokenize(text, false, true).map_err(err)?.iter().map(|t| t.0).collect()
            }
            llama_rs::Prompt::Media { text, media: m } => {
                let src = media.expect("media imply a source");
                src.tokens(text, m).map_err(err)?.iter().map(|t| t.0).collect()
            }
            llama_rs::Prompt::Tokens(_) => unreachable!("chat prompts are rendered text"),
        };
        if prompt.len() >= n_ctx {
            return Err(raise(
                llama_rs::ErrorKind::ContextFull,
                format!("Requested tokens ({}) exceed context window of {n_ctx}", prompt.len()),
                Some("messages".into()),
            ));
        }
        Ok(ChatJob { inner, prompt, model })
    }

    /// The request to run: the prompt with its media, or the counted tokens.
    pub(crate) fn prompt(&self) -> llama_rs::Prompt {
        match &self.inner.job.prompt {
            p @ llama_rs::Prompt::Media { .. } => p.clone(),
            _ => llama_rs::Prompt::Tokens(self.prompt.iter().map(|&t| Token(t)).collect()),
        }
    }
}

/// The answer of a `ChatJob`: its choices' pieces in, OpenAI dicts out.
#[pyclass(module = "llama_rs._llama_rs")]
pub(crate) struct ChatAnswer {
    job: llama_protocol::ChatJob,
    model: RsModel,
    meta: Meta,
    streams: Vec<ChatChoiceStream>,
}

#[pymethods]
impl ChatAnswer {
    #[new]
    #[pyo3(signature = (job, id, created, model, n=1))]
    fn new(job: &ChatJob, id: String, created: u64, model: String, n: usize) -> ChatAnswer {
        let streams = (0..n).map(|i| ChatChoiceStream::new(&job.inner, i)).collect();
        ChatAnswer { job: job.inner.clone(), model: job.model.clone(), meta: Meta { id, created, model }, streams }
    }

    /// The first chunk of choice `index` (its role).
    fn start(&self, py: Python<'_>, index: usize) -> PyResult<PyObject> {
        to_py(py, &self.meta.chat_chunk(vec![self.choice(index)?.start()]))
    }

    /// The chunks of a piece of choice `index`.
    fn piece(&mut self, py: Python<'_>, index: usize, text: &str, lps: Vec<LogprobTuple>) -> PyResult<Vec<PyObject>> {
        self.choice(index)?;
        let deltas = self.streams[index].piece(text, &logprobs(lps), &self.model);
        deltas.into_iter().map(|d| to_py(py, &self.meta.chat_chunk(vec![d]))).collect()
    }

    /// The last chunks of choice `index` (the finish reason last).
    fn done(&mut self, py: Python<'_>, index: usize, finish_reason: Option<&str>) -> PyResult<Vec<PyObject>> {
        self.choice(index)?;
        let deltas = self.streams[index].done(finish(finish_reason));
        deltas.into_iter().map(|d| to_py(py, &self.meta.chat_chunk(vec![d]))).collect()
    }

    /// The whole `chat.completion`: per choice its text, log-probabilities and finish
    /// reason; the tokens of the prompt and of all choices.
    fn completion(
        &self,
        py: Python<'_>,
        choices: Vec<(String, Vec<LogprobTuple>, Option<String>)>,
        prompt_tokens: usize,
        completion_tokens: usize,
    ) -> PyResult<PyObject> {
        let out = choices
            .into_iter()
            .enumerate()
            .map(|(i, (text, lps, f))| {
                answer::chat_choice(&self.job, i, &text, &logprobs(lps), finish(f.as_deref()), &self.model)
            })
            .collect();
        let usage = llama_rs::Usage { prompt_tokens, completion_tokens, ..Default::default() };
        to_py(py, &self.meta.chat_completion(out, &usage, None))
    }
}

impl ChatAnswer {
    fn choice(&self, index: usize) -> PyResult<&ChatChoiceStream> {
        self.streams.get(index).ok_or_else(|| pyo3::exceptions::PyIndexError::new_err(format!("no choice {index}")))
    }
}
