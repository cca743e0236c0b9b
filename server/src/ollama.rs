//! Ollama's API on the same server, for tools that only speak it or detect a server
//! through it (open-webui, continue.dev list models with `/api/tags`): `GET /`,
//! `/api/version`, `/api/tags`, `/api/show`, `/api/ps`, `/api/chat`, `/api/generate`
//! (NDJSON streaming, `options`, `format`), `/api/embed`, `/api/embeddings`.
//! Each chat or generate request becomes the OpenAI chat job of the same request (the
//! protocol layer's `chat_job`): templates, thinking budgets, tool calls and grammars are
//! the same; only the wire shapes differ.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use llama_protocol::answer::{self, ChatChoiceStream};
use llama_protocol::job;
use llama_protocol::ollama::{Answer as OllamaAnswer, Stats, ToolCall as OllamaCall};
use llama_protocol::openai::{self, OneOrMany, Sampling, WireMessage};
use llama_protocol::ChatJob;
use llama_rs::{Event, Prompt, Token};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::serve::{self, parse};
use crate::state::{AppState, Loaded};

/// The Ollama version we answer with (clients gate features on it).
const VERSION: &str = "0.9.0";

/// `GET /`.
pub async fn root() -> &'static str {
    "Ollama is running"
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({ "version": VERSION }))
}

fn rfc3339(unix: u64) -> String {
    // Civil date from Unix seconds (UTC), without a date crate.
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

fn details(l: &Loaded) -> Value {
    let arch = l.model.meta("general.architecture").unwrap_or_default();
    let desc = l.model.description();
    let quant = desc.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
    json!({
        "format": "gguf", "family": arch, "families": [arch],
        "parameter_size": desc.split_whitespace().nth(1).unwrap_or(""),
        "quantization_level": quant,
    })
}

fn model_entry(l: &Loaded) -> Value {
    json!({
        "name": format!("{}:latest", l.id), "model": format!("{}:latest", l.id),
        "modified_at": rfc3339(l.created), "size": l.model.size(),
        "digest": format!("{:064x}", l.model.size()), "details": details(l),
    })
}

/// `GET /api/tags`.
pub async fn tags(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    st.loaded()?; // 503 while the default model loads
    let models: Vec<Value> = st
        .models
        .iter()
        .map(|m| match m.get() {
            Some(l) => model_entry(&l),
            None => {
                let size = std::fs::metadata(&m.path).map_or(0, |f| f.len());
                json!({"name": format!("{}:latest", m.id), "model": format!("{}:latest", m.id),
                       "modified_at": rfc3339(0), "size": size, "digest": format!("{size:064x}"), "details": {}})
            }
        })
        .collect();
    Ok(Json(json!({ "models": models })))
}

/// `GET /api/ps`.
pub async fn ps(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    st.loaded()?;
    let models: Vec<Value> = st
        .loaded_models()
        .iter()
        .map(|l| {
            let mut e = model_entry(l);
            e["expires_at"] = json!("9999-12-31T23:59:59Z");
            e["size_vram"] = json!(0);
            e
        })
        .collect();
    Ok(Json(json!({ "models": models })))
}

#[derive(Deserialize)]
struct ShowRequest {
    #[serde(alias = "name")]
    model: String,
}

/// `POST /api/show`.
pub async fn show(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Json<Value>> {
    let r: ShowRequest = parse(&body)?;
    let served = st.model(Some(&r.model)).await?;
    let l: &Loaded = &served;
    let arch = l.model.meta("general.architecture").unwrap_or_default();
    let mut info = serde_json::Map::new();
    info.insert("general.architecture".into(), json!(arch));
    info.insert("general.parameter_count".into(), json!(l.model.n_params()));
    info.insert(format!("{arch}.context_length"), json!(l.model.n_ctx_train()));
    info.insert(format!("{arch}.embedding_length"), json!(l.model.n_embd()));
    let mut caps = vec!["completion"];
    if l.template.is_some() {
        caps.push("tools");
    }
    if l.engine.media_support().0 {
        caps.push("vision");
    }
    Ok(Json(json!({
        "modelfile": "", "parameters": "", "template": l.model.chat_template(None).unwrap_or_default(),
        "details": details(l), "model_info": info, "capabilities": caps,
        "modified_at": rfc3339(l.created),
    })))
}

/// Ollama's `options` (the subset that maps onto our sampler), plus `format`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Options {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i32>,
    min_p: Option<f32>,
    typical_p: Option<f32>,
    repeat_penalty: Option<f32>,
    repeat_last_n: Option<i32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    seed: Option<i64>,
    num_predict: Option<i64>,
    stop: Option<OneOrMany>,
    mirostat: Option<u8>,
    mirostat_tau: Option<f32>,
    mirostat_eta: Option<f32>,
    /// Accepted: the engine's pool is fixed at start (`-c`); a request may use all of it.
    num_ctx: Option<u32>,
}

fn sampling(model: &str, o: Options, format: &Option<Value>, stream: bool) -> ApiResult<Sampling> {
    let (json_schema, response_format) = match format {
        None | Some(Value::Null) => (None, None),
        Some(Value::String(s)) if s == "json" => (None, Some(json!({"type": "json_object"}))),
        Some(Value::String(s)) if s.is_empty() => (None, None),
        Some(Value::Object(_)) => (format.clone(), None),
        Some(f) => return Err(ApiError::bad("format", format!("format must be \"json\" or a JSON schema, got {f}"))),
    };
    let _ = o.num_ctx;
    Ok(Sampling {
        model: Some(model.to_string()),
        temperature: o.temperature,
        top_p: o.top_p,
        top_k: o.top_k,
        min_p: o.min_p,
        typical_p: o.typical_p,
        repeat_penalty: o.repeat_penalty,
        repeat_last_n: o.repeat_last_n,
        presence_penalty: o.presence_penalty,
        frequency_penalty: o.frequency_penalty,
        seed: o.seed,
        n_predict: o.num_predict,
        stop: o.stop,
        mirostat: o.mirostat,
        mirostat_tau: o.mirostat_tau,
        mirostat_eta: o.mirostat_eta,
        json_schema,
        response_format,
        stream,
        ..Default::default()
    })
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    #[serde(default)]
    messages: Vec<WireMessage>,
    #[serde(default = "yes")]
    stream: bool,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    keep_alive: Option<Value>,
    /// Ollama's thinking switch (false: budget 0, true: no limit; absent: the server's).
    #[serde(default)]
    think: Option<bool>,
    /// As on the OpenAI endpoint (extensions here): forced calls and template variables.
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
struct GenerateRequest {
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    raw: bool,
    #[serde(default = "yes")]
    stream: bool,
    #[serde(default)]
    format: Option<Value>,
    #[serde(default)]
    options: Options,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    think: Option<bool>,
    /// Base64 images for the prompt (a model served with `--mmproj`).
    #[serde(default)]
    images: Option<Vec<String>>,
}

/// Runs a chat job and answers in Ollama's shape: one object, or NDJSON lines. The answer
/// is read by the protocol layer (thinking split, tool calls parsed) as for OpenAI.
async fn answer(st: Arc<AppState>, l: Arc<Loaded>, cj: ChatJob, model: String, chat: bool) -> ApiResult<Response> {
    let s = serve::submit(&l, &cj.job)?.remove(0);
    let object = move |content: &str, thinking: &str, calls: Vec<OllamaCall>| {
        OllamaAnswer::new(chat, &model, rfc3339(serve::now()), content, thinking, calls)
    };
    if !cj.job.stream {
        let c = serve::collect(s, serve::timeout(&st)).await?;
        let m = answer::chat_choice(&cj, 0, &c.text, &[], c.finish(), &l.model).message;
        let calls = m
            .tool_calls
            .iter()
            .map(|t| OllamaCall::new(t.function.name.clone().unwrap_or_default(), &t.function.arguments))
            .collect();
        let v = object(m.content.as_deref().unwrap_or(""), m.reasoning_content.as_deref().unwrap_or(""), calls);
        return Ok(Json(v.done(Stats::new(c.finish(), &c.usage, &c.timings))).into_response());
    }
    let mut choice = ChatChoiceStream::new(&cj, 0);
    // Calls go out whole (Ollama does not stream arguments): gathered from the deltas.
    let mut calls: Vec<(String, String)> = Vec::new();
    let served = l.clone();
    let lines = serve::merged(vec![s], serve::timeout(&st)).map(move |(_, ev)| {
        let mut out = String::new();
        let deltas = match ev {
            Ok(Event::Piece(p)) => choice.piece(&p.text, &[], &served.model),
            Ok(Event::Done { finish_reason, usage, timings, .. }) => {
                let mut deltas = choice.done(finish_reason);
                deltas.pop(); // the finish delta: the done object below says it
                for d in deltas {
                    out += &delta_line(&object, d, &mut calls);
                }
                let done_calls = calls.drain(..).map(|(n, a)| OllamaCall::new(n, &a)).collect();
                let last = object("", "", done_calls).done(Stats::new(finish_reason, &usage, &timings));
                out += &ndjson(&last);
                return Ok::<_, std::convert::Infallible>(Bytes::from(out));
            }
            Err(e) => return Ok(Bytes::from(ndjson(&json!({"error": e.to_string()})))),
        };
        for d in deltas {
            out += &delta_line(&object, d, &mut calls);
        }
        Ok(Bytes::from(out))
    });
    Ok(([(axum::http::header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// A value as one NDJSON line.
fn ndjson(v: &impl serde::Serialize) -> String {
    format!("{}\n", serde_json::to_string(v).unwrap_or_default())
}

/// The NDJSON line of one streamed delta (none for a call's parts: they are gathered into
/// `calls` and sent whole at the end).
fn delta_line(
    object: &dyn Fn(&str, &str, Vec<OllamaCall>) -> OllamaAnswer,
    d: llama_protocol::openai::ChunkChoice,
    calls: &mut Vec<(String, String)>,
) -> String {
    for c in d.delta.tool_calls.unwrap_or_default() {
        match c.function.name {
            Some(name) => calls.push((name, c.function.arguments)),
            None => {
                if let Some(last) = calls.last_mut() {
                    last.1 += &c.function.arguments;
                }
            }
        }
    }
    let (content, thinking) = (d.delta.content.unwrap_or_default(), d.delta.reasoning_content.unwrap_or_default());
    if content.is_empty() && thinking.is_empty() {
        return String::new();
    }
    ndjson(&object(&content, &thinking, Vec::new()))
}

/// `think` → a reasoning budget (absent: the server's `--reasoning-budget`).
fn budget(think: Option<bool>) -> Option<i64> {
    think.map(|t| if t { -1 } else { 0 })
}

/// `POST /api/chat`: the OpenAI chat job of the same request, answered in Ollama's shape.
pub async fn chat(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let r: ChatRequest = parse(&body)?;
    let served = st.model(Some(&r.model)).await?;
    let _ = &r.keep_alive;
    let model = r.model.clone();
    if r.messages.is_empty() {
        // Ollama's "load the model" call.
        return Ok(Json(json!({"model": model, "created_at": rfc3339(serve::now()),
            "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "load"}))
        .into_response());
    }
    let req = openai::ChatRequest {
        messages: r.messages,
        tools: r.tools,
        tool_choice: r.tool_choice,
        chat_template_kwargs: r.chat_template_kwargs,
        reasoning_budget: budget(r.think),
        sampling: sampling(&r.model, r.options, &r.format, r.stream)?,
        ..Default::default()
    };
    let cj = job::chat_job(&serve::target(&st, &served), req)?;
    answer(st.clone(), served.clone(), cj, model, true).await
}

/// `POST /api/generate`. Not raw: the prompt goes through the chat template as a user
/// turn (Ollama's default template does this), as a chat job; raw: as is.
pub async fn generate(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let r: GenerateRequest = parse(&body)?;
    let served = st.model(Some(&r.model)).await?;
    let l: &Loaded = &served;
    let _ = &r.keep_alive;
    if r.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix (fill-in-the-middle) is not supported yet"));
    }
    let s = sampling(&r.model, r.options, &r.format, r.stream)?;
    let model = r.model.clone();
    if r.prompt.is_empty() {
        return Ok(Json(json!({"model": model, "created_at": rfc3339(serve::now()), "response": "",
            "done": true, "done_reason": "load"}))
        .into_response());
    }
    let t = serve::target(&st, l);
    let cj = if r.raw || l.template.is_none() {
        if r.images.as_ref().is_some_and(|i| !i.is_empty()) {
            return Err(ApiError::bad("images", "images need the chat template (raw: false)"));
        }
        ChatJob {
            job: job::job(&t, &s, Prompt::Text(r.prompt.clone()))?,
            tools_on: false,
            split_reasoning: false,
            opened: false,
            top: None,
        }
    } else {
        let mut messages = Vec::new();
        if let Some(sys) = r.system {
            messages.push(WireMessage { role: "system".into(), content: Some(json!(sys)), ..Default::default() });
        }
        messages.push(WireMessage {
            role: "user".into(),
            content: Some(json!(r.prompt)),
            images: r.images.clone(),
            ..Default::default()
        });
        let req =
            openai::ChatRequest { messages, reasoning_budget: budget(r.think), sampling: s, ..Default::default() };
        job::chat_job(&t, req)?
    };
    answer(st.clone(), served.clone(), cj, model, false).await
}

#[derive(Deserialize)]
struct EmbedRequest {
    model: String,
    #[serde(default)]
    input: Option<Value>,
    /// `/api/embeddings` (the older endpoint) sends one `prompt`.
    #[serde(default)]
    prompt: Option<String>,
}

/// Embeddings of `inputs` through the shared embedder.
async fn embed_texts(l: &Arc<Loaded>, inputs: Vec<String>) -> ApiResult<(Vec<Vec<f32>>, usize)> {
    let toks: Vec<Vec<Token>> =
        inputs.iter().map(|s| l.model.vocab().tokenize(s, true, false)).collect::<Result<_, _>>()?;
    let n: usize = toks.iter().map(Vec::len).sum();
    let v = serve::embed_tokens(l.clone(), toks).await?;
    Ok((v, n))
}

/// `POST /api/embed` (`input`: string or list) and `/api/embeddings` (`prompt`).
pub async fn embed(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let r: EmbedRequest = parse(&body)?;
    let served = st.model(Some(&r.model)).await?;
    if let Some(p) = r.prompt {
        let (v, _) = embed_texts(&served, vec![p]).await?;
        return Ok(Json(json!({ "embedding": v[0] })).into_response());
    }
    let inputs = match r.input {
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(|| ApiError::bad("input", "input must be strings")))
            .collect::<ApiResult<_>>()?,
        _ => return Err(ApiError::bad("input", "input must be a string or a list of strings")),
    };
    let (v, n) = embed_texts(&served, inputs).await?;
    Ok(Json(json!({"model": r.model, "embeddings": v, "prompt_eval_count": n})).into_response())
}
