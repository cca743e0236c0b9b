//! llama-server's own endpoints that scripts use: `/health`, `/metrics` (Prometheus),
//! `/props`, `/slots`, `/tokenize`, `/detokenize`, `/apply-template`.
//!
//! With several models (as llama-server's router): a `GET` names its model with
//! `?model=NAME`, a `POST` with `"model"` in its body; none is the first model. A model
//! not loaded yet is loaded, as a completion naming it would.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use llama_rs::{RenderOptions, Token};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::serve::parse;
use crate::state::{AppState, Loaded};

/// `?model=NAME` of the `GET` endpoints.
#[derive(Deserialize, Default)]
pub struct ModelQuery {
    model: Option<String>,
}

/// `"model"` of the `POST` endpoints' bodies.
#[derive(Deserialize)]
struct ModelField {
    #[serde(default)]
    model: Option<String>,
}

/// The model a request to an extra endpoint names.
async fn named(st: &AppState, name: Option<&str>) -> ApiResult<Arc<Loaded>> {
    match name {
        Some(n) => st.model(Some(n)).await,
        None => st.loaded(),
    }
}

/// The model a `POST` body names (its other fields are read by the endpoint).
async fn named_in(st: &AppState, body: &Bytes) -> ApiResult<Arc<Loaded>> {
    let m: ModelField = parse(body)?;
    named(st, m.model.as_deref()).await
}

/// `GET /health`: 200 once the model is loaded, 503 while it loads (or if it failed).
pub async fn health(State(st): State<Arc<AppState>>) -> Response {
    match st.loaded() {
        Ok(_) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": e.message, "error": e.body()["error"]})))
            .into_response(),
    }
}

/// `GET /metrics`: the engine's metrics in Prometheus' text format (names as
/// llama-server's where they exist; 501 unless started with `--metrics`).
pub async fn metrics(State(st): State<Arc<AppState>>, Query(q): Query<ModelQuery>) -> ApiResult<Response> {
    if !st.args.metrics {
        return Err(ApiError::status(StatusCode::NOT_IMPLEMENTED, "metrics are off: start the server with --metrics"));
    }
    let l = named(&st, q.model.as_deref()).await?;
    let m = l.engine.metrics();
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, v: f64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    };
    metric("llamacpp:prompt_tokens_total", "counter", "Prompt tokens processed (decoded).", m.prompt_tokens as f64);
    metric("llamacpp:tokens_predicted_total", "counter", "Generated tokens.", m.generated_tokens as f64);
    metric("llamacpp:requests_processing", "gauge", "Requests generating now.", m.active as f64);
    metric("llamacpp:requests_deferred", "gauge", "Requests waiting for a slot.", m.queued as f64);
    metric("llamacpp:kv_cache_tokens", "gauge", "KV cells in use.", m.kv_used as f64);
    metric(
        "llamacpp:kv_cache_usage_ratio",
        "gauge",
        "KV cells in use / total.",
        m.kv_used as f64 / m.kv_total.max(1) as f64,
    );
    metric("llama_rs:requests_finished_total", "counter", "Requests finished.", m.finished as f64);
    metric(
        "llama_rs:cached_prompt_tokens_total",
        "counter",
        "Prompt tokens reused from the cache.",
        m.cached_tokens as f64,
    );
    metric("llama_rs:prefix_hits_total", "counter", "Requests that reused a cached prefix.", m.prefix_hits as f64);
    metric("llama_rs:evictions_total", "counter", "Cached prefixes evicted.", m.evictions as f64);
    metric("llama_rs:ram_cache_hits_total", "counter", "Prefixes restored from host memory.", m.ram_cache_hits as f64);
    metric("llama_rs:ram_cache_bytes", "gauge", "Bytes of the host-memory prompt cache.", m.ram_cache_bytes as f64);
    let d = &m.disk;
    metric("llama_rs:disk_cache_hits_total", "counter", "Prefixes restored from the disk cache.", d.hits as f64);
    metric(
        "llama_rs:disk_cache_hit_tokens_total",
        "counter",
        "Tokens restored from the disk cache.",
        d.hit_tokens as f64,
    );
    metric("llama_rs:disk_cache_read_bytes_total", "counter", "Bytes read by disk restores.", d.bytes_read as f64);
    metric(
        "llama_rs:disk_cache_written_bytes_total",
        "counter",
        "Bytes written to the disk cache.",
        d.bytes_written as f64,
    );
    metric("llama_rs:disk_cache_stores_total", "counter", "Entries written to the disk cache.", d.stores as f64);
    metric("llama_rs:disk_cache_evictions_total", "counter", "Disk cache entries evicted.", d.evictions as f64);
    metric("llama_rs:disk_cache_rejected_total", "counter", "Damaged or foreign entries removed.", d.rejected as f64);
    metric(
        "llama_rs:disk_cache_write_errors_total",
        "counter",
        "Disk cache writes that failed.",
        d.write_errors as f64,
    );
    metric("llama_rs:disk_cache_restore_seconds_total", "counter", "Seconds spent restoring.", d.restore_ms / 1e3);
    metric("llama_rs:preemptions_total", "counter", "Requests preempted.", m.preemptions as f64);
    metric("llama_rs:steps_total", "counter", "Engine steps.", m.steps as f64);
    metric(
        "llama_rs:draft_tokens_total",
        "counter",
        "Speculative decoding: drafted tokens verified.",
        m.draft_tokens as f64,
    );
    metric(
        "llama_rs:draft_accepted_tokens_total",
        "counter",
        "Speculative decoding: drafted tokens kept.",
        m.draft_accepted_tokens as f64,
    );
    metric("llama_rs:busy_seconds_total", "counter", "Seconds the engine spent decoding.", m.busy_s);
    let _ = writeln!(
        out,
        "# HELP llama_rs:engine_seconds_total Seconds the engine thread spent in each phase of its loop.\n\
         # TYPE llama_rs:engine_seconds_total counter"
    );
    for (phase, s) in m.host.phases() {
        let _ = writeln!(out, "llama_rs:engine_seconds_total{{phase=\"{phase}\"}} {s}");
    }
    for (name, lat) in [("ttft", &m.ttft_ms), ("itl", &m.itl_ms)] {
        let _ = writeln!(
            out,
            "# HELP llama_rs:{name}_ms Recent {name} in milliseconds.\n# TYPE llama_rs:{name}_ms summary"
        );
        for q in [0.5, 0.9, 0.99] {
            if let Some(v) = lat.percentile(q * 100.0) {
                let _ = writeln!(out, "llama_rs:{name}_ms{{quantile=\"{q}\"}} {v}");
            }
        }
        let _ = writeln!(out, "llama_rs:{name}_ms_count {}", lat.count());
    }
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// `GET /props`: the server's settings (llama-server's shape, where it overlaps).
pub async fn props(State(st): State<Arc<AppState>>, Query(q): Query<ModelQuery>) -> ApiResult<Json<Value>> {
    let l = named(&st, q.model.as_deref()).await?;
    let tmpl = l.model.chat_template(None);
    Ok(Json(json!({
        "model_path": l.path.display().to_string(),
        "modalities": crate::openai::modalities(&l),
        "model_alias": l.id,
        "total_slots": st.args.parallel,
        "n_ctx": l.n_ctx,
        "chat_template": tmpl,
        "build_info": llama_protocol::answer::system_fingerprint(),
        "default_generation_settings": {
            "n_ctx": l.n_ctx, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05,
            "n_predict": st.args.n_predict,
        },
    })))
}

/// `GET /slots`: what the engine is doing (counts; sequences are not exposed one by one).
pub async fn slots(State(st): State<Arc<AppState>>, Query(q): Query<ModelQuery>) -> ApiResult<Json<Value>> {
    let l = named(&st, q.model.as_deref()).await?;
    let m = l.engine.metrics();
    Ok(Json(json!({
        "total_slots": st.args.parallel, "processing": m.active, "deferred": m.queued,
        "kv_used": m.kv_used, "kv_total": m.kv_total,
    })))
}

#[derive(Deserialize)]
pub struct SlotQuery {
    action: Option<String>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct SlotBody {
    #[serde(default)]
    filename: Option<String>,
}

/// A slot file name as llama-server accepts it: a plain file name in `--slot-save-path`.
fn slot_file(dir: &std::path::Path, name: Option<String>) -> ApiResult<(String, std::path::PathBuf)> {
    let bad = |why: &str| ApiError { param: Some("filename".into()), ..ApiError::status(StatusCode::BAD_REQUEST, why) };
    let name = name.ok_or_else(|| bad("\"filename\" is required"))?;
    let ok = !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && !name.chars().any(|c| c == '/' || c == '\\' || c == ':' || c.is_control());
    if !ok {
        return Err(bad("invalid filename: a plain file name inside --slot-save-path is expected"));
    }
    let path = dir.join(&name);
    Ok((name, path))
}

/// `POST /slots/{id}?action=save|restore|erase` (llama-server's shapes): save a slot's
/// cache to `--slot-save-path/FILENAME`, restore it, or drop it.
pub async fn slot_action(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<SlotQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let Some(dir) = st.args.slot_save_path.clone() else {
        return Err(ApiError::status(StatusCode::NOT_IMPLEMENTED, "This server does not support slots action."));
    };
    let id: u32 = id.parse().map_err(|_| ApiError {
        param: Some("id_slot".into()),
        ..ApiError::status(StatusCode::BAD_REQUEST, "Invalid slot ID")
    })?;
    let l = named(&st, q.model.as_deref()).await?;
    let engine = l.engine.clone();
    let body: SlotBody = if body.is_empty() { SlotBody { filename: None } } else { parse(&body)? };
    let action = q.action.unwrap_or_default();
    let run = |f: Box<dyn FnOnce() -> llama_rs::Result<llama_rs::SlotFile> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::status(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| match e.kind() {
                // A file the client named that is not a state of this model is its error.
                llama_rs::ErrorKind::Corrupt => ApiError::status(StatusCode::BAD_REQUEST, e.to_string()),
                _ => ApiError::from(e),
            })
    };
    match action.as_str() {
        "save" => {
            let (name, path) = slot_file(&dir, body.filename)?;
            let r = run(Box::new(move || engine.save_slot(id, &path))).await?;
            Ok(Json(json!({
                "id_slot": id, "filename": name, "n_saved": r.tokens, "n_written": r.bytes,
                "timings": {"save_ms": r.ms},
            })))
        }
        "restore" => {
            let (name, path) = slot_file(&dir, body.filename)?;
            if !path.is_file() {
                return Err(ApiError::status(StatusCode::NOT_FOUND, format!("no slot file {name:?}")));
            }
            let r = run(Box::new(move || engine.restore_slot(id, &path))).await?;
            Ok(Json(json!({
                "id_slot": id, "filename": name, "n_restored": r.tokens, "n_read": r.bytes,
                "timings": {"restore_ms": r.ms},
            })))
        }
        "erase" => {
            let r = run(Box::new(move || engine.erase_slot(id))).await?;
            Ok(Json(json!({"id_slot": id, "n_erased": r.tokens})))
        }
        _ => Err(ApiError {
            param: Some("action".into()),
            ..ApiError::status(StatusCode::BAD_REQUEST, "Invalid action")
        }),
    }
}

#[derive(Deserialize)]
struct TokenizeRequest {
    content: String,
    #[serde(default)]
    add_special: bool,
    #[serde(default = "yes")]
    parse_special: bool,
    #[serde(default)]
    with_pieces: bool,
}

fn yes() -> bool {
    true
}

/// `POST /tokenize` `{content, add_special, parse_special, with_pieces}`.
pub async fn tokenize(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Json<Value>> {
    let l = named_in(&st, &body).await?;
    let r: TokenizeRequest = parse(&body)?;
    let vocab = l.model.vocab();
    let toks = vocab.tokenize(&r.content, r.add_special, r.parse_special)?;
    let tokens: Vec<Value> = if r.with_pieces {
        toks.iter()
            .map(|&t| {
                let mut b = Vec::new();
                let _ = vocab.token_to_piece_bytes(t, true, &mut b);
                match String::from_utf8(b) {
                    Ok(s) => json!({"id": t.0, "piece": s}),
                    Err(e) => json!({"id": t.0, "piece": e.into_bytes()}),
                }
            })
            .collect()
    } else {
        toks.iter().map(|t| json!(t.0)).collect()
    };
    Ok(Json(json!({ "tokens": tokens })))
}

#[derive(Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<i64>,
}

/// `POST /detokenize` `{tokens}`: ids outside the vocabulary are a 400.
pub async fn detokenize(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Json<Value>> {
    let l = named_in(&st, &body).await?;
    let r: DetokenizeRequest = parse(&body)?;
    let n = l.model.n_vocab() as i64;
    let toks: Vec<Token> = r
        .tokens
        .iter()
        .map(|&t| {
            if (0..n).contains(&t) {
                Ok(Token(t as i32))
            } else {
                Err(ApiError::bad("tokens", format!("token {t} is not in the vocabulary (0..{n})")))
            }
        })
        .collect::<ApiResult<_>>()?;
    Ok(Json(json!({"content": l.model.vocab().detokenize(&toks, false, true)?})))
}

#[derive(Deserialize)]
struct ApplyTemplateRequest {
    messages: Vec<llama_rs::ChatMessage>,
}

/// `POST /apply-template` `{messages}` → `{prompt}`: the rendered chat prompt.
pub async fn apply_template(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Json<Value>> {
    let l = named_in(&st, &body).await?;
    let r: ApplyTemplateRequest = parse(&body)?;
    let t =
        l.template.as_ref().ok_or_else(|| ApiError::bad("messages", l.template_error.clone().unwrap_or_default()))?;
    let mut opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
    if st.args.reasoning_budget == 0 {
        opts.extra.insert("enable_thinking".into(), serde_json::Value::Bool(false));
    }
    Ok(Json(json!({"prompt": t.render(&r.messages, &opts)?})))
}
