//! The server on a loopback port with the real chat model (SmolLM2-135M-Instruct):
//! every endpoint, streaming and not, bad requests as 4xx, cancellation on disconnect,
//! and a bounded load test.

use std::io::Read;
use std::time::Duration;

use llama_rs_server::{args, Server};
use serde_json::{json, Value};

fn chat_model() -> String {
    if let Ok(p) = std::env::var("LLAMA_RS_CHAT_MODEL") {
        return p;
    }
    let p = llama_testkit::cache_dir().join("models").join(llama_rs_server::state::DEFAULT_CHAT_MODEL);
    assert!(p.is_file(), "{} missing: run `python3 vendor/fetch.py chat-model`", p.display());
    p.display().to_string()
}

fn start(extra: &[&str]) -> (Server, String) {
    let model = chat_model();
    let mut argv = vec!["llama-rs-server", "-m", &model, "--port", "0", "-c", "4096", "-np", "4", "-t", "2"];
    argv.extend_from_slice(extra);
    let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
    s.wait_ready(Duration::from_secs(120)).unwrap();
    let base = format!("http://{}", s.addr());
    (s, base)
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(300)).build().unwrap()
}

fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = client().post(format!("{base}{path}")).json(&body).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn post_raw(base: &str, path: &str, body: &str) -> (u16, Value) {
    let r = client()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn get(base: &str, path: &str) -> (u16, Value) {
    let r = client().get(format!("{base}{path}")).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The `data:` payloads of an SSE response (without `[DONE]`), and whether `[DONE]` came.
fn sse(base: &str, path: &str, body: Value) -> (Vec<Value>, bool) {
    let mut r = client().post(format!("{base}{path}")).json(&body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    let mut out = Vec::new();
    let mut done = false;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("data: ") {
            if d == "[DONE]" {
                done = true;
            } else {
                out.push(serde_json::from_str(d).unwrap());
            }
        }
    }
    (out, done)
}

fn greedy_chat(content: &str, max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn endpoints_answer_in_openai_and_llama_server_shapes() {
    let (_s, base) = start(&["--metrics", "-a", "smol"]);
    let (st, health) = get(&base, "/health");
    assert_eq!((st, health["status"].as_str()), (200, Some("ok")));
    let (st, models) = get(&base, "/v1/models");
    assert_eq!(st, 200);
    assert_eq!(models["data"][0]["id"], "smol");
    assert_eq!(models["data"][0]["meta"]["n_vocab"], 49152);

    // Chat, not streamed.
    let (st, r) = post(&base, "/v1/chat/completions", greedy_chat("What is the capital of France?", 24));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "chat.completion");
    let text = r["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    let u = &r["usage"];
    assert!(u["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(u["total_tokens"], u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap());
    assert!(["stop", "length"].contains(&r["choices"][0]["finish_reason"].as_str().unwrap()));
    assert!(r["timings"]["predicted_n"].as_u64().is_some());

    // Text completion with logprobs and echo.
    let (st, r) = post(
        &base,
        "/v1/completions",
        json!({"prompt": "1, 2, 3, 4,", "max_tokens": 6, "temperature": 0, "logprobs": 2, "echo": true}),
    );
    assert_eq!(st, 200, "{r}");
    let t = r["choices"][0]["text"].as_str().unwrap();
    assert!(t.starts_with("1, 2, 3, 4,"), "{t}");
    let lp = &r["choices"][0]["logprobs"];
    assert_eq!(lp["tokens"].as_array().unwrap().len(), lp["token_logprobs"].as_array().unwrap().len());
    assert!(lp["token_logprobs"][0].as_f64().unwrap() <= 0.0);
    assert!(lp["top_logprobs"][0].as_object().unwrap().len() <= 2);

    // Chat logprobs in OpenAI's chat shape.
    let mut body = greedy_chat("Say hi.", 4);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(3);
    let (st, r) = post(&base, "/v1/chat/completions", body);
    assert_eq!(st, 200, "{r}");
    let c = &r["choices"][0]["logprobs"]["content"];
    assert!(!c.as_array().unwrap().is_empty());
    assert_eq!(c[0]["top_logprobs"].as_array().unwrap().len(), 3);
    assert!(c[0]["bytes"].is_array());

    // Embeddings, float and base64.
    let (st, r) = post(&base, "/v1/embeddings", json!({"input": ["hello world", "goodbye"]}));
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["data"].as_array().unwrap().len(), 2);
    let dim = r["data"][0]["embedding"].as_array().unwrap().len();
    assert_eq!(dim, 576);
    let (st, r) = post(&base, "/v1/embeddings", json!({"input": "hello world", "encoding_format": "base64"}));
    assert_eq!(st, 200);
    assert_eq!(r["data"][0]["embedding"].as_str().unwrap().len(), (dim * 4).div_ceil(3) * 4);

    // llama-server extras.
    let (st, r) = post(&base, "/tokenize", json!({"content": "Hello world", "with_pieces": true}));
    assert_eq!(st, 200);
    let ids: Vec<i64> = r["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_i64().unwrap()).collect();
    let (st, r) = post(&base, "/detokenize", json!({ "tokens": ids }));
    assert_eq!((st, r["content"].as_str()), (200, Some("Hello world")));
    let (st, r) = post(&base, "/apply-template", json!({"messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(st, 200);
    assert!(r["prompt"].as_str().unwrap().contains("<|im_start|>user\nHi"), "{r}");
    let (st, r) = get(&base, "/props");
    assert_eq!((st, r["total_slots"].as_u64()), (200, Some(4)));
    let m = client().get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    assert!(m.contains("llamacpp:tokens_predicted_total"), "{m}");
    let generated: f64 =
        m.lines().find_map(|l| l.strip_prefix("llamacpp:tokens_predicted_total ")).unwrap().parse().unwrap();
    assert!(generated >= 24.0);
    // The engine loop's phases: each present; decode + wait is the decode time, and the
    // phases together cover at least it.
    let value = |prefix: &str| -> f64 {
        m.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {m}"))
            .trim()
            .parse()
            .unwrap()
    };
    let phase = |p: &str| value(&format!("llama_rs:engine_seconds_total{{phase=\"{p}\"}} "));
    let phases: Vec<f64> =
        ["admit", "batch", "decode", "wait", "sample", "emit", "deliver", "other"].iter().map(|p| phase(p)).collect();
    let busy = value("llama_rs:busy_seconds_total ");
    assert!(phases.iter().all(|s| *s >= 0.0) && phases[2] > 0.0 && phases[4] > 0.0 && phases[5] > 0.0, "{m}");
    assert!((phases[2] + phases[3] - busy).abs() <= 1e-3 + busy * 0.01, "{m}");
    assert!(phases.iter().sum::<f64>() >= busy * 0.99, "{m}");
}

#[test]
fn streamed_chat_reassembles_to_the_non_streamed_answer() {
    let (_s, base) = start(&[]);
    for q in ["Write a haiku about the sea.", "List three colors, one per line."] {
        let body = greedy_chat(q, 48);
        let (_, whole) = post(&base, "/v1/chat/completions", body.clone());
        let expected = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
        let mut sb = body.clone();
        sb["stream"] = json!(true);
        sb["stream_options"] = json!({"include_usage": true});
        let (chunks, done) = sse(&base, "/v1/chat/completions", sb);
        assert!(done);
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let text: String =
            chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect::<Vec<_>>().concat();
        assert_eq!(text, expected);
        let finish: Vec<&str> = chunks.iter().filter_map(|c| c["choices"][0]["finish_reason"].as_str()).collect();
        assert_eq!(finish, vec![whole["choices"][0]["finish_reason"].as_str().unwrap()]);
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"]["completion_tokens"], whole["usage"]["completion_tokens"]);
        assert!(last["choices"].as_array().unwrap().is_empty());
    }
    // A stop string never leaks, not even in part, into the stream.
    let mut sb = json!({"prompt": "Count: 1, 2, 3, 4, 5, 6, 7,", "max_tokens": 30, "temperature": 0,
                        "stop": [" 9"], "stream": true});
    let (chunks, _) = sse(&base, "/v1/completions", sb.clone());
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["text"].as_str()).collect::<Vec<_>>().concat();
    sb["stream"] = json!(false);
    let (_, whole) = post(&base, "/v1/completions", sb);
    assert_eq!(text, whole["choices"][0]["text"].as_str().unwrap());
    assert!(!text.contains(" 9"), "{text}");
}

#[test]
fn n_choices_seeds_and_concurrent_greedy_answers_equal_solo_answers() {
    let (_s, base) = start(&["--deterministic"]);
    // n > 1: distinct seeds per choice, reproducible per request seed.
    let body = json!({"messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 16,
                      "temperature": 1.0, "seed": 42, "n": 3});
    let (st, a) = post(&base, "/v1/chat/completions", body.clone());
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["choices"].as_array().unwrap().len(), 3);
    let (_, b) = post(&base, "/v1/chat/completions", body);
    for i in 0..3 {
        assert_eq!(a["choices"][i]["message"], b["choices"][i]["message"]);
        assert_eq!(a["choices"][i]["index"], i);
    }
    let texts: std::collections::HashSet<String> =
        (0..3).map(|i| a["choices"][i]["message"]["content"].as_str().unwrap().to_string()).collect();
    assert!(texts.len() > 1, "three seeds gave one text: {texts:?}");

    // Greedy answers under concurrency equal the solo answers.
    let qs = ["What is 2 + 2?", "Name a fruit.", "Who wrote Hamlet?", "What color is the sky?", "Say a number."];
    let solo: Vec<Value> = qs.iter().map(|q| post(&base, "/v1/chat/completions", greedy_chat(q, 24)).1).collect();
    let together: Vec<Value> = std::thread::scope(|sc| {
        let hs: Vec<_> =
            qs.iter().map(|q| sc.spawn(|| post(&base, "/v1/chat/completions", greedy_chat(q, 24)).1)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in solo.iter().zip(&together) {
        assert_eq!(a["choices"][0]["message"]["content"], b["choices"][0]["message"]["content"]);
    }
}

#[test]
fn bad_requests_are_4xx_with_an_openai_error_body() {
    let (_s, base) = start(&["--body-limit", "20000"]);
    let err = |(st, body): (u16, Value), want: u16, needle: &str| {
        assert_eq!(st, want, "{body}");
        let msg = body["error"]["message"].as_str().unwrap_or_else(|| panic!("no error body: {body}"));
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(body["error"]["type"].is_string());
    };
    err(post_raw(&base, "/v1/chat/completions", "{not json"), 400, "invalid request body");
    err(post_raw(&base, "/v1/chat/completions", r#"{"messages": 5}"#), 400, "messages");
    err(post(&base, "/v1/chat/completions", json!({"messages": []})), 400, "empty");
    // One served model answers whatever model a request names (llama-server does; tools
    // send `gpt-4o-mini`), with its own name in the answer.
    let (st, body) = post(
        &base,
        "/v1/chat/completions",
        json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["model"], get(&base, "/v1/models").1["data"][0]["id"], "{body}");
    err(
        post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 100000}),
        ),
        400,
        "context",
    );
    err(
        post(&base, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "x"}], "n": 0})),
        400,
        "n must",
    );
    // The sampler's own checks (`SamplerConfig::validate`, once) name the wire field.
    for (field, bad) in
        [("top_p", json!(2.0)), ("top_k", json!(-1)), ("repeat_last_n", json!(-5)), ("mirostat", json!(7))]
    {
        let mut b = json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 2});
        b[field] = bad;
        let (st, e) = post(&base, "/v1/chat/completions", b);
        assert_eq!((st, e["error"]["param"].as_str()), (400, Some(field)), "{e}");
    }
    err(
        post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}),
        ),
        400,
        "invalid",
    );
    err(
        post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "logit_bias": {"999999": 1}}),
        ),
        400,
        "vocabulary",
    );
    err(
        post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "grammar": "root ::= ("}),
        ),
        400,
        "",
    );
    let pattern =
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^a+$"}}});
    err(
        post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "response_format": pattern}),
        ),
        400,
        "pattern",
    );
    err(post(&base, "/v1/completions", json!({"prompt": "x", "suffix": "y"})), 400, "suffix");
    err(post(&base, "/v1/completions", json!({"prompt": [99999999]})), 400, "");
    err(post(&base, "/detokenize", json!({"tokens": [-1]})), 400, "vocabulary");
    err(post(&base, "/v1/embeddings", json!({"input": {"a": 1}})), 400, "input");
    err(post_raw(&base, "/v1/completions", &format!("{{\"prompt\": \"{}\"}}", "a".repeat(30000))), 413, "limit");
    err(get(&base, "/v1/nothing"), 404, "no route");
    err(get(&base, "/v1/chat/completions"), 405, "method");
    // A prompt longer than the context (~4,800 tokens, 4,096 in the pool): 400, not a
    // dead server.
    let long = "a b ".repeat(2400);
    err(post(&base, "/v1/completions", json!({"prompt": long, "max_tokens": 4})), 400, "");
    assert_eq!(get(&base, "/health").0, 200);

    // `--strict-model-name`: another name is a 404 naming the served one.
    let (_s2, strict) = start(&["--strict-model-name"]);
    let (st, body) = post(
        &strict,
        "/v1/chat/completions",
        json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(st, 404, "{body}");
    assert_eq!(body["error"]["code"], "model_not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("gpt-9"), "{body}");
}

/// The second hardening pass through HTTP: settings the library refuses are refused at
/// startup (not clamped, not on every request); a chat template that nests past the
/// bound or builds gigabytes by repetition fails the request with a 4xx, and the server
/// goes on answering.
#[test]
fn hostile_flags_and_templates_are_errors_not_crashes() {
    let model = chat_model();
    for extra in [
        &["--spec-type", "ngram", "--draft-min", "0"][..],
        &["--spec-type", "ngram", "--draft-min", "100"],
        &["--spec-type", "ngram", "--draft-max", "0"],
    ] {
        let mut argv = vec!["llama-rs-server", "-m", &model, "--port", "0", "-c", "1024", "-t", "2"];
        argv.extend_from_slice(extra);
        let r = Server::spawn(args::parse_from(argv).unwrap()).and_then(|s| {
            s.wait_ready(Duration::from_secs(120))?;
            Ok(s)
        });
        assert!(r.is_err(), "{extra:?} was accepted");
    }
    let deep = format!("{{{{ {}true }}}}", "not ".repeat(50_000));
    for template in [deep.as_str(), "{% set l = [[1]*1000]*1000 %}{{ ([l]*1000)|tojson|length }}"] {
        let (_s, base) = start(&["--chat-template", template]);
        let (st, body) = post(&base, "/v1/chat/completions", greedy_chat("hi", 4));
        assert!((400..500).contains(&st), "{st} {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("template")), "{body}");
        assert_eq!(get(&base, "/health").0, 200);
    }
}

#[test]
fn api_key_json_schema_and_tool_calls() {
    let (_s, base) = start(&["--api-key", "sekrit"]);
    let c = client();
    let chat = |key: Option<&str>, body: Value| {
        let mut r = c.post(format!("{base}/v1/chat/completions")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        let r = r.send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    assert_eq!(chat(None, greedy_chat("x", 2)).0, 401);
    assert_eq!(chat(Some("wrong"), greedy_chat("x", 2)).0, 401);
    assert_eq!(c.get(format!("{base}/health")).send().unwrap().status().as_u16(), 200);
    assert_eq!(c.get(format!("{base}/v1/models")).header("x-api-key", "sekrit").send().unwrap().status().as_u16(), 200);

    // json_schema: the answer parses and has the required fields.
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"]});
    let mut body = greedy_chat("Describe a person as JSON.", 64);
    body["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "person", "schema": schema}});
    let (st, r) = chat(Some("sekrit"), body);
    assert_eq!(st, 200, "{r}");
    let v: Value = serde_json::from_str(r["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert!(v["name"].is_string() && v["age"].is_i64(), "{v}");

    // Tool calls: the model's output (forced here by a grammar, so the test does not
    // depend on what a 135M model chooses) is parsed into OpenAI tool_calls.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let call =
        r#"root ::= "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>""#;
    let mut body = greedy_chat("What is the weather in Paris?", 64);
    body["tools"] = tools.clone();
    body["grammar"] = json!(call);
    let (st, r) = chat(Some("sekrit"), body.clone());
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{r}");
    let tc = &r["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(tc["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], "Paris");
    // tool_choice naming a function (or "required"): the grammar makes the answer a call
    // with that name and arguments that follow its schema, whatever the model.
    for choice in [json!({"type": "function", "function": {"name": "get_weather"}}), json!("required")] {
        let mut b = greedy_chat("What is the weather in Paris?", 64);
        b["tools"] = tools.clone();
        b["tool_choice"] = choice;
        let (st, r) = chat(Some("sekrit"), b.clone());
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{r}");
        let tc = &r["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(tc["function"]["name"], "get_weather");
        let args: Value = serde_json::from_str(tc["function"]["arguments"].as_str().unwrap()).unwrap();
        assert!(args["city"].is_string(), "{args}");
        // Streamed: the call's id and name first, then its arguments piece by piece
        // (OpenAI's deltas), joining to the non-streamed arguments.
        let mut b = b.clone();
        b["stream"] = json!(true);
        let mut text = String::new();
        c.post(format!("{base}/v1/chat/completions"))
            .bearer_auth("sekrit")
            .json(&b)
            .send()
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        let deltas: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").filter(|d| *d != "[DONE]"))
            .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0].clone())
            .collect();
        let calls: Vec<&Value> = deltas.iter().filter_map(|d| d["delta"]["tool_calls"].get(0)).collect();
        assert_eq!(
            (calls[0]["function"]["name"].as_str(), calls[0]["function"]["arguments"].as_str()),
            (Some("get_weather"), Some(""))
        );
        assert!(calls[0]["id"].is_string() && calls.iter().all(|c| c["index"] == 0), "{calls:?}");
        assert!(calls.len() > 3, "arguments come in pieces: {calls:?}");
        let joined: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
        assert_eq!(serde_json::from_str::<Value>(&joined).unwrap(), args, "{joined}");
        assert_eq!(deltas.last().unwrap()["finish_reason"], "tool_calls");
    }
    let mut b = greedy_chat("x", 8);
    b["tools"] = tools.clone();
    b["tool_choice"] = json!({"type": "function", "function": {"name": "nope"}});
    assert_eq!(chat(Some("sekrit"), b).0, 400);
    // A call that does not parse comes back as content with finish_reason "stop".
    body["grammar"] = json!(r#"root ::= "<tool_call>{not json</tool_call>""#);
    let (st, r) = chat(Some("sekrit"), body);
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["choices"][0]["finish_reason"], "stop");
    assert!(r["choices"][0]["message"]["content"].as_str().unwrap().contains("not json"));
}

#[test]
fn disconnects_cancel_and_a_load_test_leaves_no_busy_slot() {
    let (s, base) = start(&["--timeout", "60"]);
    // 32 clients at once (4 slots), every third hangs up after its first chunk.
    std::thread::scope(|sc| {
        for i in 0..32 {
            let base = base.clone();
            sc.spawn(move || {
                let body = json!({"messages": [{"role": "user", "content": format!("Tell me about the number {i}.")}],
                                  "max_tokens": if i % 3 == 0 { 2000 } else { 12 }, "stream": true,
                                  "temperature": 0.7, "seed": i});
                let mut r = client().post(format!("{base}/v1/chat/completions")).json(&body).send().unwrap();
                assert_eq!(r.status().as_u16(), 200);
                let mut buf = [0u8; 256];
                if i % 3 == 0 {
                    let _ = r.read(&mut buf).unwrap();
                    drop(r); // hang up mid-stream
                } else {
                    let mut text = String::new();
                    r.read_to_string(&mut text).unwrap();
                    assert!(text.contains("[DONE]"));
                }
            });
        }
    });
    // The hung-up requests are cancelled (not run to 2,000 tokens): the engine is idle
    // within seconds.
    let t = std::time::Instant::now();
    loop {
        let m = s.metrics().unwrap();
        if m.active == 0 && m.queued == 0 {
            assert!(m.generated_tokens < 32 * 12 + 11 * 200, "{m:?}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "still busy: {m:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(&base, "/health").0, 200);
}

#[test]
fn ollama_api_lists_chats_generates_and_embeds() {
    let (_s, base) = start(&["-a", "smol"]);
    let r = client().get(format!("{base}/")).send().unwrap().text().unwrap();
    assert_eq!(r, "Ollama is running");
    assert!(get(&base, "/api/version").1["version"].is_string());
    let (st, tags) = get(&base, "/api/tags");
    assert_eq!(st, 200);
    assert_eq!(tags["models"][0]["name"], "smol:latest");
    assert_eq!(tags["models"][0]["details"]["format"], "gguf");
    let (st, show) = post(&base, "/api/show", json!({"model": "smol:latest"}));
    assert_eq!(st, 200, "{show}");
    assert_eq!(show["model_info"]["general.architecture"], "llama");
    // One served model answers every name (as on the OpenAI endpoints).
    assert_eq!(post(&base, "/api/show", json!({"model": "llama3:8b"})).0, 200);

    // Chat, not streamed and streamed (NDJSON): the same text.
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "Name three animals."}],
                      "stream": false, "options": {"temperature": 0, "num_predict": 24, "num_ctx": 2048}});
    let (st, whole) = post(&base, "/api/chat", body.clone());
    assert_eq!(st, 200, "{whole}");
    assert_eq!(whole["done"], true);
    assert!(whole["eval_count"].as_u64().unwrap() > 0);
    let expected = whole["message"]["content"].as_str().unwrap().to_string();
    let mut sb = body;
    sb["stream"] = json!(true);
    let r = client().post(format!("{base}/api/chat")).json(&sb).send().unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r.text().unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let text: String = lines.iter().filter_map(|v| v["message"]["content"].as_str()).collect::<Vec<_>>().concat();
    assert_eq!(text, expected);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines[..lines.len() - 1].iter().all(|v| v["done"] == false));

    // Generate with format "json": the response parses.
    let (st, g) = post(
        &base,
        "/api/generate",
        json!({"model": "smol", "prompt": "Give a JSON object describing a cat.", "format": "json", "stream": false,
               "options": {"temperature": 0, "num_predict": 48}}),
    );
    assert_eq!(st, 200, "{g}");
    let resp = g["response"].as_str().unwrap();
    if g["done_reason"] == "stop" {
        assert!(serde_json::from_str::<Value>(resp).unwrap().is_object(), "{resp}");
    }
    // Embeddings, both endpoints.
    let (st, e) = post(&base, "/api/embed", json!({"model": "smol", "input": ["a", "b"]}));
    assert_eq!(st, 200, "{e}");
    assert_eq!(e["embeddings"].as_array().unwrap().len(), 2);
    let (st, e) = post(&base, "/api/embeddings", json!({"model": "smol", "prompt": "a"}));
    assert_eq!((st, e["embedding"].as_array().unwrap().len()), (200, 576));
}

#[test]
fn thinking_goes_to_reasoning_content_and_budgets_end_the_think_block() {
    // A ChatML template that closes the think block when told thinking is off (as
    // Qwen3's does), and a grammar that makes the model "think" first.
    let dir = std::env::temp_dir().join(format!("llama-rs-server-reasoning-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tmpl = dir.join("think.jinja");
    std::fs::write(
        &tmpl,
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n\
         {% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}",
    )
    .unwrap();
    let (_s, base) = start(&["--chat-template-file", tmpl.to_str().unwrap(), "--reasoning-budget", "0"]);
    let (code, r) = post(&base, "/apply-template", json!({"messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(code, 200);
    assert!(r["prompt"].as_str().unwrap().ends_with("<think>\n\n</think>\n\n"), "{r}");
    let mut body = greedy_chat("What is 2+2?", 40);
    body["grammar"] = json!("root ::= \"<think>\" \"two plus two\" \"</think>\" \"\\n\\nIt is 4.\"");
    let (code, r) = post(&base, "/v1/chat/completions", body.clone());
    assert_eq!(code, 200, "{r}");
    let m = &r["choices"][0]["message"];
    assert_eq!(
        (m["reasoning_content"].as_str(), m["content"].as_str()),
        (Some("two plus two"), Some("It is 4.")),
        "{r}"
    );
    // Streamed: the think block never leaks into content deltas, whatever the pieces.
    body["stream"] = json!(true);
    let (chunks, done) = sse(&base, "/v1/chat/completions", body.clone());
    assert!(done);
    let delta = |k: &str| -> String {
        chunks.iter().filter_map(|c| c["choices"][0]["delta"][k].as_str()).collect::<Vec<_>>().concat()
    };
    assert_eq!((delta("reasoning_content"), delta("content")), ("two plus two".into(), "It is 4.".into()));
    // Anthropic's API: a thinking block, then the text.
    let am = json!({"model": "", "max_tokens": 40, "temperature": 0, "grammar": body["grammar"],
        "messages": [{"role": "user", "content": "What is 2+2?"}]});
    let (code, r) = post(&base, "/v1/messages", am);
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["content"][0], json!({"type": "thinking", "thinking": "two plus two", "signature": ""}), "{r}");
    assert_eq!(r["content"][1], json!({"type": "text", "text": "It is 4."}), "{r}");
    // --reasoning-format none: all of it is content.
    let (_s2, base2) = start(&["--reasoning-format", "none"]);
    body["stream"] = json!(false);
    let (_, r) = post(&base2, "/v1/chat/completions", body);
    let m = &r["choices"][0]["message"];
    assert_eq!(m["content"], "<think>two plus two</think>\n\nIt is 4.", "{r}");
    assert!(m.get("reasoning_content").is_none(), "{r}");
    // A budget of N tokens: a template that opens the block, a model that does not
    // close it by itself; after N tokens the end tag is generated and the model answers.
    let opens = dir.join("opens.jinja");
    std::fs::write(
        &opens,
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
         {% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}",
    )
    .unwrap();
    let (_s3, base3) = start(&["--chat-template-file", opens.to_str().unwrap(), "--reasoning-budget", "8"]);
    let n_tokens = |text: &str| {
        let (_, t) = post(&base3, "/tokenize", json!({"content": text, "add_special": false}));
        t["tokens"].as_array().unwrap().len()
    };
    let mut body = greedy_chat("Explain why the sky is blue.", 60);
    for (budget, anthropic) in [(None, false), (Some(3), false), (Some(5), true)] {
        let (code, r) = match (budget, anthropic) {
            (Some(b), true) => {
                let am = json!({"model": "", "max_tokens": 60, "temperature": 0,
                    "thinking": {"type": "enabled", "budget_tokens": b},
                    "messages": [{"role": "user", "content": "Explain why the sky is blue."}]});
                let (code, r) = post(&base3, "/v1/messages", am);
                let thought = r["content"][0]["thinking"].clone();
                let text = r["content"][1]["text"].clone();
                (code, json!({"choices": [{"message": {"reasoning_content": thought, "content": text}}]}))
            }
            (b, _) => {
                body["reasoning_budget"] = json!(b);
                post(&base3, "/v1/chat/completions", body.clone())
            }
        };
        assert_eq!(code, 200, "{r}");
        let m = &r["choices"][0]["message"];
        let (thought, answer) = (m["reasoning_content"].as_str().unwrap(), m["content"].as_str().unwrap());
        let limit = budget.unwrap_or(8);
        let n = n_tokens(thought);
        assert!(n > 0 && n <= limit + 1, "budget {limit}: {n} tokens of thought {thought:?}");
        assert!(!answer.is_empty() && !answer.contains("think>"), "{r}");
    }
    body["reasoning_budget"] = json!(-2);
    assert_eq!(post(&base3, "/v1/chat/completions", body).0, 400);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Anthropic's SSE: `(event name, data)` pairs.
fn sse_named(base: &str, path: &str, body: Value) -> Vec<(String, Value)> {
    let mut r = client().post(format!("{base}{path}")).json(&body).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut text = String::new();
    r.read_to_string(&mut text).unwrap();
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("event: ") {
            name = n.to_string();
        } else if let Some(d) = line.strip_prefix("data: ") {
            out.push((std::mem::take(&mut name), serde_json::from_str(d).unwrap()));
        }
    }
    out
}

#[test]
fn anthropic_messages_answer_stream_call_tools_and_fail_in_anthropic_shape() {
    let (_s, base) = start(&["--api-key", "k"]);
    let c = client();
    let msgs = |body: Value| {
        let r = c.post(format!("{base}/v1/messages")).header("x-api-key", "k").json(&body).send().unwrap();
        (r.status().as_u16(), r.json::<Value>().unwrap_or(Value::Null))
    };
    let base_body = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 24, "temperature": 0,
        "system": "You are terse.", "messages": [{"role": "user", "content": "Name three colours."}]});
    let (code, r) = msgs(base_body.clone());
    assert_eq!(code, 200, "{r}");
    assert_eq!((r["type"].as_str(), r["role"].as_str()), (Some("message"), Some("assistant")), "{r}");
    assert!(r["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(r["content"][0]["type"], "text");
    let text = r["content"][0]["text"].as_str().unwrap().to_string();
    assert!(!text.is_empty());
    assert!(["end_turn", "max_tokens"].contains(&r["stop_reason"].as_str().unwrap()), "{r}");
    let u = &r["usage"];
    assert!(u["output_tokens"].as_u64().unwrap() <= 24 && u["input_tokens"].as_u64().unwrap() > 5, "{r}");
    // The same conversation through OpenAI's endpoint gives the same greedy text.
    let oai = json!({"max_tokens": 24, "temperature": 0, "messages": [
        {"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name three colours."}]});
    let r2 = c.post(format!("{base}/v1/chat/completions")).bearer_auth("k").json(&oai).send().unwrap();
    assert_eq!(r2.json::<Value>().unwrap()["choices"][0]["message"]["content"], text.as_str());
    // count_tokens counts the prompt /v1/messages renders.
    let r3 = c.post(format!("{base}/v1/messages/count_tokens")).header("x-api-key", "k").json(&base_body).send();
    let n = r3.unwrap().json::<Value>().unwrap()["input_tokens"].as_u64().unwrap();
    assert_eq!(n, u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap());

    // Streamed: Anthropic's named events, in order; the deltas make the same text.
    let mut sb = base_body.clone();
    sb["stream"] = json!(true);
    let (_s2, open) = start(&[]); // (sse_named sends no key)
    let ev = sse_named(&open, "/v1/messages", sb);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    assert!(ev.iter().all(|(n, d)| d["type"] == n.as_str()), "{names:?}");
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(names[1], "content_block_start");
    let streamed: String = ev.iter().filter_map(|(_, d)| d["delta"]["text"].as_str()).collect();
    assert_eq!(streamed, text);
    let md = &ev[ev.len() - 2].1;
    assert_eq!(md["delta"]["stop_reason"], r["stop_reason"], "{md}");
    assert_eq!(md["usage"]["output_tokens"], u["output_tokens"]);

    // stop_sequences: the answer ends before the first one, and says which.
    let mut b = base_body.clone();
    b["grammar"] = json!(r#"root ::= "Red, green and blue.""#);
    b["stop_sequences"] = json!(["green", "zzz"]);
    let (_, r) = msgs(b);
    assert_eq!(
        (r["content"][0]["text"].as_str(), r["stop_reason"].as_str(), r["stop_sequence"].as_str()),
        (Some("Red, "), Some("stop_sequence"), Some("green")),
        "{r}"
    );

    // Tools: tool_choice {"type": "tool"} forces a call that follows the input schema.
    let tools = json!([{"name": "get_weather", "description": "Weather in a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let mut b = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 64, "temperature": 0, "tools": tools,
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (code, r) = msgs(b.clone());
    assert_eq!(code, 200, "{r}");
    assert_eq!(r["stop_reason"], "tool_use", "{r}");
    let call = r["content"].as_array().unwrap().iter().find(|b| b["type"] == "tool_use").unwrap().clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string(), "{call}");
    b["stream"] = json!(true);
    let ev = sse_named(&open, "/v1/messages", b);
    let start = ev.iter().find(|(n, d)| n == "content_block_start" && d["content_block"]["type"] == "tool_use");
    assert_eq!(start.unwrap().1["content_block"]["name"], "get_weather");
    let pieces: Vec<&str> = ev.iter().filter_map(|(_, d)| d["delta"]["partial_json"].as_str()).collect();
    assert!(pieces.len() > 2, "the input streams piece by piece: {pieces:?}");
    let partial: String = pieces.concat();
    assert_eq!(serde_json::from_str::<Value>(&partial).unwrap(), call["input"], "{partial}");
    assert_eq!(ev[ev.len() - 2].1["delta"]["stop_reason"], "tool_use");
    // The call's result goes back as a tool_result block in the next user turn.
    let turn = json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 16, "temperature": 0, "tools": tools,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": call["id"], "name": "get_weather",
                "input": call["input"]}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"],
                "content": [{"type": "text", "text": "Sunny, 21 C"}]}]}]});
    let (code, r) = msgs(turn);
    assert_eq!(code, 200, "{r}");

    // Errors: Anthropic's body, a 4xx each.
    let err = |body: Value, status: u16, kind: &str| {
        let (code, r) = msgs(body.clone());
        assert_eq!(code, status, "{body} -> {r}");
        assert_eq!((r["type"].as_str(), r["error"]["type"].as_str()), (Some("error"), Some(kind)), "{r}");
    };
    let mut b = base_body.clone();
    b.as_object_mut().unwrap().remove("max_tokens");
    err(b, 400, "invalid_request_error");
    let mut b = base_body.clone();
    b["messages"][0]["content"] = json!([{"type": "image", "source": {"type": "base64", "data": ""}}]);
    err(b, 400, "invalid_request_error");
    let mut b = base_body.clone();
    b["messages"][0]["role"] = json!("system");
    err(b, 400, "invalid_request_error");
    let mut b = base_body.clone();
    b["model"] = json!("claude-opus");
    b["max_tokens"] = json!(2);
    let (st, r) = msgs(b);
    assert_eq!(st, 200, "one served model answers any model name: {r}");
    let mut b = base_body.clone();
    b["max_tokens"] = json!(1_000_000);
    err(b, 400, "invalid_request_error");
    let r = c.post(format!("{base}/v1/messages")).json(&base_body).send().unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn speculative_decoding_with_a_draft_model_or_ngrams_keeps_the_answers() {
    // One token per micro-batch and the deterministic profile: logits do not depend on
    // batching, so drafts may not change a byte (docs/SPECULATIVE.md).
    let exact = ["--deterministic", "-ub", "1"];
    let prompts = [
        "List the days of the week, one per line.",
        "Write a Python function that adds two numbers.",
        "What is the capital of France?",
    ];
    let answers = |base: &str| -> Vec<(String, Value)> {
        let reqs: Vec<_> = prompts
            .iter()
            .map(|p| {
                let base = base.to_string();
                let body = greedy_chat(p, 48);
                std::thread::spawn(move || post(&base, "/v1/chat/completions", body))
            })
            .collect();
        reqs.into_iter()
            .map(|h| {
                let (st, r) = h.join().unwrap();
                assert_eq!(st, 200, "{r}");
                (r["choices"][0]["message"]["content"].as_str().unwrap().to_string(), r["usage"].clone())
            })
            .collect()
    };
    let (plain_server, base) = start(&exact);
    let plain = answers(&base);
    drop(plain_server);
    // A draft model (-md, llama-server's flag): the chat model drafting for itself.
    let model = chat_model();
    let (draft_server, base) = start(&[&exact[..], &["-md", &model, "--draft-max", "4", "--metrics"]].concat());
    let drafted = answers(&base);
    let mut total = 0;
    for ((want, _), (got, usage)) in plain.iter().zip(&drafted) {
        assert_eq!(got, want);
        let accepted = usage["completion_tokens_details"]["accepted_prediction_tokens"].as_u64().unwrap();
        assert!(accepted > 10, "{usage}");
        total += accepted;
    }
    // The engine's counters, as Prometheus.
    let metrics = client().get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    let line = metrics.lines().find(|l| l.starts_with("llama_rs:draft_accepted_tokens_total ")).unwrap();
    assert_eq!(line.split(' ').nth(1).unwrap().parse::<f64>().unwrap() as u64, total, "{metrics}");
    drop(draft_server);
    let (s, base) = start(&[&exact[..], &["--spec-type", "ngram"]].concat());
    for ((want, _), (got, _)) in plain.iter().zip(&answers(&base)) {
        assert_eq!(got, want);
    }
    drop(s);
    // draft-mtp (llama-server's name): SmolLM2 has no MTP head, so it is served without
    // speculation; a model with one (synthetic, GLM-4.5 layout) drafts with it.
    let (s, base) = start(&[&exact[..], &["--spec-type", "draft-mtp"]].concat());
    for ((want, _), (got, usage)) in plain.iter().zip(&answers(&base)) {
        assert_eq!(got, want);
        assert_eq!(usage["completion_tokens_details"]["accepted_prediction_tokens"], 0, "{usage}");
    }
    drop(s);
    let vocab =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp/models/ggml-vocab-qwen2.gguf");
    let mtp_model = std::env::temp_dir().join(format!("llama-rs-server-mtp-{}.gguf", std::process::id()));
    let shape = llama_testkit::SyntheticShape::named("mtp-tiny").unwrap();
    llama_testkit::write_synthetic_qwen2(shape, &vocab, &mtp_model, 3, 1).unwrap();
    let complete = |spec: &[&str]| -> Vec<(String, Value)> {
        let argv = [
            &["llama-rs-server", "-m", mtp_model.to_str().unwrap(), "--port", "0", "-np", "2", "-t", "2"][..],
            &exact,
            spec,
        ]
        .concat();
        let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
        s.wait_ready(Duration::from_secs(120)).unwrap();
        let base = format!("http://{}", s.addr());
        prompts
            .iter()
            .map(|p| {
                let (st, r) = post(&base, "/v1/completions", json!({"prompt": p, "max_tokens": 24, "temperature": 0}));
                assert_eq!(st, 200, "{r}");
                (r["choices"][0]["text"].as_str().unwrap().to_string(), r["usage"].clone())
            })
            .collect()
    };
    let want = complete(&[]);
    let got = complete(&["--spec-type", "draft-mtp"]);
    let mut drafted = 0;
    for ((w, _), (g, usage)) in want.iter().zip(&got) {
        assert_eq!(g, w);
        let d = &usage["completion_tokens_details"];
        drafted +=
            d["accepted_prediction_tokens"].as_u64().unwrap() + d["rejected_prediction_tokens"].as_u64().unwrap();
    }
    assert!(drafted > 0, "{got:?}");
    let _ = std::fs::remove_file(&mtp_model);
    // Contradictory or incomplete flags are load errors that say what is wrong.
    for bad in [&["--spec-type", "draft"][..], &["--spec-type", "ngram", "-md", &model]] {
        let argv = [&["llama-rs-server", "-m", &model, "--port", "0"][..], bad].concat();
        let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
        let e = s.wait_ready(Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("--model-draft"), "{e}");
    }
}

#[test]
fn several_models_are_served_by_name_and_loaded_on_demand() {
    // A models directory (links to the two test models, one of them twice), with files
    // that are not models of their own: a later shard, a projector, a text file.
    let dir = std::env::temp_dir().join(format!("llama-rs-server-models-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let gemma = llama_testkit::default_model_path().unwrap();
    let smol = chat_model();
    for (name, target) in
        [("a-smol.gguf", &smol), ("b-gemma.gguf", &gemma.display().to_string()), ("c-copy.gguf", &smol)]
    {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    for junk in ["d-00002-of-00003.gguf", "mmproj-x.gguf", "notes.txt"] {
        std::fs::write(dir.join(junk), "not a model").unwrap();
    }
    let argv = ["llama-rs-server", "--models-dir", dir.to_str().unwrap(), "--port", "0", "-c", "2048", "-np", "2"];
    let mut argv: Vec<&str> = argv.to_vec();
    argv.extend(["-t", "2", "--models-max", "2"]);
    let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
    s.wait_ready(Duration::from_secs(120)).unwrap();
    let base = format!("http://{}", s.addr());
    let status = |base: &str| -> Vec<(String, String)> {
        let (_, m) = get(base, "/v1/models");
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["id"].as_str().unwrap().to_string(), d["status"]["value"].as_str().unwrap().to_string()))
            .collect()
    };
    let st = |a: &str, b: &str, c: &str| {
        vec![("a-smol".into(), a.into()), ("b-gemma".into(), b.into()), ("c-copy".into(), c.into())]
    };
    assert_eq!(status(&base), st("loaded", "unloaded", "unloaded"));
    let complete = |model: &str| {
        let body = json!({"model": model, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0});
        post(&base, "/v1/completions", body)
    };
    // The first request that names a model loads it; each answers with its own weights.
    let (code, g) = complete("b-gemma");
    assert_eq!(code, 200, "{g}");
    assert_eq!(g["model"], "b-gemma");
    let (_, a) = complete("a-smol");
    let (_, none) = complete("");
    assert_eq!(a["choices"][0]["text"], none["choices"][0]["text"], "no name: the default (first) model");
    assert_ne!(a["choices"][0]["text"], g["choices"][0]["text"]);
    assert_eq!(status(&base), st("loaded", "loaded", "unloaded"));
    // --models-max 2: loading the third unloads the least recently used (never the first).
    let (code, c) = complete("c-copy:latest");
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["choices"][0]["text"], a["choices"][0]["text"], "the same weights as a-smol");
    assert_eq!(status(&base), st("loaded", "unloaded", "loaded"));
    let (_, ps) = get(&base, "/api/ps");
    assert_eq!(ps["models"].as_array().unwrap().len(), 2);
    let (_, tags) = get(&base, "/api/tags");
    assert_eq!(tags["models"].as_array().unwrap().len(), 3);
    // Ollama's API selects by name too; an unknown name is a 404.
    let (code, o) = post(
        &base,
        "/api/generate",
        json!({"model": "b-gemma", "prompt": "Hello", "stream": false,
        "options": {"num_predict": 2}}),
    );
    assert_eq!(code, 200, "{o}");
    assert_eq!(status(&base), st("loaded", "loaded", "unloaded"));
    // The extras name their model the same way (?model= on a GET, "model" in a POST body).
    let tok = |model: Value| post(&base, "/tokenize", json!({"content": "Hello world", "model": model}));
    let (gt, st_none) = (tok(json!("b-gemma")).1, tok(Value::Null).1);
    assert_eq!(st_none, tok(json!("a-smol")).1);
    assert_ne!(gt["tokens"], st_none["tokens"], "Gemma's vocabulary is not SmolLM2's");
    let (code, d) = post(&base, "/detokenize", json!({"tokens": gt["tokens"], "model": "b-gemma"}));
    assert_eq!((code, d["content"].as_str()), (200, Some("Hello world")), "{d}");
    let (_, props) = get(&base, "/props?model=b-gemma");
    assert!(props["model_path"].as_str().unwrap().ends_with("b-gemma.gguf"), "{props}");
    assert_eq!(props["model_alias"], "b-gemma");
    assert_eq!(get(&base, "/props").1["model_alias"], "a-smol");
    assert_eq!(get(&base, "/slots?model=nope").0, 404);
    assert_eq!(post(&base, "/tokenize", json!({"content": "x", "model": "nope"})).0, 404);
    let (code, e) = complete("nope");
    assert_eq!(code, 404, "{e}");
    assert_eq!(e["error"]["code"], "model_not_found");
    assert!(e["error"]["message"].as_str().unwrap().contains("b-gemma"), "{e}");
    drop(s);
    // A memory budget (the memory plans' totals) that holds one model besides the first:
    // loading another unloads the one loaded before, whatever --models-max says.
    let argv = ["llama-rs-server", "--models-dir", dir.to_str().unwrap(), "--port", "0", "-c", "2048", "-t", "2"];
    let argv = [&argv[..], &["--models-max", "4", "--models-memory", "1"]].concat();
    let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
    s.wait_ready(Duration::from_secs(120)).unwrap();
    let base = format!("http://{}", s.addr());
    let body = |m: &str| json!({"model": m, "prompt": "Hi", "max_tokens": 2});
    assert_eq!(post(&base, "/v1/completions", body("b-gemma")).0, 200);
    assert_eq!(status(&base), st("loaded", "loaded", "unloaded"));
    assert_eq!(post(&base, "/v1/completions", body("c-copy")).0, 200);
    assert_eq!(status(&base), st("loaded", "unloaded", "loaded"));
    drop(s);
    // A name served twice is a start-up error.
    let first = dir.join("a-smol.gguf");
    let argv = ["llama-rs-server", "-m", first.to_str().unwrap(), "--models-dir", dir.to_str().unwrap(), "--port", "0"];
    match Server::spawn(args::parse_from(argv.to_vec()).unwrap()) {
        Err(e) => assert!(e.to_string().contains("\"a-smol\""), "{e}"),
        Ok(_) => panic!("a-smol served twice"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Tool calls through two vendored templates of other families: Llama 3.1
/// (`<|python_tag|>` + `parameters`) and Mistral Nemo (`[TOOL_CALLS][...]`, two calls).
/// The model's output is forced by a grammar (a 135M ChatML model does not write these
/// formats by itself); the template must render the tools, and the calls come back
/// parsed, and streamed as argument pieces that join to the parsed arguments.
#[test]
fn vendored_llama_and_mistral_templates_call_tools_whole_and_streamed() {
    let templates = concat!(env!("CARGO_MANIFEST_DIR"), "/../vendor/llama.cpp/models/templates/");
    let tools = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time", "description": "Time in a zone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}}
    ]);
    let cases = [
        (
            "meta-llama-Llama-3.1-8B-Instruct.jinja",
            r#"<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}"#,
            vec![("get_weather", json!({"city": "Paris"}))],
        ),
        (
            "mistralai-Mistral-Nemo-Instruct-2407.jinja",
            r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"tz": "CET"}}]"#,
            vec![("get_weather", json!({"city": "Paris"})), ("get_time", json!({"tz": "CET"}))],
        ),
    ];
    for (file, output, want) in cases {
        let (_s, base) = start(&["--jinja", "--chat-template-file", &format!("{templates}{file}")]);
        let plain = greedy_chat("What is the weather in Paris?", 64);
        let (st, r) = post(&base, "/v1/chat/completions", greedy_chat("What is the weather in Paris?", 1));
        assert_eq!(st, 200, "{file}: {r}");
        let without = r["usage"]["prompt_tokens"].as_u64().unwrap();
        let mut body = plain;
        body["tools"] = tools.clone();
        body["grammar"] = json!(format!("root ::= {}", serde_json::to_string(output).unwrap()));
        let (st, r) = post(&base, "/v1/chat/completions", body.clone());
        assert_eq!(st, 200, "{file}: {r}");
        assert!(
            r["usage"]["prompt_tokens"].as_u64().unwrap() > without + 20,
            "{file}: the tools are in the prompt: {r}"
        );
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{file}: {r}");
        let calls = r["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        let got: Vec<(String, Value)> = calls
            .iter()
            .map(|c| {
                let args = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                (c["function"]["name"].as_str().unwrap().to_string(), args)
            })
            .collect();
        let want: Vec<(String, Value)> = want.iter().map(|(n, a)| (n.to_string(), a.clone())).collect();
        assert_eq!(got, want, "{file}");
        // Streamed: each call's index, id and name first, then its arguments in pieces.
        body["stream"] = json!(true);
        let (chunks, done) = sse(&base, "/v1/chat/completions", body);
        assert!(done);
        let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
        for (i, (name, args)) in want.iter().enumerate() {
            let mine: Vec<&&Value> = deltas.iter().filter(|d| d["index"] == i).collect();
            assert_eq!(mine[0]["function"]["name"], name.as_str(), "{file}: {deltas:?}");
            assert!(mine.len() > 2, "{file}: call {i} arguments come in pieces: {mine:?}");
            let joined: String = mine.iter().filter_map(|d| d["function"]["arguments"].as_str()).collect();
            assert_eq!(&serde_json::from_str::<Value>(&joined).unwrap(), args, "{file}: {joined}");
        }
        assert!(chunks.iter().all(|c| c["choices"][0]["delta"]["content"].as_str().is_none_or(|s| s.is_empty())));
    }
}

/// The Responses API on the protocol layer: the chat answer as output items, the same
/// text streamed as typed events in order, a conversation continued by
/// `previous_response_id`, Ollama's chat with a thinking switch and a forced tool (the
/// shared chat job), and clear 4xx answers.
#[test]
fn responses_api_and_ollama_share_the_chat_job() {
    let (_s, base) = start(&[]);
    let (st, chat) = post(&base, "/v1/chat/completions", greedy_chat("Name a color.", 12));
    assert_eq!(st, 200, "{chat}");
    let text = chat["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let body = json!({"input": "Name a color.", "max_output_tokens": 12, "temperature": 0});
    let (st, r) = post(&base, "/v1/responses", body.clone());
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["object"], "response");
    assert_eq!(r["output"][0]["type"], "message", "{r}");
    assert_eq!(r["output"][0]["content"][0]["text"], text.as_str(), "{r}");
    assert_eq!(r["usage"]["output_tokens"], chat["usage"]["completion_tokens"]);
    let mut sb = body.clone();
    sb["stream"] = json!(true);
    let events = sse_named(&base, "/v1/responses", sb);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[..3], ["response.created", "response.in_progress", "response.output_item.added"], "{names:?}");
    assert!(matches!(*names.last().unwrap(), "response.completed" | "response.incomplete"), "{names:?}");
    for (k, (name, data)) in events.iter().enumerate() {
        assert_eq!(data["type"], name.as_str());
        assert_eq!(data["sequence_number"], k as u64);
    }
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(deltas, text);
    // A second turn on the stored conversation: the prompt holds the first answer.
    let (st, r2) = post(
        &base,
        "/v1/responses",
        json!({"input": "And another?", "previous_response_id": r["id"], "max_output_tokens": 4, "temperature": 0}),
    );
    assert_eq!(st, 200, "{r2}");
    assert!(r2["usage"]["input_tokens"].as_u64().unwrap() > r["usage"]["input_tokens"].as_u64().unwrap() + 3, "{r2}");
    let (st, e) = post(&base, "/v1/responses", json!({"input": "x", "previous_response_id": "resp_gone"}));
    assert_eq!((st, e["error"]["param"].as_str()), (404, Some("previous_response_id")), "{e}");
    let (st, e) = post(&base, "/v1/responses", json!({"input": "x", "tools": [{"type": "web_search"}]}));
    assert_eq!((st, e["error"]["param"].as_str()), (400, Some("tools[0].type")), "{e}");
    let (st, e) = post(&base, "/v1/responses", json!({"input": [{"type": "mystery"}]}));
    assert_eq!(st, 400, "{e}");

    // Ollama's chat on the same job: a forced tool call (`tool_choice`, an extension there
    // as on OpenAI's endpoint) comes back as Ollama's tool_calls with object arguments.
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let (st, o) = post(
        &base,
        "/api/chat",
        json!({"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "stream": false,
               "tools": tools, "tool_choice": "required", "options": {"temperature": 0, "num_predict": 96}}),
    );
    assert_eq!(st, 200, "{o}");
    let call = &o["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "get_weather", "{o}");
    assert!(call["arguments"]["city"].is_string(), "{o}");
    // `think: false` is reasoning budget 0: templates get `enable_thinking: false`.
    let (st, o) = post(
        &base,
        "/api/chat",
        json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}], "stream": false, "think": false,
               "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(st, 200, "{o}");
}

/// Structured output finishes on the default models at temperature 0: a JSON schema and a
/// forced tool call give parsable JSON within a small `max_tokens` (the grammar allows
/// one space between tokens, not a newline and 20 spaces), and `json_whitespace: "free"`
/// keeps the old form available.
#[test]
fn structured_output_finishes_on_the_default_models() {
    let schema = json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name", "age"]});
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let base_model = llama_testkit::default_model_path().unwrap().display().to_string();
    for model in [chat_model(), base_model] {
        let argv = vec!["llama-rs-server", "-m", &model, "--port", "0", "-c", "2048", "-np", "2", "-t", "2"];
        let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
        s.wait_ready(Duration::from_secs(120)).unwrap();
        let base = format!("http://{}", s.addr());
        let msgs = json!([{"role": "user", "content": "Describe a person as JSON."}]);
        let (st, r) = post(
            &base,
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 64, "temperature": 0,
                   "response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}),
        );
        assert_eq!(st, 200, "{r}");
        let content = r["choices"][0]["message"]["content"].as_str().unwrap();
        let v: Value = serde_json::from_str(content).unwrap_or_else(|e| panic!("{model}: {e}: {content:?}"));
        assert!(v["name"].is_string() && v["age"].is_i64(), "{model}: {v}");
        let (st, r) = post(
            &base,
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": tools,
                   "tool_choice": "required", "max_tokens": 64, "temperature": 0}),
        );
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["choices"][0]["finish_reason"], "tool_calls", "{model}: {r}");
        let args = r["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].as_str().unwrap();
        let a: Value = serde_json::from_str(args).unwrap_or_else(|e| panic!("{model}: {e}: {args:?}"));
        assert!(a["city"].is_string(), "{model}: {a}");
        let (st, r) = post(
            &base,
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 8, "temperature": 0, "json_whitespace": "free",
                   "response_format": {"type": "json_object"}}),
        );
        assert_eq!(st, 200, "{r}");
        let (st, r) = post(
            &base,
            "/v1/chat/completions",
            json!({"messages": msgs, "max_tokens": 8, "json_whitespace": "pretty"}),
        );
        assert_eq!((st, r["error"]["param"].as_str()), (400, Some("json_whitespace")), "{r}");
    }
}

/// `/v1/rerank` on a reranker (synthetic, Qwen3-Reranker's layout): llama.cpp's scores
/// (as `Embedder::rerank` gives them in-process), best first, `top_n` kept, documents as
/// strings or `{"text"}`; a model without a ranking head is a 400 naming `model`.
#[test]
fn rerank_scores_documents_best_first() {
    let dir = std::env::temp_dir().join(format!("llama-rs-rerank-srv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny-reranker.gguf");
    llama_testkit::write_tiny_reranker(&path).unwrap();
    let docs = ["a b", "b b a", "a", "b a b a b", "aab"];
    let model = llama_rs::Model::load(&path, Default::default()).unwrap();
    let want = llama_rs::Embedder::new(&model, Default::default()).unwrap().rerank("a b", &docs).unwrap();
    let p = path.display().to_string();
    let argv = vec!["llama-rs-server", "-m", &p, "--port", "0", "-c", "128", "-np", "1", "-t", "2"];
    let s = Server::spawn(args::parse_from(argv).unwrap()).unwrap();
    s.wait_ready(Duration::from_secs(60)).unwrap();
    let base = format!("http://{}", s.addr());
    let mut body = json!({"query": "a b", "documents": docs, "return_documents": true});
    body["documents"][1] = json!({"text": "b b a"});
    for path in ["/v1/rerank", "/rerank"] {
        let (st, r) = post(&base, path, body.clone());
        assert_eq!(st, 200, "{r}");
        let results = r["results"].as_array().unwrap();
        assert_eq!(results.len(), docs.len());
        let scores: Vec<f64> = results.iter().map(|x| x["relevance_score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
        for x in results {
            let i = x["index"].as_u64().unwrap() as usize;
            assert!((x["relevance_score"].as_f64().unwrap() - want[i] as f64).abs() < 1e-3, "{x} vs {}", want[i]);
            assert_eq!(x["document"]["text"], docs[i]);
        }
        assert!(r["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    }
    let (st, r) = post(&base, "/v1/rerank", json!({"query": "a", "documents": ["a", "b", "ab"], "top_n": 2}));
    assert_eq!((st, r["results"].as_array().map(Vec::len)), (200, Some(2)), "{r}");
    assert!(r["results"][0].get("document").is_none());
    let (st, r) = post(&base, "/v1/rerank", json!({"query": "a", "documents": []}));
    assert_eq!((st, r["error"]["param"].as_str()), (400, Some("documents")), "{r}");
    let (st, r) = post(&base, "/v1/rerank", json!({"query": "a", "documents": [5]}));
    assert_eq!((st, r["error"]["param"].as_str()), (400, Some("documents[0]")), "{r}");
    drop(s);
    std::fs::remove_dir_all(&dir).ok();

    let (_s, chat) = start(&[]);
    let (st, r) = post(&chat, "/v1/rerank", json!({"query": "a", "documents": ["b"]}));
    assert_eq!((st, r["error"]["param"].as_str()), (400, Some("model")), "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("ranking head"), "{r}");
}

#[test]
fn disk_cache_survives_a_restart_and_slots_save_restore_erase() {
    let tmp = std::env::temp_dir().join(format!("llama-rs-server-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (cache, slots) = (tmp.join("cache"), tmp.join("slots"));
    std::fs::create_dir_all(&slots).unwrap();
    // A KV stream per slot: a sequence's cells then lie in position order whether reused
    // or restored (in the unified pool a reused prefix's cells may have gaps, which
    // changes the attention sums' grouping; docs/ENGINE.md).
    let flags = [
        "--cache-disk",
        cache.to_str().unwrap(),
        "--slot-save-path",
        slots.to_str().unwrap(),
        "--metrics",
        "--no-kv-unified",
    ];
    let system = "You are a helpful assistant who answers in one short sentence. ".repeat(20);
    let req = json!({"prompt": format!("{system}Question: what colour is the sky?\nAnswer:"), "max_tokens": 8, "temperature": 0});
    let entries = || {
        std::fs::read_dir(&cache)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().ends_with(".lrkv")).count())
            .unwrap_or(0)
    };
    let (warm, warm_cached) = {
        let (_s, base) = start(&flags);
        let (st, _) = post(&base, "/v1/completions", req.clone());
        assert_eq!(st, 200);
        let (_, w) = post(&base, "/v1/completions", req.clone());
        let cached = w["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
        assert!(cached > 100, "{w}");
        (w["choices"][0]["text"].as_str().unwrap().to_string(), cached)
    };
    let t0 = std::time::Instant::now();
    while entries() == 0 && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    // (One entry per distinct prompt + answer; a warm answer may differ in its last
    // tokens from the cold one: it is computed in other batch shapes.)
    assert!(entries() >= 1);

    // A new server process state: the prefix comes back from disk, the answer is the same.
    let (_s, base) = start(&flags);
    let (st, b) = post(&base, "/v1/completions", req.clone());
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap(), warm_cached, "{b}");
    assert_eq!(b["choices"][0]["text"].as_str().unwrap(), warm);
    let metrics = client().get(format!("{base}/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("llama_rs:disk_cache_hits_total 1"), "{metrics}");

    // llama-server's slot actions, raw HTTP shapes.
    let mut saved = None;
    for id in 0..4 {
        let (st, v) = post(&base, &format!("/slots/{id}?action=save"), json!({"filename": format!("slot{id}.bin")}));
        assert_eq!(st, 200, "{v}");
        assert_eq!((v["id_slot"].as_u64(), v["filename"].as_str()), (Some(id), Some(format!("slot{id}.bin").as_str())));
        assert!(v["timings"]["save_ms"].as_f64().is_some() && v["n_written"].as_u64().unwrap() > 0, "{v}");
        if v["n_saved"].as_u64().unwrap() > 0 {
            saved = Some((id, v));
        }
    }
    let (id, v) = saved.expect("a slot holds the request's cache");
    let (st, e) = post(&base, &format!("/slots/{id}?action=erase"), json!({}));
    assert_eq!((st, &e["n_erased"]), (200, &v["n_saved"]), "{e}");
    let (st, r) = post(&base, &format!("/slots/{id}?action=restore"), json!({"filename": format!("slot{id}.bin")}));
    assert_eq!(st, 200, "{r}");
    assert_eq!((&r["n_restored"], &r["n_read"]), (&v["n_saved"], &v["n_written"]), "{r}");
    assert!(r["timings"]["restore_ms"].as_f64().is_some());
    // The restored slot serves the prompt again.
    let (_, again) = post(&base, "/v1/completions", req.clone());
    assert!(again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() > 100, "{again}");

    // Bad slot requests are 4xx, and nothing is written outside the directory.
    std::fs::write(slots.join("garbage.bin"), b"not a state at all").unwrap();
    for (path, body, want) in [
        ("/slots/0?action=save", json!({"filename": "../escape.bin"}), 400),
        ("/slots/0?action=save", json!({"filename": "a/b.bin"}), 400),
        ("/slots/0?action=save", json!({"filename": ".hidden"}), 400),
        ("/slots/0?action=save", json!({}), 400),
        ("/slots/0?action=restore", json!({"filename": "missing.bin"}), 404),
        ("/slots/0?action=restore", json!({"filename": "garbage.bin"}), 400),
        ("/slots/0?action=launch", json!({"filename": "x.bin"}), 400),
        ("/slots/99?action=erase", json!({}), 400),
        ("/slots/abc?action=erase", json!({}), 400),
        ("/slots/-1?action=erase", json!({}), 400),
    ] {
        let (st, v) = post(&base, path, body.clone());
        assert_eq!(st, want, "{path} {body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    assert!(!tmp.join("escape.bin").exists());
    drop(_s);
    let (_s2, base2) = start(&[]);
    let (st, _) = post(&base2, "/slots/0?action=erase", json!({}));
    assert_eq!(st, 501, "slot actions without --slot-save-path");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// A synthetic Gemma 3 projector for the chat model (its embedding size), and the test
/// image of llama.cpp's tree as a data URL.
fn mmproj_and_image() -> (std::path::PathBuf, String, String) {
    use base64::Engine as _;
    let model = chat_model();
    let n_embd = llama_rs::read_gguf_metadata(&model)
        .unwrap()
        .into_iter()
        .find_map(|(k, v)| match v {
            llama_rs::GgufValue::U32(n) if k.ends_with(".embedding_length") => Some(n as u64),
            _ => None,
        })
        .unwrap();
    let path = std::env::temp_dir().join(format!("llama-rs-server-mmproj-{}.gguf", std::process::id()));
    llama_testkit::write_gemma3_mmproj(&path, &llama_testkit::Gemma3Projector::small(n_embd), 3).unwrap();
    let jpeg =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../vendor/llama.cpp/tools/mtmd/test-1.jpeg")).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg);
    (path, format!("data:image/jpeg;base64,{b64}"), b64)
}

#[test]
fn images_through_openai_anthropic_and_ollama_shapes_give_one_answer() {
    let (mmproj, url, b64) = mmproj_and_image();
    let (_s, base) = start(&["--mmproj", mmproj.to_str().unwrap(), "--no-mmproj-offload"]);
    let (st, models) = get(&base, "/v1/models");
    assert_eq!(st, 200);
    assert_eq!(models["data"][0]["modalities"], json!({"vision": true, "audio": false}), "{models}");
    let q = "Describe the image.";
    let openai = json!({"messages": [{"role": "user", "content": [
        {"type": "text", "text": q}, {"type": "image_url", "image_url": {"url": url}}]}],
        "max_tokens": 8, "temperature": 0});
    let (st, a) = post(&base, "/v1/chat/completions", openai.clone());
    assert_eq!(st, 200, "{a}");
    let text = a["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let n_prompt = a["usage"]["prompt_tokens"].as_u64().unwrap();
    let (_, plain) = post(&base, "/v1/chat/completions", greedy_chat(q, 1));
    assert!(n_prompt >= plain["usage"]["prompt_tokens"].as_u64().unwrap() + 16, "{a}");
    // The same image again: its cells come from the prefix cache.
    let (_, again) = post(&base, "/v1/chat/completions", openai.clone());
    assert_eq!(again["choices"][0]["message"]["content"], a["choices"][0]["message"]["content"]);
    assert!(again["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() >= 16, "{again}");
    // Streamed.
    let mut streamed = openai.clone();
    streamed["stream"] = json!(true);
    let (events, done) = sse(&base, "/v1/chat/completions", streamed);
    assert!(done);
    let s: String = events.iter().filter_map(|e| e["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(s, text);
    // Anthropic: an image block with a base64 source, before the text.
    let anthropic = json!({"model": "m", "max_tokens": 8, "temperature": 0, "messages": [{"role": "user", "content": [
        {"type": "text", "text": q},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": b64}}]}]});
    let (st, m) = post(&base, "/v1/messages", anthropic);
    assert_eq!(st, 200, "{m}");
    assert_eq!(m["content"][0]["text"].as_str().unwrap(), text);
    // Ollama: `images` on the message (read before its text, so another prompt).
    let ollama = json!({"model": "m", "stream": false, "options": {"temperature": 0, "num_predict": 8},
        "messages": [{"role": "user", "content": q, "images": [b64]}]});
    let (st, o) = post(&base, "/api/chat", ollama);
    assert_eq!(st, 200, "{o}");
    assert!(o["message"]["content"].is_string());
    // Bad media: 400 with the part named, never a 500.
    let bad = |part: Value| json!({"messages": [{"role": "user", "content": [part]}], "max_tokens": 2});
    for (part, want) in [
        (json!({"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}), "data URL"),
        (json!({"type": "image_url", "image_url": {"url": "/etc/passwd"}}), "never read"),
        (json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}), "base64"),
        (json!({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}), "not an image"),
        (json!({"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}), ""),
        (json!({"type": "image_url"}), ""),
    ] {
        let (st, e) = post(&base, "/v1/chat/completions", bad(part.clone()));
        assert_eq!(st, 400, "{part} -> {e}");
        assert_eq!(e["error"]["param"], "messages[0].content[0]", "{e}");
        assert!(e["error"]["message"].as_str().unwrap().contains(want), "{e}");
    }
    // More markers in the text than images: a 400 too.
    let (st, e) = post(&base, "/v1/chat/completions", greedy_chat("<__media__> what is this?", 2));
    assert_eq!(st, 200, "a marker typed as text without images is just text: {e}");
    std::fs::remove_file(&mmproj).ok();

    // A server without --mmproj answers images with a 400 that says so.
    let (_t, plain) = start(&[]);
    let (st, e) = post(&plain, "/v1/chat/completions", openai);
    assert_eq!(st, 400, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("--mmproj"), "{e}");
    let (_, models) = get(&plain, "/v1/models");
    assert_eq!(models["data"][0]["modalities"]["vision"], false);
}
