//! Chat templates: our Jinja rendering of real templates equals llama.cpp's own
//! rendering for the same messages; every vendored template compiles; errors are typed.
use llama_testkit::fixtures as common;
use std::path::PathBuf;

use llama_rs::{apply_builtin, ChatMessage, ChatTemplate, Error, RenderOptions};

fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp/models/templates")
}

fn load(name: &str) -> String {
    std::fs::read_to_string(templates_dir().join(name)).unwrap()
}

fn gen() -> RenderOptions {
    RenderOptions { add_generation_prompt: true, ..Default::default() }
}

fn with_system() -> Vec<ChatMessage> {
    vec![
        ChatMessage::system("You are terse."),
        ChatMessage::user("Hi"),
        ChatMessage::assistant("Hello!"),
        ChatMessage::user("What is 2+2?"),
    ]
}

fn without_system() -> Vec<ChatMessage> {
    with_system()[1..].to_vec()
}

#[test]
fn jinja_rendering_equals_llama_cpp_for_real_templates() {
    // (template, conversation with a system message?) — llama.cpp recognises each family
    // from the template text. BOS is left to the tokenizer in both.
    // eos_token is what llama.cpp writes after assistant turns ("" where it writes none).
    let cases = [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", true, ""),
        ("Qwen-Qwen3-0.6B.jinja", false, ""),
        ("Qwen3-Coder.jinja", true, ""),
        ("microsoft-Phi-3.5-mini-instruct.jinja", true, ""),
        ("google-gemma-2-2b-it.jinja", false, ""),
        ("ibm-granite-granite-4.1.jinja", false, ""),
        ("ibm-granite-granite-3.3-2B-Instruct.jinja", true, ""),
        ("mistralai-Mistral-Nemo-Instruct-2407.jinja", false, "</s>"),
        ("ByteDance-Seed-OSS.jinja", true, ""),
        ("LFM2-8B-A1B.jinja", true, ""),
        ("openbmb-MiniCPM5-1B.jinja", false, ""),
        ("moonshotai-Kimi-K2.jinja", true, ""),
    ];
    for (name, sys, eos) in cases {
        let src = load(name);
        let msgs = if sys { with_system() } else { without_system() };
        let t = ChatTemplate::jinja(src.clone(), "", eos).unwrap();
        assert_eq!(t.render(&msgs, &gen()).unwrap(), apply_builtin(&src, &msgs, true).unwrap(), "{name}");
        let no_gen = t.render(&msgs, &RenderOptions::default()).unwrap();
        assert_eq!(no_gen, apply_builtin(&src, &msgs, false).unwrap(), "{name} (no generation prompt)");
    }
}

#[test]
fn every_vendored_template_compiles_and_most_render_tool_conversations() {
    let tools = vec![serde_json::json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
        }
    })];
    let call = llama_rs::ToolCall {
        id: Some("call12345".into()), // Mistral's templates demand 9 alphanumerics
        kind: "function".into(),
        function: llama_rs::FunctionCall {
            name: "get_weather".into(),
            arguments: serde_json::json!({"city": "Paris"}),
        },
    };
    let msgs = vec![
        ChatMessage::system("Use tools."),
        ChatMessage::user("Weather in Paris?"),
        ChatMessage { tool_calls: vec![call], ..ChatMessage::assistant("") },
        ChatMessage::tool("{\"temp\": 21}", "call12345"),
    ];
    let opts = RenderOptions { add_generation_prompt: true, tools: Some(tools), ..Default::default() };
    let (mut total, mut rendered, mut mention) = (0, 0, 0);
    let mut failures = Vec::new();
    for e in std::fs::read_dir(templates_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jinja") {
            continue;
        }
        total += 1;
        let t = ChatTemplate::jinja(std::fs::read_to_string(e.path()).unwrap(), "<s>", "</s>")
            .unwrap_or_else(|err| panic!("{name} does not compile: {err}"));
        match t.render(&msgs, &opts) {
            Ok(s) => {
                rendered += 1;
                mention += s.contains("get_weather") as usize;
            }
            Err(err) => failures.push(format!("{name}: {err}")),
        }
    }
    eprintln!(
        "{rendered}/{total} render a tool conversation; {mention} show the tool; failures:\n{}",
        failures.join("\n")
    );
    assert!(total >= 60);
    assert!(rendered * 10 >= total * 9, "only {rendered}/{total} rendered:\n{}", failures.join("\n"));
}

#[test]
fn every_vendored_template_renders_a_long_chat_within_the_template_bounds() {
    // The fuel bound (TEMPLATE_FUEL) charges instructions and every byte a template
    // builds; it must leave real templates room for long conversations: 400 turns of
    // 4 KiB (1.6 MiB of text, ~400k tokens — more than any context we load).
    let turn = "lorem ipsum dolor sit amet, ".repeat(4096 / 28);
    let mut msgs = vec![ChatMessage::system("Be brief.")];
    for i in 0..400 {
        msgs.push(if i % 2 == 0 { ChatMessage::user(turn.clone()) } else { ChatMessage::assistant(turn.clone()) });
    }
    msgs.push(ChatMessage::user("last"));
    let text_len: usize = msgs.iter().map(|m| m.content.len()).sum();
    let mut failures = Vec::new();
    let mut rendered = 0;
    for e in std::fs::read_dir(templates_dir()).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".jinja") {
            continue;
        }
        let t = ChatTemplate::jinja(std::fs::read_to_string(e.path()).unwrap(), "<s>", "</s>").unwrap();
        // Templates that refuse a short chat (strict role rules) are not this test's concern.
        if t.render(&with_system(), &gen()).is_err() {
            continue;
        }
        match t.render(&msgs, &gen()) {
            Ok(s) if s.len() >= text_len => rendered += 1,
            Ok(s) => failures.push(format!("{name}: only {} of {text_len} bytes", s.len())),
            Err(err) => failures.push(format!("{name}: {err}")),
        }
    }
    assert!(rendered >= 50, "{rendered} rendered");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hugging_face_helpers_work() {
    // strftime_now, raise_exception, tojson (Python formatting), pycompat methods.
    let t = ChatTemplate::jinja(
        "{{ strftime_now('%Y') }}|{{ messages[0].content.strip().upper() }}|{{ {'a': [1, 'x<y']} | tojson }}|{{ messages[0]['role'] }}",
        "",
        "",
    )
    .unwrap();
    let out = t.render(&[ChatMessage::user("  hi ")], &RenderOptions::default()).unwrap();
    let year = out.split('|').next().unwrap();
    assert!(year.len() == 4 && year.starts_with("20"), "{out}");
    assert!(out.ends_with(r#"|HI|{"a": [1, "x<y"]}|user"#), "{out}");
    let t = ChatTemplate::jinja("{{ raise_exception('nope') }}", "", "").unwrap();
    assert!(matches!(t.render(&[], &RenderOptions::default()), Err(Error::Template(m)) if m.contains("nope")));
}

#[test]
fn template_errors_are_typed() {
    assert!(matches!(ChatTemplate::jinja("{% for %}", "", ""), Err(Error::Template(_))));
    assert!(matches!(ChatTemplate::jinja("{{ x", "", ""), Err(Error::Template(_))));
    assert!(matches!(ChatTemplate::builtin("no-such-template"), Err(Error::Template(_))));
    let t = ChatTemplate::builtin("chatml").unwrap();
    assert!(
        matches!(t.render(&[ChatMessage::new("wizard", "x")], &gen()), Err(Error::Template(m)) if m.contains("wizard"))
    );
    // Gemma 2's template refuses system messages with raise_exception.
    let g = ChatTemplate::jinja(load("google-gemma-2-2b-it.jinja"), "<bos>", "<eos>").unwrap();
    assert!(matches!(g.render(&with_system(), &gen()), Err(Error::Template(m)) if m.contains("System role")));
    assert!(matches!(apply_builtin("definitely not a template", &with_system(), true), Err(Error::Template(_))));
    assert!(ChatTemplate::builtin_names().iter().any(|n| n == "gemma"));
}

#[test]
fn the_default_model_uses_the_builtin_gemma_template() {
    let m = common::model();
    let t = ChatTemplate::from_model(m).unwrap();
    assert!(matches!(t, ChatTemplate::Builtin(ref n) if n == "gemma"));
    let text = t.render(&without_system(), &gen()).unwrap();
    assert!(text.ends_with("<start_of_turn>model\n"), "{text:?}");
    let toks = m.vocab().tokenize(&text, true, true).unwrap();
    assert!(toks.iter().filter(|t| m.vocab().is_control(**t)).count() >= 6, "turn markers are special tokens");
}
