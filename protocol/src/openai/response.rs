//! OpenAI's response bodies and stream chunks (with llama-server's `timings`): what the
//! server sends and what Python's `create_chat_completion` returns, built from one set
//! of types.

use serde::{Deserialize, Serialize};

/// `usage`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens (cached ones included).
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
    /// `cached_tokens`.
    pub prompt_tokens_details: PromptDetails,
    /// Speculative decoding's accepted and rejected draft tokens.
    pub completion_tokens_details: CompletionDetails,
}

/// `usage.prompt_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PromptDetails {
    /// Prompt tokens reused from the cache.
    pub cached_tokens: usize,
}

/// `usage.completion_tokens_details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionDetails {
    /// Draft tokens the model accepted.
    pub accepted_prediction_tokens: usize,
    /// Draft tokens the model rejected.
    pub rejected_prediction_tokens: usize,
}

impl From<&llama_rs::Usage> for Usage {
    fn from(u: &llama_rs::Usage) -> Usage {
        Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            total_tokens: u.prompt_tokens + u.completion_tokens,
            prompt_tokens_details: PromptDetails { cached_tokens: u.cached_tokens },
            completion_tokens_details: CompletionDetails {
                accepted_prediction_tokens: u.accepted_draft_tokens,
                rejected_prediction_tokens: u.rejected_draft_tokens,
            },
        }
    }
}

/// llama-server's `timings` (of the first choice).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Prompt tokens evaluated (not cached).
    pub prompt_n: usize,
    /// Prompt tokens reused from the cache.
    pub cache_n: usize,
    /// Time to the first token.
    pub prompt_ms: f64,
    /// Generated tokens.
    pub predicted_n: usize,
    /// Time from the first token to the last.
    pub predicted_ms: f64,
    /// Generation speed after the first token.
    pub predicted_per_second: f64,
    /// Time waiting for a slot.
    pub queued_ms: f64,
}

impl Timings {
    /// From the engine's usage and timings.
    pub fn new(u: &llama_rs::Usage, t: &llama_rs::Timings) -> Timings {
        let gen_ms = (t.total_ms - t.ttft_ms).max(0.0);
        let n = u.completion_tokens;
        Timings {
            prompt_n: u.prompt_tokens - u.cached_tokens,
            cache_n: u.cached_tokens,
            prompt_ms: t.ttft_ms,
            predicted_n: n,
            predicted_ms: gen_ms,
            predicted_per_second: if gen_ms > 0.0 && n > 1 { (n - 1) as f64 * 1000.0 / gen_ms } else { 0.0 },
            queued_ms: t.queued_ms,
        }
    }
}

/// A function call as OpenAI sends it: arguments as a JSON string. In stream deltas the
/// first delta of a call has `id`, `type` and `name`; later ones only more `arguments`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call's position in the message.
    pub index: usize,
    /// Its id (given by the model or made up).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub id: Option<String>,
    /// `"function"`.
    #[serde(rename = "type", skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<String>,
    /// The function and its arguments.
    pub function: FunctionCall,
}

/// `tool_calls[].function`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub name: Option<String>,
    /// The arguments (JSON text), or the next part of them in a delta.
    pub arguments: String,
}

/// One token's log-probability in chat's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text (lossy UTF-8).
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position (not nested further).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub top_logprobs: Option<Vec<TokenLogprob>>,
}

/// Chat `logprobs`: `{"content": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// The assistant's answer in a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantMessage {
    /// `"assistant"`.
    pub role: String,
    /// The answer text; null when the answer is only tool calls.
    pub content: Option<String>,
    /// The thinking, when the model thought and `--reasoning-format` is not `none`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reasoning_content: Option<String>,
    /// The calls the model made.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tool_calls: Vec<ToolCall>,
}

/// One choice of a chat completion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    /// Its index.
    pub index: usize,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, `length`, `tool_calls` or `cancelled`.
    pub finish_reason: String,
    /// When asked for.
    pub logprobs: Option<ChatLogprobs>,
}

/// `chat.completion`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// `"chat.completion"`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Tokens of all choices.
    pub usage: Usage,
    /// llama-server's timings of the first choice.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timings: Option<Timings>,
    /// The backend's build.
    pub system_fingerprint: String,
}

/// A streamed change to a chat choice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    /// `"assistant"` in a choice's first chunk.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub role: Option<String>,
    /// More answer text.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content: Option<String>,
    /// More thinking.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reasoning_content: Option<String>,
    /// A call's start or more of its arguments.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// One choice's part of a chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    /// The choice.
    pub index: usize,
    /// What changed.
    pub delta: Delta,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<String>,
    /// The new tokens' log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    /// The completion's id (the same in every chunk).
    pub id: String,
    /// `"chat.completion.chunk"`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The backend's build.
    pub system_fingerprint: String,
    /// Changed choices (empty in the usage chunk).
    pub choices: Vec<ChunkChoice>,
    /// In the last chunk when `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Usage>,
}

/// Text completion `logprobs` (the legacy shape).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    /// The tokens' texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities.
    pub token_logprobs: Vec<f32>,
    /// Per token: text → log-probability of the most likely ones.
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Byte offsets of the tokens in the choice's text.
    pub text_offset: Vec<usize>,
}

/// One choice of a text completion (whole, or a chunk's part).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    /// Its index.
    pub index: usize,
    /// The text (or more of it).
    pub text: String,
    /// When asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// Set when the choice ended.
    pub finish_reason: Option<String>,
}

/// `text_completion` (a whole answer, or one chunk of a streamed one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// `"text_completion"`.
    pub object: String,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Whole answers, and the usage chunk.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub usage: Option<Usage>,
    /// Whole answers: llama-server's timings.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub timings: Option<Timings>,
    /// Whole answers: the backend's build.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub system_fingerprint: Option<String>,
}

/// One embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    /// `"embedding"`.
    pub object: String,
    /// The input's position.
    pub index: usize,
    /// Floats, or base64 of little-endian f32.
    pub embedding: serde_json::Value,
}

/// `/v1/embeddings` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    /// `"list"`.
    pub object: String,
    /// One per input.
    pub data: Vec<Embedding>,
    /// The served model's name.
    pub model: String,
    /// Input tokens.
    pub usage: EmbeddingUsage,
}

/// Embedding `usage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    /// Input tokens.
    pub prompt_tokens: usize,
    /// The same.
    pub total_tokens: usize,
}
