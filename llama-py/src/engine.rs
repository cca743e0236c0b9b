//! `Engine` and `EngineStream`: many requests at once over one model (`AsyncLlama`).

use super::*;

/// The engine: many requests at once over one model (continuous batching, prefix
/// reuse, the same generation core as `Core`). Backs `AsyncLlama` and `n` > 1.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct Engine {
    inner: Mutex<Option<llama_rs::Engine>>,
    handle: llama_rs::EngineHandle,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (model, n_ctx=8192, slots=8, step_tokens=512, n_threads=None, flash_attn=None, type_k=None, type_v=None, disk_cache=None, mmproj=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: &Model,
        n_ctx: u32,
        slots: u32,
        step_tokens: u32,
        n_threads: Option<u32>,
        flash_attn: Option<bool>,
        type_k: Option<i32>,
        type_v: Option<i32>,
        disk_cache: Option<&crate::cache::DiskCache>,
        mmproj: Option<std::path::PathBuf>,
    ) -> PyResult<Engine> {
        let p = llama_rs::EngineParams {
            n_ctx,
            slots,
            step_tokens,
            n_threads: n_threads.unwrap_or(0),
            flash_attn: match flash_attn {
                Some(true) => FlashAttn::On,
                Some(false) => FlashAttn::Off,
                None => FlashAttn::Auto,
            },
            type_k: ggml_kv_type(type_k)?,
            type_v: ggml_kv_type(type_v)?,
            disk_cache: disk_cache.map(|c| c.inner.dir().to_path_buf()),
            disk_cache_bytes: disk_cache.map_or(0, |c| c.inner.max_bytes()),
            mmproj,
            ..Default::default()
        };
        let m = model.inner.clone();
        let e = py.allow_threads(move || llama_rs::Engine::new(&m, p)).map_err(err)?;
        Ok(Engine { handle: e.handle(), inner: Mutex::new(Some(e)) })
    }

    /// Submits one request `n` times (independent samples; the prompt is decoded once
    /// and shared); returns one `EngineStream` per sample.
    #[pyo3(signature = (prompt, opts, max_tokens=None, stop=Vec::new(), logprobs=None, n=1))]
    fn submit(
        &self,
        prompt: Vec<i32>,
        opts: SampleOpts,
        max_tokens: Option<usize>,
        stop: Vec<String>,
        logprobs: Option<usize>,
        n: usize,
    ) -> PyResult<Vec<EngineStream>> {
        let params = GenerateParams {
            max_tokens,
            stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
            sampler: opts.config(),
            logprobs,
            ..Default::default()
        };
        let req = llama_rs::Request::tokens(prompt.into_iter().map(Token).collect(), params);
        let streams = self.handle.submit_n(req, n).map_err(err)?;
        Ok(streams
            .into_iter()
            .map(|s| EngineStream { canceller: s.canceller(), stream: Mutex::new(Some(s)), rx: Mutex::new(None) })
            .collect())
    }

    /// `(vision, audio)`: what the engine's projector reads; `(False, False)` without one.
    fn media_support(&self) -> (bool, bool) {
        self.handle.media_support()
    }

    /// A `ChatJob` for this engine: the request's media are read with its projector.
    #[pyo3(signature = (model, request_json, n_ctx, template=None))]
    fn chat_job(
        &self,
        model: &Model,
        request_json: &str,
        n_ctx: usize,
        template: Option<&str>,
    ) -> PyResult<chat::ChatJob> {
        chat::ChatJob::build(model, request_json, n_ctx, template, Some(&self.handle))
    }

    /// Submits `n` choices of a `ChatJob` (seeds seed, seed + 1, ...).
    #[pyo3(signature = (job, n=1))]
    fn submit_job(&self, job: &chat::ChatJob, n: usize) -> PyResult<Vec<EngineStream>> {
        let req = llama_rs::Request { prompt: job.prompt(), params: job.inner.job.params.clone() };
        let streams = self.handle.submit_n(req, n).map_err(err)?;
        Ok(streams
            .into_iter()
            .map(|s| EngineStream { canceller: s.canceller(), stream: Mutex::new(Some(s)), rx: Mutex::new(None) })
            .collect())
    }

    /// Requests waiting, running; tokens generated so far.
    fn metrics(&self) -> (usize, usize, u64) {
        let m = self.handle.metrics();
        (m.queued, m.active, m.generated_tokens)
    }

    /// The disk tier's restores: (hits, tokens restored).
    fn disk_hits(&self) -> (u64, u64) {
        let d = self.handle.metrics().disk;
        (d.hits, d.hit_tokens)
    }

    /// Stops the engine (running requests end with `cancelled`).
    fn shutdown(&self, py: Python<'_>) {
        let e = self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(e) = e {
            py.allow_threads(move || e.shutdown(false));
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The engine thread is joined here: without the GIL, which it may wait for (a log
        // record, a stream's callback).
        if let Some(e) = self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            Python::with_gil(|py| py.allow_threads(move || e.shutdown(false)));
        }
    }
}

/// One engine request's events, read either by `next_event` (blocking, with a timeout
/// so Ctrl-C gets through) or pushed to a callback from a thread of its own (`pump`,
/// for asyncio). Events: `("piece", text, token_ids, logprobs, finish)`,
/// `("done", finish, prompt_tokens, completion_tokens, cached_tokens)`,
/// `("error", exception)`; `None` once ended; `("wait",)` when `next_event` timed out.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct EngineStream {
    stream: Mutex<Option<llama_rs::RequestStream>>,
    rx: Mutex<Option<Receiver<llama_rs::Result<llama_rs::Event>>>>,
    canceller: llama_rs::RequestCanceller,
}

pub(crate) fn event_tuple(py: Python<'_>, ev: llama_rs::Result<llama_rs::Event>) -> PyResult<PyObject> {
    use pyo3::IntoPyObjectExt;
    match ev {
        Ok(llama_rs::Event::Piece(p)) => {
            let lp = logprob_tuples(&p.logprobs);
            let toks: Vec<i32> = p.tokens.iter().map(|t| t.0).collect();
            ("piece", p.text, toks, lp, p.finish_reason.map(finish_str)).into_py_any(py)
        }
        Ok(llama_rs::Event::Done { finish_reason, usage, .. }) => {
            ("done", finish_str(finish_reason), usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
                .into_py_any(py)
        }
        Err(e) => ("error", err(e).into_value(py)).into_py_any(py),
    }
}

#[pymethods]
impl EngineStream {
    /// The next event, waiting at most `timeout_ms` (without the GIL).
    #[pyo3(signature = (timeout_ms=50))]
    fn next_event(&self, py: Python<'_>, timeout_ms: u64) -> PyResult<Option<PyObject>> {
        use pyo3::IntoPyObjectExt;
        let mut rx = self.rx.lock().unwrap_or_else(|p| p.into_inner());
        if rx.is_none() {
            let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return Ok(None); // pumped to a callback, or ended
            };
            let (tx, r) = sync_channel(64);
            std::thread::Builder::new()
                .name("llama-rs-request".into())
                .spawn(move || {
                    for ev in stream {
                        if tx.send(ev).is_err() {
                            break; // dropping `stream` cancels the request
                        }
                    }
                })
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
            *rx = Some(r);
        }
        drop(rx);
        let rx = &self.rx;
        let got = py.allow_threads(|| {
            rx.lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|r| r.recv_timeout(Duration::from_millis(timeout_ms)))
        });
        match got {
            None => Ok(None),
            Some(Ok(ev)) => event_tuple(py, ev).map(Some),
            Some(Err(RecvTimeoutError::Timeout)) => ("wait",).into_py_any(py).map(Some),
            Some(Err(RecvTimeoutError::Disconnected)) => {
                *self.rx.lock().unwrap_or_else(|p| p.into_inner()) = None;
                Ok(None)
            }
        }
    }

    /// Calls `callback(event)` from a thread of its own for every event, then
    /// `callback(None)` (for asyncio: `loop.call_soon_threadsafe`).
    fn pump(&self, callback: PyObject) -> PyResult<()> {
        let Some(stream) = self.stream.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Err(PyValueError::new_err("this stream is already being read"));
        };
        std::thread::Builder::new()
            .name("llama-rs-request".into())
            .spawn(move || {
                for ev in stream {
                    let ok = Python::with_gil(|py| {
                        event_tuple(py, ev).and_then(|t| callback.call1(py, (t,))).map_err(|e| e.print(py)).is_ok()
                    });
                    if !ok {
                        break;
                    }
                }
                Python::with_gil(|py| {
                    if let Err(e) = callback.call1(py, (py.None(),)) {
                        e.print(py);
                    }
                });
            })
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        Ok(())
    }

    /// Stops the request; its stream ends with `cancelled`.
    fn cancel(&self) {
        self.canceller.cancel();
    }
}
