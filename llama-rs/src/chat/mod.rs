//! Chat templates (the model's Jinja `tokenizer.chat_template`, rendered as Hugging Face
//! renders it, or one of llama.cpp's built-in templates) and tool-call parsing.

use std::ffi::{c_char, CString};

use minijinja::value::{Value as JValue, ValueKind};
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::Model;

mod reasoning;
mod tool_stream;
pub use reasoning::ReasoningSplitter;
pub use tool_stream::{ToolCallStream, ToolEvent};

/// One chat message. `content` is plain text; tool calls made by the assistant and the
/// ids of tool results ride along for templates that render them.
///
/// ```
/// let m = llama_rs::ChatMessage::user("Hi!");
/// assert_eq!(m.role, "user");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool` (templates may know others).
    pub role: String,
    #[serde(default)]
    /// The message text (empty for an assistant turn that only calls tools).
    pub content: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    /// Calls the assistant made in this turn (rendered by templates that support tools).
    pub tool_calls: Vec<ToolCall>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// For a `tool` message: the id of the call it answers.
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Optional name of the speaker or tool.
    pub name: Option<String>,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), tool_calls: vec![], tool_call_id: None, name: None }
    }
    /// A `system` message.
    pub fn system(c: impl Into<String>) -> Self {
        Self::new("system", c)
    }
    /// A `user` message.
    pub fn user(c: impl Into<String>) -> Self {
        Self::new("user", c)
    }
    /// An `assistant` message.
    pub fn assistant(c: impl Into<String>) -> Self {
        Self::new("assistant", c)
    }
    /// A `tool` result answering the call with id `id`.
    pub fn tool(c: impl Into<String>, id: impl Into<String>) -> Self {
        ChatMessage { tool_call_id: Some(id.into()), ..Self::new("tool", c) }
    }
}

/// A function call requested by the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// The call's id, if the model gave one.
    pub id: Option<String>,
    #[serde(rename = "type", default = "function_type")]
    /// Always `function` (OpenAI's `type`).
    pub kind: String,
    /// What is called, and with what.
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

/// Name and JSON arguments of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// The function's name.
    pub name: String,
    /// The arguments object (templates see it as a mapping, as Hugging Face passes it).
    pub arguments: Value,
}

const ROLES: &[&str] = &["system", "user", "assistant", "tool", "function", "developer", "ipython"];

/// Options for [`ChatTemplate::render`].
#[derive(Debug, Clone, Default)]
pub struct RenderOptions {
    /// End with the tokens that start the assistant's reply.
    pub add_generation_prompt: bool,
    /// Tool definitions (OpenAI `tools` format), passed to the template as `tools`.
    pub tools: Option<Vec<Value>>,
    /// Extra template variables (e.g. `enable_thinking`).
    pub extra: serde_json::Map<String, Value>,
}

/// A chat template.
///
/// ```
/// use llama_rs::{ChatMessage, ChatTemplate, RenderOptions};
/// let t = ChatTemplate::jinja(
///     "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}",
///     "<s>", "</s>")?;
/// let text = t.render(&[ChatMessage::user("Hi")], &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
/// assert_eq!(text, "<|user|>Hi\n<|assistant|>");
/// let gemma = ChatTemplate::builtin("gemma")?;
/// assert!(gemma.render(&[ChatMessage::user("Hi")], &RenderOptions::default())?.contains("<start_of_turn>user"));
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per model, built once
pub enum ChatTemplate {
    /// A Jinja template (Hugging Face `chat_template`), rendered with minijinja.
    Jinja {
        /// The template text.
        source: String,
        /// What `bos_token` renders as.
        bos_token: String,
        /// What `eos_token` renders as.
        eos_token: String,
        /// The compiled template, with llama-rs's bounds (fuel, output size, depth) set.
        env: Environment<'static>,
    },
    /// One of llama.cpp's built-in templates, by name (see [`ChatTemplate::builtin_names`]).
    Builtin(String),
}

fn template_error(e: minijinja::Error) -> Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg += &format!(": {s}");
        src = s.source();
    }
    Error::Template(msg)
}

/// `tojson` as Python's `json.dumps(..., ensure_ascii=False)` writes it, which is what
/// Hugging Face templates expect (minijinja's own escapes `<`, `>`, `&` and `'`).
fn py_json(v: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let nl = |out: &mut String, d: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * d));
        }
    };
    match v {
        Value::Array(a) if !a.is_empty() => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                nl(out, depth + 1);
                py_json(x, indent, depth + 1, out);
            }
            nl(out, depth);
            out.push(']');
        }
        Value::Object(o) if !o.is_empty() => {
            out.push('{');
            for (i, (k, x)) in o.iter().enumerate() {
                if i > 0 {
                    out.push_str(if indent.is_some() { "," } else { ", " });
                }
                nl(out, depth + 1);
                out.push_str(&Value::String(k.clone()).to_string());
                out.push_str(": ");
                py_json(x, indent, depth + 1, out);
            }
            nl(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Bounds on what a template (untrusted input: it comes with the model file or a
/// request) may cost. Fuel (minijinja 3) charges one unit per instruction and 1/64 unit
/// per byte any operator, filter or output builds, checked before a known-size
/// allocation: a render can build at most 1.6 GB in all, however it loops or recurses. The
/// most expensive vendored template (quadratic string building) renders 400 turns of
/// 4 KiB within it (`tests/chat.rs`); a template looping `range(100000)` inside
/// `range(100000)` stops after about a second.
pub const TEMPLATE_FUEL: u64 = 25_000_000;
/// Most bytes a rendered prompt may have (a prompt this long would not fit any context).
pub const TEMPLATE_MAX_OUTPUT: usize = 64 << 20;
/// Largest `tojson(indent=...)` accepted.
pub const TEMPLATE_MAX_INDENT: usize = 64;
/// Deepest nesting of macro calls, includes and blocks.
pub const TEMPLATE_MAX_DEPTH: usize = 200;

/// Most operators (`not`, `+`, `.`, `|`, `[`, `(`, ...) in one `{{ }}` or `{% %}` tag.
/// minijinja parses chains of operators into trees as deep as the chain, which it then
/// walks recursively: 10,000 `not`s overflow a 2 MiB stack. The largest tag of the 71
/// templates llama.cpp ships has 28.
pub const TEMPLATE_MAX_TAG_OPERATORS: usize = 256;

/// Refuses tags whose expressions nest deeper than minijinja can walk (see
/// [`TEMPLATE_MAX_TAG_OPERATORS`]), before minijinja parses them. Counts every operator
/// outside string literals: an upper bound of the expression tree's depth.
fn check_source(src: &str) -> Result<()> {
    let b = src.as_bytes();
    let mut i = 0;
    while let Some(off) = b[i..].iter().position(|&c| c == b'{') {
        let start = i + off;
        let close: &[u8] = match b.get(start + 1) {
            Some(b'{') => b"}}",
            Some(b'%') => b"%}",
            Some(b'#') => {
                i = find(b, start + 2, b"#}").map_or(b.len(), |e| e + 2);
                continue;
            }
            _ => {
                i = start + 1;
                continue;
            }
        };
        let (mut j, mut ops, mut quote) = (start + 2, 0usize, None::<u8>);
        while j < b.len() {
            let c = b[j];
            match quote {
                Some(q) => {
                    if c == b'\\' {
                        j += 1;
                    } else if c == q {
                        quote = None;
                    }
                }
                None if b[j..].starts_with(close) => break,
                None => match c {
                    b'\'' | b'"' => quote = Some(c),
                    b'.' | b'[' | b'(' | b'|' | b'+' | b'-' | b'*' | b'/' | b'%' | b'~' | b'<' | b'>' | b'=' => {
                        ops += 1
                    }
                    c if c.is_ascii_alphabetic() && (j == 0 || !is_ident(b[j - 1])) => {
                        let end = b[j..].iter().position(|&c| !is_ident(c)).map_or(b.len(), |e| j + e);
                        if matches!(&b[j..end], b"not" | b"and" | b"or" | b"in" | b"is" | b"if" | b"else") {
                            ops += 1;
                        }
                        j = end;
                        continue;
                    }
                    _ => {}
                },
            }
            j += 1;
        }
        if ops > TEMPLATE_MAX_TAG_OPERATORS {
            let line = src[..start].matches('\n').count() + 1;
            return Err(Error::Template(format!(
                "a tag on line {line} has {ops} operators; at most {TEMPLATE_MAX_TAG_OPERATORS} (deeper \
                 expressions would overflow the stack)"
            )));
        }
        i = (j + close.len()).min(b.len());
    }
    Ok(())
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn find(b: &[u8], from: usize, pat: &[u8]) -> Option<usize> {
    b.get(from..)?.windows(pat.len()).position(|w| w == pat).map(|p| from + p)
}

/// An `io::Write` into a `String` that refuses to grow past `TEMPLATE_MAX_OUTPUT`.
struct BoundedOutput(Vec<u8>);

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() + buf.len() > TEMPLATE_MAX_OUTPUT {
            return Err(std::io::Error::other(format!("rendered prompt exceeds {TEMPLATE_MAX_OUTPUT} bytes")));
        }
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn new_env() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(TEMPLATE_FUEL));
    env.set_recursion_limit(TEMPLATE_MAX_DEPTH);
    // Hugging Face renders with trim_blocks and lstrip_blocks.
    env.set_syntax(
        minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .expect("default delimiters are valid"),
    );
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |msg: String| -> std::result::Result<JValue, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("template raised: {msg}")))
    });
    env.add_function("strftime_now", |fmt: String| -> std::result::Result<String, minijinja::Error> {
        // chrono's Display fails on an unknown specifier (`%Q`); `to_string` would panic.
        use std::fmt::Write;
        let mut out = String::new();
        write!(out, "{}", chrono::Local::now().format(&fmt)).map_err(|_| {
            minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {fmt:?}"))
        })?;
        Ok(out)
    });
    env.add_filter(
        "tojson",
        |v: JValue,
         indent: Option<usize>,
         kwargs: minijinja::value::Kwargs|
         -> std::result::Result<JValue, minijinja::Error> {
            // Python's keyword arguments: `indent` is honoured; `ensure_ascii`, `sort_keys`
            // and `separators` are accepted (output is already ensure_ascii=False).
            let indent = match kwargs.get::<Option<usize>>("indent")? {
                Some(i) => Some(i),
                None => indent,
            };
            if indent.is_some_and(|i| i > TEMPLATE_MAX_INDENT) {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson: indent must be <= {TEMPLATE_MAX_INDENT}"),
                ));
            }
            check_expansion(&v, "tojson")?;
            let json: Value = serde_json::to_value(&v)
                .map_err(|e| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}")))?;
            let mut s = String::new();
            py_json(&json, indent, 0, &mut s);
            Ok(JValue::from_safe_string(s))
        },
    );
    // The filters that write a whole value out: checked first (see `check_expansion`).
    env.add_filter("string", |state: &minijinja::State, v: JValue| {
        check_expansion(&v, "string")?;
        minijinja::filters::string(state, &v)
    });
    env.add_filter(
        "join",
        |state: &mut minijinja::State,
         v: JValue,
         joiner: Option<minijinja::value::StringInput<'_>>,
         attribute: Option<&str>,
         kwargs: minijinja::value::Kwargs| {
            check_expansion(&v, "join")?;
            minijinja::filters::join(state, &v, joiner, attribute, kwargs)
        },
    );
    env.add_filter("pprint", |v: JValue| -> std::result::Result<String, minijinja::Error> {
        check_expansion(&v, "pprint")?;
        Ok(minijinja::filters::pprint(&v))
    });
    env
}

/// Refuses a value that would write out to more than [`TEMPLATE_MAX_OUTPUT`] bytes or
/// nests deeper than [`TEMPLATE_MAX_VALUE_DEPTH`], counted without writing it. Values
/// share their items: `{% set l = [[1]*1000]*1000 %}{{ ([l]*1000)|tojson }}` holds a
/// million items in memory and writes out a billion (12 GiB), which minijinja's fuel
/// does not see in filters that serialize a whole value at once.
fn check_expansion(v: &JValue, filter: &str) -> std::result::Result<(), minijinja::Error> {
    let error = |why: String| minijinja::Error::new(ErrorKind::InvalidOperation, format!("{filter}: {why}"));
    let too_big = || error(format!("the value writes out to more than {TEMPLATE_MAX_OUTPUT} bytes"));
    let mut left = TEMPLATE_MAX_OUTPUT;
    let mut stack = vec![(v.clone(), 0usize)];
    while let Some((v, depth)) = stack.pop() {
        if depth > TEMPLATE_MAX_VALUE_DEPTH {
            return Err(error(format!("the value nests deeper than {TEMPLATE_MAX_VALUE_DEPTH} levels")));
        }
        // A sized iterable (a repeated list is one) is walked too; an unsized one may be
        // a one-shot iterator, which walking would spend.
        let walk = match v.kind() {
            ValueKind::Seq | ValueKind::Map | ValueKind::Plain => true,
            ValueKind::Iterable => v.len().is_some(),
            _ => false,
        };
        let cost = match v.kind() {
            ValueKind::String => v.as_str().map_or(0, str::len) + 2,
            _ if walk => 2,
            _ => 8,
        };
        left = left.checked_sub(cost).ok_or_else(too_big)?;
        if !walk {
            continue;
        }
        let Ok(items) = v.try_iter() else { continue };
        let map = v.kind() == ValueKind::Map;
        for item in items {
            if map {
                stack.push((v.get_item(&item).unwrap_or_default(), depth + 1));
            }
            stack.push((item, depth + 1));
            // Every entry costs at least a byte: a stack longer than what is left is over.
            if stack.len() > left {
                return Err(too_big());
            }
        }
    }
    Ok(())
}

/// Deepest value [`check_expansion`] lets a filter serialize.
pub const TEMPLATE_MAX_VALUE_DEPTH: usize = 512;

/// Stack of the thread a Jinja template renders on. Values can nest as deep as the fuel
/// lets a loop wrap a list in itself (about 1.5 million levels), and minijinja prints,
/// compares and drops them recursively: measured (optimized build) ~100 bytes a level
/// to drop, ~500 to print. Address space reserved, committed only as used.
const RENDER_STACK: usize = 1 << 30;

impl ChatTemplate {
    /// Compiles a Jinja template (syntax errors are reported here, not at render time).
    pub fn jinja(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self> {
        let source = source.into();
        check_source(&source)?;
        let mut env = new_env();
        env.add_template_owned("chat", strip_generation_tags(&source)).map_err(template_error)?;
        Ok(ChatTemplate::Jinja { source, bos_token: bos_token.into(), eos_token: eos_token.into(), env })
    }

    /// A llama.cpp built-in template by name, e.g. `chatml`, `llama3`, `gemma`.
    pub fn builtin(name: &str) -> Result<Self> {
        if !Self::builtin_names().iter().any(|n| n == name) {
            return Err(Error::Template(format!("no built-in template named {name:?}")));
        }
        Ok(ChatTemplate::Builtin(name.into()))
    }

    /// Names of llama.cpp's built-in templates.
    pub fn builtin_names() -> Vec<String> {
        // SAFETY: with len 0 llama.cpp only returns the count.
        let n = unsafe { llama_sys::llama_chat_builtin_templates(std::ptr::null_mut(), 0) }.max(0) as usize;
        let mut ptrs: Vec<*const c_char> = vec![std::ptr::null(); n];
        // SAFETY: `ptrs` has room for `n` pointers to static strings.
        unsafe { llama_sys::llama_chat_builtin_templates(ptrs.as_mut_ptr(), n) };
        ptrs.iter()
            .filter(|p| !p.is_null())
            // SAFETY: static NUL-terminated names owned by llama.cpp.
            .map(|&p| unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned())
            .collect()
    }

    /// The model's own template (GGUF `tokenizer.chat_template`); without one, the
    /// built-in template of its family (`gemma` for Gemma, else `chatml`).
    pub fn from_model(model: &Model) -> Result<Self> {
        let v = model.vocab();
        let piece = |t: Option<crate::Token>| t.and_then(|t| v.token_to_piece(t, true).ok()).unwrap_or_default();
        match model.chat_template(None) {
            Some(src) => Self::jinja(src, piece(v.bos()), piece(v.eos())),
            None => {
                let arch = model.architecture();
                let name = if arch.starts_with("gemma") {
                    "gemma"
                } else if arch.starts_with("llama") {
                    "llama3"
                } else {
                    "chatml"
                };
                Self::builtin(name)
            }
        }
    }

    /// Renders a conversation into the prompt text.
    pub fn render(&self, messages: &[ChatMessage], opts: &RenderOptions) -> Result<String> {
        for m in messages {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(Error::Template(format!("unknown role {:?} (expected one of {ROLES:?})", m.role)));
            }
        }
        match self {
            ChatTemplate::Jinja { .. } => std::thread::scope(|scope| {
                std::thread::Builder::new()
                    .name("llama-rs-template".into())
                    .stack_size(RENDER_STACK)
                    .spawn_scoped(scope, || self.render_jinja(messages, opts))
                    .map_err(|e| Error::Limit { what: "template", detail: format!("no thread to render on: {e}") })?
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            }),
            ChatTemplate::Builtin(name) => apply_builtin(name, messages, opts.add_generation_prompt),
        }
    }

    fn render_jinja(&self, messages: &[ChatMessage], opts: &RenderOptions) -> Result<String> {
        match self {
            ChatTemplate::Jinja { bos_token, eos_token, env, .. } => {
                let tmpl = env.get_template("chat").map_err(template_error)?;
                let mut ctx = serde_json::Map::new();
                ctx.insert(
                    "messages".into(),
                    serde_json::to_value(messages).map_err(|e| Error::Template(e.to_string()))?,
                );
                ctx.insert("add_generation_prompt".into(), Value::Bool(opts.add_generation_prompt));
                ctx.insert("bos_token".into(), Value::String(bos_token.clone()));
                ctx.insert("eos_token".into(), Value::String(eos_token.clone()));
                if let Some(t) = &opts.tools {
                    ctx.insert("tools".into(), Value::Array(t.clone()));
                }
                for (k, v) in &opts.extra {
                    ctx.insert(k.clone(), v.clone());
                }
                let mut out = BoundedOutput(Vec::new());
                tmpl.render_captured_to(JValue::from(minijinja::value::Serde(&ctx)), &mut out)
                    .map_err(template_error)?;
                String::from_utf8(out.0).map_err(|e| Error::Template(format!("rendered text is not UTF-8: {e}")))
            }
            ChatTemplate::Builtin(_) => unreachable!("only Jinja templates render here"),
        }
    }
}

/// Removes `{% generation %}` / `{% endgeneration %}`: a Hugging Face extension that
/// marks assistant spans for training masks and renders nothing.
fn strip_generation_tags(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut rest = src;
    while let Some(start) = rest.find("{%") {
        // The closing `%}` is searched after the opening one: in `{%}` they overlap
        // (found by the chat_template fuzz target: a slice with begin > end).
        let Some(len) = rest[start + 2..].find("%}") else { break };
        let end = start + 2 + len + 2;
        let tag = &rest[start + 2..start + 2 + len];
        let word = tag.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace());
        out += &rest[..start];
        if word != "generation" && word != "endgeneration" {
            out += &rest[start..end];
        }
        rest = &rest[end..];
    }
    out += rest;
    out
}

/// llama.cpp's `llama_chat_apply_template` (built-in, non-Jinja templates). `tmpl` is a
/// template name or a Jinja source that llama.cpp recognises by its markers.
pub fn apply_builtin(tmpl: &str, messages: &[ChatMessage], add_assistant: bool) -> Result<String> {
    let t = crate::ffi::c_string(tmpl, "template")?;
    let owned: Vec<(CString, CString)> = messages
        .iter()
        .map(|m| Ok((CString::new(m.role.as_str())?, CString::new(m.content.as_str())?)))
        .collect::<std::result::Result<_, std::ffi::NulError>>()
        .map_err(|_| Error::Nul("message".into()))?;
    let raw: Vec<llama_sys::llama_chat_message> =
        owned.iter().map(|(r, c)| llama_sys::llama_chat_message { role: r.as_ptr(), content: c.as_ptr() }).collect();
    let mut cap = messages.iter().map(|m| m.content.len() * 2).sum::<usize>() + 256;
    loop {
        let mut buf = vec![0u8; cap];
        // SAFETY: all strings are valid C strings alive for the call; `buf` has `cap` bytes.
        let n = unsafe {
            llama_sys::llama_chat_apply_template(
                t.as_ptr(),
                raw.as_ptr(),
                raw.len(),
                add_assistant,
                buf.as_mut_ptr() as *mut c_char,
                cap as i32,
            )
        };
        if n < 0 {
            return Err(Error::Template(format!("llama.cpp does not support the template {tmpl:.60?}")));
        }
        if (n as usize) <= cap {
            buf.truncate(n as usize);
            return String::from_utf8(buf).map_err(|e| Error::Template(e.to_string()));
        }
        cap = n as usize;
    }
}

/// Finds tool calls in model output, for the common formats: Hermes/Qwen
/// (`<tool_call>{...}</tool_call>`), Mistral (`[TOOL_CALLS][{...}]` and
/// `[TOOL_CALLS]name[ARGS]{...}`), Llama 3.1 (`<|python_tag|>` or a bare
/// `{"name": ..., "parameters": ...}` object). Returns the remaining text and the calls;
/// with no call, the text is the output as it is.
///
/// This is [`ToolCallStream`] fed the whole output: a streamed answer and a whole one
/// split into the same text and calls, however the stream was cut.
///
/// ```
/// let (text, calls) = llama_rs::parse_tool_calls(
///     "Let me check.<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>");
/// assert_eq!(text, "Let me check.");
/// assert_eq!(calls[0].function.name, "get_weather");
/// assert_eq!(calls[0].function.arguments["city"], "Paris");
/// ```
pub fn parse_tool_calls(output: &str) -> (String, Vec<ToolCall>) {
    let mut stream = ToolCallStream::new();
    let mut events = stream.push(output);
    events.extend(stream.finish());
    let (mut text, mut calls) = (String::new(), Vec::new());
    for e in events {
        match e {
            ToolEvent::Content(c) => text += &c,
            ToolEvent::Call(c) | ToolEvent::CallEnd(c) => calls.push(c),
            ToolEvent::CallStart { .. } | ToolEvent::CallArgs(_) => {}
        }
    }
    (text, calls)
}

/// The calls of a complete block of output (the stream's parse of what it held).
pub(crate) fn parse_block(output: &str) -> (String, Vec<ToolCall>) {
    let mut calls = Vec::new();
    // Hermes / Qwen.
    if output.contains("<tool_call>") {
        let mut text = String::new();
        let mut rest = output;
        while let Some(start) = rest.find("<tool_call>") {
            text += &rest[..start];
            let after = &rest[start + "<tool_call>".len()..];
            // The block ends at the tag after its JSON object (a tag inside the
            // object's strings is text), else at the first tag.
            let lead = after.len() - after.trim_start().len();
            let json_close = json_end(after.trim_start())
                .map(|e| lead + e)
                .and_then(|e| after[e..].trim_start().starts_with("</tool_call>").then_some(e))
                .and_then(|e| after[e..].find("</tool_call>").map(|c| e + c));
            let (body, next) = match json_close.or_else(|| after.find("</tool_call>")) {
                Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                None => (after, ""),
            };
            if let Some(c) = call_from_json(body.trim()) {
                calls.push(c);
            }
            rest = next;
        }
        text += rest;
        return (text.trim().to_string(), calls);
    }
    // Mistral: one list, or `name[ARGS]{...}` calls, each after its own marker.
    if let Some(pos) = output.find("[TOOL_CALLS]") {
        let mut rest = output[pos..].trim_start();
        while let Some(r) = rest.strip_prefix("[TOOL_CALLS]") {
            let body = r.trim_start();
            if body.starts_with('[') {
                let end = json_end(body);
                match end.and_then(|e| serde_json::from_str::<Value>(&body[..e]).ok()) {
                    Some(Value::Array(items)) => calls.extend(items.iter().filter_map(call_from_value)),
                    _ => break,
                }
                rest = body[end.unwrap_or(body.len())..].trim_start();
                continue;
            }
            let Some((name, args)) = body.split_once("[ARGS]") else { break };
            let args = args.trim_start();
            let Some(end) = json_end(args) else { break };
            let Ok(a) = serde_json::from_str::<Value>(&args[..end]) else { break };
            calls.push(make_call(name.trim(), a, None));
            rest = args[end..].trim_start();
        }
        return (output[..pos].trim().to_string() + rest.trim(), calls);
    }
    // Llama 3.1.
    let (head, body) = match output.find("<|python_tag|>") {
        Some(p) => (&output[..p], &output[p + "<|python_tag|>".len()..]),
        None => ("", output),
    };
    let body_t = body.trim().trim_end_matches("<|eom_id|>").trim_end_matches("<|eot_id|>").trim();
    if body_t.starts_with('{') {
        // `{...}; {...}`: split at the `;` between objects (not inside strings).
        let mut rest = body_t;
        while let Some(end) = json_end(rest) {
            if let Some(c) = call_from_json(rest[..end].trim()) {
                calls.push(c);
            }
            rest = rest[end..].trim_start();
            match rest.strip_prefix(';') {
                Some(r) => rest = r.trim_start(),
                None => break,
            }
        }
        if !calls.is_empty() {
            return (head.trim().to_string() + rest.trim(), calls);
        }
    }
    (output.to_string(), calls)
}

/// Where the JSON object at the start of `s` (after whitespace) ends, if it is complete.
pub(crate) fn json_end(s: &str) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth += 1,
            '}' | ']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

fn make_call(name: &str, arguments: Value, id: Option<String>) -> ToolCall {
    ToolCall { id, kind: "function".into(), function: FunctionCall { name: name.into(), arguments } }
}

fn call_from_json(s: &str) -> Option<ToolCall> {
    call_from_value(&serde_json::from_str::<Value>(s).ok()?)
}

pub(crate) fn call_from_value(v: &Value) -> Option<ToolCall> {
    let name = v.get("name")?.as_str()?;
    let args = v.get("arguments").or_else(|| v.get("parameters")).cloned().unwrap_or(Value::Object(Default::default()));
    // Some models send the arguments as a JSON string.
    let args = match args {
        Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
        a => a,
    };
    let id = v.get("id").and_then(Value::as_str).map(str::to_owned);
    Some(make_call(name, args, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_are_stripped_and_odd_tags_survive() {
        assert_eq!(strip_generation_tags("a{% generation %}b{%- endgeneration -%}c"), "abc");
        // `{%}`: the opening and closing marks overlap (a fuzz finding: it panicked).
        assert_eq!(strip_generation_tags("x{%}y{% if a %}z"), "x{%}y{% if a %}z");
        assert_eq!(strip_generation_tags("{%"), "{%");
        assert!(ChatTemplate::jinja("{%}", "", "").is_err());
    }

    #[test]
    fn py_json_matches_python_dumps() {
        let v: Value = serde_json::from_str(r#"{"a": [1, 2, {"b": "<x> & 'y' é"}], "c": {}}"#).unwrap();
        let mut s = String::new();
        py_json(&v, None, 0, &mut s);
        assert_eq!(s, r#"{"a": [1, 2, {"b": "<x> & 'y' é"}], "c": {}}"#);
        let mut s = String::new();
        py_json(&serde_json::json!({"a": [1]}), Some(2), 0, &mut s);
        assert_eq!(s, "{\n  \"a\": [\n    1\n  ]\n}");
    }

    #[test]
    fn tool_call_formats() {
        let (t, c) = parse_tool_calls(r#"[TOOL_CALLS][{"name": "f", "arguments": {"x": 1}}]"#);
        assert_eq!(
            (t.as_str(), c[0].function.name.as_str(), &c[0].function.arguments["x"]),
            ("", "f", &serde_json::json!(1))
        );
        let (_, c) = parse_tool_calls(r#"<|python_tag|>{"name": "g", "parameters": {"q": "a"}}<|eom_id|>"#);
        assert_eq!(c[0].function.name, "g");
        let (_, c) = parse_tool_calls(r#"{"name": "h", "parameters": {}}"#);
        assert_eq!(c[0].function.name, "h");
        let (t, c) = parse_tool_calls("no calls here {not json");
        assert!(c.is_empty());
        assert_eq!(t, "no calls here {not json");
        let (_, c) = parse_tool_calls(
            r#"<tool_call>{"name": "a", "arguments": "{\"k\": 2}"}</tool_call><tool_call>{"name": "b"}</tool_call>"#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].function.arguments["k"], 2);
    }
}
