//! An OpenAI-compatible HTTP server on llama-rs's [`Engine`](llama_rs::Engine): continuous
//! batching over one KV pool, prefix reuse across requests, answers that do not change
//! under load (`--deterministic`), and llama-server's flags and extra endpoints.
//!
//! Every bad request is a 4xx with OpenAI's error body (`error.rs`); the process does not
//! abort on any request (llama-rs checks llama.cpp's preconditions first).
//!
//! ```no_run
//! let args = llama_rs_server::args::parse_from(["llama-rs-server", "-m", "model.gguf", "--port", "0"])?;
//! let server = llama_rs_server::Server::spawn(args)?;
//! server.wait_ready(std::time::Duration::from_secs(60))?;
//! println!("listening on http://{}", server.addr());
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

pub mod anthropic;
pub mod args;
pub mod error;
pub mod extras;
pub mod ollama;
pub mod openai;
pub mod responses;
pub mod serve;
pub mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

pub use args::Args;
use error::ApiError;
use state::AppState;

/// The routes (OpenAI's under `/v1` and without it, as llama-server serves them).
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.args.body_limit;
    Router::new()
        .route("/health", get(extras::health))
        .route("/v1/health", get(extras::health))
        .route("/v1/chat/completions", post(openai::chat))
        .route("/chat/completions", post(openai::chat))
        .route("/v1/completions", post(openai::completions))
        .route("/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embeddings", post(openai::embeddings))
        .route("/v1/rerank", post(openai::rerank))
        .route("/rerank", post(openai::rerank))
        .route("/v1/reranking", post(openai::rerank))
        .route("/reranking", post(openai::rerank))
        .route("/v1/responses", post(responses::create))
        .route("/responses", post(responses::create))
        .route("/v1/models", get(openai::models))
        .route("/models", get(openai::models))
        .route("/metrics", get(extras::metrics))
        .route("/props", get(extras::props))
        .route("/slots", get(extras::slots))
        .route("/slots/{id}", post(extras::slot_action))
        .route("/tokenize", post(extras::tokenize))
        .route("/detokenize", post(extras::detokenize))
        .route("/apply-template", post(extras::apply_template))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/", get(ollama::root))
        .route("/api/version", get(ollama::version))
        .route("/api/tags", get(ollama::tags))
        .route("/api/ps", get(ollama::ps))
        .route("/api/show", post(ollama::show))
        .route("/api/chat", post(ollama::chat))
        .route("/api/generate", post(ollama::generate))
        .route("/api/embed", post(ollama::embed))
        .route("/api/embeddings", post(ollama::embed))
        .fallback(|req: Request| async move {
            ApiError::status(StatusCode::NOT_FOUND, format!("no route for {} {}", req.method(), req.uri().path()))
        })
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// API key check (everything but `/health`), and OpenAI-shaped bodies for the errors the
/// framework itself produces (body too large, wrong method).
async fn guard(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let path = req.uri().path();
    if let Some(key) = &st.api_key {
        if path != "/health" && path != "/v1/health" {
            let h = req.headers();
            let bearer = h
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "));
            let x = h.get("x-api-key").and_then(|v| v.to_str().ok());
            if bearer != Some(key.as_str()) && x != Some(key.as_str()) {
                return ApiError {
                    code: Some("invalid_api_key"),
                    ..ApiError::status(StatusCode::UNAUTHORIZED, "missing or wrong API key")
                }
                .into_response();
            }
        }
    }
    let res = next.run(req).await;
    let s = res.status();
    let is_json = res.headers().get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| {
        v.starts_with("application/json") || v.starts_with("text/event-stream") || v.starts_with("text/plain; version")
    });
    if (s.is_client_error() || s.is_server_error()) && !is_json {
        let msg = match s {
            StatusCode::PAYLOAD_TOO_LARGE => {
                format!("request body is larger than the limit of {} bytes (--body-limit)", st.args.body_limit)
            }
            StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route".to_string(),
            _ => s.canonical_reason().unwrap_or("error").to_string(),
        };
        return ApiError::status(s, msg).into_response();
    }
    res
}

/// A server running on its own thread (for tests, Python and embedding): stops when
/// dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Binds the address (port 0: any free port), then loads the model and serves on a
    /// thread of its own. `/health` answers 503 until the model is loaded.
    pub fn spawn(args: Args) -> Result<Server, Box<dyn std::error::Error + Send + Sync>> {
        let api_key = args.api_key()?;
        // Flags are checked before anything starts.
        args.engine_params()?;
        args.model_params()?;
        let listener = std::net::TcpListener::bind((args.host.as_str(), args.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(AppState::new(args, api_key)?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new().name("llama-rs-server".into()).spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("cannot start the runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let loader = st.clone();
                tokio::task::spawn_blocking(move || loader.load_default());
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        log::error!("cannot listen: {e}");
                        return;
                    }
                };
                let app = router(st.clone());
                let st2 = st.clone();
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                        // Running requests are cancelled, so their streams end and the
                        // graceful shutdown does not wait for them.
                        for l in st2.loaded_models() {
                            if let Some(engine) = l.owner.lock().unwrap_or_else(|p| p.into_inner()).take() {
                                tokio::task::spawn_blocking(move || engine.shutdown(false));
                            }
                        }
                    })
                    .await;
            });
        })?;
        Ok(Server { addr, state, stop: Some(stop), thread: Some(thread) })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the model is loaded (or loading failed: the error).
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let t = Instant::now();
        loop {
            if self.state.loaded().is_ok() {
                return Ok(());
            }
            if let Some(e) = self.state.load_error() {
                return Err(e);
            }
            if t.elapsed() > timeout {
                return Err(format!("model not loaded after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The served model's engine metrics (once loaded).
    pub fn metrics(&self) -> Option<llama_rs::Metrics> {
        self.state.loaded().ok().map(|l| l.engine.metrics())
    }

    /// Stops serving: open streams end, running requests are cancelled.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Blocks until the server stops (Ctrl-C in the binary).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}
