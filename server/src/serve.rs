//! Running jobs on the engine for every wire format: the body parser, the request's
//! target (model, template, the server's defaults), submitting a job's choices,
//! collecting or merging their event streams under the server's timeout, and SSE.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use llama_protocol::{Defaults, Job, Target};
use llama_rs::{Event, FinishReason, RequestStream, Token, TokenLogprob, Usage};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::state::{AppState, Loaded};

/// Parses a JSON body; a malformed body or a field of the wrong type is a 400 that says
/// where.
pub fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path);
        let at = param.as_deref().map(|p| format!(" (at {p})")).unwrap_or_default();
        ApiError {
            param,
            code: Some("invalid_json"),
            ..ApiError::status(axum::http::StatusCode::BAD_REQUEST, format!("invalid request body{at}: {}", e.inner()))
        }
    })
}

/// What a request to `l` is made for (the protocol layer's view of a served model).
pub fn target<'a>(st: &AppState, l: &'a Loaded) -> Target<'a> {
    Target {
        model: &l.model,
        template: l.template.as_ref().ok_or_else(|| l.template_error.as_deref().unwrap_or("no chat template")),
        n_ctx: l.n_ctx,
        speculation: l.speculation.as_ref(),
        defaults: Defaults {
            max_tokens: st.args.n_predict,
            reasoning_budget: st.args.reasoning_budget as i64,
            split_reasoning: st.args.reasoning_format != "none",
        },
        media: l
            .media_marker
            .as_deref()
            .map(|marker| llama_protocol::media::MediaReader { marker, decode: &*l.decode_media }),
    }
}

/// Unix seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A response id's random part.
pub fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    t ^ N.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// One finished choice.
#[derive(Default)]
pub struct Choice {
    /// The whole text.
    pub text: String,
    /// Per token, when asked for.
    pub logprobs: Vec<TokenLogprob>,
    /// Why it ended.
    pub finish: Option<FinishReason>,
    /// Its tokens.
    pub usage: Usage,
    /// Its times.
    pub timings: llama_rs::Timings,
    /// The stop string that ended it.
    pub stop_word: Option<String>,
}

impl Choice {
    /// Why it ended (`Stop` if the stream ended without saying).
    pub fn finish(&self) -> FinishReason {
        self.finish.unwrap_or(FinishReason::Stop)
    }
}

/// Collects a stream to its end (bounded by the server's timeout: the request is
/// cancelled when it runs out).
pub async fn collect(mut s: RequestStream, timeout: Option<Duration>) -> ApiResult<Choice> {
    let work = async {
        let mut c = Choice::default();
        while let Some(ev) = StreamExt::next(&mut s).await {
            match ev? {
                Event::Piece(p) => {
                    c.text += &p.text;
                    c.logprobs.extend(p.logprobs);
                }
                Event::Done { finish_reason, usage, timings, stop_word, .. } => {
                    c.finish = Some(finish_reason);
                    c.usage = usage;
                    c.timings = timings;
                    c.stop_word = stop_word;
                }
            }
        }
        Ok::<_, ApiError>(c)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, work).await.map_err(|_| {
            ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, format!("generation took longer than {t:?}"))
        })?,
        None => work.await,
    }
}

/// The server's generation timeout (`--timeout`), if any.
pub fn timeout(st: &AppState) -> Option<Duration> {
    (st.args.timeout > 0).then(|| Duration::from_secs(st.args.timeout))
}

/// Submits the job's choices (`n` streams with seeds seed, seed + 1, ...).
pub fn submit(l: &Loaded, j: &Job) -> ApiResult<Vec<RequestStream>> {
    let req = j.request();
    Ok(if j.n == 1 { vec![l.engine.submit(req)?] } else { l.engine.submit_n(req, j.n)? })
}

/// SSE response from a stream of JSON values (then `data: [DONE]`).
pub fn sse(events: impl Stream<Item = Value> + Send + 'static) -> Response {
    let s = events
        .map(|v| Ok::<_, Infallible>(SseEvent::default().data(v.to_string())))
        .chain(futures::stream::once(async { Ok(SseEvent::default().data("[DONE]")) }));
    Sse::new(s).keep_alive(KeepAlive::default()).into_response()
}

/// The choices' events, tagged with their index, ending early at the timeout (the
/// streams are dropped then, which cancels the requests).
pub fn merged(
    streams: Vec<RequestStream>,
    timeout: Option<Duration>,
) -> impl Stream<Item = (usize, llama_rs::Result<Event>)> {
    let all = futures::stream::select_all(
        streams.into_iter().enumerate().map(|(i, s)| StreamExt::map(s, move |e| (i, e)).boxed()),
    );
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    all.take_until(Box::pin(deadline))
}

/// Runs the choices' streams to their end for a streamed answer: each event goes to `on`
/// with its choice index; an engine error ends the answer with an error event. Returns
/// the summed usage, or `None` after an error or when some choice did not finish (the
/// timeout; an error event was sent).
pub async fn drive_choices(
    streams: Vec<RequestStream>,
    timeout: Option<Duration>,
    tx: &(dyn Fn(Value) + Send + Sync),
    mut on: impl FnMut(usize, Event) + Send,
) -> Option<Usage> {
    let n = streams.len();
    let (mut usage, mut finished) = (Usage::default(), 0);
    let mut all = Box::pin(merged(streams, timeout));
    while let Some((i, ev)) = all.next().await {
        match ev {
            Err(e) => {
                tx(ApiError::from(e).body());
                return None;
            }
            Ok(ev) => {
                if let Event::Done { usage: u, .. } = &ev {
                    llama_protocol::answer::add_usage(&mut usage, u);
                    finished += 1;
                }
                on(i, ev);
            }
        }
    }
    if finished < n {
        tx(ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, "generation timed out").body());
        return None;
    }
    Some(usage)
}

/// A stream of values produced by an async block that calls `tx(value)`: runs as its own
/// task, so the block can await the engine's streams while the response is being sent.
/// When the client goes away the channel closes, the task's next send fails, and
/// dropping the task's engine streams cancels their requests.
pub fn async_stream<F, Fut>(f: F) -> impl Stream<Item = Value> + Send + 'static
where
    F: FnOnce(Box<dyn Fn(Value) + Send + Sync>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let closed = tx.clone();
    let fut = f(Box::new(move |v| {
        let _ = tx.send(v);
    }));
    tokio::spawn(async move {
        tokio::select! {
            _ = fut => {}
            _ = closed.closed() => {}
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// A typed body as a JSON value (for the streams of values above).
pub fn value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Embeddings of token lists through the one embedding context (made on first use; runs
/// off the async workers).
pub async fn embed_tokens(l: std::sync::Arc<Loaded>, inputs: Vec<Vec<Token>>) -> ApiResult<Vec<Vec<f32>>> {
    tokio::task::spawn_blocking(move || -> ApiResult<Vec<Vec<f32>>> {
        let mut guard = l.embedder.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(llama_rs::Embedder::new(&l.model, llama_rs::EmbedParams::default())?);
        }
        Ok(guard.as_mut().expect("set above").embed_tokens(&inputs)?)
    })
    .await
    .map_err(|e| ApiError::status(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}
