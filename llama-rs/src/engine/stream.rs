//! [`RequestStream`]: one request's events, as a blocking iterator and a `futures::Stream`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use futures::channel::mpsc::Receiver;
use futures::{Stream, StreamExt};

use super::{Completion, Event};
use crate::error::{Error, Result};
use crate::generate::FinishReason;

/// The events of one request: [`Event::Piece`]s, then [`Event::Done`]. An `Iterator`
/// (blocks the calling thread) and a `futures::Stream` (for any async runtime; no
/// `block_in_place` needed). Dropping it (or [`cancel`](Self::cancel)) cancels the request
/// and frees its sequence at the engine's next step; the other requests are not touched.
///
/// The channel behind it is bounded: when the consumer falls `channel_capacity` events
/// behind, the engine stops scheduling this request until there is room again.
pub struct RequestStream {
    rx: Receiver<Result<Event>>,
    cancel: Arc<AtomicBool>,
}

impl std::fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream").field("cancelled", &self.cancel.load(Ordering::Relaxed)).finish()
    }
}

impl RequestStream {
    pub(crate) fn new(rx: Receiver<Result<Event>>, cancel: Arc<AtomicBool>) -> RequestStream {
        RequestStream { rx, cancel }
    }

    /// Asks the engine to stop this request; the stream then ends with `Cancelled`.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// A handle that cancels this request from another thread while this stream is
    /// being read (or moved into a thread that reads it).
    pub fn canceller(&self) -> RequestCanceller {
        RequestCanceller(self.cancel.clone())
    }

    /// Runs to the end (blocking) and collects the text.
    pub fn text(self) -> Result<Completion> {
        futures::executor::block_on(self.collect_text())
    }

    /// Runs to the end (async) and collects the text.
    pub async fn collect_text(mut self) -> Result<Completion> {
        let mut c = Completion {
            text: String::new(),
            tokens: Vec::new(),
            finish_reason: FinishReason::Stop,
            usage: Default::default(),
            timings: Default::default(),
            spec: None,
        };
        while let Some(ev) = self.rx.next().await {
            match ev? {
                Event::Piece(p) => {
                    c.text += &p.text;
                    c.tokens.extend(p.tokens);
                }
                Event::Done { finish_reason, usage, timings, spec, .. } => {
                    c.finish_reason = finish_reason;
                    c.usage = usage;
                    c.timings = timings;
                    c.spec = spec;
                    return Ok(c);
                }
            }
        }
        Err(Error::Aborted)
    }
}

/// Cancels one engine request (see [`RequestStream::canceller`]).
///
/// ```no_run
/// # fn f(stream: llama_rs::RequestStream) {
/// let c = stream.canceller();
/// std::thread::spawn(move || for _event in stream {});
/// c.cancel(); // the stream ends with `Cancelled` at the engine's next step
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct RequestCanceller(Arc<AtomicBool>);

impl RequestCanceller {
    /// Asks the engine to stop the request.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Iterator for RequestStream {
    type Item = Result<Event>;

    fn next(&mut self) -> Option<Self::Item> {
        futures::executor::block_on(self.rx.next())
    }
}

impl Stream for RequestStream {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_next_unpin(cx)
    }
}

impl Drop for RequestStream {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}
