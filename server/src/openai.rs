//! OpenAI's API: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`. Each wire format is parsed into one `Job` (prompt, generation
//! parameters, choices) and answered from the engine's event streams.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::{Stream, StreamExt};
use llama_rs::{
    parse_tool_calls, ChatMessage, Event, FinishReason, GenerateParams, Grammar, Prompt, ReasoningBudget,
    ReasoningSplitter, RenderOptions, Request, RequestStream, SamplerConfig, Token, TokenLogprob, ToolCallStream,
    ToolEvent, Usage,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Loaded};

/// A string or a list of strings (`stop`, `input`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Many.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The fields chat and text completions share (OpenAI's and llama-server's).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub(crate) model: Option<String>,
    pub(crate) max_tokens: Option<i64>,
    pub(crate) max_completion_tokens: Option<i64>,
    pub(crate) n_predict: Option<i64>,
    pub(crate) temperature: Option<f32>,
    pub(crate) top_p: Option<f32>,
    pub(crate) top_k: Option<i32>,
    pub(crate) min_p: Option<f32>,
    pub(crate) typical_p: Option<f32>,
    pub(crate) repeat_penalty: Option<f32>,
    pub(crate) repeat_last_n: Option<i32>,
    pub(crate) presence_penalty: Option<f32>,
    pub(crate) frequency_penalty: Option<f32>,
    pub(crate) seed: Option<i64>,
    pub(crate) stop: Option<OneOrMany>,
    pub(crate) logit_bias: Option<HashMap<String, f32>>,
    pub(crate) n: Option<usize>,
    pub(crate) stream: bool,
    pub(crate) stream_options: Option<StreamOptions>,
    pub(crate) grammar: Option<String>,
    pub(crate) json_schema: Option<Value>,
    pub(crate) response_format: Option<Value>,
    pub(crate) ignore_eos: bool,
    pub(crate) mirostat: Option<u8>,
    pub(crate) mirostat_tau: Option<f32>,
    pub(crate) mirostat_eta: Option<f32>,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    include_usage: bool,
}

/// The most choices one request may ask for.
const MAX_N: usize = 64;

/// What one request asks the engine for.
pub(crate) struct Job {
    prompt: Prompt,
    pub(crate) params: GenerateParams,
    n: usize,
    pub(crate) stream: bool,
    include_usage: bool,
}

pub(crate) fn check_model(l: &Loaded, s: &Sampling) -> ApiResult<()> {
    match s.model.as_deref() {
        None | Some("") => Ok(()),
        Some(m) if m == l.id || m.trim_end_matches(".gguf") == l.id || m.strip_suffix(":latest") == Some(&l.id) => {
            Ok(())
        }
        Some(m) => Err(ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!("model {m:?} is not served here (served: {:?})", l.id),
            param: Some("model".into()),
            code: Some("model_not_found"),
        }),
    }
}

/// The generation parameters of a request (validated: every bad value is a 400 naming
/// its field).
pub(crate) fn params(l: &Loaded, s: &Sampling, default_max: i64) -> ApiResult<GenerateParams> {
    let max = s.max_completion_tokens.or(s.max_tokens).or(s.n_predict).unwrap_or(default_max);
    let max_tokens = match max {
        m if m < 0 => None,
        0 => return Err(ApiError::bad("max_tokens", "max_tokens must be at least 1")),
        m if m as u64 > l.n_ctx as u64 => {
            return Err(ApiError {
                code: Some("context_length_exceeded"),
                ..ApiError::bad(
                    "max_tokens",
                    format!("max_tokens {m} is more than the context holds ({} tokens per request)", l.n_ctx),
                )
            })
        }
        m => Some(m as usize),
    };
    let mut sampler = SamplerConfig {
        temperature: s.temperature.unwrap_or(0.8),
        top_k: s.top_k.unwrap_or(40),
        top_p: s.top_p.unwrap_or(0.95),
        min_p: s.min_p.unwrap_or(0.05),
        typical_p: s.typical_p.unwrap_or(1.0),
        repeat_penalty: s.repeat_penalty.unwrap_or(1.0),
        penalty_last_n: s.repeat_last_n.unwrap_or(64),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        mirostat: s.mirostat.unwrap_or(0),
        mirostat_tau: s.mirostat_tau.unwrap_or(5.0),
        mirostat_eta: s.mirostat_eta.unwrap_or(0.1),
        ..Default::default()
    };
    for (name, v) in [
        ("temperature", sampler.temperature),
        ("top_p", sampler.top_p),
        ("min_p", sampler.min_p),
        ("presence_penalty", sampler.presence_penalty),
        ("frequency_penalty", sampler.frequency_penalty),
        ("repeat_penalty", sampler.repeat_penalty),
    ] {
        if !v.is_finite() {
            return Err(ApiError::bad(name, format!("{name} must be a finite number")));
        }
    }
    if !(0.0..=1.0).contains(&sampler.top_p) {
        return Err(ApiError::bad("top_p", "top_p must be in [0, 1]"));
    }
    if sampler.mirostat > 2 {
        return Err(ApiError::bad("mirostat", "mirostat must be 0, 1 or 2"));
    }
    if let Some(seed) = s.seed {
        // OpenAI seeds are 64-bit; llama.cpp's are 32-bit: fold, so every seed works.
        sampler.seed = (seed as u64 ^ (seed as u64 >> 32)) as u32;
    }
    if let Some(bias) = &s.logit_bias {
        let n_vocab = l.model.n_vocab();
        for (k, v) in bias {
            let t: i32 = k.parse().map_err(|_| ApiError::bad("logit_bias", format!("{k:?} is not a token id")))?;
            if !(0..n_vocab).contains(&t) {
                return Err(ApiError::bad("logit_bias", format!("token {t} is not in the vocabulary (0..{n_vocab})")));
            }
            if !v.is_finite() && *v != f32::NEG_INFINITY {
                return Err(ApiError::bad("logit_bias", format!("bias {v} of token {t} is not a number")));
            }
            sampler.logit_bias.push((Token(t), v.clamp(-100.0, 100.0)));
        }
    }
    sampler.grammar = grammar(s)?;
    let stop = s.stop.clone().map(OneOrMany::into_vec).unwrap_or_default();
    if stop.len() > 16 {
        return Err(ApiError::bad("stop", "at most 16 stop strings"));
    }
    let speculation = match l.speculation.as_ref() {
        Some(sp) if sampler.grammar.is_none() => Some(sp.clone()),
        _ => None,
    };
    Ok(GenerateParams {
        max_tokens,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        sampler,
        ignore_eos: s.ignore_eos,
        speculation,
        ..Default::default()
    })
}

/// `grammar` (GBNF), `json_schema` (llama-server) or `response_format` (OpenAI). A schema
/// we cannot enforce is a 400 that names the keyword, never unconstrained output.
fn grammar(s: &Sampling) -> ApiResult<Option<Grammar>> {
    let from_schema = |schema: &Value, param: &str| {
        Grammar::from_json_schema(schema).map(Some).map_err(|e| ApiError::bad(param, e.to_string()))
    };
    if let Some(g) = &s.grammar {
        return Ok(Some(Grammar::new(g.clone())));
    }
    if let Some(schema) = &s.json_schema {
        return from_schema(schema, "json_schema");
    }
    let Some(rf) = &s.response_format else { return Ok(None) };
    match rf.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => match rf.get("schema") {
            Some(schema) => from_schema(schema, "response_format"),
            None => from_schema(&json!({"type": "object"}), "response_format"),
        },
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .ok_or_else(|| ApiError::bad("response_format", "json_schema.schema is missing"))?;
            from_schema(schema, "response_format")
        }
        Some(t) => Err(ApiError::bad("response_format", format!("unknown response_format type {t:?}"))),
    }
}

fn job(l: &Loaded, s: &Sampling, prompt: Prompt, default_max: i64) -> ApiResult<Job> {
    check_model(l, s)?;
    let n = s.n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ApiError::bad("n", format!("n must be in 1..={MAX_N}")));
    }
    Ok(Job {
        prompt,
        params: params(l, s, default_max)?,
        n,
        stream: s.stream,
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// Parses a JSON body; a malformed body or a field of the wrong type is a 400 that says
/// where.
pub fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path);
        let at = param.as_deref().map(|p| format!(" (at {p})")).unwrap_or_default();
        ApiError {
            param,
            code: Some("invalid_json"),
            ..ApiError::status(axum::http::StatusCode::BAD_REQUEST, format!("invalid request body{at}: {}", e.inner()))
        }
    })
}

pub(crate) fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
        "completion_tokens_details": {
            "accepted_prediction_tokens": u.accepted_draft_tokens,
            "rejected_prediction_tokens": u.rejected_draft_tokens,
        },
    })
}

pub(crate) fn add_usage(a: &mut Usage, b: &Usage) {
    a.prompt_tokens += b.prompt_tokens;
    a.cached_tokens += b.cached_tokens;
    a.completion_tokens += b.completion_tokens;
    a.accepted_draft_tokens += b.accepted_draft_tokens;
    a.rejected_draft_tokens += b.rejected_draft_tokens;
}

/// One finished choice.
#[derive(Default)]
pub(crate) struct Choice {
    pub(crate) text: String,
    pub(crate) logprobs: Vec<TokenLogprob>,
    pub(crate) finish: Option<FinishReason>,
    pub(crate) usage: Usage,
    pub(crate) timings: llama_rs::Timings,
    pub(crate) stop_word: Option<String>,
}

/// Collects a stream to its end (bounded by the server's timeout: the request is
/// cancelled when it runs out).
pub(crate) async fn collect(mut s: RequestStream, timeout: Option<Duration>) -> ApiResult<Choice> {
    let work = async {
        let mut c = Choice::default();
        while let Some(ev) = StreamExt::next(&mut s).await {
            match ev? {
                Event::Piece(p) => {
                    c.text += &p.text;
                    c.logprobs.extend(p.logprobs);
                }
                Event::Done { finish_reason, usage, timings, stop_word, .. } => {
                    c.finish = Some(finish_reason);
                    c.usage = usage;
                    c.timings = timings;
                    c.stop_word = stop_word;
                }
            }
        }
        Ok::<_, ApiError>(c)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, work).await.map_err(|_| {
            ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, format!("generation took longer than {t:?}"))
        })?,
        None => work.await,
    }
}

pub(crate) fn timeout(st: &AppState) -> Option<Duration> {
    (st.args.timeout > 0).then(|| Duration::from_secs(st.args.timeout))
}

fn timings_json(c: &Choice) -> Value {
    let t = &c.timings;
    let gen_ms = (t.total_ms - t.ttft_ms).max(0.0);
    let n = c.usage.completion_tokens;
    json!({
        "prompt_n": c.usage.prompt_tokens - c.usage.cached_tokens,
        "cache_n": c.usage.cached_tokens,
        "prompt_ms": t.ttft_ms,
        "predicted_n": n,
        "predicted_ms": gen_ms,
        "predicted_per_second": if gen_ms > 0.0 && n > 1 { (n - 1) as f64 * 1000.0 / gen_ms } else { 0.0 },
        "queued_ms": t.queued_ms,
    })
}

impl Job {
    /// The prompt the engine gets.
    pub(crate) fn prompt(&self) -> &Prompt {
        &self.prompt
    }
}

/// Submits the job's choices (`n` streams with seeds seed, seed + 1, ...).
pub(crate) fn submit(l: &Loaded, j: &Job) -> ApiResult<Vec<RequestStream>> {
    let req = Request { prompt: j.prompt.clone(), params: j.params.clone() };
    Ok(if j.n == 1 { vec![l.engine.submit(req)?] } else { l.engine.submit_n(req, j.n)? })
}

/// SSE response from a stream of JSON values (then `data: [DONE]`).
fn sse(events: impl Stream<Item = Value> + Send + 'static) -> Response {
    let s = events
        .map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string())))
        .chain(futures::stream::once(async { Ok(SseEvent::default().data("[DONE]")) }));
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// The choices' events, tagged with their index, ending early at the timeout (the
/// streams are dropped then, which cancels the requests).
pub(crate) fn merged(
    streams: Vec<RequestStream>,
    timeout: Option<Duration>,
) -> impl Stream<Item = (usize, llama_rs::Result<Event>)> {
    let all = futures::stream::select_all(
        streams.into_iter().enumerate().map(|(i, s)| StreamExt::map(s, move |e| (i, e)).boxed()),
    );
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    all.take_until(Box::pin(deadline))
}

/// Runs the choices' streams to their end for a streamed answer: each event goes to `on`
/// with its choice index, an engine error ends the answer with an error event, and the
/// tail follows (see `stream_tail`).
async fn drive_choices(
    streams: Vec<RequestStream>,
    timeout: Option<Duration>,
    tx: &(dyn Fn(Value) + Send + Sync),
    usage_chunk: Option<Value>,
    mut on: impl FnMut(usize, Event) + Send,
) {
    let n = streams.len();
    let (mut usage, mut finished) = (Usage::default(), 0);
    let mut all = Box::pin(merged(streams, timeout));
    while let Some((i, ev)) = all.next().await {
        match ev {
            Err(e) => {
                tx(error_event(e));
                return;
            }
            Ok(ev) => {
                if let Event::Done { usage: u, .. } = &ev {
                    add_usage(&mut usage, u);
                    finished += 1;
                }
                on(i, ev);
            }
        }
    }
    stream_tail(tx, finished, n, usage_chunk, &usage);
}

/// The end of a streamed answer: an error if some choice did not finish (the timeout),
/// else the usage chunk (an empty-choices chunk given here) when the client asked for one.
fn stream_tail(tx: &dyn Fn(Value), finished: usize, n: usize, usage_chunk: Option<Value>, usage: &Usage) {
    if finished < n {
        tx(ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, "generation timed out").body());
    } else if let Some(mut c) = usage_chunk {
        c["usage"] = usage_json(usage);
        tx(c);
    }
}

pub(crate) fn error_event(e: llama_rs::Error) -> Value {
    ApiError::from(e).body()
}

// ------------------------------------------------------------------------------ chat

/// `/v1/chat/completions` body (the fields beyond [`Sampling`]).
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<WireMessage>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    logprobs: bool,
    #[serde(default)]
    top_logprobs: Option<usize>,
    #[serde(default)]
    chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Thinking tokens for this request (as `--reasoning-budget`: -1 no limit, 0 none).
    #[serde(default)]
    reasoning_budget: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// A message as clients send it: content as a string, a list of parts, or null.
#[derive(Debug, Deserialize)]
pub struct WireMessage {
    pub(crate) role: String,
    #[serde(default)]
    pub(crate) content: Option<Value>,
    #[serde(default)]
    pub(crate) tool_calls: Option<Vec<llama_rs::ToolCall>>,
    #[serde(default)]
    pub(crate) tool_call_id: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// The text of a content value (OpenAI's message content, Anthropic's `system` and
/// `tool_result` content): null, a string, or a list of text parts.
pub(crate) fn text_content(v: &Value, field: &str) -> ApiResult<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for (k, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => s += t,
                    (t, _) => {
                        return Err(ApiError::bad(
                            &format!("{field}[{k}]"),
                            format!("content part of type {t:?} is not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(ApiError::bad(field, "content must be a string or a list of parts")),
    }
}

pub(crate) fn messages(wire: Vec<WireMessage>) -> ApiResult<Vec<ChatMessage>> {
    if wire.is_empty() {
        return Err(ApiError::bad("messages", "messages must not be empty"));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let content = text_content(&m.content.unwrap_or(Value::Null), &format!("messages[{i}].content"))?;
            let mut msg = ChatMessage::new(m.role, content);
            msg.tool_calls = m.tool_calls.unwrap_or_default();
            msg.tool_call_id = m.tool_call_id;
            msg.name = m.name;
            Ok(msg)
        })
        .collect()
}

/// Renders the chat prompt (with the tools, unless `tool_choice` is "none").
fn chat_prompt(l: &Loaded, req: &ChatRequest, msgs: &[ChatMessage], budget: i64) -> ApiResult<(String, bool)> {
    let tmpl = l.template.as_ref().ok_or_else(|| {
        ApiError::bad("messages", l.template_error.clone().unwrap_or_else(|| "no chat template".into()))
    })?;
    let tools_on = req.tools.as_ref().is_some_and(|t| !t.is_empty())
        && !matches!(req.tool_choice.as_ref().and_then(Value::as_str), Some("none"));
    let mut extra = req.chat_template_kwargs.clone().unwrap_or_default();
    if budget == 0 {
        // `--reasoning-budget 0`: what llama-server passes; Qwen3-style templates then
        // close the think block in the prompt. A request's own kwargs win.
        extra.entry("enable_thinking").or_insert(Value::Bool(false));
    }
    let opts =
        RenderOptions { add_generation_prompt: true, tools: if tools_on { req.tools.clone() } else { None }, extra };
    Ok((tmpl.render(msgs, &opts)?, tools_on))
}

/// `tool_choice` "required" or a named function: a grammar that makes the answer a call
/// (Hermes' `<tool_call>` form, which the parser reads for every model) whose `name` is
/// one of the offered tools (or the named one) and whose `arguments` follow that tool's
/// parameter schema.
fn forced_tool_grammar(req: &ChatRequest) -> ApiResult<Option<Grammar>> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let wanted: Option<&str> = match &req.tool_choice {
        Some(Value::String(s)) if s == "required" => None,
        Some(Value::Object(o)) => Some(
            o.get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad("tool_choice", "tool_choice.function.name is missing"))?,
        ),
        Some(Value::String(s)) if s == "auto" || s == "none" => return Ok(None),
        None => return Ok(None),
        Some(v) => return Err(ApiError::bad("tool_choice", format!("unknown tool_choice {v}"))),
    };
    let mut alternatives = Vec::new();
    for t in tools {
        let Some(f) = t.get("function") else { continue };
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(ApiError::bad("tools", "every tool needs function.name"));
        };
        if wanted.is_some_and(|w| w != name) {
            continue;
        }
        let params = f.get("parameters").cloned().unwrap_or(json!({"type": "object"}));
        alternatives.push(json!({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"],
        }));
    }
    if alternatives.is_empty() {
        return Err(ApiError::bad("tool_choice", format!("no offered tool is named {:?}", wanted.unwrap_or(""))));
    }
    let schema = if alternatives.len() == 1 { alternatives.remove(0) } else { json!({ "anyOf": alternatives }) };
    let call = llama_rs::json_schema::to_gbnf(&schema).map_err(|e| ApiError::bad("tools", e.to_string()))?;
    let call = call.replacen("root ::= ", "call ::= ", 1);
    Ok(Some(Grammar::new(format!("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n{call}"))))
}

fn chat_logprobs(l: &Loaded, lps: &[TokenLogprob]) -> Value {
    let vocab = l.model.vocab();
    let entry = |t: Token, lp: f32| {
        let mut bytes = Vec::new();
        let _ = vocab.token_to_piece_bytes(t, false, &mut bytes);
        json!({"token": String::from_utf8_lossy(&bytes), "logprob": lp, "bytes": bytes})
    };
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let mut e = entry(lp.token, lp.logprob);
            e["top_logprobs"] = Value::Array(lp.top.iter().map(|&(t, p)| entry(t, p)).collect());
            e
        })
        .collect();
    json!({ "content": content })
}

/// An id for call `i` of choice `choice` (for a call the model gave none).
fn call_id(choice: usize, i: usize) -> String {
    format!("call_{choice}_{i}_{:08x}", now() as u32 ^ (i as u32) << 16)
}

/// A tool call as OpenAI sends it (arguments as a JSON string).
fn tool_call_json(i: usize, c: &llama_rs::ToolCall, choice: usize) -> Value {
    let id = c.id.clone().unwrap_or_else(|| call_id(choice, i));
    json!({
        "index": i,
        "id": id,
        "type": "function",
        "function": {"name": c.function.name, "arguments": c.function.arguments.to_string()},
    })
}

/// A chat request made ready for the engine, and how to read its answers.
pub(crate) struct ChatJob {
    pub(crate) job: Job,
    /// Tools were offered (and not switched off): answers may be tool calls.
    pub(crate) tools_on: bool,
    /// Thinking goes to its own field (`--reasoning-format` is not `none`).
    pub(crate) reasoning: bool,
    /// The rendered prompt opened a think block.
    pub(crate) opened: bool,
    /// `top_logprobs` when log-probabilities were asked for.
    pub(crate) top: Option<usize>,
}

/// Renders a chat request's prompt and builds its job: the part every chat wire format
/// (OpenAI's, Anthropic's) shares.
pub(crate) fn chat_job(st: &AppState, l: &Loaded, mut req: ChatRequest) -> ApiResult<ChatJob> {
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if k > 20 => return Err(ApiError::bad("top_logprobs", "top_logprobs must be in 0..=20")),
        (false, Some(k)) if k > 0 => return Err(ApiError::bad("top_logprobs", "top_logprobs needs logprobs: true")),
        (true, k) => Some(k.unwrap_or(0)),
        (false, _) => None,
    };
    let msgs = messages(std::mem::take(&mut req.messages))?;
    let budget = match req.reasoning_budget {
        None => st.args.reasoning_budget as i64,
        Some(b) if b >= -1 => b,
        Some(b) => return Err(ApiError::bad("reasoning_budget", format!("must be -1 (no limit) or more, got {b}"))),
    };
    let (text, tools_on) = chat_prompt(l, &req, &msgs, budget)?;
    // Thinking output goes to `reasoning_content` (a block the prompt opened counts too).
    let reasoning = st.args.reasoning_format != "none";
    let opened = ReasoningSplitter::prompt_opens_block(&text);
    let mut j = job(l, &req.sampling, Prompt::Text(text), st.args.n_predict)?;
    // A budget ends the think block by generating its end tag (also with budget 0, for
    // templates that open the block whatever `enable_thinking` says).
    if let Ok(tokens) = usize::try_from(budget) {
        j.params.reasoning_budget = Some(ReasoningBudget { tokens, started: opened });
    }
    if tools_on && j.params.sampler.grammar.is_none() {
        if let Some(g) = forced_tool_grammar(&req)? {
            j.params.sampler.grammar = Some(g);
            j.params.speculation = None;
        }
    }
    j.params.add_special = false;
    j.params.parse_special = true;
    j.params.logprobs = top;
    Ok(ChatJob { job: j, tools_on, reasoning, opened, top })
}

/// `POST /v1/chat/completions`.
pub async fn chat(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: ChatRequest = parse(&body)?;
    let served = st.model(req.sampling.model.as_deref()).await?;
    let l: &Loaded = &served;
    let ChatJob { job: j, tools_on, reasoning, opened, top } = chat_job(&st, l, req)?;
    let streams = submit(l, &j)?;
    let id = format!("chatcmpl-{:x}", rand_id());
    let created = now();
    let model = l.id.clone();
    if !j.stream {
        let mut choices = Vec::new();
        let mut usage = Usage::default();
        let mut first = None;
        for (i, s) in streams.into_iter().enumerate() {
            let c = collect(s, timeout(&st)).await?;
            add_usage(&mut usage, &c.usage);
            let (thought, answer) =
                if reasoning { ReasoningSplitter::split(&c.text, opened) } else { (None, c.text.clone()) };
            let mut message = json!({"role": "assistant", "content": answer});
            if let Some(t) = thought {
                message["reasoning_content"] = Value::String(t);
            }
            let mut finish = finish_str(c.finish.unwrap_or(FinishReason::Stop));
            if tools_on {
                let (content, calls) = parse_tool_calls(&answer);
                if !calls.is_empty() {
                    message["content"] = if content.is_empty() { Value::Null } else { Value::String(content) };
                    message["tool_calls"] = calls.iter().enumerate().map(|(k, tc)| tool_call_json(k, tc, i)).collect();
                    finish = "tool_calls";
                }
            }
            let mut choice = json!({"index": i, "message": message, "finish_reason": finish, "logprobs": null});
            if top.is_some() {
                choice["logprobs"] = chat_logprobs(l, &c.logprobs);
            }
            choices.push(choice);
            first.get_or_insert(c);
        }
        let timings = first.as_ref().map(timings_json).unwrap_or(Value::Null);
        return Ok(Json(json!({
            "id": id, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_json(&usage), "timings": timings,
            "system_fingerprint": system_fingerprint(),
        }))
        .into_response());
    }
    // Streaming: a role delta per choice first, then content deltas, then each choice's
    // finish_reason; with tools, a choice's text is held back until it is known not to be
    // a tool call (a call that does not parse is sent as content).
    let n = j.n;
    let st2 = st.clone();
    let chunk = {
        let (id, model) = (id.clone(), model.clone());
        move |choices: Value| {
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                   "system_fingerprint": system_fingerprint(), "choices": choices})
        }
    };
    let include_usage = j.include_usage;
    let events = async_stream(move |tx| async move {
        let l: &Loaded = &served;
        for i in 0..n {
            tx(chunk(json!([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}])));
        }
        // With tools: text streams as it comes, held back only where it may start a call;
        // each call goes out once complete (a call that does not parse is text).
        let mut calls = vec![ToolCallStream::new(); n];
        let mut n_calls = vec![0usize; n];
        let mut splitters = vec![ReasoningSplitter::new(opened); n];
        let usage_chunk = include_usage.then(|| chunk(json!([])));
        drive_choices(streams, timeout(&st2), &tx, usage_chunk, |i, ev| match ev {
            Event::Piece(p) => {
                let (thought, text) = if reasoning { splitters[i].push(&p.text) } else { (String::new(), p.text) };
                if !thought.is_empty() {
                    tx(chunk(json!([{"index": i, "delta": {"reasoning_content": thought}, "finish_reason": null}])));
                }
                if tools_on {
                    let ev = calls[i].push(&text);
                    send_tool_events(&tx, &chunk, i, ev, &mut n_calls[i]);
                } else if !text.is_empty() || !p.logprobs.is_empty() {
                    let mut c = json!({"index": i, "delta": {"content": text}, "finish_reason": null});
                    if top.is_some() {
                        c["logprobs"] = chat_logprobs(l, &p.logprobs);
                    }
                    tx(chunk(json!([c])));
                }
            }
            Event::Done { finish_reason, .. } => {
                let (thought, text) = splitters[i].finish();
                if !thought.is_empty() {
                    tx(chunk(json!([{"index": i, "delta": {"reasoning_content": thought}, "finish_reason": null}])));
                }
                let mut finish = finish_str(finish_reason);
                if tools_on {
                    let mut ev = calls[i].push(&text);
                    ev.extend(calls[i].finish());
                    send_tool_events(&tx, &chunk, i, ev, &mut n_calls[i]);
                    if n_calls[i] > 0 {
                        finish = "tool_calls";
                    }
                } else if !text.is_empty() {
                    tx(chunk(json!([{"index": i, "delta": {"content": text}, "finish_reason": null}])));
                }
                tx(chunk(json!([{"index": i, "delta": {}, "finish_reason": finish}])));
            }
        })
        .await;
    });
    Ok(sse(events))
}

/// Sends a choice's streamed content and tool calls as chat deltas: a streamed call's id
/// and name first, then its arguments piece by piece (as OpenAI streams them).
fn send_tool_events(
    tx: &dyn Fn(Value),
    chunk: &dyn Fn(Value) -> Value,
    i: usize,
    events: Vec<ToolEvent>,
    n_calls: &mut usize,
) {
    for e in events {
        let delta = match e {
            ToolEvent::Content(c) => json!({"content": c}),
            ToolEvent::Call(c) => {
                *n_calls += 1;
                json!({"tool_calls": [tool_call_json(*n_calls - 1, &c, i)]})
            }
            ToolEvent::CallStart { name } => {
                *n_calls += 1;
                let k = *n_calls - 1;
                json!({"tool_calls": [{"index": k, "id": call_id(i, k), "type": "function",
                                       "function": {"name": name, "arguments": ""}}]})
            }
            ToolEvent::CallArgs(a) => json!({"tool_calls": [{"index": *n_calls - 1, "function": {"arguments": a}}]}),
            ToolEvent::CallEnd(_) => continue,
        };
        tx(chunk(json!([{"index": i, "delta": delta, "finish_reason": null}])));
    }
}

// ------------------------------------------------------------------------ completions

/// `/v1/completions` body (the fields beyond [`Sampling`]).
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    prompt: Value,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    logprobs: Option<usize>,
    #[serde(default)]
    suffix: Option<String>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// The prompt(s) of a completion request: a string, token ids, or a list of either.
fn prompts(v: &Value) -> ApiResult<Vec<Prompt>> {
    let tokens = |a: &[Value]| -> Option<Vec<Token>> {
        a.iter().map(|x| x.as_i64().filter(|t| i32::try_from(*t).is_ok()).map(|t| Token(t as i32))).collect()
    };
    let bad = || ApiError::bad("prompt", "prompt must be a string, a list of strings, or token ids");
    match v {
        Value::String(s) => Ok(vec![Prompt::Text(s.clone())]),
        Value::Array(a) if a.is_empty() => Err(ApiError::bad("prompt", "prompt must not be empty")),
        Value::Array(a) if a[0].is_number() => Ok(vec![Prompt::Tokens(tokens(a).ok_or_else(bad)?)]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(t) => Ok(Prompt::Tokens(tokens(t).ok_or_else(bad)?)),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

fn completion_logprobs(l: &Loaded, lps: &[TokenLogprob], offset0: usize) -> Value {
    let vocab = l.model.vocab();
    let text = |t: Token| vocab.token_to_piece(t, false).unwrap_or_default();
    let mut offset = offset0;
    let mut offsets = Vec::new();
    let tokens: Vec<String> = lps
        .iter()
        .map(|lp| {
            let s = text(lp.token);
            offsets.push(offset);
            offset += s.len();
            s
        })
        .collect();
    let top: Vec<Value> =
        lps.iter().map(|lp| Value::Object(lp.top.iter().map(|&(t, p)| (text(t), json!(p))).collect())).collect();
    json!({
        "tokens": tokens,
        "token_logprobs": lps.iter().map(|lp| lp.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": offsets,
    })
}

/// `POST /v1/completions`.
pub async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: CompletionRequest = parse(&body)?;
    let served = st.model(req.sampling.model.as_deref()).await?;
    let l: &Loaded = &served;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad("suffix", "suffix (fill-in-the-middle) is not supported yet"));
    }
    if req.logprobs.is_some_and(|k| k > 20) {
        return Err(ApiError::bad("logprobs", "logprobs must be in 0..=20"));
    }
    let ps = prompts(&req.prompt)?;
    let mut jobs = Vec::new();
    for p in ps {
        let mut j = job(l, &req.sampling, p, st.args.n_predict)?;
        j.params.logprobs = req.logprobs;
        jobs.push(j);
    }
    let echo_text = |p: &Prompt| match p {
        Prompt::Text(s) => s.clone(),
        Prompt::Tokens(t) => l.model.vocab().detokenize(t, false, false).unwrap_or_default(),
    };
    let mut streams = Vec::new();
    let mut echoes = Vec::new();
    for j in &jobs {
        let e = if req.echo { echo_text(&j.prompt) } else { String::new() };
        for s in submit(l, j)? {
            streams.push(s);
            echoes.push(e.clone());
        }
    }
    let id = format!("cmpl-{:x}", rand_id());
    let created = now();
    let model = l.id.clone();
    let (stream, include_usage) = (jobs[0].stream, jobs[0].include_usage);
    if !stream {
        let mut choices = Vec::new();
        let mut usage = Usage::default();
        let mut first = None;
        for (i, (s, echo)) in streams.into_iter().zip(&echoes).enumerate() {
            let c = collect(s, timeout(&st)).await?;
            add_usage(&mut usage, &c.usage);
            let lp = if req.logprobs.is_some() { completion_logprobs(l, &c.logprobs, echo.len()) } else { Value::Null };
            choices.push(json!({"index": i, "text": format!("{echo}{}", c.text), "logprobs": lp,
                                "finish_reason": finish_str(c.finish.unwrap_or(FinishReason::Stop))}));
            first.get_or_insert(c);
        }
        let timings = first.as_ref().map(timings_json).unwrap_or(Value::Null);
        return Ok(Json(json!({
            "id": id, "object": "text_completion", "created": created, "model": model,
            "choices": choices, "usage": usage_json(&usage), "timings": timings,
            "system_fingerprint": system_fingerprint(),
        }))
        .into_response());
    }
    let st2 = st.clone();
    let want_lp = req.logprobs.is_some();
    let events = async_stream(move |tx| async move {
        let l: &Loaded = &served;
        let chunk = |choices: Value| json!({"id": id, "object": "text_completion", "created": created, "model": model, "choices": choices});
        for (i, e) in echoes.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
            tx(chunk(json!([{"index": i, "text": e, "logprobs": null, "finish_reason": null}])));
        }
        let usage_chunk = include_usage.then(|| chunk(json!([])));
        drive_choices(streams, timeout(&st2), &tx, usage_chunk, |i, ev| match ev {
            Event::Piece(p) => {
                if !p.text.is_empty() || !p.logprobs.is_empty() {
                    let lp = if want_lp { completion_logprobs(l, &p.logprobs, 0) } else { Value::Null };
                    tx(chunk(json!([{"index": i, "text": p.text, "logprobs": lp, "finish_reason": null}])));
                }
            }
            Event::Done { finish_reason, .. } => {
                let f = finish_str(finish_reason);
                tx(chunk(json!([{"index": i, "text": "", "logprobs": null, "finish_reason": f}])));
            }
        })
        .await;
    });
    Ok(sse(events))
}

// ------------------------------------------------------------------------- embeddings

/// `/v1/embeddings` body.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    use base64::Engine as _;
    let req: EmbeddingRequest = parse(&body)?;
    let served = st.model(req.model.as_deref()).await?;
    let l: &Loaded = &served;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::bad("encoding_format", format!("encoding_format {f:?}: expected float or base64")))
        }
    };
    let ps = prompts(&req.input)
        .map_err(|_| ApiError::bad("input", "input must be a string, a list of strings, or token ids"))?;
    let inputs: Vec<Vec<Token>> = ps
        .into_iter()
        .map(|p| match p {
            Prompt::Text(s) => l.model.vocab().tokenize(&s, true, false).map_err(ApiError::from),
            Prompt::Tokens(t) => Ok(t),
        })
        .collect::<ApiResult<_>>()?;
    let n_tokens: usize = inputs.iter().map(Vec::len).sum();
    let vectors = embed_tokens(served.clone(), inputs).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list", "data": data, "model": l.id,
        "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
    }))
    .into_response())
}

/// Embeddings of token lists through the one embedding context (made on first use; runs
/// off the async workers).
pub(crate) async fn embed_tokens(l: Arc<Loaded>, inputs: Vec<Vec<Token>>) -> ApiResult<Vec<Vec<f32>>> {
    tokio::task::spawn_blocking(move || -> ApiResult<Vec<Vec<f32>>> {
        let mut guard = l.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(llama_rs::Embedder::new(&l.model, llama_rs::EmbedParams::default())?);
        }
        Ok(guard.as_mut().expect("set above").embed_tokens(&inputs)?)
    })
    .await
    .map_err(|e| ApiError::status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

// ----------------------------------------------------------------------------- models

/// `GET /v1/models`.
pub async fn models(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    st.loaded()?; // 503 while the default model loads
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| match m.get() {
            Some(l) => json!({
                "id": l.id, "object": "model", "created": l.created, "owned_by": "llama-rs",
                "status": {"value": "loaded"},
                "meta": {
                    "n_vocab": l.model.n_vocab(), "n_ctx_train": l.model.n_ctx_train(), "n_embd": l.model.n_embd(),
                    "n_params": l.model.n_params(), "size": l.model.size(), "description": l.model.description(),
                },
            }),
            None => json!({"id": m.id, "object": "model", "created": 0, "owned_by": "llama-rs",
                           "status": {"value": "unloaded"}}),
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

// ---------------------------------------------------------------------------- helpers

/// The value OpenAI clients show as the backend's build.
pub fn system_fingerprint() -> String {
    format!("llama-rs-{}-{}", env!("CARGO_PKG_VERSION"), llama_rs::sys::LLAMA_CPP_COMMIT)
}

pub(crate) fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// A stream of values produced by an async block that calls `tx(value)`: runs as its own
/// task, so the block can await the engine's streams while the response is being sent.
/// When the client goes away the channel closes, the task's next send fails, and
/// dropping the task's engine streams cancels their requests.
pub(crate) fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Value> + Send + 'static
where
    F: FnOnce(Box<dyn Fn(Value) + Send + Sync>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let closed = tx.clone();
    let fut = f(Box::new(move |v| {
        let _ = tx.send(v);
    }));
    tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = closed.closed() => {}
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}
