//! OpenAI's request bodies (with llama-server's extensions): what clients send.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A string or a list of strings (`stop`, `input`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Many.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// The fields chat and text completions share (OpenAI's and llama-server's).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// The model asked for (with one served model, any name answers; see the server).
    pub model: Option<String>,
    /// Most tokens to generate (also `max_completion_tokens`, llama-server's `n_predict`);
    /// -1: until the context ends.
    pub max_tokens: Option<i64>,
    /// OpenAI's newer name for `max_tokens`.
    pub max_completion_tokens: Option<i64>,
    /// llama-server's name for `max_tokens`.
    pub n_predict: Option<i64>,
    /// Sampling temperature (0: greedy).
    pub temperature: Option<f32>,
    /// Nucleus sampling.
    pub top_p: Option<f32>,
    /// Top-k sampling (0: off).
    pub top_k: Option<i32>,
    /// Min-p sampling.
    pub min_p: Option<f32>,
    /// Locally typical sampling.
    pub typical_p: Option<f32>,
    /// Repetition penalty (1: off).
    pub repeat_penalty: Option<f32>,
    /// Tokens the penalties look back over.
    pub repeat_last_n: Option<i32>,
    /// OpenAI's presence penalty.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty.
    pub frequency_penalty: Option<f32>,
    /// Seed (64-bit, folded onto llama.cpp's 32 bits).
    pub seed: Option<i64>,
    /// Stop strings (at most 16).
    pub stop: Option<OneOrMany>,
    /// Token id (as a string) → bias.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Choices.
    pub n: Option<usize>,
    /// Server-sent events.
    pub stream: bool,
    /// `include_usage`.
    pub stream_options: Option<StreamOptions>,
    /// A GBNF grammar (llama-server).
    pub grammar: Option<String>,
    /// A JSON schema the output follows (llama-server).
    pub json_schema: Option<Value>,
    /// OpenAI's `{"type": "text" | "json_object" | "json_schema", ...}`.
    pub response_format: Option<Value>,
    /// Whitespace structured output may use between JSON tokens: `"compact"` (the
    /// default: at most one space, so small models cannot spend the answer on
    /// indentation) or `"free"` (newlines and up to 20 spaces or tabs of indentation).
    pub json_whitespace: Option<String>,
    /// Keep generating past end-of-generation tokens.
    pub ignore_eos: bool,
    /// Mirostat (0, 1 or 2).
    pub mirostat: Option<u8>,
    /// Mirostat's target surprise.
    pub mirostat_tau: Option<f32>,
    /// Mirostat's learning rate.
    pub mirostat_eta: Option<f32>,
}

/// `stream_options`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    /// Send a last chunk with the usage.
    pub include_usage: bool,
}

/// `/v1/chat/completions` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The conversation.
    pub messages: Vec<WireMessage>,
    /// OpenAI's tools (`{"type": "function", "function": {...}}`).
    #[serde(default)]
    pub tools: Option<Vec<Value>>,
    /// `"auto"`, `"none"`, `"required"` or `{"type": "function", "function": {"name"}}`.
    #[serde(default)]
    pub tool_choice: Option<Value>,
    /// Log-probabilities of the chosen tokens.
    #[serde(default)]
    pub logprobs: bool,
    /// How many alternatives per token (0..=20; needs `logprobs`).
    #[serde(default)]
    pub top_logprobs: Option<usize>,
    /// Extra variables for the chat template (`enable_thinking`, ...).
    #[serde(default)]
    pub chat_template_kwargs: Option<serde_json::Map<String, Value>>,
    /// Thinking tokens for this request (as `--reasoning-budget`: -1 no limit, 0 none).
    #[serde(default)]
    pub reasoning_budget: Option<i64>,
    /// The sampling and output fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// A message as clients send it: content as a string, a list of parts, or null.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireMessage {
    /// `system`, `user`, `assistant`, `tool`, ...
    pub role: String,
    /// A string, a list of `{"type": "text", "text"}` parts, or null.
    #[serde(default)]
    pub content: Option<Value>,
    /// An assistant's earlier calls.
    #[serde(default)]
    pub tool_calls: Option<Vec<llama_rs::ToolCall>>,
    /// The call a `tool` message answers.
    #[serde(default)]
    pub tool_call_id: Option<String>,
    /// A name (of the tool, or of the speaker).
    #[serde(default)]
    pub name: Option<String>,
    /// Base64-encoded images (Ollama's field), read before the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
}

/// `/v1/completions` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRequest {
    /// A string, token ids, or a list of either.
    pub prompt: Value,
    /// Put the prompt before the answer.
    #[serde(default)]
    pub echo: bool,
    /// Alternatives per token (0..=20).
    #[serde(default)]
    pub logprobs: Option<usize>,
    /// Fill-in-the-middle suffix (not supported yet).
    #[serde(default)]
    pub suffix: Option<String>,
    /// The sampling and output fields.
    #[serde(flatten)]
    pub sampling: Sampling,
}

/// `/v1/embeddings` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    /// A string, a list of strings, or token ids.
    pub input: Value,
    /// The model asked for.
    #[serde(default)]
    pub model: Option<String>,
    /// `float` (default) or `base64`.
    #[serde(default)]
    pub encoding_format: Option<String>,
}
