//! OpenAI's Responses API (`POST /v1/responses`) on the protocol layer: the request is
//! translated into the chat request every other format uses (`ResponsesRequest::to_chat`),
//! its answer read by the same choice reader, and written as Responses' output items
//! and typed stream events.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ProtocolError, Result};
use crate::openai::{ChatChoice, ChatRequest, ChunkChoice, Sampling, WireMessage};

/// `POST /v1/responses` body (the fields we read; others are accepted and ignored).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponsesRequest {
    /// The model asked for.
    pub model: Option<String>,
    /// A string (one user message) or a list of items.
    pub input: Value,
    /// A system message before the input.
    pub instructions: Option<String>,
    /// Function tools (`{"type": "function", "name", "description", "parameters"}`).
    pub tools: Option<Vec<Value>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "name"}`.
    pub tool_choice: Option<Value>,
    /// Most tokens to generate.
    pub max_output_tokens: Option<i64>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Server-sent events.
    pub stream: bool,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", "schema", ...}}`.
    pub text: Option<Value>,
    /// `{"effort": "minimal" | "low" | "medium" | "high"}`: "minimal" (or "none") turns
    /// thinking off; the others leave it to the model.
    pub reasoning: Option<Value>,
    /// Continue the conversation of an earlier response (within the server's lifetime).
    pub previous_response_id: Option<String>,
    /// Keep the response for `previous_response_id` (default true).
    pub store: Option<bool>,
    /// Caller's key-value pairs, echoed back.
    pub metadata: Option<Value>,
    /// Seed (an extension, as on chat completions).
    pub seed: Option<i64>,
}

fn role_message(role: &str, content: Value) -> WireMessage {
    WireMessage { role: role.into(), content: Some(content), ..Default::default() }
}

impl ResponsesRequest {
    /// The conversation of the input items (after `history`, the stored conversation of
    /// `previous_response_id`), without the instructions.
    pub fn input_messages(&self) -> Result<Vec<WireMessage>> {
        let mut out: Vec<WireMessage> = Vec::new();
        let items = match &self.input {
            Value::String(s) => return Ok(vec![role_message("user", json!(s))]),
            Value::Array(items) => items,
            Value::Null => return Err(ProtocolError::invalid("input", "input is required")),
            _ => return Err(ProtocolError::invalid("input", "input must be a string or a list of items")),
        };
        for (i, item) in items.iter().enumerate() {
            let at = format!("input[{i}]");
            let kind = item.get("type").and_then(Value::as_str).unwrap_or("message");
            match kind {
                "message" => {
                    let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
                    let role = if role == "developer" { "system" } else { role };
                    let content = crate::job::text_content(
                        item.get("content").unwrap_or(&Value::Null),
                        &format!("{at}.content"),
                    )?;
                    out.push(role_message(role, json!(content)));
                }
                "function_call" => {
                    let name = item.get("name").and_then(Value::as_str);
                    let args = item.get("arguments").and_then(Value::as_str).unwrap_or("{}");
                    let Some(name) = name else {
                        return Err(ProtocolError::invalid(&at, "function_call needs a name"));
                    };
                    let call = llama_rs::ToolCall {
                        id: item.get("call_id").and_then(Value::as_str).map(str::to_string),
                        kind: "function".into(),
                        function: llama_rs::FunctionCall {
                            name: name.into(),
                            arguments: serde_json::from_str(args).unwrap_or_else(|_| Value::String(args.into())),
                        },
                    };
                    // Consecutive calls are one assistant turn.
                    match out.last_mut() {
                        Some(m) if m.role == "assistant" && m.tool_calls.is_some() => {
                            m.tool_calls.get_or_insert_with(Vec::new).push(call)
                        }
                        _ => out.push(WireMessage {
                            role: "assistant".into(),
                            content: None,
                            tool_calls: Some(vec![call]),
                            ..Default::default()
                        }),
                    }
                }
                "function_call_output" => {
                    let output = match item.get("output") {
                        Some(Value::String(s)) => s.clone(),
                        Some(v) => crate::job::text_content(v, &format!("{at}.output"))?,
                        None => String::new(),
                    };
                    out.push(WireMessage {
                        role: "tool".into(),
                        content: Some(json!(output)),
                        tool_call_id: item.get("call_id").and_then(Value::as_str).map(str::to_string),
                        ..Default::default()
                    });
                }
                // Earlier thinking: templates drop past reasoning too.
                "reasoning" => {}
                t => {
                    return Err(ProtocolError::invalid(
                        &format!("{at}.type"),
                        format!("input item type {t:?} is not supported"),
                    ))
                }
            }
        }
        Ok(out)
    }

    /// The chat request of this request: `history` (the stored conversation of
    /// `previous_response_id`) then the input, after the instructions.
    pub fn to_chat(&self, history: Vec<WireMessage>) -> Result<ChatRequest> {
        let mut messages = Vec::new();
        if let Some(sys) = &self.instructions {
            messages.push(role_message("system", json!(sys)));
        }
        messages.extend(history);
        messages.extend(self.input_messages()?);
        let tools = match &self.tools {
            None => None,
            Some(ts) => Some(
                ts.iter()
                    .enumerate()
                    .map(|(i, t)| match t.get("type").and_then(Value::as_str) {
                        Some("function") => {
                            let mut f = t.clone();
                            if let Some(o) = f.as_object_mut() {
                                o.remove("type");
                                o.remove("strict");
                            }
                            Ok(json!({"type": "function", "function": f}))
                        }
                        other => Err(ProtocolError {
                            kind: llama_rs::ErrorKind::Unsupported,
                            ..ProtocolError::invalid(
                                &format!("tools[{i}].type"),
                                format!("tool type {other:?} is not supported (function tools only)"),
                            )
                        }),
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        let response_format = match self.text.as_ref().and_then(|t| t.get("format")) {
            None => None,
            Some(f) => match f.get("type").and_then(Value::as_str) {
                None | Some("text") => None,
                Some("json_object") => Some(json!({"type": "json_object"})),
                Some("json_schema") => {
                    let schema = f
                        .get("schema")
                        .ok_or_else(|| ProtocolError::invalid("text.format.schema", "json_schema needs a schema"))?;
                    Some(json!({"type": "json_schema", "json_schema": {"schema": schema}}))
                }
                Some(t) => return Err(ProtocolError::invalid("text.format.type", format!("unknown format {t:?}"))),
            },
        };
        let reasoning_budget = match self.reasoning.as_ref().and_then(|r| r.get("effort")).and_then(Value::as_str) {
            Some("none" | "minimal") => Some(0),
            Some(_) => Some(-1),
            None => None,
        };
        Ok(ChatRequest {
            messages,
            tools,
            tool_choice: self.tool_choice.clone(),
            reasoning_budget,
            sampling: Sampling {
                model: self.model.clone(),
                max_tokens: self.max_output_tokens,
                temperature: self.temperature,
                top_p: self.top_p,
                seed: self.seed,
                response_format,
                stream: self.stream,
                ..Default::default()
            },
            ..Default::default()
        })
    }
}

/// A part of a message's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputText {
    /// `"output_text"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: String,
    /// Always empty.
    pub annotations: Vec<Value>,
}

/// A part of a reasoning item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningText {
    /// `"reasoning_text"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The thinking.
    pub text: String,
}

/// One output item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    /// The model's thinking.
    Reasoning {
        /// `rs_...`.
        id: String,
        /// Always empty (no summaries).
        summary: Vec<Value>,
        /// The thinking text.
        content: Vec<ReasoningText>,
    },
    /// An assistant message.
    Message {
        /// `msg_...`.
        id: String,
        /// `in_progress` or `completed`.
        status: String,
        /// `"assistant"`.
        role: String,
        /// Its text parts.
        content: Vec<OutputText>,
    },
    /// A call of a function tool.
    FunctionCall {
        /// `fc_...`.
        id: String,
        /// The id the function's output refers to.
        call_id: String,
        /// The function.
        name: String,
        /// Its arguments (JSON text).
        arguments: String,
        /// `in_progress` or `completed`.
        status: String,
    },
}

/// `usage` of a response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResponseUsage {
    /// Prompt tokens.
    pub input_tokens: usize,
    /// `{"cached_tokens"}`.
    pub input_tokens_details: Value,
    /// Generated tokens.
    pub output_tokens: usize,
    /// `{"reasoning_tokens"}` (not counted separately: 0).
    pub output_tokens_details: Value,
    /// The sum.
    pub total_tokens: usize,
}

impl From<&llama_rs::Usage> for ResponseUsage {
    fn from(u: &llama_rs::Usage) -> ResponseUsage {
        ResponseUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: json!({"cached_tokens": u.cached_tokens}),
            output_tokens: u.completion_tokens,
            output_tokens_details: json!({"reasoning_tokens": 0}),
            total_tokens: u.prompt_tokens + u.completion_tokens,
        }
    }
}

/// The `response` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// `resp_...`.
    pub id: String,
    /// `"response"`.
    pub object: String,
    /// Unix seconds.
    pub created_at: u64,
    /// `in_progress`, `completed`, `incomplete` or `failed`.
    pub status: String,
    /// `{"reason": "max_output_tokens"}` when incomplete.
    pub incomplete_details: Option<Value>,
    /// Set when failed.
    pub error: Option<Value>,
    /// The served model's name.
    pub model: String,
    /// The output items.
    pub output: Vec<OutputItem>,
    /// Echoed from the request.
    pub instructions: Option<String>,
    /// Echoed from the request.
    pub max_output_tokens: Option<i64>,
    /// Echoed from the request.
    pub previous_response_id: Option<String>,
    /// Echoed from the request.
    pub temperature: Option<f32>,
    /// Echoed from the request.
    pub top_p: Option<f32>,
    /// Echoed from the request (`"auto"` when absent).
    pub tool_choice: Value,
    /// Echoed from the request.
    pub tools: Vec<Value>,
    /// Echoed from the request.
    pub text: Value,
    /// Echoed from the request.
    pub reasoning: Value,
    /// Echoed from the request.
    pub metadata: Value,
    /// Calls may come several at once.
    pub parallel_tool_calls: bool,
    /// Whether it is kept for `previous_response_id`.
    pub store: bool,
    /// Always `"disabled"`.
    pub truncation: String,
    /// When done.
    pub usage: Option<ResponseUsage>,
}

impl Response {
    /// A response to `req` with no output yet (`in_progress`).
    pub fn new(id: String, created_at: u64, model: String, req: &ResponsesRequest) -> Response {
        Response {
            id,
            object: "response".into(),
            created_at,
            status: "in_progress".into(),
            incomplete_details: None,
            error: None,
            model,
            output: Vec::new(),
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            previous_response_id: req.previous_response_id.clone(),
            temperature: req.temperature,
            top_p: req.top_p,
            tool_choice: req.tool_choice.clone().unwrap_or(json!("auto")),
            tools: req.tools.clone().unwrap_or_default(),
            text: req.text.clone().unwrap_or(json!({"format": {"type": "text"}})),
            reasoning: req.reasoning.clone().unwrap_or(json!({})),
            metadata: req.metadata.clone().unwrap_or(json!({})),
            parallel_tool_calls: true,
            store: req.store.unwrap_or(true),
            truncation: "disabled".into(),
            usage: None,
        }
    }

    /// Ends the response: `completed`, or `incomplete` when the token limit cut it.
    pub fn finish(&mut self, finish: llama_rs::FinishReason, usage: &llama_rs::Usage) {
        self.status = if finish == llama_rs::FinishReason::Length { "incomplete" } else { "completed" }.into();
        if finish == llama_rs::FinishReason::Length {
            self.incomplete_details = Some(json!({"reason": "max_output_tokens"}));
        }
        self.usage = Some(ResponseUsage::from(usage));
    }

    /// The output of a finished chat choice (thinking, text, calls).
    pub fn set_output(&mut self, choice: &ChatChoice) {
        let m = &choice.message;
        let mut out = Vec::new();
        if let Some(t) = m.reasoning_content.as_ref().filter(|t| !t.is_empty()) {
            out.push(reasoning_item(&self.id, 0, t.clone()));
        }
        let text = m.content.clone().unwrap_or_default();
        if !text.is_empty() || m.tool_calls.is_empty() {
            out.push(message_item(&self.id, out.len(), text, "completed"));
        }
        for c in &m.tool_calls {
            out.push(OutputItem::FunctionCall {
                id: format!("fc_{}_{}", self.id.trim_start_matches("resp_"), out.len()),
                call_id: c.id.clone().unwrap_or_default(),
                name: c.function.name.clone().unwrap_or_default(),
                arguments: c.function.arguments.clone(),
                status: "completed".into(),
            });
        }
        self.output = out;
    }

    /// The conversation to store for `previous_response_id`: the request's messages then
    /// this answer as an assistant turn.
    pub fn conversation(&self, mut messages: Vec<WireMessage>) -> Vec<WireMessage> {
        let mut text = String::new();
        let mut calls = Vec::new();
        for item in &self.output {
            match item {
                OutputItem::Message { content, .. } => content.iter().for_each(|c| text += &c.text),
                OutputItem::FunctionCall { call_id, name, arguments, .. } => calls.push(llama_rs::ToolCall {
                    id: Some(call_id.clone()),
                    kind: "function".into(),
                    function: llama_rs::FunctionCall {
                        name: name.clone(),
                        arguments: serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.clone())),
                    },
                }),
                OutputItem::Reasoning { .. } => {}
            }
        }
        messages.push(WireMessage {
            role: "assistant".into(),
            content: Some(json!(text)),
            tool_calls: (!calls.is_empty()).then_some(calls),
            ..Default::default()
        });
        messages
    }
}

fn reasoning_item(resp_id: &str, index: usize, text: String) -> OutputItem {
    OutputItem::Reasoning {
        id: format!("rs_{}_{index}", resp_id.trim_start_matches("resp_")),
        summary: Vec::new(),
        content: vec![ReasoningText { kind: "reasoning_text".into(), text }],
    }
}

fn message_item(resp_id: &str, index: usize, text: String, status: &str) -> OutputItem {
    OutputItem::Message {
        id: format!("msg_{}_{index}", resp_id.trim_start_matches("resp_")),
        status: status.into(),
        role: "assistant".into(),
        content: vec![OutputText { kind: "output_text".into(), text, annotations: Vec::new() }],
    }
}

/// Responses' stream: chat deltas in, typed events out (`{"type": ..., "sequence_number"}`
/// plus the event's fields), each output item opened, streamed and closed in order.
#[derive(Debug)]
pub struct ResponseStream {
    /// The response being built (`output` holds the closed items).
    pub response: Response,
    seq: u64,
    /// The open item: (kind, id, text so far, call id, call name).
    open: Option<(Open, String, String, String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Reasoning,
    Message,
    Call,
}

impl ResponseStream {
    /// The stream of `response` (fresh from [`Response::new`]).
    pub fn new(response: Response) -> ResponseStream {
        ResponseStream { response, seq: 0, open: None }
    }

    fn event(&mut self, kind: &str, mut fields: Value) -> Value {
        fields["type"] = json!(kind);
        fields["sequence_number"] = json!(self.seq);
        self.seq += 1;
        fields
    }

    /// `response.created` and `response.in_progress`.
    pub fn start(&mut self) -> Vec<Value> {
        let r = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        vec![
            self.event("response.created", json!({"response": r})),
            self.event("response.in_progress", json!({"response": r})),
        ]
    }

    fn index(&self) -> usize {
        self.response.output.len()
    }

    fn close(&mut self, out: &mut Vec<Value>) {
        let Some((kind, id, text, call_id, name)) = self.open.take() else { return };
        let i = self.index();
        let item = match kind {
            Open::Reasoning => {
                let e = self.event(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "text": text}),
                );
                out.push(e);
                reasoning_item(&self.response.id, i, text)
            }
            Open::Message => {
                let part = json!({"type": "output_text", "text": text, "annotations": []});
                let e = self.event(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
                );
                out.push(e);
                let e = self.event(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}),
                );
                out.push(e);
                message_item(&self.response.id, i, text, "completed")
            }
            Open::Call => {
                let e = self.event(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": i, "name": name, "arguments": text}),
                );
                out.push(e);
                OutputItem::FunctionCall { id, call_id, name, arguments: text, status: "completed".into() }
            }
        };
        let e = self.event("response.output_item.done", json!({"output_index": i, "item": item}));
        out.push(e);
        self.response.output.push(item);
    }

    fn ensure(&mut self, kind: Open, out: &mut Vec<Value>) {
        if self.open.as_ref().is_some_and(|o| o.0 == kind) {
            return;
        }
        self.close(out);
        let i = self.index();
        let rid = self.response.id.trim_start_matches("resp_").to_string();
        let (id, item) = match kind {
            Open::Reasoning => {
                let id = format!("rs_{rid}_{i}");
                (id.clone(), json!({"type": "reasoning", "id": id, "summary": [], "content": []}))
            }
            _ => {
                let id = format!("msg_{rid}_{i}");
                (
                    id.clone(),
                    json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []}),
                )
            }
        };
        let e = self.event("response.output_item.added", json!({"output_index": i, "item": item}));
        out.push(e);
        if kind == Open::Message {
            let part = json!({"type": "output_text", "text": "", "annotations": []});
            let e = self.event(
                "response.content_part.added",
                json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}),
            );
            out.push(e);
        }
        self.open = Some((kind, id, String::new(), String::new(), String::new()));
    }

    /// The events of one chat delta (from [`crate::answer::ChatChoiceStream`]).
    pub fn delta(&mut self, d: ChunkChoice) -> Vec<Value> {
        let mut out = Vec::new();
        if let Some(t) = d.delta.reasoning_content.filter(|t| !t.is_empty()) {
            self.ensure(Open::Reasoning, &mut out);
            let (id, i) = (self.open.as_ref().map(|o| o.1.clone()).unwrap_or_default(), self.index());
            if let Some(o) = self.open.as_mut() {
                o.2 += &t;
            }
            let e = self.event(
                "response.reasoning_text.delta",
                json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t}),
            );
            out.push(e);
        }
        if let Some(t) = d.delta.content.filter(|t| !t.is_empty()) {
            self.ensure(Open::Message, &mut out);
            let (id, i) = (self.open.as_ref().map(|o| o.1.clone()).unwrap_or_default(), self.index());
            if let Some(o) = self.open.as_mut() {
                o.2 += &t;
            }
            let e = self.event(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": i, "content_index": 0, "delta": t, "logprobs": []}),
            );
            out.push(e);
        }
        for c in d.delta.tool_calls.unwrap_or_default() {
            if let Some(name) = c.function.name {
                self.close(&mut out);
                let i = self.index();
                let id = format!("fc_{}_{i}", self.response.id.trim_start_matches("resp_"));
                let call_id = c.id.unwrap_or_default();
                let item = OutputItem::FunctionCall {
                    id: id.clone(),
                    call_id: call_id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                    status: "in_progress".into(),
                };
                let e = self.event("response.output_item.added", json!({"output_index": i, "item": item}));
                out.push(e);
                self.open = Some((Open::Call, id, String::new(), call_id, name));
            }
            if !c.function.arguments.is_empty() {
                let (id, i) = (self.open.as_ref().map(|o| o.1.clone()).unwrap_or_default(), self.index());
                if let Some(o) = self.open.as_mut() {
                    o.2 += &c.function.arguments;
                }
                let e = self.event(
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": i, "delta": c.function.arguments}),
                );
                out.push(e);
            }
        }
        out
    }

    /// `response.failed` with the error (the stream ends after it).
    pub fn fail(&mut self, code: &str, message: &str) -> Value {
        self.response.status = "failed".into();
        self.response.error = Some(json!({"code": code, "message": message}));
        let r = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        self.event("response.failed", json!({"response": r}))
    }

    /// The last events: open items closed, then `response.completed` (or
    /// `response.incomplete` when the token limit cut it).
    pub fn finish(&mut self, finish: llama_rs::FinishReason, usage: &llama_rs::Usage) -> Vec<Value> {
        let mut out = Vec::new();
        self.close(&mut out);
        if self.response.output.is_empty() {
            // An empty answer is still a message.
            self.ensure(Open::Message, &mut out);
            self.close(&mut out);
        }
        self.response.finish(finish, usage);
        let kind = if self.response.status == "incomplete" { "response.incomplete" } else { "response.completed" };
        let r = serde_json::to_value(&self.response).unwrap_or(Value::Null);
        let e = self.event(kind, json!({"response": r}));
        out.push(e);
        out
    }
}
