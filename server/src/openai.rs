//! OpenAI's API: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`,
//! `/v1/models`. Thin: the request shapes, the jobs and the response shapes are the
//! protocol layer's (`llama_protocol`); here they meet the engine and HTTP.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_protocol::answer::{self, ChatChoiceStream, Meta};
use llama_protocol::job;
use llama_protocol::openai::{
    ChatRequest, Completion, CompletionChoice, CompletionRequest, Embedding, EmbeddingList, EmbeddingRequest,
    EmbeddingUsage, Timings, Usage as WireUsage,
};
use llama_protocol::rerank::RerankRequest;
use llama_rs::{Event, Prompt, Token, Usage};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::serve::{self, async_stream, collect, drive_choices, parse, submit, target, timeout, value};
use crate::state::{AppState, Loaded};

// ------------------------------------------------------------------------------ chat

/// `POST /v1/chat/completions`.
pub async fn chat(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: ChatRequest = parse(&body)?;
    let served = st.model(req.sampling.model.as_deref()).await?;
    let l: &Loaded = &served;
    let cj = job::chat_job(&target(&st, l), req)?;
    let streams = submit(l, &cj.job)?;
    let meta = Meta { id: format!("chatcmpl-{:x}", serve::rand_id()), created: serve::now(), model: l.id.clone() };
    if !cj.job.stream {
        let (mut choices, mut usage, mut timings) = (Vec::new(), Usage::default(), None);
        for (i, s) in streams.into_iter().enumerate() {
            let c = collect(s, timeout(&st)).await?;
            answer::add_usage(&mut usage, &c.usage);
            choices.push(answer::chat_choice(&cj, i, &c.text, &c.logprobs, c.finish(), &l.model));
            timings.get_or_insert_with(|| Timings::new(&c.usage, &c.timings));
        }
        return Ok(Json(meta.chat_completion(choices, &usage, timings)).into_response());
    }
    // Streaming: a role delta per choice first, then content deltas, then each choice's
    // finish_reason (see `ChatChoiceStream`).
    let st2 = st.clone();
    let events = async_stream(move |tx| async move {
        let model = &served.model;
        let mut choices: Vec<ChatChoiceStream> = (0..cj.job.n).map(|i| ChatChoiceStream::new(&cj, i)).collect();
        for c in &choices {
            tx(value(meta.chat_chunk(vec![c.start()])));
        }
        let usage = drive_choices(streams, timeout(&st2), &tx, |i, ev| {
            let deltas = match ev {
                Event::Piece(p) => choices[i].piece(&p.text, &p.logprobs, model),
                Event::Done { finish_reason, .. } => choices[i].done(finish_reason),
            };
            for d in deltas {
                tx(value(meta.chat_chunk(vec![d])));
            }
        })
        .await;
        if let Some(u) = usage.filter(|_| cj.job.include_usage) {
            tx(value(meta.chat_usage_chunk(&u)));
        }
    });
    Ok(serve::sse(events))
}

// ------------------------------------------------------------------------ completions

/// `POST /v1/completions`.
pub async fn completions(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: CompletionRequest = parse(&body)?;
    let served = st.model(req.sampling.model.as_deref()).await?;
    let l: &Loaded = &served;
    let jobs = job::completion_jobs(&target(&st, l), &req)?;
    let echo_text = |p: &Prompt| match p {
        Prompt::Text(s) => s.clone(),
        Prompt::Tokens(t) => l.model.vocab().detokenize(t, false, false).unwrap_or_default(),
        Prompt::Media { text, .. } => text.clone(),
    };
    let mut streams = Vec::new();
    let mut echoes = Vec::new();
    for j in &jobs {
        let e = if req.echo { echo_text(&j.prompt) } else { String::new() };
        for s in submit(l, j)? {
            streams.push(s);
            echoes.push(e.clone());
        }
    }
    let meta = Meta { id: format!("cmpl-{:x}", serve::rand_id()), created: serve::now(), model: l.id.clone() };
    let body = move |choices: Vec<CompletionChoice>| Completion {
        id: meta.id.clone(),
        object: "text_completion".into(),
        created: meta.created,
        model: meta.model.clone(),
        choices,
        usage: None,
        timings: None,
        system_fingerprint: None,
    };
    let (stream, include_usage) = (jobs[0].stream, jobs[0].include_usage);
    let want_lp = req.logprobs.is_some();
    if !stream {
        let (mut choices, mut usage, mut timings) = (Vec::new(), Usage::default(), None);
        for (i, (s, echo)) in streams.into_iter().zip(&echoes).enumerate() {
            let c = collect(s, timeout(&st)).await?;
            answer::add_usage(&mut usage, &c.usage);
            choices.push(CompletionChoice {
                index: i,
                text: format!("{echo}{}", c.text),
                logprobs: want_lp.then(|| answer::completion_logprobs(&l.model, &c.logprobs, echo.len())),
                finish_reason: Some(answer::finish_str(c.finish()).into()),
            });
            timings.get_or_insert_with(|| Timings::new(&c.usage, &c.timings));
        }
        return Ok(Json(Completion {
            usage: Some(WireUsage::from(&usage)),
            timings,
            system_fingerprint: Some(answer::system_fingerprint()),
            ..body(choices)
        })
        .into_response());
    }
    let st2 = st.clone();
    let events = async_stream(move |tx| async move {
        let model = &served.model;
        let text =
            |index: usize, text: String, lps: &[llama_rs::TokenLogprob], finish: Option<&str>| CompletionChoice {
                index,
                text,
                logprobs: (want_lp && finish.is_none()).then(|| answer::completion_logprobs(model, lps, 0)),
                finish_reason: finish.map(str::to_string),
            };
        for (i, e) in echoes.iter().enumerate().filter(|(_, e)| !e.is_empty()) {
            tx(value(body(vec![CompletionChoice { logprobs: None, ..text(i, e.clone(), &[], None) }])));
        }
        let usage = drive_choices(streams, timeout(&st2), &tx, |i, ev| match ev {
            Event::Piece(p) => {
                if !p.text.is_empty() || !p.logprobs.is_empty() {
                    tx(value(body(vec![text(i, p.text, &p.logprobs, None)])));
                }
            }
            Event::Done { finish_reason, .. } => {
                tx(value(body(vec![text(i, String::new(), &[], Some(answer::finish_str(finish_reason)))])));
            }
        })
        .await;
        if let Some(u) = usage.filter(|_| include_usage) {
            tx(value(Completion { usage: Some(WireUsage::from(&u)), ..body(Vec::new()) }));
        }
    });
    Ok(serve::sse(events))
}

// ------------------------------------------------------------------------- embeddings

/// `POST /v1/embeddings`.
pub async fn embeddings(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    use base64::Engine as _;
    let req: EmbeddingRequest = parse(&body)?;
    let served = st.model(req.model.as_deref()).await?;
    let l: &Loaded = &served;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(f) => {
            return Err(ApiError::bad("encoding_format", format!("encoding_format {f:?}: expected float or base64")))
        }
    };
    let inputs: Vec<Vec<Token>> = job::prompts(&req.input, "input")?
        .into_iter()
        .map(|p| match p {
            Prompt::Text(s) => l.model.vocab().tokenize(&s, true, false).map_err(ApiError::from),
            Prompt::Tokens(t) => Ok(t),
            Prompt::Media { .. } => Err(ApiError::bad("input", "embeddings of media are not supported")),
        })
        .collect::<ApiResult<_>>()?;
    let n_tokens: usize = inputs.iter().map(Vec::len).sum();
    let vectors = serve::embed_tokens(served.clone(), inputs).await?;
    let data = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding".into(),
            index,
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            },
        })
        .collect();
    Ok(Json(EmbeddingList {
        object: "list".into(),
        data,
        model: l.id.clone(),
        usage: EmbeddingUsage { prompt_tokens: n_tokens, total_tokens: n_tokens },
    })
    .into_response())
}

// ----------------------------------------------------------------------------- models

/// `GET /v1/models` (a listing whose `meta` is llama-server's: a `json!` body, since no
/// client reads it typed).
pub async fn models(State(st): State<Arc<AppState>>) -> ApiResult<Json<Value>> {
    st.loaded()?; // 503 while the default model loads
    let data: Vec<Value> = st
        .models
        .iter()
        .map(|m| match m.get() {
            Some(l) => json!({
                "id": l.id, "object": "model", "created": l.created, "owned_by": "llama-rs",
                "status": {"value": "loaded"},
                "meta": {
                    "n_vocab": l.model.n_vocab(), "n_ctx_train": l.model.n_ctx_train(), "n_embd": l.model.n_embd(),
                    "n_params": l.model.n_params(), "size": l.model.size(), "description": l.model.description(),
                },
                "modalities": modalities(&l),
            }),
            None => json!({"id": m.id, "object": "model", "created": 0, "owned_by": "llama-rs",
                           "status": {"value": "unloaded"}}),
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

/// What a model reads besides text (`--mmproj`), as llama-server's `/props` says it.
pub fn modalities(l: &Loaded) -> Value {
    let (vision, audio) = l.engine.media_support();
    json!({"vision": vision, "audio": audio})
}

// ----------------------------------------------------------------------------- rerank

/// `POST /v1/rerank` (and `/rerank`, `/v1/reranking`, `/reranking`): documents scored
/// against the query by a model with a ranking head; a model without one is a 400.
pub async fn rerank(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: RerankRequest = parse(&body)?;
    let served = st.model(req.model.as_deref()).await?;
    let texts = req.texts()?;
    let l = served.clone();
    let t2 = texts.clone();
    let query = req.query.clone();
    let (scores, n_tokens) = tokio::task::spawn_blocking(move || -> ApiResult<(Vec<f32>, usize)> {
        let mut guard = l.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(llama_rs::Embedder::new(&l.model, llama_rs::EmbedParams::default())?);
        }
        let docs: Vec<&str> = t2.iter().map(String::as_str).collect();
        let scores = guard.as_mut().expect("set above").rerank(&query, &docs).map_err(|e| {
            let unsupported = e.kind() == llama_rs::ErrorKind::Unsupported;
            let e = ApiError::from(e);
            if unsupported {
                ApiError { param: Some("model".into()), code: Some("model_cannot_rank"), ..e }
            } else {
                e
            }
        })?;
        let n: usize = docs.iter().map(|d| llama_rs::rerank_input(&l.model, &query, d).map_or(0, |t| t.len())).sum();
        Ok((scores, n))
    })
    .await
    .map_err(|e| ApiError::status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))??;
    Ok(Json(llama_protocol::rerank::response(&req, &texts, &scores, served.id.clone(), n_tokens)).into_response())
}
