//! Tool calls while the answer streams: plain text goes out as it is generated (held back
//! only where it could be the start of a call marker), and calls as they are generated —
//! the same split [`parse_tool_calls`] makes of the whole answer.
//!
//! A call written the usual way streams: its name once it is complete, then its arguments
//! as they are generated — the model's JSON text without the whitespace between tokens,
//! so the pieces join to JSON with the value of the whole-answer parse's arguments. The
//! usual ways: `{"name": ..., "arguments"|"parameters": {...}}` objects in Hermes/Qwen
//! blocks, in Mistral's `[TOOL_CALLS][...]` list and in Llama 3.1's `;`-separated list
//! (after `<|python_tag|>` or from the answer's start), and Mistral's
//! `[TOOL_CALLS]name[ARGS]{...}`. Other calls (other key orders, arguments as a string)
//! go out whole once they parse.

use super::{json_end, parse_block, ToolCall};

/// Where a tool call starts, in the formats [`parse_tool_calls`] reads (Hermes/Qwen,
/// Mistral, Llama 3.1).
const MARKERS: [&str; 3] = ["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"];
/// The longest of `MARKERS`.
const MAX_MARKER: usize = 14;
const HERMES_OPEN: &str = "<tool_call>";
const HERMES_CLOSE: &str = "</tool_call>";
const MISTRAL: &str = "[TOOL_CALLS]";
const MISTRAL_ARGS: &str = "[ARGS]";
const PYTHON_TAG: &str = "<|python_tag|>";
/// Longest text from a call's start to its arguments' `{` that may still become a
/// streamed call (name and keys: a few dozen bytes in practice). Past it the call is
/// handed out whole once it parses: every push then costs its own length, not the
/// length of everything held (an unterminated name fed 4 bytes at a time was quadratic).
const MAX_CALL_HEADER: usize = 1024;

/// What is certain after a piece of output.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEvent {
    /// Answer text.
    Content(String),
    /// A complete call, handed out whole.
    Call(ToolCall),
    /// A streamed call begins: its function's name.
    CallStart {
        /// The function's name.
        name: String,
    },
    /// More of the streamed call's arguments (JSON text without insignificant whitespace).
    CallArgs(String),
    /// The streamed call is complete: the call as parsed. If its text stopped being a call
    /// after the arguments began (the output ended mid-call, or the block does not
    /// parse), the arguments are what was generated, parsed where they parse, else as a
    /// string.
    CallEnd(ToolCall),
}

/// A Hermes call whose arguments are being streamed.
#[derive(Debug, Clone)]
struct OpenCall {
    name: String,
    /// Bytes of `held` scanned so far.
    pos: usize,
    /// The arguments handed out so far.
    args: String,
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The arguments' closing bracket was seen.
    done: bool,
    /// After the arguments: brackets open around them (the call's object), until it ends.
    tail_depth: usize,
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

/// A list of call objects the stream has committed to (its first call has started):
/// the objects' text is consumed call by call, the separators between them too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// Mistral's `[TOOL_CALLS][{...}, {...}]`.
    Mistral,
    /// Llama 3.1's `{...}; {...}`.
    Llama,
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
/// assert_eq!(events[2], ToolEvent::CallStart { name: "f".into() });
/// assert_eq!(events[3], ToolEvent::CallArgs("{}".into()));
/// assert!(matches!(&events[4], ToolEvent::CallEnd(c) if c.function.name == "f"));
/// ```
#[derive(Debug, Clone)]
pub struct ToolCallStream {
    state: State,
    held: String,
    /// Whitespace dropped before a marker (given back if the call does not parse).
    gap: String,
    /// Calls handed out so far.
    calls: usize,
    open: Option<OpenCall>,
    list: Option<List>,
    /// `held[..close_from]` has no `</tool_call>` (searches resume there).
    close_from: usize,
    /// Content state: where the trailing whitespace of `held` starts, and how much of
    /// `held` has been looked at for it (only new text can move it).
    ws_start: usize,
    scanned: usize,
}

impl Default for ToolCallStream {
    fn default() -> Self {
        ToolCallStream::new()
    }
}

impl ToolCallStream {
    /// A stream at the start of an answer.
    pub fn new() -> ToolCallStream {
        ToolCallStream {
            state: State::Start,
            held: String::new(),
            gap: String::new(),
            calls: 0,
            open: None,
            list: None,
            close_from: 0,
            ws_start: 0,
            scanned: 0,
        }
    }

    /// Drops `held[..n]`, keeping the search positions in step.
    fn drain_held(&mut self, n: usize) {
        self.held.drain(..n);
        self.close_from = self.close_from.saturating_sub(n);
        self.ws_start = self.ws_start.saturating_sub(n);
        self.scanned = self.scanned.saturating_sub(n);
    }

    /// Where `</tool_call>` is in `held`, searching only what was not searched before.
    fn find_close(&mut self) -> Option<usize> {
        let mut from = self.close_from.min(self.held.len());
        while !self.held.is_char_boundary(from) {
            from -= 1;
        }
        match self.held[from..].find(HERMES_CLOSE) {
            Some(i) => Some(from + i),
            None => {
                // A tag may straddle the end: resume where it could start.
                let mut next = self.held.len().saturating_sub(HERMES_CLOSE.len() - 1).max(from);
                while !self.held.is_char_boundary(next) {
                    next -= 1;
                }
                self.close_from = next;
                None
            }
        }
    }

    /// The next piece of output: the content and calls that are now certain.
    pub fn push(&mut self, text: &str) -> Vec<ToolEvent> {
        // Held content has no complete marker: one can only end in the new text.
        let mut from = self.held.len().saturating_sub(MAX_MARKER - 1);
        while !self.held.is_char_boundary(from) {
            from -= 1;
        }
        self.held.push_str(text);
        let mut out = Vec::new();
        if self.state == State::Start {
            // Everything held before was whitespace: only the new text can end that.
            let t = text.trim_start();
            if t.is_empty() {
                return out;
            }
            self.state = if t.starts_with('{') { State::Calls } else { State::Content };
            from = 0;
        }
        if self.state == State::Content {
            match MARKERS.iter().filter_map(|m| self.held[from..].find(m).map(|i| from + i)).min() {
                Some(pos) => {
                    let content = self.held[..pos].trim_end();
                    if !content.is_empty() {
                        out.push(ToolEvent::Content(content.to_string()));
                    }
                    self.gap = self.held[content.len()..pos].to_string();
                    self.drain_held(pos);
                    self.state = State::Calls;
                }
                None => {
                    // Hold what may begin a marker, and trailing whitespace (dropped if a
                    // call follows, as the whole-answer parse trims it). Only the new
                    // text can move where that whitespace starts.
                    let keep = MARKERS.iter().map(|m| partial_marker(&self.held, m)).max().unwrap_or(0);
                    let end = self.held.len() - keep;
                    let from = self.scanned.min(end);
                    if let Some((i, c)) = self.held[from..end].char_indices().rev().find(|(_, c)| !c.is_whitespace()) {
                        self.ws_start = from + i + c.len_utf8();
                    }
                    self.scanned = end;
                    let cut = self.ws_start.min(end);
                    if cut > 0 {
                        out.push(ToolEvent::Content(self.held[..cut].to_string()));
                        self.drain_held(cut);
                    }
                    return out;
                }
            }
        }
        // Each format's step may hand the rest to another's (a Hermes block followed by
        // a Mistral list): run them until neither moves, so that what a push returns
        // does not depend on where the output was cut.
        loop {
            let before = (self.held.len(), self.open.is_some(), self.list, out.len());
            if self.open.is_none() && self.list.is_none() {
                // Whitespace before a call is dropped (kept in `gap` while the answer may
                // still turn out to be text).
                let n = self.held.len() - self.held.trim_start().len();
                if self.calls == 0 {
                    self.gap.push_str(&self.held[..n]);
                }
                self.drain_held(n);
            }
            self.stream_lists(&mut out);
            self.stream_hermes(&mut out);
            if (self.held.len(), self.open.is_some(), self.list, out.len()) == before {
                break;
            }
        }
        out
    }

    /// The end of the output: what was held, as calls where it parses, else as text.
    pub fn finish(&mut self) -> Vec<ToolEvent> {
        let held = std::mem::take(&mut self.held);
        let mut out = Vec::new();
        if let Some(open) = self.open.take() {
            // The output ended inside a streamed call: it ends as it is (its text is no
            // longer answer text: the name has gone out).
            let parsed = match self.list {
                Some(_) => call_from_object(&held),
                None => parse_block(&held).1.into_iter().next(),
            };
            out.push(ToolEvent::CallEnd(parsed.unwrap_or_else(|| open.call())));
            return out;
        }
        if held.trim().is_empty() {
            // Trailing whitespace: part of an answer without calls (the text as it is),
            // trimmed after calls.
            if self.calls == 0 && !held.is_empty() {
                out.push(ToolEvent::Content(std::mem::take(&mut self.gap) + &held));
            }
            return out;
        }
        // The rest of a list whose first calls streamed: the objects after them.
        let whole = match self.list {
            Some(List::Mistral) => format!("{MISTRAL}[{}", held.trim_start().trim_start_matches(',')),
            Some(List::Llama) => held.trim_start().trim_start_matches(';').to_string(),
            None => held.clone(),
        };
        let (content, calls) = parse_block(&whole);
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

impl ToolCallStream {
    /// Hermes calls: streamed from their name on where they have the usual shape, else
    /// handed out whole at their closing tag.
    fn stream_hermes(&mut self, out: &mut Vec<ToolEvent>) {
        while self.list.is_none() && self.held.starts_with(HERMES_OPEN) {
            if self.open.is_none() {
                if let Some((name, pos)) = hermes_header(&self.held) {
                    out.push(ToolEvent::CallStart { name: name.clone() });
                    self.calls += 1;
                    self.open = Some(OpenCall::new(name, pos));
                }
            }
            if let Some(open) = &mut self.open {
                let piece = open.scan(&self.held);
                if !piece.is_empty() {
                    out.push(ToolEvent::CallArgs(piece));
                }
                if !open.done {
                    break;
                }
            }
            if let Some(open) = &self.open {
                // The tag closes the call after its arguments (one inside them is text).
                self.close_from = self.close_from.max(open.pos);
            }
            let Some(end) = self.find_close() else { break };
            let block = &self.held[..end + HERMES_CLOSE.len()];
            let (_, calls) = parse_block(block);
            match self.open.take() {
                Some(open) => out.push(ToolEvent::CallEnd(calls.into_iter().next().unwrap_or_else(|| open.call()))),
                None if calls.is_empty() => break, // left for `finish`, which returns it as text
                None => {
                    self.calls += calls.len();
                    out.extend(calls.into_iter().map(ToolEvent::Call));
                }
            }
            self.drain_held(end + HERMES_CLOSE.len());
            let rest = self.held.trim_start().len();
            self.drain_held(self.held.len() - rest);
        }
    }

    /// Streams the calls of a Mistral or Llama 3.1 list, and Mistral's `name[ARGS]{...}`
    /// calls, as far as `held` goes.
    fn stream_lists(&mut self, out: &mut Vec<ToolEvent>) {
        loop {
            if self.held.starts_with(HERMES_OPEN) {
                return; // Hermes blocks stream below
            }
            if self.open.is_none() {
                let Some((name, prefix, pos, list)) = self.next_call() else { return };
                // Committed: the text before the call's object is no longer needed to give
                // the answer back as text.
                self.drain_held(prefix);
                self.gap.clear();
                self.list = list;
                self.calls += 1;
                out.push(ToolEvent::CallStart { name: name.clone() });
                self.open = Some(OpenCall::new(name, pos - prefix));
            }
            let Some(open) = self.open.as_mut() else { return };
            let piece = open.scan(&self.held);
            if !piece.is_empty() {
                out.push(ToolEvent::CallArgs(piece));
            }
            if !open.done {
                return;
            }
            // The object (or `[ARGS]` value) ends after the arguments.
            let end = match self.list {
                Some(_) => match open.object_end(&self.held) {
                    Some(end) => end,
                    None => return,
                },
                None => open.pos,
            };
            let open = self.open.take().expect("checked above");
            let parsed = match self.list {
                Some(_) => call_from_object(&self.held[..end]),
                None => None,
            };
            out.push(ToolEvent::CallEnd(parsed.unwrap_or_else(|| open.call())));
            self.drain_held(end);
            if self.list.is_none() {
                // `[TOOL_CALLS]name[ARGS]{...}`: another such call may follow.
                let rest = self.held.trim_start().len();
                self.drain_held(self.held.len() - rest);
            }
        }
    }

    /// The next call of a list that can start streaming: (name, bytes of `held` before
    /// its object, where its arguments' `{` is, the list it is in).
    fn next_call(&mut self) -> Option<(String, usize, usize, Option<List>)> {
        match self.list {
            Some(list) => {
                // Between objects: the separator; the end of Mistral's list ends streaming.
                let t = self.held.trim_start();
                let sep = if list == List::Mistral { ',' } else { ';' };
                if let Some(after) = t.strip_prefix(']') {
                    // The list is over: what follows may be another call.
                    self.list = None;
                    let n = self.held.len() - after.len();
                    self.drain_held(n);
                    return self.next_call();
                }
                let skip = self.held.len() - t.len() + t.starts_with(sep) as usize;
                let (name, pos) = call_header(&self.held[skip..])?;
                Some((name, skip, skip + pos, Some(list)))
            }
            None if self.held.starts_with(MISTRAL) => {
                let after = &self.held[MISTRAL.len()..];
                let t = after.trim_start();
                let at = self.held.len() - t.len();
                if let Some(list) = t.strip_prefix('[') {
                    let (name, pos) = call_header(list)?;
                    return Some((name, at + 1, at + 1 + pos, Some(List::Mistral)));
                }
                // `name[ARGS]{...}`.
                let (name, _) = head(after, MAX_CALL_HEADER + MISTRAL_ARGS.len()).split_once(MISTRAL_ARGS)?;
                let args = &after[name.len() + MISTRAL_ARGS.len()..];
                let name = name.trim();
                let ok = !name.is_empty() && !name.contains(['[', '{', '"']);
                let a = args.trim_start();
                (ok && a.starts_with('{')).then(|| {
                    let pos = self.held.len() - a.len();
                    (name.to_string(), 0, pos, None)
                })
            }
            None if self.held.starts_with(PYTHON_TAG) || self.held.starts_with('{') => {
                let at = if self.held.starts_with('{') { 0 } else { PYTHON_TAG.len() };
                let (name, pos) = call_header(&self.held[at..])?;
                Some((name, at, at + pos, Some(List::Llama)))
            }
            None => None,
        }
    }
}

impl OpenCall {
    fn new(name: String, pos: usize) -> OpenCall {
        OpenCall {
            name,
            pos,
            args: String::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            done: false,
            tail_depth: 1,
        }
    }

    /// Advances the JSON string state over `c`: true when `c` is inside a string (its
    /// closing quote included).
    fn string_step(&mut self, c: char) -> bool {
        if !self.in_string {
            return false;
        }
        match c {
            _ if self.escaped => self.escaped = false,
            '\\' => self.escaped = true,
            '"' => self.in_string = false,
            _ => {}
        }
        true
    }

    /// After the arguments: where the object around them ends (after its closing
    /// bracket), scanning on from where the last call stopped.
    fn object_end(&mut self, held: &str) -> Option<usize> {
        for (i, c) in held[self.pos..].char_indices() {
            if self.string_step(c) {
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => self.tail_depth += 1,
                '}' | ']' => {
                    self.tail_depth -= 1;
                    if self.tail_depth == 0 {
                        self.pos += i + 1;
                        return Some(self.pos);
                    }
                }
                _ => {}
            }
        }
        self.pos = held.len();
        None
    }

    /// Scans `held` on from `pos`: the arguments' next piece, without the whitespace
    /// between JSON tokens.
    fn scan(&mut self, held: &str) -> String {
        let mut piece = String::new();
        let mut scanned = held.len() - self.pos;
        for (i, c) in held[self.pos..].char_indices() {
            if self.done {
                scanned = i;
                break;
            }
            if self.string_step(c) {
                piece.push(c);
                continue;
            }
            match c {
                c if c.is_whitespace() => continue,
                '"' => self.in_string = true,
                '{' | '[' => self.depth += 1,
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.done = self.depth == 0;
                }
                _ => {}
            }
            piece.push(c);
        }
        self.pos += scanned;
        self.args.push_str(&piece);
        piece
    }

    /// The call as far as it was generated.
    fn call(self) -> ToolCall {
        let args = serde_json::from_str(&self.args).unwrap_or(serde_json::Value::String(self.args));
        super::make_call(&self.name, args, None)
    }
}

/// `<tool_call>{"name": "NAME", "arguments": {` at the start of `s`: the name, and where
/// the arguments' `{` is.
fn hermes_header(s: &str) -> Option<(String, usize)> {
    let (name, pos) = call_header(s.strip_prefix(HERMES_OPEN)?)?;
    Some((name, pos + HERMES_OPEN.len()))
}

/// `{"name": "NAME", "arguments": {` (or `"parameters"`, Llama 3.1's key) at the start of
/// `s`, after whitespace: the name, and where the arguments' `{` is.
fn call_header(s: &str) -> Option<(String, usize)> {
    let s = head(s, MAX_CALL_HEADER);
    let lit = |s: &'_ str, lit: &str| s.trim_start().strip_prefix(lit).map(str::to_owned);
    let rest = lit(s, "{")?;
    let rest = lit(&lit(&rest, "\"name\"")?, ":")?;
    let r = rest.trim_start();
    // The name: a JSON string up to its closing quote.
    let mut escaped = false;
    let close = r.char_indices().skip(1).find_map(|(i, c)| match c {
        _ if escaped => {
            escaped = false;
            None
        }
        '\\' => {
            escaped = true;
            None
        }
        '"' => Some(i),
        _ => None,
    });
    let close = close.filter(|_| r.starts_with('"'))?;
    let name: String = serde_json::from_str(&r[..close + 1]).ok()?;
    let rest = lit(&r[close + 1..], ",")?;
    let rest = lit(&lit(&rest, "\"arguments\"").or_else(|| lit(&rest, "\"parameters\""))?, ":")?;
    let r = rest.trim_start();
    r.starts_with('{').then(|| (name, s.len() - r.len()))
}

/// At most the first `n` bytes of `s` (cut at a character boundary).
fn head(s: &str, n: usize) -> &str {
    let mut n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}

/// A call from one object of a list (text after the object's end ignored).
fn call_from_object(s: &str) -> Option<ToolCall> {
    let end = json_end(s).unwrap_or(s.len());
    let v: serde_json::Value = serde_json::from_str(s[..end].trim()).ok()?;
    super::call_from_value(&v)
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
    use super::super::parse_tool_calls;
    use super::*;

    /// The text and the calls (name, arguments) of a streamed output. A streamed call's
    /// argument pieces must join to JSON equal to its final arguments.
    fn run(pieces: &[&str]) -> (String, Vec<(String, serde_json::Value)>) {
        let mut s = ToolCallStream::new();
        let mut ev = Vec::new();
        for p in pieces {
            ev.extend(s.push(p));
        }
        ev.extend(s.finish());
        let mut text = String::new();
        let mut calls = Vec::new();
        let mut open: Option<(String, String)> = None;
        for e in ev {
            match e {
                ToolEvent::Content(c) => text += &c,
                ToolEvent::Call(c) => calls.push((c.function.name, c.function.arguments)),
                ToolEvent::CallStart { name } => open = Some((name, String::new())),
                ToolEvent::CallArgs(a) => open.as_mut().expect("a call is open").1 += &a,
                ToolEvent::CallEnd(c) => {
                    let (name, args) = open.take().expect("a call is open");
                    assert_eq!(name, c.function.name);
                    assert_eq!(
                        serde_json::from_str::<serde_json::Value>(&args).unwrap(),
                        c.function.arguments,
                        "{args}"
                    );
                    calls.push((c.function.name, c.function.arguments));
                }
            }
        }
        assert!(open.is_none());
        (text, calls)
    }

    /// Every split of `output` into two pieces, and token-sized pieces, give what the
    /// whole-answer parse gives (the server's rule: no call parses → the output as text).
    fn same_as_whole(output: &str) {
        let (text, calls) = parse_tool_calls(output);
        let text = if calls.is_empty() { output.to_string() } else { text };
        let calls: Vec<_> = calls.into_iter().map(|c| (c.function.name, c.function.arguments)).collect();
        for i in (0..=output.len()).filter(|&i| output.is_char_boundary(i)) {
            assert_eq!(run(&[&output[..i], &output[i..]]), (text.clone(), calls.clone()), "split at {i}: {output:?}");
        }
        let chars: Vec<String> = output.chars().map(String::from).collect();
        let pieces: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(&pieces), (text, calls), "char by char: {output:?}");
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
        // Streamed arguments: nested values, strings with brackets, escapes and spaces.
        same_as_whole(
            "<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"a {b} [c] \\\"d\\\" é\", \"n\": [1, {\"x\": null}]}}\n</tool_call>\n<tool_call>{\"arguments\": {}, \"name\": \"later\"}</tool_call>",
        );
        same_as_whole("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": 1}, \"id\": \"c1\"}</tool_call>");
    }

    #[test]
    fn mistral_and_llama_lists_split_like_the_whole_answer() {
        same_as_whole("[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"x\": [1, \"]\"]}}, {\"name\": \"b\", \"arguments\": {}}]");
        same_as_whole(
            "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"arguments\": {\"y\": 2}, \"name\": \"later\"}]",
        );
        same_as_whole("[TOOL_CALLS][{\"arguments\": {}, \"name\": \"whole\"}]");
        same_as_whole("[TOOL_CALLS][{\"name\": \"a\", \"arguments\": \"{}\"}]");
        same_as_whole("[TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\", \"days\": [1, 2]}");
        same_as_whole("Sure.[TOOL_CALLS]f[ARGS]{}");
        same_as_whole(
            "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"x;y\"}}; {\"name\": \"b\", \"parameters\": {}}",
        );
        same_as_whole("{\"name\": \"a\", \"parameters\": {}}; {\"parameters\": {}, \"name\": \"later\"}");
        same_as_whole("Checking.<|python_tag|>{\"name\": \"a\", \"parameters\": {\"n\": 1}}");
        same_as_whole("<|python_tag|>print(\"not a call\")");
    }

    #[test]
    fn mistral_and_llama_arguments_stream_as_they_are_generated() {
        let mut s = ToolCallStream::new();
        assert_eq!(
            s.push("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {\"a\": "),
            vec![ToolEvent::CallStart { name: "f".into() }, ToolEvent::CallArgs("{\"a\":".into())]
        );
        assert_eq!(
            s.push("1}}, {\"name\": \"g\", \"arguments\": {"),
            vec![
                ToolEvent::CallArgs("1}".into()),
                ToolEvent::CallEnd(super::super::make_call("f", serde_json::json!({"a": 1}), None)),
                ToolEvent::CallStart { name: "g".into() },
                ToolEvent::CallArgs("{".into()),
            ]
        );
        let end = s.push("}}]");
        assert!(
            matches!(&end[..], [ToolEvent::CallArgs(a), ToolEvent::CallEnd(c)] if a == "}" && c.function.name == "g"),
            "{end:?}"
        );
        assert!(s.finish().is_empty());

        let mut s = ToolCallStream::new();
        assert_eq!(s.push("[TOOL_CALLS]get_weather[AR"), vec![]);
        assert_eq!(
            s.push("GS]{\"city\": \"Pa"),
            vec![ToolEvent::CallStart { name: "get_weather".into() }, ToolEvent::CallArgs("{\"city\":\"Pa".into())]
        );
        let end = s.push("ris\"}");
        assert!(
            matches!(&end[..], [ToolEvent::CallArgs(_), ToolEvent::CallEnd(c)] if c.function.arguments["city"] == "Paris"),
            "{end:?}"
        );

        let mut s = ToolCallStream::new();
        assert_eq!(
            s.push("{\"name\": \"l\", \"parameters\": {\"q\": \"x"),
            vec![ToolEvent::CallStart { name: "l".into() }, ToolEvent::CallArgs("{\"q\":\"x".into())]
        );
        // Ends mid-call: the call ends with what was generated.
        let end = s.finish();
        assert!(matches!(&end[..], [ToolEvent::CallEnd(c)] if c.function.arguments == "{\"q\":\"x"), "{end:?}");
    }

    #[test]
    fn plain_text_streams_without_waiting_for_the_end() {
        let mut s = ToolCallStream::new();
        assert_eq!(s.push("Hello"), vec![ToolEvent::Content("Hello".into())]);
        assert_eq!(s.push(" world <tool"), vec![ToolEvent::Content(" world".into())]);
        assert_eq!(s.push("s> are"), vec![ToolEvent::Content(" <tools> are".into())]);
        let first = s.push("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call> trailing");
        assert!(
            matches!(&first[..], [ToolEvent::CallStart { name }, ToolEvent::CallArgs(a), ToolEvent::CallEnd(c)]
                if name == "f" && a == "{}" && c.function.name == "f"),
            "{first:?}"
        );
    }

    #[test]
    fn arguments_stream_as_they_are_generated() {
        let mut s = ToolCallStream::new();
        assert_eq!(s.push("<tool_call>\n{\"name\": \"get_"), vec![]);
        assert_eq!(s.push("weather\", \"arguments\": "), vec![]);
        assert_eq!(
            s.push("{\"city\": \"Pa"),
            vec![ToolEvent::CallStart { name: "get_weather".into() }, ToolEvent::CallArgs("{\"city\":\"Pa".into())]
        );
        assert_eq!(s.push("ris\"}"), vec![ToolEvent::CallArgs("ris\"}".into())]);
        assert_eq!(s.push("}\n</tool_"), vec![]);
        let end = s.push("call>");
        assert!(matches!(&end[..], [ToolEvent::CallEnd(c)] if c.function.arguments["city"] == "Paris"), "{end:?}");
        // An output that ends mid-call ends the call with what was generated.
        let mut s = ToolCallStream::new();
        s.push("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2");
        let end = s.finish();
        assert!(matches!(&end[..], [ToolEvent::CallEnd(c)] if c.function.arguments == "{\"a\":[1,2"), "{end:?}");
    }

    /// Outputs assembled from the formats' pieces (markers, call objects, lists, text
    /// with brackets and markers inside strings): every one splits like the whole
    /// answer. The class behind single findings (a Mistral `[ARGS]` inside an argument
    /// string, several `[TOOL_CALLS]name[ARGS]` calls) rather than the findings.
    #[test]
    fn generated_outputs_split_like_the_whole_answer() {
        const ARGS: [&str; 7] = [
            "{}",
            "{\"x\": 1}",
            "{\"x\": \"[ARGS]\"}",
            "{\"q\": \"</tool_call> <tool_call> [TOOL_CALLS]\"}",
            "{\"a\": [1, {\"b\": \"}]\"}]}",
            "{\"s\": \"\\\" ; ,\"}",
            "{ \"n\" : null }",
        ];
        const TEXT: [&str; 9] = ["Sure.", " ", "\n", "ok ", "{", "}", "]", ";", "<|eom_id|>"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for _ in 0..600 {
            let mut out = String::new();
            for _ in 0..1 + rand(4) {
                let name = ["f", "get_weather", "a b"][rand(3)];
                let args = ARGS[rand(ARGS.len())];
                let obj = format!("{{\"name\": \"{name}\", \"arguments\": {args}}}");
                match rand(8) {
                    0 => out += TEXT[rand(TEXT.len())],
                    1 => out += &format!("<tool_call>\n{obj}\n</tool_call>"),
                    2 => out += &format!("[TOOL_CALLS]{name}[ARGS]{args}"),
                    3 => out += &format!("[TOOL_CALLS][{obj}, {obj}]"),
                    4 => out += &format!("<|python_tag|>{}; {obj}", obj.replace("arguments", "parameters")),
                    5 => out += &obj,
                    6 => out += ["<tool_call>", "[TOOL_CALLS]", "[ARGS]", "</tool_call>"][rand(4)],
                    _ => out += "Let me check. ",
                }
            }
            same_as_whole(&out);
        }
    }
}
