//! Anthropic's Messages API: `POST /v1/messages` (streamed as Anthropic's named SSE
//! events) and `POST /v1/messages/count_tokens`, for clients built on Anthropic's SDKs
//! (Claude Code-style agents pointed at a local model). A request is translated into the
//! OpenAI chat request the rest of the server understands (`job::chat_job`), so
//! templates, tool calls, thinking, grammars and the engine are the same; only the wire
//! shapes differ. Errors use Anthropic's body (`{"type": "error", "error": {...}}`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use llama_protocol::answer::{self, ChatChoiceStream};
use llama_protocol::anthropic::{
    content_blocks, stop_reason, BlockStream, ErrorBody, Event as AEvent, Message as Answer, MessageUsage,
};
use llama_rs::{Event, Prompt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::serve::{self, parse};
use crate::state::{AppState, Loaded};
use llama_protocol::openai::ChatRequest;

/// Anthropic's default temperature (OpenAI's default is lower).
const DEFAULT_TEMPERATURE: f32 = 1.0;

#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    /// Required by `/v1/messages`, absent from `count_tokens`.
    #[serde(default)]
    max_tokens: Option<i64>,
    messages: Vec<Message>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<i32>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    tool_choice: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
    /// llama-server's extension, as on its OpenAI endpoints: a GBNF grammar.
    #[serde(default)]
    grammar: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Value,
}

/// One Anthropic message as OpenAI messages: tool results become `tool` messages (before
/// the user's text, the order Anthropic requires them in), `tool_use` blocks become
/// `tool_calls`, thinking blocks are dropped (templates drop past reasoning too).
fn convert_message(i: usize, m: Message, out: &mut Vec<Value>) -> ApiResult<()> {
    let at = |k: usize| format!("messages[{i}].content[{k}]");
    if m.role != "user" && m.role != "assistant" {
        return Err(ApiError::bad(&format!("messages[{i}].role"), "role must be \"user\" or \"assistant\""));
    }
    let blocks = match m.content {
        Value::String(s) => {
            out.push(json!({"role": m.role, "content": s}));
            return Ok(());
        }
        Value::Array(b) => b,
        _ => return Err(ApiError::bad(&format!("messages[{i}].content"), "must be a string or a list of blocks")),
    };
    let (mut text, mut calls) = (String::new(), Vec::new());
    // With images the content stays a list of parts, read by the protocol layer.
    let mut parts: Vec<Value> = Vec::new();
    for (k, b) in blocks.iter().enumerate() {
        match b.get("type").and_then(Value::as_str) {
            Some("text") => {
                let t = b.get("text").and_then(Value::as_str).unwrap_or_default();
                text += t;
                parts.push(json!({"type": "text", "text": t}));
            }
            Some("image") if m.role == "user" => parts.push(b.clone()),
            Some("tool_use") if m.role == "assistant" => {
                let (Some(id), Some(name)) =
                    (b.get("id").and_then(Value::as_str), b.get("name").and_then(Value::as_str))
                else {
                    return Err(ApiError::bad(&at(k), "tool_use needs id and name"));
                };
                let input = b.get("input").cloned().unwrap_or(json!({}));
                calls.push(json!({"id": id, "type": "function", "function": {"name": name, "arguments": input}}));
            }
            Some("tool_result") if m.role == "user" => {
                let Some(id) = b.get("tool_use_id").and_then(Value::as_str) else {
                    return Err(ApiError::bad(&at(k), "tool_result needs tool_use_id"));
                };
                let content = llama_protocol::job::text_content(
                    b.get("content").unwrap_or(&Value::Null),
                    &format!("{}.content", at(k)),
                )?;
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            Some("thinking") | Some("redacted_thinking") => {}
            t => {
                return Err(ApiError::bad(
                    &at(k),
                    format!("content block of type {t:?} is not supported in a {} message (text only)", m.role),
                ))
            }
        }
    }
    let has_media = parts.iter().any(|p| p.get("type").and_then(Value::as_str) == Some("image"));
    if has_media {
        out.push(json!({"role": m.role, "content": parts}));
    } else if !text.is_empty() || !calls.is_empty() {
        let mut msg = json!({"role": m.role, "content": text});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        out.push(msg);
    }
    Ok(())
}

/// The OpenAI chat request an Anthropic one means.
fn to_chat_request(r: MessagesRequest) -> ApiResult<(ChatRequest, bool)> {
    let mut msgs = Vec::new();
    if let Some(s) = &r.system {
        let s = llama_protocol::job::text_content(s, "system")?;
        if !s.is_empty() {
            msgs.push(json!({"role": "system", "content": s}));
        }
    }
    for (i, m) in r.messages.into_iter().enumerate() {
        convert_message(i, m, &mut msgs)?;
    }
    let tools = match r.tools {
        None => None,
        Some(ts) => Some(
            ts.iter()
                .enumerate()
                .map(|(i, t)| {
                    let name = t
                        .get("name")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ApiError::bad(&format!("tools[{i}].name"), "every tool needs a name"))?;
                    Ok(json!({"type": "function", "function": {
                        "name": name,
                        "description": t.get("description").cloned().unwrap_or(json!("")),
                        "parameters": t.get("input_schema").cloned().unwrap_or(json!({"type": "object"})),
                    }}))
                })
                .collect::<ApiResult<Vec<Value>>>()?,
        ),
    };
    let tool_choice = match r.tool_choice.as_ref().map(|c| (c.get("type").and_then(Value::as_str), c.get("name"))) {
        None => None,
        Some((Some("auto"), _)) => Some(json!("auto")),
        Some((Some("any"), _)) => Some(json!("required")),
        Some((Some("none"), _)) => Some(json!("none")),
        Some((Some("tool"), Some(name))) => Some(json!({"type": "function", "function": {"name": name}})),
        Some(_) => {
            return Err(ApiError::bad("tool_choice", "tool_choice.type must be auto, any, tool (with name) or none"))
        }
    };
    let mut kwargs = serde_json::Map::new();
    let mut budget = None;
    match r.thinking.as_ref().and_then(|t| t.get("type")).and_then(Value::as_str) {
        None => {}
        Some("enabled") | Some("adaptive") => {
            kwargs.insert("enable_thinking".into(), Value::Bool(true));
            budget = r.thinking.as_ref().and_then(|t| t.get("budget_tokens")).cloned();
        }
        Some("disabled") => {
            kwargs.insert("enable_thinking".into(), Value::Bool(false));
        }
        Some(t) => return Err(ApiError::bad("thinking.type", format!("unknown thinking type {t:?}"))),
    }
    let mut body = json!({
        "model": r.model,
        "messages": msgs,
        "stream": r.stream,
        "temperature": r.temperature.unwrap_or(DEFAULT_TEMPERATURE),
    });
    let o = body.as_object_mut().expect("an object");
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            o.insert(k.into(), v);
        }
    };
    set("max_tokens", r.max_tokens.map(Value::from));
    set("top_p", r.top_p.map(Value::from));
    set("top_k", r.top_k.map(Value::from));
    set("stop", r.stop_sequences.map(Value::from));
    set("tools", tools.map(Value::Array));
    set("tool_choice", tool_choice);
    set("grammar", r.grammar.map(Value::from));
    set("reasoning_budget", budget);
    set("chat_template_kwargs", (!kwargs.is_empty()).then_some(Value::Object(kwargs)));
    let req = serde_json::from_value(body).map_err(|e| ApiError::bad("messages", e.to_string()))?;
    Ok((req, r.stream))
}

/// Anthropic's error type for a status.
fn error_kind(status: axum::http::StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Anthropic's error body (`{"type": "error", "error": {...}}`) for an error.
fn error_body(e: &ApiError) -> AEvent {
    AEvent::Error { error: ErrorBody { kind: error_kind(e.status).into(), message: e.message.clone() } }
}

/// Anthropic's error answer for the same status.
fn error_response(e: ApiError) -> Response {
    if e.status.is_server_error() {
        log::error!("{}: {}", e.status, e.message);
    }
    (e.status, Json(error_body(&e))).into_response()
}

/// `POST /v1/messages`.
pub async fn messages(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    match answer(st, body).await {
        Ok(r) => r,
        Err(e) => error_response(e),
    }
}

async fn answer(st: Arc<AppState>, body: Bytes) -> ApiResult<Response> {
    let r: MessagesRequest = parse(&body)?;
    let served = st.model(Some(&r.model)).await?;
    let l: &Loaded = &served;
    if r.max_tokens.is_none() {
        return Err(ApiError::bad("max_tokens", "max_tokens is required"));
    }
    let model = r.model.clone();
    let (req, stream) = to_chat_request(r)?;
    let cj = llama_protocol::job::chat_job(&serve::target(&st, l), req)?;
    let mut streams = serve::submit(l, &cj.job)?;
    let s = streams.remove(0);
    let id = format!("msg_{:016x}", serve::rand_id());
    if !stream {
        let c = serve::collect(s, serve::timeout(&st)).await?;
        let finish = c.finish();
        let choice = answer::chat_choice(&cj, 0, &c.text, &[], finish, &l.model);
        let (content, tool_use) = content_blocks(&choice, serve::rand_id());
        let mut m = Answer::new(id, model, content);
        m.stop_reason = Some(stop_reason(finish, &c.stop_word, tool_use).into());
        m.stop_sequence = c.stop_word.clone();
        m.usage = MessageUsage::from(&c.usage);
        return Ok(Json(m).into_response());
    }
    let timeout = serve::timeout(&st);
    let events = serve::async_stream(move |tx| async move {
        let send = |e: AEvent| tx(serve::value(e));
        send(AEvent::MessageStart { message: Answer::new(id, model, Vec::new()) });
        // The protocol layer's reader: thinking, text (held back only where it may start
        // a call), each call's name then its arguments piece by piece.
        let mut choice = ChatChoiceStream::new(&cj, 0);
        let mut blocks = BlockStream::new();
        let mut all = Box::pin(serve::merged(vec![s], timeout));
        while let Some((_, ev)) = all.next().await {
            match ev {
                Err(e) => {
                    send(error_body(&e.into()));
                    return;
                }
                Ok(Event::Piece(p)) => {
                    for d in choice.piece(&p.text, &[], &served.model) {
                        blocks.delta(d, serve::rand_id()).into_iter().for_each(&send);
                    }
                }
                Ok(Event::Done { finish_reason, usage, stop_word, .. }) => {
                    for d in choice.done(finish_reason) {
                        blocks.delta(d, serve::rand_id()).into_iter().for_each(&send);
                    }
                    blocks.finish(finish_reason, stop_word, &usage).into_iter().for_each(&send);
                    return;
                }
            }
        }
        send(error_body(&ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, "generation timed out")));
    });
    let sse = events.map(|v| {
        let name = v.get("type").and_then(Value::as_str).unwrap_or("message").to_string();
        Ok::<_, Infallible>(SseEvent::default().event(name).data(v.to_string()))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as `/v1/messages` would render it.
pub async fn count_tokens(State(st): State<Arc<AppState>>, body: Bytes) -> Response {
    let run = async {
        let mut r: MessagesRequest = parse(&body)?;
        let served = st.model(Some(&r.model)).await?;
        let l: &Loaded = &served;
        r.max_tokens = Some(1);
        r.stream = false;
        let (req, _) = to_chat_request(r)?;
        let cj = llama_protocol::job::chat_job(&serve::target(&st, l), req)?;
        let n = match &cj.job.prompt {
            Prompt::Text(t) => l.model.vocab().tokenize(t, false, true)?.len(),
            Prompt::Tokens(t) => t.len(),
            // Media count as the positions they take.
            Prompt::Media { text, media } => l.engine.media_prompt_len(text, media)?,
        };
        Ok::<_, ApiError>(Json(llama_protocol::anthropic::TokenCount { input_tokens: n }).into_response())
    };
    run.await.unwrap_or_else(error_response)
}
