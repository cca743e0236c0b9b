//! Engine events → response bodies: a finished choice, or a choice's stream of deltas
//! (thinking split off, tool calls streamed as OpenAI streams them). The server's wire
//! formats and Python's `create_chat_completion` read answers through these.

use llama_rs::{FinishReason, Model, ReasoningSplitter, ToolCallStream, ToolEvent, Vocab};

use crate::job::ChatJob;
use crate::openai::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatLogprobs, ChunkChoice, CompletionLogprobs, Delta,
    FunctionCall, TokenLogprob, ToolCall, Usage,
};

/// What every response of one request shares.
#[derive(Debug, Clone)]
pub struct Meta {
    /// `chatcmpl-...`, `cmpl-...`, `resp_...`.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
}

impl Meta {
    /// A chat completion of these choices.
    pub fn chat_completion(
        &self,
        choices: Vec<ChatChoice>,
        usage: &llama_rs::Usage,
        timings: Option<crate::openai::Timings>,
    ) -> ChatCompletion {
        ChatCompletion {
            id: self.id.clone(),
            object: "chat.completion".into(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage: Usage::from(usage),
            timings,
            system_fingerprint: system_fingerprint(),
        }
    }

    /// A chunk of a streamed chat completion.
    pub fn chat_chunk(&self, choices: Vec<ChunkChoice>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".into(),
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: system_fingerprint(),
            choices,
            usage: None,
        }
    }

    /// The last chunk of a stream whose client asked for the usage.
    pub fn chat_usage_chunk(&self, usage: &llama_rs::Usage) -> ChatChunk {
        ChatChunk { usage: Some(Usage::from(usage)), ..self.chat_chunk(Vec::new()) }
    }
}

/// The value OpenAI clients show as the backend's build.
pub fn system_fingerprint() -> String {
    format!("llama-rs-{}-{}", env!("CARGO_PKG_VERSION"), llama_rs::LLAMA_CPP_COMMIT)
}

/// OpenAI's `finish_reason` of an engine finish.
pub fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

/// Adds `b` to `a` (the usage of several choices).
pub fn add_usage(a: &mut llama_rs::Usage, b: &llama_rs::Usage) {
    a.prompt_tokens += b.prompt_tokens;
    a.cached_tokens += b.cached_tokens;
    a.completion_tokens += b.completion_tokens;
    a.accepted_draft_tokens += b.accepted_draft_tokens;
    a.rejected_draft_tokens += b.rejected_draft_tokens;
}

fn token_entry(vocab: &Vocab<'_>, t: llama_rs::Token, logprob: f32) -> TokenLogprob {
    let mut bytes = Vec::new();
    let _ = vocab.token_to_piece_bytes(t, false, &mut bytes);
    TokenLogprob { token: String::from_utf8_lossy(&bytes).into_owned(), logprob, bytes, top_logprobs: None }
}

/// Chat `logprobs` of generated tokens.
pub fn chat_logprobs(model: &Model, lps: &[llama_rs::TokenLogprob]) -> ChatLogprobs {
    let vocab = &model.vocab();
    ChatLogprobs {
        content: lps
            .iter()
            .map(|lp| TokenLogprob {
                top_logprobs: Some(lp.top.iter().map(|&(t, p)| token_entry(vocab, t, p)).collect()),
                ..token_entry(vocab, lp.token, lp.logprob)
            })
            .collect(),
    }
}

/// Text completion `logprobs` of generated tokens whose text starts at byte `offset0`.
pub fn completion_logprobs(model: &Model, lps: &[llama_rs::TokenLogprob], offset0: usize) -> CompletionLogprobs {
    let vocab = model.vocab();
    let text = |t| vocab.token_to_piece(t, false).unwrap_or_default();
    let mut out = CompletionLogprobs::default();
    let mut offset = offset0;
    for lp in lps {
        let s = text(lp.token);
        out.text_offset.push(offset);
        offset += s.len();
        out.tokens.push(s);
        out.token_logprobs.push(lp.logprob);
        out.top_logprobs.push(lp.top.iter().map(|&(t, p)| (text(t), serde_json::json!(p))).collect());
    }
    out
}

/// An id for call `i` of choice `choice` (for a call the model gave none).
pub fn call_id(choice: usize, i: usize) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u32);
    format!("call_{choice}_{i}_{:08x}", now ^ ((i as u32) << 16))
}

/// A finished tool call as OpenAI sends it (arguments as a JSON string).
pub fn tool_call(i: usize, c: &llama_rs::ToolCall, choice: usize) -> ToolCall {
    ToolCall {
        index: i,
        id: Some(c.id.clone().unwrap_or_else(|| call_id(choice, i))),
        kind: Some("function".into()),
        function: FunctionCall { name: Some(c.function.name.clone()), arguments: c.function.arguments.to_string() },
    }
}

/// A finished chat choice from its whole text: thinking split off, tool calls parsed.
pub fn chat_choice(
    cj: &ChatJob,
    index: usize,
    text: &str,
    logprobs: &[llama_rs::TokenLogprob],
    finish: FinishReason,
    model: &Model,
) -> ChatChoice {
    let (thought, answer) =
        if cj.split_reasoning { ReasoningSplitter::split(text, cj.opened) } else { (None, text.to_string()) };
    let mut message = AssistantMessage {
        role: "assistant".into(),
        content: None,
        reasoning_content: thought,
        tool_calls: Vec::new(),
    };
    let mut finish = finish_str(finish);
    let (content, calls) = if cj.tools_on { llama_rs::parse_tool_calls(&answer) } else { (answer, Vec::new()) };
    if calls.is_empty() {
        message.content = Some(content);
    } else {
        message.content = (!content.is_empty()).then_some(content);
        message.tool_calls = calls.iter().enumerate().map(|(k, c)| tool_call(k, c, index)).collect();
        finish = "tool_calls";
    }
    ChatChoice {
        index,
        message,
        finish_reason: finish.into(),
        logprobs: cj.top.map(|_| chat_logprobs(model, logprobs)),
    }
}

/// One chat choice's stream: pieces in, OpenAI deltas out. Thinking goes to
/// `reasoning_content`; with tools, text streams as it comes, held back only where it
/// may start a call, and a call streams as its id and name, then its arguments piece by
/// piece (a call that does not parse is text).
#[derive(Debug)]
pub struct ChatChoiceStream {
    index: usize,
    tools_on: bool,
    split: bool,
    want_logprobs: bool,
    splitter: ReasoningSplitter,
    calls: ToolCallStream,
    n_calls: usize,
}

impl ChatChoiceStream {
    /// The stream of choice `index` of `cj`.
    pub fn new(cj: &ChatJob, index: usize) -> ChatChoiceStream {
        ChatChoiceStream {
            index,
            tools_on: cj.tools_on,
            split: cj.split_reasoning,
            want_logprobs: cj.top.is_some(),
            splitter: ReasoningSplitter::new(cj.opened),
            calls: ToolCallStream::new(),
            n_calls: 0,
        }
    }

    fn choice(&self, delta: Delta, finish: Option<&str>) -> ChunkChoice {
        ChunkChoice { index: self.index, delta, finish_reason: finish.map(str::to_string), logprobs: None }
    }

    /// The choice's first delta (the role).
    pub fn start(&self) -> ChunkChoice {
        self.choice(Delta { role: Some("assistant".into()), content: Some(String::new()), ..Delta::default() }, None)
    }

    /// The deltas of a generated piece.
    pub fn piece(&mut self, text: &str, logprobs: &[llama_rs::TokenLogprob], model: &Model) -> Vec<ChunkChoice> {
        let (thought, text) = if self.split { self.splitter.push(text) } else { (String::new(), text.to_string()) };
        let mut out = Vec::new();
        if !thought.is_empty() {
            out.push(self.choice(Delta { reasoning_content: Some(thought), ..Delta::default() }, None));
        }
        if self.tools_on {
            let ev = self.calls.push(&text);
            self.tool_events(ev, &mut out);
        } else if !text.is_empty() || !logprobs.is_empty() {
            let mut c = self.choice(Delta { content: Some(text), ..Delta::default() }, None);
            if self.want_logprobs {
                c.logprobs = Some(chat_logprobs(model, logprobs));
            }
            out.push(c);
        }
        out
    }

    /// The last deltas, ending with the finish reason (`tool_calls` when calls were made).
    pub fn done(&mut self, finish: FinishReason) -> Vec<ChunkChoice> {
        let (thought, text) = self.splitter.finish();
        let mut out = Vec::new();
        if !thought.is_empty() {
            out.push(self.choice(Delta { reasoning_content: Some(thought), ..Delta::default() }, None));
        }
        let mut finish = finish_str(finish);
        if self.tools_on {
            let mut ev = self.calls.push(&text);
            ev.extend(self.calls.finish());
            self.tool_events(ev, &mut out);
            if self.n_calls > 0 {
                finish = "tool_calls";
            }
        } else if !text.is_empty() {
            out.push(self.choice(Delta { content: Some(text), ..Delta::default() }, None));
        }
        out.push(self.choice(Delta::default(), Some(finish)));
        out
    }

    fn tool_events(&mut self, events: Vec<ToolEvent>, out: &mut Vec<ChunkChoice>) {
        for e in events {
            let delta = match e {
                ToolEvent::Content(c) => Delta { content: Some(c), ..Delta::default() },
                ToolEvent::Call(c) => {
                    self.n_calls += 1;
                    Delta { tool_calls: Some(vec![tool_call(self.n_calls - 1, &c, self.index)]), ..Delta::default() }
                }
                ToolEvent::CallStart { name } => {
                    self.n_calls += 1;
                    let k = self.n_calls - 1;
                    let call = ToolCall {
                        index: k,
                        id: Some(call_id(self.index, k)),
                        kind: Some("function".into()),
                        function: FunctionCall { name: Some(name), arguments: String::new() },
                    };
                    Delta { tool_calls: Some(vec![call]), ..Delta::default() }
                }
                ToolEvent::CallArgs(a) => {
                    let call = ToolCall {
                        index: self.n_calls - 1,
                        id: None,
                        kind: None,
                        function: FunctionCall { name: None, arguments: a },
                    };
                    Delta { tool_calls: Some(vec![call]), ..Delta::default() }
                }
                ToolEvent::CallEnd(_) => continue,
            };
            out.push(self.choice(delta, None));
        }
    }
}
