//! `Stream`: a generation running on its own thread, handing pieces to Python over a
//! bounded channel (Ctrl-C cancels it within a token).

use super::*;

/// The session, also after a panic on another thread (its state stays consistent: every
/// generation step leaves it whole).
pub(crate) fn lock_session(s: &Mutex<Session>) -> std::sync::MutexGuard<'_, Session> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// One generation's pieces: `(text, token ids, logprobs, finish_reason)` tuples, where
/// logprobs is a list of `(token, logprob, [(token, logprob), ...])`.
#[pyclass(module = "llama_rs._llama_rs")]
pub(crate) struct Stream {
    /// `None` once the stream ended (a Mutex only to make the class `Sync`).
    rx: Mutex<Option<Receiver<Msg>>>,
    cancel: Arc<Mutex<Option<CancelHandle>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    usage: Arc<Mutex<(usize, usize)>>,
    /// The exception a Python logits processor raised (it ends the generation).
    failed: Arc<Mutex<Option<PyErr>>>,
    /// Pieces received in one message (`collect` mode), handed out one per `__next__`.
    held: std::collections::VecDeque<Piece>,
}

pub(crate) enum Msg {
    Piece(Piece),
    /// Every piece of a generation at once (`collect` mode).
    Pieces(Vec<Piece>),
    Err(llama_rs::Error),
}

/// `(token, logprob, [(token, logprob), ...])`: a chosen token and the most likely ones.
pub(crate) type LogprobTuple = (i32, f32, Vec<(i32, f32)>);
pub(crate) type PieceTuple = (String, Vec<i32>, Vec<LogprobTuple>, Option<&'static str>);

pub(crate) fn piece_tuple(p: Piece) -> PieceTuple {
    let lp = logprob_tuples(&p.logprobs);
    (p.text, p.tokens.iter().map(|t| t.0).collect(), lp, p.finish_reason.map(finish_str))
}

pub(crate) fn logprob_tuples(lps: &[llama_rs::TokenLogprob]) -> Vec<LogprobTuple> {
    lps.iter().map(|l| (l.token.0, l.logprob, l.top.iter().map(|&(t, x)| (t.0, x)).collect())).collect()
}

impl Stream {
    pub(crate) fn start(
        session: Arc<Mutex<Session>>,
        prompt: llama_rs::Prompt,
        params: GenerateParams,
        first: Option<Box<dyn CustomSampler>>,
        failed: Arc<Mutex<Option<PyErr>>>,
        collect: bool,
    ) -> PyResult<Stream> {
        let (tx, rx) = sync_channel::<Msg>(64);
        let cancel: Arc<Mutex<Option<CancelHandle>>> = Arc::default();
        let usage: Arc<Mutex<(usize, usize)>> = Arc::default();
        let (c2, u2) = (cancel.clone(), usage.clone());
        let thread = std::thread::Builder::new()
            .name("llama-rs-generate".into())
            .spawn(move || {
                let mut s = lock_session(&session);
                let mut g = match s.generate_with(prompt, &params, first) {
                    Ok(g) => g,
                    Err(e) => {
                        let _ = tx.send(Msg::Err(e));
                        return;
                    }
                };
                *c2.lock().unwrap_or_else(|p| p.into_inner()) = Some(g.cancel_handle());
                // `collect`: one message at the end, so the waiting Python thread does
                // not wake (and take a core from the decode) once per token.
                let mut all = Vec::new();
                for p in g.by_ref() {
                    let m = match p {
                        Ok(p) if collect => {
                            all.push(p);
                            continue;
                        }
                        Ok(p) => Msg::Piece(p),
                        Err(e) => Msg::Err(e),
                    };
                    if !all.is_empty() && tx.send(Msg::Pieces(std::mem::take(&mut all))).is_err() {
                        break;
                    }
                    if tx.send(m).is_err() {
                        break; // the Python side went away
                    }
                }
                if !all.is_empty() {
                    let _ = tx.send(Msg::Pieces(all));
                }
                *u2.lock().unwrap_or_else(|p| p.into_inner()) = g.usage();
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(Stream { rx: Mutex::new(Some(rx)), cancel, thread: Some(thread), usage, failed, held: Default::default() })
    }

    fn stop(&mut self, py: Python<'_>) {
        if let Some(c) = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.cancel();
        }
        *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None; // the thread's next send fails
        if let Some(t) = self.thread.take() {
            // Without the GIL: a logits processor on that thread may be waiting for it.
            let _ = py.allow_threads(|| t.join());
        }
    }

    /// The stream's error: the Python exception a logits processor raised, if that is
    /// what ended it.
    fn error(&self, e: llama_rs::Error) -> PyErr {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_else(|| err(e))
    }
}

pub(crate) fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

#[pymethods]
impl Stream {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<PieceTuple>> {
        loop {
            if let Some(p) = self.held.pop_front() {
                return Ok(Some(piece_tuple(p)));
            }
            // Wait without the GIL, waking up to let Python deliver Ctrl-C.
            let rx = &self.rx;
            let r = py.allow_threads(|| {
                rx.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|rx| rx.recv_timeout(Duration::from_millis(50)))
            });
            let Some(r) = r else { return Ok(None) };
            match r {
                Ok(Msg::Piece(p)) => return Ok(Some(piece_tuple(p))),
                Ok(Msg::Pieces(v)) => self.held.extend(v),
                Ok(Msg::Err(e)) => {
                    self.stop(py);
                    return Err(self.error(e));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    // Ended on its own: join (without the GIL), nothing to cancel.
                    *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                    if let Some(t) = self.thread.take() {
                        let _ = py.allow_threads(|| t.join());
                    }
                    return Ok(None);
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        // KeyboardInterrupt: cancel within a token, keep the object usable.
                        self.stop(py);
                        return Err(e);
                    }
                }
            }
        }
    }

    /// (prompt tokens, generated tokens) once the stream has ended.
    fn usage(&self) -> (usize, usize) {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the generation (also on garbage collection).
    fn close(&mut self, py: Python<'_>) {
        self.stop(py);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        Python::with_gil(|py| self.stop(py));
    }
}
