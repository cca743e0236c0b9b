//! Arbitrary Jinja chat templates (they come with model files and requests): compile and
//! render a short conversation. Errors are fine; aborts, hangs (libFuzzer's -timeout) and
//! unbounded output are not: fuel, output size, indent and recursion are bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llama_rs::{ChatMessage, ChatTemplate, RenderOptions};

fuzz_target!(|data: &[u8]| {
    let src = String::from_utf8_lossy(data);
    let Ok(t) = ChatTemplate::jinja(src.into_owned(), "<s>", "</s>") else { return };
    let messages = [ChatMessage::system("be brief"), ChatMessage::user("hi"), ChatMessage::assistant("hello")];
    let opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
    if let Ok(out) = t.render(&messages, &opts) {
        assert!(out.len() <= llama_rs::TEMPLATE_MAX_OUTPUT);
    }
});
