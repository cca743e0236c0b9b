//! Ollama's `/api/chat` and `/api/generate` answer objects, typed (one object, or one per
//! NDJSON line; the last has `done: true` and the statistics).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A call in Ollama's shape (arguments as an object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The function and its arguments.
    pub function: Function,
}

/// `tool_calls[].function`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// The function.
    pub name: String,
    /// Its arguments (an object; a string if they did not parse).
    pub arguments: Value,
}

impl ToolCall {
    /// A call from its name and its arguments' JSON text.
    pub fn new(name: String, arguments: &str) -> ToolCall {
        let arguments = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()));
        ToolCall { function: Function { name, arguments } }
    }
}

/// `/api/chat`'s `message`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `"assistant"`.
    pub role: String,
    /// The answer text (or the next piece of it).
    pub content: String,
    /// The thinking (or the next piece of it).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub thinking: String,
    /// The calls, whole.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tool_calls: Vec<ToolCall>,
}

/// The statistics of the last object (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// `stop` or `length`.
    pub done_reason: String,
    /// From submission to the end.
    pub total_duration: u64,
    /// Always 0 (the model is loaded).
    pub load_duration: u64,
    /// Prompt tokens.
    pub prompt_eval_count: usize,
    /// Time to the first token.
    pub prompt_eval_duration: u64,
    /// Generated tokens.
    pub eval_count: usize,
    /// Time after the first token.
    pub eval_duration: u64,
}

impl Stats {
    /// From the engine's finish, usage and timings.
    pub fn new(finish: llama_rs::FinishReason, u: &llama_rs::Usage, t: &llama_rs::Timings) -> Stats {
        let ns = |ms: f64| (ms * 1e6) as u64;
        Stats {
            done_reason: if finish == llama_rs::FinishReason::Length { "length" } else { "stop" }.into(),
            total_duration: ns(t.total_ms),
            load_duration: 0,
            prompt_eval_count: u.prompt_tokens,
            prompt_eval_duration: ns(t.ttft_ms),
            eval_count: u.completion_tokens,
            eval_duration: ns((t.total_ms - t.ttft_ms).max(0.0)),
        }
    }
}

/// One answer object of `/api/chat` (`message`) or `/api/generate` (`response`,
/// `thinking`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The model name the request gave.
    pub model: String,
    /// RFC 3339 UTC.
    pub created_at: String,
    /// Chat: the message (or its next piece).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub message: Option<Message>,
    /// Generate: the text (or its next piece).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub response: Option<String>,
    /// Generate: the thinking (or its next piece).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub thinking: Option<String>,
    /// The last object.
    pub done: bool,
    /// On the last object.
    #[serde(flatten, skip_serializing_if = "Option::is_none", default)]
    pub stats: Option<Stats>,
}

impl Answer {
    /// An object of a chat (`chat`) or generate answer with this text, thinking and calls
    /// (generate has none).
    pub fn new(
        chat: bool,
        model: &str,
        created_at: String,
        content: &str,
        thinking: &str,
        calls: Vec<ToolCall>,
    ) -> Answer {
        let (message, response, thinking) = if chat {
            let m = Message {
                role: "assistant".into(),
                content: content.into(),
                thinking: thinking.into(),
                tool_calls: calls,
            };
            (Some(m), None, None)
        } else {
            (None, Some(content.to_string()), (!thinking.is_empty()).then(|| thinking.to_string()))
        };
        Answer { model: model.into(), created_at, message, response, thinking, done: false, stats: None }
    }

    /// The same object as the last one, with its statistics.
    pub fn done(mut self, stats: Stats) -> Answer {
        self.done = true;
        self.stats = Some(stats);
        self
    }
}
