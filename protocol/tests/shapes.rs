//! The protocol layer's pure parts: wire translations and response shapes (no model).

use llama_protocol::openai::{ChatRequest, Usage};
use llama_protocol::rerank::{response, RerankRequest};
use llama_protocol::responses::ResponsesRequest;
use llama_protocol::ProtocolError;
use serde_json::json;

#[test]
fn responses_input_items_become_one_chat_conversation() {
    let req: ResponsesRequest = serde_json::from_value(json!({
        "instructions": "Be brief.",
        "input": [
            {"role": "developer", "content": "Use tools."},
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "reasoning", "summary": []},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
        "reasoning": {"effort": "minimal"},
        "max_output_tokens": 7,
    }))
    .unwrap();
    let chat: ChatRequest = req.to_chat(Vec::new()).unwrap();
    let roles: Vec<&str> = chat.messages.iter().map(|m| m.role.as_str()).collect();
    assert_eq!(roles, ["system", "system", "user", "assistant", "tool"]);
    let calls = chat.messages[3].tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2, "consecutive calls are one assistant turn");
    assert_eq!(calls[0].function.arguments["city"], "Paris");
    assert_eq!(chat.messages[4].tool_call_id.as_deref(), Some("c1"));
    assert_eq!(
        chat.tools.as_ref().unwrap()[0],
        json!({"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}})
    );
    assert_eq!(chat.reasoning_budget, Some(0));
    assert_eq!(chat.sampling.max_tokens, Some(7));
    assert_eq!(chat.sampling.response_format.as_ref().unwrap()["json_schema"]["schema"], json!({"type": "object"}));

    let bad = |v| ResponsesRequest { input: v, ..Default::default() }.to_chat(Vec::new()).unwrap_err();
    assert_eq!(bad(json!(null)).param.as_deref(), Some("input"));
    assert_eq!(bad(json!([{"type": "image_generation_call"}])).param.as_deref(), Some("input[0].type"));
    let web =
        ResponsesRequest { input: json!("x"), tools: Some(vec![json!({"type": "web_search"})]), ..Default::default() };
    let e: ProtocolError = web.to_chat(Vec::new()).unwrap_err();
    assert_eq!((e.param.as_deref(), e.http_status()), (Some("tools[0].type"), 400));
}

#[test]
fn rerank_results_are_best_first_and_cut_at_top_n() {
    let req: RerankRequest = serde_json::from_value(json!({
        "query": "q", "documents": ["a", {"text": "b"}, "c"], "top_n": 2, "return_documents": true
    }))
    .unwrap();
    let texts = req.texts().unwrap();
    assert_eq!(texts, ["a", "b", "c"]);
    let r = response(&req, &texts, &[0.1, 0.9, 0.5], "m".into(), 12);
    let order: Vec<usize> = r.results.iter().map(|x| x.index).collect();
    assert_eq!(order, [1, 2]);
    assert_eq!(r.results[0].document, Some(json!({"text": "b"})));
    assert_eq!(r.usage.total_tokens, 12);
    let empty = RerankRequest { documents: vec![], ..Default::default() };
    assert_eq!(empty.texts().unwrap_err().param.as_deref(), Some("documents"));
}

#[test]
fn llama_errors_keep_their_kind_and_parameter() {
    let e = llama_rs::SamplerConfig { top_p: 3.0, ..Default::default() }.validate().unwrap_err();
    let p = ProtocolError::from(e);
    assert_eq!((p.param.as_deref(), p.http_status(), p.code), (Some("top_p"), 400, Some("invalid_value")));
    let full = ProtocolError::from(llama_rs::Error::PromptTooLong { n_prompt: 9, n_ctx: 4 });
    assert_eq!((full.http_status(), full.code), (400, Some("context_length_exceeded")));
    let usage = Usage::from(&llama_rs::Usage {
        prompt_tokens: 5,
        completion_tokens: 3,
        cached_tokens: 2,
        ..Default::default()
    });
    let v = serde_json::to_value(&usage).unwrap();
    assert_eq!(v["total_tokens"], 8);
    assert_eq!(v["prompt_tokens_details"]["cached_tokens"], 2);
}
