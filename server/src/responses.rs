//! OpenAI's Responses API: `POST /v1/responses` (and `/responses`). The request becomes
//! the chat job every format uses (`llama_protocol::responses`); answers are Responses'
//! output items, streamed as its typed events (`event: <type>` SSE). Responses are kept
//! for `previous_response_id` while the server runs (`state::ResponseStore`); an unknown
//! id is a 404 naming it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use llama_protocol::answer::{self, ChatChoiceStream};
use llama_protocol::job;
use llama_protocol::responses::{Response as ResponseBody, ResponseStream, ResponsesRequest};
use llama_rs::Event;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::serve::{self, parse, target};
use crate::state::{AppState, Loaded};

/// `POST /v1/responses`.
pub async fn create(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<Response> {
    let req: ResponsesRequest = parse(&body)?;
    let served = st.model(req.model.as_deref()).await?;
    let l: &Loaded = &served;
    let history = match &req.previous_response_id {
        None => Vec::new(),
        Some(id) => st.responses.get(id).ok_or_else(|| ApiError {
            status: axum::http::StatusCode::NOT_FOUND,
            message: format!("previous response {id:?} is not known here (responses live while the server runs)"),
            param: Some("previous_response_id".into()),
            code: Some("previous_response_not_found"),
        })?,
    };
    let chat = req.to_chat(history)?;
    // The conversation so far, without the instructions (they apply per request).
    let mut conversation = chat.messages.clone();
    if req.instructions.is_some() {
        conversation.remove(0);
    }
    let cj = job::chat_job(&target(&st, l), chat)?;
    let s = serve::submit(l, &cj.job)?.remove(0);
    let base = ResponseBody::new(format!("resp_{:016x}", serve::rand_id()), serve::now(), l.id.clone(), &req);
    let store = base.store;
    if !req.stream {
        let c = serve::collect(s, serve::timeout(&st)).await?;
        let mut r = base;
        r.set_output(&answer::chat_choice(&cj, 0, &c.text, &[], c.finish(), &l.model));
        r.finish(c.finish(), &c.usage);
        if store {
            st.responses.put(r.id.clone(), r.conversation(conversation));
        }
        return Ok(Json(r).into_response());
    }
    let st2 = st.clone();
    let events = serve::async_stream(move |tx| async move {
        let mut rs = ResponseStream::new(base);
        let mut choice = ChatChoiceStream::new(&cj, 0);
        rs.start().into_iter().for_each(&tx);
        let mut all = Box::pin(serve::merged(vec![s], serve::timeout(&st2)));
        let mut finished = false;
        while let Some((_, ev)) = all.next().await {
            match ev {
                Err(e) => {
                    tx(failed(&mut rs, ApiError::from(e)));
                    return;
                }
                Ok(Event::Piece(p)) => {
                    for d in choice.piece(&p.text, &[], &served.model) {
                        rs.delta(d).into_iter().for_each(&tx);
                    }
                }
                Ok(Event::Done { finish_reason, usage, .. }) => {
                    let mut deltas = choice.done(finish_reason);
                    deltas.pop(); // the finish delta
                    for d in deltas {
                        rs.delta(d).into_iter().for_each(&tx);
                    }
                    rs.finish(finish_reason, &usage).into_iter().for_each(&tx);
                    finished = true;
                }
            }
        }
        if !finished {
            tx(failed(&mut rs, ApiError::status(axum::http::StatusCode::GATEWAY_TIMEOUT, "generation timed out")));
            return;
        }
        if store {
            st2.responses.put(rs.response.id.clone(), rs.response.conversation(conversation));
        }
    });
    // Named events (`event: response.output_text.delta`), as OpenAI sends them.
    let sse = events.map(|v| {
        let name = v.get("type").and_then(Value::as_str).unwrap_or("message").to_string();
        Ok::<_, std::convert::Infallible>(SseEvent::default().event(name).data(v.to_string()))
    });
    Ok(Sse::new(sse).keep_alive(KeepAlive::default()).into_response())
}

/// `response.failed` with the error (the stream then ends).
fn failed(rs: &mut ResponseStream, e: ApiError) -> Value {
    rs.fail(e.code.unwrap_or("server_error"), &e.message)
}
