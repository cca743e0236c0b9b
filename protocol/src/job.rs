//! Wire request → generation job: the one place a request's prompt, sampling, grammar,
//! tools, reasoning, stop strings, choices and log-probabilities are read and checked.
//! Every wire format (OpenAI chat and completions, Anthropic, Ollama, Responses) and the
//! Python module build their jobs here.

use llama_rs::json_schema::JsonSpace;
use llama_rs::{
    ChatMessage, ChatTemplate, GenerateParams, Grammar, Model, Prompt, ReasoningBudget, ReasoningSplitter,
    RenderOptions, SamplerConfig, Speculation, Token,
};
use serde_json::{json, Value};

use crate::error::{ProtocolError, Result};
use crate::openai::{ChatRequest, CompletionRequest, OneOrMany, Sampling, WireMessage};

/// The most choices one request may ask for.
pub const MAX_N: usize = 64;
/// The most stop strings one request may give.
pub const MAX_STOP: usize = 16;
/// The most alternatives per token a request may ask for.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// What a job is made for: the model, its chat template and the serving defaults.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// The model (vocabulary size for `logit_bias`, token texts for log-probabilities).
    pub model: &'a Model,
    /// The chat template, or why there is none (chat requests are then a 400 saying so).
    pub template: std::result::Result<&'a ChatTemplate, &'a str>,
    /// Tokens one request may hold (prompt + generated).
    pub n_ctx: usize,
    /// Speculative decoding for every request, when set (off under a grammar).
    pub speculation: Option<&'a Speculation>,
    /// What a request that does not say gets.
    pub defaults: Defaults,
    /// How the model reads images and audio; `None`: it reads none.
    pub media: Option<crate::media::MediaReader<'a>>,
}

/// What a request that does not say gets (the server's flags, Python's arguments).
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// `max_tokens` (-1: until the context ends).
    pub max_tokens: i64,
    /// Thinking tokens (-1: no limit, 0: no thinking).
    pub reasoning_budget: i64,
    /// Thinking goes to `reasoning_content` (`--reasoning-format` other than `none`).
    pub split_reasoning: bool,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults { max_tokens: -1, reasoning_budget: -1, split_reasoning: true }
    }
}

/// A request made ready for the engine (or a `Session`): one prompt, its parameters, and
/// how many choices.
#[derive(Debug, Clone)]
pub struct Job {
    /// The prompt.
    pub prompt: Prompt,
    /// The generation parameters.
    pub params: GenerateParams,
    /// Choices (seeds seed, seed + 1, ...).
    pub n: usize,
    /// Answer as a stream.
    pub stream: bool,
    /// Send a usage chunk at the end of a stream.
    pub include_usage: bool,
}

impl Job {
    /// The engine request of one choice.
    pub fn request(&self) -> llama_rs::Request {
        llama_rs::Request { prompt: self.prompt.clone(), params: self.params.clone() }
    }
}

/// A chat request made ready, and how to read its answers.
#[derive(Debug, Clone)]
pub struct ChatJob {
    /// The job (its prompt is the rendered template).
    pub job: Job,
    /// Tools were offered (and not switched off): answers may be tool calls.
    pub tools_on: bool,
    /// Thinking goes to its own field.
    pub split_reasoning: bool,
    /// The rendered prompt opened a think block.
    pub opened: bool,
    /// `top_logprobs` when log-probabilities were asked for.
    pub top: Option<usize>,
}

/// The generation parameters of a request's sampling fields; every bad value is an error
/// naming its field.
pub fn params(t: &Target<'_>, s: &Sampling) -> Result<GenerateParams> {
    let max = s.max_completion_tokens.or(s.max_tokens).or(s.n_predict).unwrap_or(t.defaults.max_tokens);
    let max_tokens = match max {
        m if m < 0 => None,
        0 => return Err(ProtocolError::invalid("max_tokens", "max_tokens must be at least 1")),
        m if m as u64 > t.n_ctx as u64 => {
            return Err(ProtocolError::context(
                "max_tokens",
                format!("max_tokens {m} is more than the context holds ({} tokens per request)", t.n_ctx),
            ))
        }
        m => Some(m as usize),
    };
    let d = SamplerConfig::default();
    let mut sampler = SamplerConfig {
        temperature: s.temperature.unwrap_or(0.8),
        top_k: s.top_k.unwrap_or(40),
        top_p: s.top_p.unwrap_or(0.95),
        min_p: s.min_p.unwrap_or(0.05),
        typical_p: s.typical_p.unwrap_or(1.0),
        repeat_penalty: s.repeat_penalty.unwrap_or(1.0),
        penalty_last_n: s.repeat_last_n.unwrap_or(64),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        mirostat: s.mirostat.unwrap_or(0),
        mirostat_tau: s.mirostat_tau.unwrap_or(d.mirostat_tau),
        mirostat_eta: s.mirostat_eta.unwrap_or(d.mirostat_eta),
        ..d
    };
    // The sampler's own checks, once (`SamplerConfig::validate`); its errors name the
    // field, which is the wire's name but for the penalty window.
    sampler.validate().map_err(|e| {
        let e = ProtocolError::from(e);
        if e.param.as_deref() == Some("penalty_last_n") {
            return e.with_param("repeat_last_n");
        }
        e
    })?;
    if let Some(seed) = s.seed {
        // OpenAI seeds are 64-bit; llama.cpp's are 32-bit: fold, so every seed works.
        sampler.seed = (seed as u64 ^ (seed as u64 >> 32)) as u32;
    }
    if let Some(bias) = &s.logit_bias {
        let n_vocab = t.model.n_vocab();
        for (k, v) in bias {
            let tok: i32 =
                k.parse().map_err(|_| ProtocolError::invalid("logit_bias", format!("{k:?} is not a token id")))?;
            if !(0..n_vocab).contains(&tok) {
                return Err(ProtocolError::invalid(
                    "logit_bias",
                    format!("token {tok} is not in the vocabulary (0..{n_vocab})"),
                ));
            }
            if !v.is_finite() && *v != f32::NEG_INFINITY {
                return Err(ProtocolError::invalid("logit_bias", format!("bias {v} of token {tok} is not a number")));
            }
            sampler.logit_bias.push((Token(tok), v.clamp(-100.0, 100.0)));
        }
    }
    sampler.grammar = grammar(s)?;
    let stop = s.stop.clone().map(OneOrMany::into_vec).unwrap_or_default();
    if stop.len() > MAX_STOP {
        return Err(ProtocolError::invalid("stop", format!("at most {MAX_STOP} stop strings")));
    }
    let speculation = match t.speculation {
        Some(sp) if sampler.grammar.is_none() => Some(sp.clone()),
        _ => None,
    };
    Ok(GenerateParams {
        max_tokens,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        sampler,
        ignore_eos: s.ignore_eos,
        speculation,
        ..Default::default()
    })
}

/// The whitespace structured output may use (`json_whitespace`).
pub fn json_space(s: &Sampling) -> Result<JsonSpace> {
    match s.json_whitespace.as_deref() {
        None | Some("compact") => Ok(JsonSpace::Compact),
        Some("free") => Ok(JsonSpace::Free),
        Some(w) => Err(ProtocolError::invalid("json_whitespace", format!("{w:?}: expected \"compact\" or \"free\""))),
    }
}

/// `grammar` (GBNF), `json_schema` (llama-server) or `response_format` (OpenAI). A schema
/// we cannot enforce is an error that names the keyword, never unconstrained output.
pub fn grammar(s: &Sampling) -> Result<Option<Grammar>> {
    let space = json_space(s)?;
    let from_schema = |schema: &Value, param: &str| {
        Grammar::from_json_schema_with(schema, space).map(Some).map_err(|e| ProtocolError::from(e).with_param(param))
    };
    if let Some(g) = &s.grammar {
        return Ok(Some(Grammar::new(g.clone())));
    }
    if let Some(schema) = &s.json_schema {
        return from_schema(schema, "json_schema");
    }
    let Some(rf) = &s.response_format else { return Ok(None) };
    match rf.get("type").and_then(Value::as_str) {
        None | Some("text") => Ok(None),
        Some("json_object") => match rf.get("schema") {
            Some(schema) => from_schema(schema, "response_format"),
            None => from_schema(&json!({"type": "object"}), "response_format"),
        },
        Some("json_schema") => {
            let schema = rf
                .get("json_schema")
                .and_then(|j| j.get("schema"))
                .or_else(|| rf.get("schema"))
                .ok_or_else(|| ProtocolError::invalid("response_format", "json_schema.schema is missing"))?;
            from_schema(schema, "response_format")
        }
        Some(t) => Err(ProtocolError::invalid("response_format", format!("unknown response_format type {t:?}"))),
    }
}

/// A job for `prompt` with a request's sampling fields.
pub fn job(t: &Target<'_>, s: &Sampling, prompt: Prompt) -> Result<Job> {
    let n = s.n.unwrap_or(1);
    if n == 0 || n > MAX_N {
        return Err(ProtocolError::invalid("n", format!("n must be in 1..={MAX_N}")));
    }
    Ok(Job {
        prompt,
        params: params(t, s)?,
        n,
        stream: s.stream,
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// The text of a content value (OpenAI's message content, Anthropic's `system` and
/// `tool_result` content): null, a string, or a list of text parts.
pub fn text_content(v: &Value, field: &str) -> Result<String> {
    match v {
        Value::Null => Ok(String::new()),
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut s = String::new();
            for (k, p) in parts.iter().enumerate() {
                match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                    (Some("text" | "input_text" | "output_text"), Some(t)) => s += t,
                    (t, _) => {
                        return Err(ProtocolError::invalid(
                            &format!("{field}[{k}]"),
                            format!("content part of type {t:?} is not supported (text only)"),
                        ))
                    }
                }
            }
            Ok(s)
        }
        _ => Err(ProtocolError::invalid(field, "content must be a string or a list of parts")),
    }
}

/// The content of a chat message: like [`text_content`], and media parts (read with
/// `reader` into `sink`) become the projector's marker in the text.
pub fn message_content(
    v: &Value,
    field: &str,
    reader: Option<&crate::media::MediaReader<'_>>,
    sink: &mut crate::media::MediaSink,
) -> Result<String> {
    let Value::Array(parts) = v else { return text_content(v, field) };
    let mut s = String::new();
    for (k, p) in parts.iter().enumerate() {
        let kind = p.get("type").and_then(Value::as_str);
        if crate::media::is_media_part(kind) {
            s += &crate::media::read_part(p, &format!("{field}[{k}]"), reader, sink)?;
        } else {
            s += &text_content(&Value::Array(vec![p.clone()]), &format!("{field}[{k}]"))
                .map_err(|e| ProtocolError { param: Some(format!("{field}[{k}]")), ..e })?;
        }
    }
    Ok(s)
}

/// The chat messages of a request; their media (parts, or Ollama's `images`) are read
/// with `reader` into `sink`, in order.
pub fn messages(
    wire: Vec<WireMessage>,
    reader: Option<&crate::media::MediaReader<'_>>,
    sink: &mut crate::media::MediaSink,
) -> Result<Vec<ChatMessage>> {
    if wire.is_empty() {
        return Err(ProtocolError::invalid("messages", "messages must not be empty"));
    }
    wire.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("messages[{i}].content");
            let mut content = match &m.images {
                Some(images) => crate::media::read_images(images, &format!("messages[{i}].images"), reader, sink)?,
                None => String::new(),
            };
            content += &message_content(&m.content.unwrap_or(Value::Null), &field, reader, sink)?;
            let mut msg = ChatMessage::new(m.role, content);
            msg.tool_calls = m.tool_calls.unwrap_or_default();
            msg.tool_call_id = m.tool_call_id;
            msg.name = m.name;
            Ok(msg)
        })
        .collect()
}

/// Whether a request's tools are on (offered, and `tool_choice` is not "none").
fn tools_on(req: &ChatRequest) -> bool {
    req.tools.as_ref().is_some_and(|t| !t.is_empty())
        && !matches!(req.tool_choice.as_ref().and_then(Value::as_str), Some("none"))
}

/// `tool_choice` "required" or a named function: a grammar that makes the answer a call
/// (Hermes' `<tool_call>` form, which the parser reads for every model) whose `name` is
/// one of the offered tools (or the named one) and whose `arguments` follow that tool's
/// parameter schema.
pub fn forced_tool_grammar(req: &ChatRequest) -> Result<Option<Grammar>> {
    let tools = req.tools.as_deref().unwrap_or_default();
    let wanted: Option<&str> = match &req.tool_choice {
        Some(Value::String(s)) if s == "required" => None,
        Some(Value::Object(o)) => Some(
            o.get("function")
                .and_then(|f| f.get("name"))
                .or_else(|| o.get("name")) // the Responses API's flat form
                .and_then(Value::as_str)
                .ok_or_else(|| ProtocolError::invalid("tool_choice", "tool_choice.function.name is missing"))?,
        ),
        Some(Value::String(s)) if s == "auto" || s == "none" => return Ok(None),
        None => return Ok(None),
        Some(v) => return Err(ProtocolError::invalid("tool_choice", format!("unknown tool_choice {v}"))),
    };
    let mut alternatives = Vec::new();
    for t in tools {
        let Some(f) = t.get("function") else { continue };
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            return Err(ProtocolError::invalid("tools", "every tool needs function.name"));
        };
        if wanted.is_some_and(|w| w != name) {
            continue;
        }
        let params = f.get("parameters").cloned().unwrap_or(json!({"type": "object"}));
        alternatives.push(json!({
            "type": "object",
            "properties": {"name": {"const": name}, "arguments": params},
            "required": ["name", "arguments"],
        }));
    }
    if alternatives.is_empty() {
        return Err(ProtocolError::invalid(
            "tool_choice",
            format!("no offered tool is named {:?}", wanted.unwrap_or("")),
        ));
    }
    let schema = if alternatives.len() == 1 { alternatives.remove(0) } else { json!({ "anyOf": alternatives }) };
    let call = llama_rs::json_schema::to_gbnf_with(&schema, json_space(&req.sampling)?)
        .map_err(|e| ProtocolError::from(e).with_param("tools"))?;
    let call = call.replacen("root ::= ", "call ::= ", 1);
    Ok(Some(Grammar::new(format!("root ::= \"<tool_call>\\n\" call \"\\n</tool_call>\"\n{call}"))))
}

/// Renders a chat request's prompt and builds its job: the part every chat wire format
/// and Python share.
pub fn chat_job(t: &Target<'_>, mut req: ChatRequest) -> Result<ChatJob> {
    let top = match (req.logprobs, req.top_logprobs) {
        (_, Some(k)) if k > MAX_TOP_LOGPROBS => {
            return Err(ProtocolError::invalid(
                "top_logprobs",
                format!("top_logprobs must be in 0..={MAX_TOP_LOGPROBS}"),
            ))
        }
        (false, Some(k)) if k > 0 => {
            return Err(ProtocolError::invalid("top_logprobs", "top_logprobs needs logprobs: true"))
        }
        (true, k) => Some(k.unwrap_or(0)),
        (false, _) => None,
    };
    let mut sink = crate::media::MediaSink::default();
    let msgs = messages(std::mem::take(&mut req.messages), t.media.as_ref(), &mut sink)?;
    let budget = match req.reasoning_budget {
        None => t.defaults.reasoning_budget,
        Some(b) if b >= -1 => b,
        Some(b) => {
            return Err(ProtocolError::invalid("reasoning_budget", format!("must be -1 (no limit) or more, got {b}")))
        }
    };
    let tmpl = t
        .template
        .map_err(|why| ProtocolError::invalid("messages", if why.is_empty() { "no chat template" } else { why }))?;
    let tools_on = tools_on(&req);
    let mut extra = req.chat_template_kwargs.clone().unwrap_or_default();
    if budget == 0 {
        // `--reasoning-budget 0`: what llama-server passes; Qwen3-style templates then
        // close the think block in the prompt. A request's own kwargs win.
        extra.entry("enable_thinking").or_insert(Value::Bool(false));
    }
    let opts =
        RenderOptions { add_generation_prompt: true, tools: if tools_on { req.tools.clone() } else { None }, extra };
    let text = tmpl.render(&msgs, &opts)?;
    let opened = ReasoningSplitter::prompt_opens_block(&text);
    let prompt = match sink.media.is_empty() {
        true => Prompt::Text(text),
        false => Prompt::Media { text, media: sink.media },
    };
    let mut j = job(t, &req.sampling, prompt)?;
    // A budget ends the think block by generating its end tag (also with budget 0, for
    // templates that open the block whatever `enable_thinking` says).
    if let Ok(tokens) = usize::try_from(budget) {
        j.params.reasoning_budget = Some(ReasoningBudget { tokens, started: opened });
    }
    if tools_on && j.params.sampler.grammar.is_none() {
        if let Some(g) = forced_tool_grammar(&req)? {
            j.params.sampler.grammar = Some(g);
            j.params.speculation = None;
        }
    }
    j.params.add_special = false;
    j.params.parse_special = true;
    j.params.logprobs = top;
    Ok(ChatJob { job: j, tools_on, split_reasoning: t.defaults.split_reasoning, opened, top })
}

/// The prompt(s) of a completion request: a string, token ids, or a list of either.
pub fn prompts(v: &Value, param: &str) -> Result<Vec<Prompt>> {
    let tokens = |a: &[Value]| -> Option<Vec<Token>> {
        a.iter().map(|x| x.as_i64().filter(|t| i32::try_from(*t).is_ok()).map(|t| Token(t as i32))).collect()
    };
    let bad = || ProtocolError::invalid(param, format!("{param} must be a string, a list of strings, or token ids"));
    match v {
        Value::String(s) => Ok(vec![Prompt::Text(s.clone())]),
        Value::Array(a) if a.is_empty() => Err(ProtocolError::invalid(param, format!("{param} must not be empty"))),
        Value::Array(a) if a[0].is_number() => Ok(vec![Prompt::Tokens(tokens(a).ok_or_else(bad)?)]),
        Value::Array(a) => a
            .iter()
            .map(|x| match x {
                Value::String(s) => Ok(Prompt::Text(s.clone())),
                Value::Array(t) => Ok(Prompt::Tokens(tokens(t).ok_or_else(bad)?)),
                _ => Err(bad()),
            })
            .collect(),
        _ => Err(bad()),
    }
}

/// The jobs of a text completion request (one per prompt).
pub fn completion_jobs(t: &Target<'_>, req: &CompletionRequest) -> Result<Vec<Job>> {
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ProtocolError::invalid("suffix", "suffix (fill-in-the-middle) is not supported yet"));
    }
    if req.logprobs.is_some_and(|k| k > MAX_TOP_LOGPROBS) {
        return Err(ProtocolError::invalid("logprobs", format!("logprobs must be in 0..={MAX_TOP_LOGPROBS}")));
    }
    prompts(&req.prompt, "prompt")?
        .into_iter()
        .map(|p| {
            let mut j = job(t, &req.sampling, p)?;
            j.params.logprobs = req.logprobs;
            Ok(j)
        })
        .collect()
}
