//! Model output as tool calls: arbitrary text, cut into arbitrary pieces, through
//! `ToolCallStream` must give what `parse_tool_calls` gives for the whole text (the same
//! content and calls; streamed arguments join to the final arguments), in time linear in
//! the text (libFuzzer's -timeout catches a quadratic path on 64 KiB inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama_rs::{parse_tool_calls, ToolCallStream, ToolEvent};

fuzz_target!(|data: &[u8]| {
    // First byte: a piece length seed; the rest: the output.
    let Some((&seed, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let (whole_text, whole_calls) = parse_tool_calls(&text);
    let mut s = ToolCallStream::new();
    let mut events = Vec::new();
    let (mut at, mut step) = (0usize, 1 + (seed as usize % 7));
    while at < text.len() {
        let mut end = (at + step).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        events.extend(s.push(&text[at..end]));
        at = end;
        step = 1 + (step * 5 + seed as usize) % 13;
    }
    events.extend(s.finish());
    let (mut content, mut calls, mut open) = (String::new(), Vec::new(), None::<String>);
    for e in events {
        match e {
            ToolEvent::Content(c) => content += &c,
            ToolEvent::Call(c) => calls.push(c),
            ToolEvent::CallStart { .. } => open = Some(String::new()),
            ToolEvent::CallArgs(a) => *open.as_mut().expect("args inside a call") += &a,
            ToolEvent::CallEnd(c) => {
                let args = open.take().expect("an open call ends");
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&args) {
                    assert_eq!(v, c.function.arguments, "streamed arguments {args:?}");
                }
                calls.push(c);
            }
        }
    }
    assert!(open.is_none(), "a call left open");
    assert_eq!(content, whole_text, "content of {text:?}");
    assert_eq!(calls, whole_calls, "calls of {text:?}");
});
