//! Anthropic's Messages API response shapes, typed: the finished message, its content
//! blocks, and the named stream events — and the reader that turns the shared chat
//! deltas ([`crate::answer::ChatChoiceStream`]) into those events.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::openai::{ChatChoice, ChunkChoice};

/// A content block of an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    /// Answer text.
    Text {
        /// The text.
        text: String,
    },
    /// The model's thinking.
    Thinking {
        /// The thinking.
        thinking: String,
        /// Always empty (nothing to sign).
        signature: String,
    },
    /// A tool call.
    ToolUse {
        /// `toolu_...`.
        id: String,
        /// The tool.
        name: String,
        /// Its input (an object).
        input: Value,
    },
}

/// `usage` of a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MessageUsage {
    /// Prompt tokens not read from the cache.
    pub input_tokens: usize,
    /// Prompt tokens read from the prefix cache.
    pub cache_read_input_tokens: usize,
    /// Always 0 (no cache writes are billed).
    pub cache_creation_input_tokens: usize,
    /// Generated tokens.
    pub output_tokens: usize,
}

impl From<&llama_rs::Usage> for MessageUsage {
    fn from(u: &llama_rs::Usage) -> MessageUsage {
        MessageUsage {
            input_tokens: u.prompt_tokens - u.cached_tokens,
            cache_read_input_tokens: u.cached_tokens,
            cache_creation_input_tokens: 0,
            output_tokens: u.completion_tokens,
        }
    }
}

/// A `message` (the whole answer, or the empty one of `message_start`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// `msg_...`.
    pub id: String,
    /// `"message"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"assistant"`.
    pub role: String,
    /// The model name the request gave.
    pub model: String,
    /// The blocks.
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`; null while streaming.
    pub stop_reason: Option<String>,
    /// The stop sequence that ended the answer.
    pub stop_sequence: Option<String>,
    /// Tokens.
    pub usage: MessageUsage,
}

impl Message {
    /// An answer with `content`.
    pub fn new(id: String, model: String, content: Vec<ContentBlock>) -> Message {
        Message {
            id,
            kind: "message".into(),
            role: "assistant".into(),
            model,
            content,
            stop_reason: None,
            stop_sequence: None,
            usage: MessageUsage::default(),
        }
    }
}

/// `/v1/messages/count_tokens` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCount {
    /// The prompt's tokens.
    pub input_tokens: usize,
}

/// A change to the open block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    /// More text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// More thinking.
    ThinkingDelta {
        /// The thinking.
        thinking: String,
    },
    /// More of a tool call's input (JSON text).
    InputJsonDelta {
        /// The piece.
        partial_json: String,
    },
}

/// `message_delta`'s `delta`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageDelta {
    /// Why the answer ended.
    pub stop_reason: String,
    /// The stop sequence that ended it.
    pub stop_sequence: Option<String>,
}

/// An error's body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `invalid_request_error`, `not_found_error`, `api_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// Human-readable message.
    pub message: String,
}

/// One named stream event (the SSE `event:` is its `type`), or an error answer
/// (`{"type": "error", "error": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The empty message.
    MessageStart {
        /// It.
        message: Message,
    },
    /// A block opens.
    ContentBlockStart {
        /// Its index.
        index: usize,
        /// Its empty form.
        content_block: ContentBlock,
    },
    /// More of the open block.
    ContentBlockDelta {
        /// Its index.
        index: usize,
        /// The change.
        delta: BlockDelta,
    },
    /// The block closes.
    ContentBlockStop {
        /// Its index.
        index: usize,
    },
    /// The answer's end: why, and the usage.
    MessageDelta {
        /// Why.
        delta: MessageDelta,
        /// Tokens.
        usage: MessageUsage,
    },
    /// The stream's end.
    MessageStop,
    /// A failure.
    Error {
        /// What failed.
        error: ErrorBody,
    },
}

impl Event {
    /// The SSE event name (the `type` tag).
    pub fn name(&self) -> &'static str {
        match self {
            Event::MessageStart { .. } => "message_start",
            Event::ContentBlockStart { .. } => "content_block_start",
            Event::ContentBlockDelta { .. } => "content_block_delta",
            Event::ContentBlockStop { .. } => "content_block_stop",
            Event::MessageDelta { .. } => "message_delta",
            Event::MessageStop => "message_stop",
            Event::Error { .. } => "error",
        }
    }
}

/// Anthropic's `stop_reason` of a finish.
pub fn stop_reason(finish: llama_rs::FinishReason, stop_word: &Option<String>, tool_use: bool) -> &'static str {
    match finish {
        _ if tool_use => "tool_use",
        llama_rs::FinishReason::Length => "max_tokens",
        llama_rs::FinishReason::Stop if stop_word.is_some() => "stop_sequence",
        _ => "end_turn",
    }
}

/// Anthropic's `toolu_` id for a call id (the model's own, or the protocol layer's).
pub fn tool_use_id(id: Option<&str>, fallback: u64) -> String {
    match id {
        Some(id) => format!("toolu_{}", id.trim_start_matches("call_")),
        None => format!("toolu_{fallback:016x}"),
    }
}

/// The content blocks of a finished chat choice: thinking, text, tool uses (input as an
/// object). The second value says whether there are tool uses.
pub fn content_blocks(choice: &ChatChoice, fallback_id: u64) -> (Vec<ContentBlock>, bool) {
    let m = &choice.message;
    let mut blocks = Vec::new();
    if let Some(t) = m.reasoning_content.as_ref().filter(|t| !t.is_empty()) {
        blocks.push(ContentBlock::Thinking { thinking: t.clone(), signature: String::new() });
    }
    let text = m.content.clone().unwrap_or_default();
    if !text.is_empty() || m.tool_calls.is_empty() {
        blocks.push(ContentBlock::Text { text });
    }
    for c in &m.tool_calls {
        blocks.push(ContentBlock::ToolUse {
            id: tool_use_id(c.id.as_deref(), fallback_id),
            name: c.function.name.clone().unwrap_or_default(),
            input: serde_json::from_str(&c.function.arguments).unwrap_or_else(|_| serde_json::json!({})),
        });
    }
    (blocks, !m.tool_calls.is_empty())
}

/// The open block of a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    Text,
    Thinking,
    ToolUse,
}

/// A streamed answer's blocks: chat deltas in, Anthropic's block events out.
#[derive(Debug, Default)]
pub struct BlockStream {
    index: usize,
    open: Option<Open>,
    tool_uses: usize,
}

impl BlockStream {
    /// A stream with no block yet.
    pub fn new() -> BlockStream {
        BlockStream::default()
    }

    /// Whether a tool use was sent.
    pub fn used_tools(&self) -> bool {
        self.tool_uses > 0
    }

    /// The events of one chat delta.
    pub fn delta(&mut self, d: ChunkChoice, fallback_id: u64) -> Vec<Event> {
        let mut out = Vec::new();
        self.text(&mut out, Open::Thinking, d.delta.reasoning_content.unwrap_or_default());
        self.text(&mut out, Open::Text, d.delta.content.unwrap_or_default());
        for c in d.delta.tool_calls.unwrap_or_default() {
            if let Some(name) = c.function.name {
                self.close(&mut out);
                let id = tool_use_id(c.id.as_deref(), fallback_id);
                out.push(Event::ContentBlockStart {
                    index: self.index,
                    content_block: ContentBlock::ToolUse { id, name, input: serde_json::json!({}) },
                });
                self.open = Some(Open::ToolUse);
                self.tool_uses += 1;
            }
            if !c.function.arguments.is_empty() {
                out.push(Event::ContentBlockDelta {
                    index: self.index,
                    delta: BlockDelta::InputJsonDelta { partial_json: c.function.arguments },
                });
            }
        }
        out
    }

    fn text(&mut self, out: &mut Vec<Event>, kind: Open, text: String) {
        if text.is_empty() {
            return;
        }
        if self.open != Some(kind) {
            self.close(out);
            let content_block = if kind == Open::Thinking {
                ContentBlock::Thinking { thinking: String::new(), signature: String::new() }
            } else {
                ContentBlock::Text { text: String::new() }
            };
            out.push(Event::ContentBlockStart { index: self.index, content_block });
            self.open = Some(kind);
        }
        let delta = if kind == Open::Thinking {
            BlockDelta::ThinkingDelta { thinking: text }
        } else {
            BlockDelta::TextDelta { text }
        };
        out.push(Event::ContentBlockDelta { index: self.index, delta });
    }

    fn close(&mut self, out: &mut Vec<Event>) {
        if self.open.take().is_some() {
            out.push(Event::ContentBlockStop { index: self.index });
            self.index += 1;
        }
    }

    /// The last events: the open block closed (an empty answer still gets its empty text
    /// block), `message_delta` with the stop reason and usage, `message_stop`.
    pub fn finish(
        &mut self,
        finish: llama_rs::FinishReason,
        stop_word: Option<String>,
        usage: &llama_rs::Usage,
    ) -> Vec<Event> {
        let mut out = Vec::new();
        if self.index == 0 && self.open.is_none() {
            out.push(Event::ContentBlockStart { index: 0, content_block: ContentBlock::Text { text: String::new() } });
            out.push(Event::ContentBlockStop { index: 0 });
        }
        self.close(&mut out);
        let stop_reason = stop_reason(finish, &stop_word, self.used_tools()).to_string();
        out.push(Event::MessageDelta {
            delta: MessageDelta { stop_reason, stop_sequence: stop_word },
            usage: MessageUsage::from(usage),
        });
        out.push(Event::MessageStop);
        out
    }
}
