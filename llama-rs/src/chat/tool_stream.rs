//! Tool calls while the answer streams: plain text goes out as it is generated (held back
//! only where it could be the start of a call marker), and each call goes out as soon as
//! it is complete — the same split [`parse_tool_calls`] makes of the whole answer.

use super::{parse_tool_calls, ToolCall};

/// Where a tool call starts, in the formats [`parse_tool_calls`] reads (Hermes/Qwen,
/// Mistral, Llama 3.1).
const MARKERS: [&str; 3] = ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];
const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";

/// What is certain after a piece of output.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    /// Answer text.
    Content(String),
    /// A complete call.
    Call(ToolCall),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace yet (an answer that starts with `{` may be a Llama 3.1
    /// call).
    Start,
    Content,
    /// From a marker (or a leading `{`) on, everything is held until it parses.
    Calls,
}

/// Splits streamed output into content and tool calls.
///
/// ```
/// use llama_rs::{ToolCallStream, ToolEvent};
/// let mut s = ToolCallStream::new();
/// let mut events = Vec::new();
/// for piece in ["Let me ", "check.\n<tool", "_call>\n{\"name\": \"f\", ", "\"arguments\": {}}\n</tool_call>"] {
///     events.extend(s.push(piece));
/// }
/// events.extend(s.finish());
/// // Trailing whitespace waits for what follows it (dropped before a call).
/// assert_eq!(events[0], ToolEvent::Content("Let me".into()));
/// assert_eq!(events[1], ToolEvent::Content(" check.".into()));
/// assert!(matches!(&events[2], ToolEvent::Call(c) if c.function.name == "f"));
/// ```
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    state: State,
    held: String,
    /// Whitespace dropped before a marker (given back if the call does not parse).
    gap: String,
    /// Calls handed out so far.
    calls: usize,
}

impl Default for ToolCallStream {
    fn default() -> Self {
        ToolCallStream::new()
    }
}

impl ToolCallStream {
    /// A stream at the start of an answer.
    pub fn new() -> ToolCallStream {
        ToolCallStream { state: State::Start, held: String::new(), gap: String::new(), calls: 0 }
    }

    /// The next piece of output: the content and calls that are now certain.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        self.held.push_str(text);
        let mut out = Vec::new();
        if self.state == State::Start {
            let t = self.held.trim_start();
            if t.is_empty() {
                return out;
            }
            self.state = if t.starts_with('{') { State::Calls } else { State::Content };
        }
        if self.state == State::Content {
            match MARKERS.iter().filter_map(|m| self.held.find(m)).min() {
                Some(pos) => {
                    let content = self.held[..pos].trim_end();
                    if !content.is_empty() {
                        out.push(ToolEvent::Content(content.to_string()));
                    }
                    self.gap = self.held[content.len()..pos].to_string();
                    self.held.drain(..pos);
                    self.state = State::Calls;
                }
                None => {
                    // Hold what may begin a marker, and trailing whitespace (dropped if a
                    // call follows, as the whole-answer parse trims it).
                    let keep = MARKERS.iter().map(|m| partial_marker(&self.held, m)).max().unwrap_or(0);
                    let cut = self.held[..self.held.len() - keep].trim_end().len();
                    if cut > 0 {
                        out.push(ToolEvent::Content(self.held[..cut].to_string()));
                        self.held.drain(..cut);
                    }
                    return out;
                }
            }
        }
        // Hermes calls are complete at their closing tag: hand each out then.
        while self.held.starts_with(HERMES_OPEN) {
            let Some(end) = self.held.find(HERMES_CLOSE) else { break };
            let block = &self.held[..end + HERMES_CLOSE.len()];
            let (_, calls) = parse_tool_calls(block);
            if calls.is_empty() {
                break; // does not parse: left for `finish`, which then returns it as text
            }
            self.calls += calls.len();
            out.extend(calls.into_iter().map(ToolEvent::Call));
            self.held.drain(..end + HERMES_CLOSE.len());
            let rest = self.held.trim_start().len();
            self.held.drain(..self.held.len() - rest);
        }
        out
    }

    /// The end of the output: what was held, as calls where it parses, else as text.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        if held.trim().is_empty() {
            return out;
        }
        let (content, calls) = parse_tool_calls(&held);
        if calls.is_empty() {
            // A call that does not parse is answer text, as generated (never an error).
            let text = if self.calls > 0 { held.trim().to_string() } else { std::mem::take(&mut self.gap) + &held };
            out.push(ToolEvent::Content(text));
            return out;
        }
        if !content.is_empty() {
            out.push(ToolEvent::Content(content));
        }
        self.calls += calls.len();
        out.extend(calls.into_iter().map(ToolEvent::Call));
        out
    }
}

/// The length of the longest suffix of `s` that is a proper prefix of `marker`.
fn partial_marker(s: &str, marker: &str) -> usize {
    (1..marker.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && marker.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str]) -> (String, Vec<String>) {
        let mut s = ToolCallStream::new();
        let mut ev = Vec::new();
        for p in pieces {
            ev.extend(s.push(p));
        }
        ev.extend(s.finish());
        let mut text = String::new();
        let mut calls = Vec::new();
        for e in ev {
            match e {
                ToolEvent::Content(c) => text += &c,
                ToolEvent::Call(c) => calls.push(c.function.name),
            }
        }
        (text, calls)
    }

    /// Every split of `output` into two pieces gives what the whole-answer parse gives
    /// (the server's rule: no call parses → the output as text).
    fn same_as_whole(output: &str) {
        let (text, calls) = parse_tool_calls(output);
        let text = if calls.is_empty() { output.to_string() } else { text };
        let names: Vec<String> = calls.into_iter().map(|c| c.function.name).collect();
        for i in (0..=output.len()).filter(|&i| output.is_char_boundary(i)) {
            assert_eq!(run(&[&output[..i], &output[i..]]), (text.clone(), names.clone()), "split at {i}: {output:?}");
        }
    }

    #[test]
    fn streamed_splits_equal_the_whole_answer_parse() {
        same_as_whole("Just text, no call. <tool is not a tag> [TOOL and <|python");
        same_as_whole("Let me check.\n<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>");
        same_as_whole(
            "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>",
        );
        same_as_whole("[TOOL_CALLS][{\"name\": \"m\", \"arguments\": {\"q\": \"x\"}}]");
        same_as_whole("<|python_tag|>{\"name\": \"l\", \"parameters\": {}}");
        same_as_whole("{\"name\": \"l\", \"parameters\": {\"a\": 2}}");
        same_as_whole("{ not json, just braces }");
        same_as_whole("<tool_call>{\"name\": broken</tool_call>");
        same_as_whole("Let me check.\n<tool_call>{\"name\": broken</tool_call>");
    }

    #[test]
    fn plain_text_streams_without_waiting_for_the_end() {
        let mut s = ToolCallStream::new();
        assert_eq!(s.push("Hello"), vec![ToolEvent::Content("Hello".into())]);
        assert_eq!(s.push(" world <tool"), vec![ToolEvent::Content(" world".into())]);
        assert_eq!(s.push("s> are"), vec![ToolEvent::Content(" <tools> are".into())]);
        let first = s.push("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> trailing");
        assert!(matches!(&first[..], [ToolEvent::Call(c)] if c.function.name == "f"), "{first:?}");
    }
}
