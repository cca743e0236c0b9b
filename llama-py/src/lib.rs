//! `llama_rs._llama_rs`: the native half of the Python module. It exposes llama-rs's
//! model, session (one context, prefix reuse, the one generation core), chat templates,
//! embeddings and grammars; `python/llama_rs/` builds llama-cpp-python's API on top.
//!
//! Every decode runs with the GIL released, so several `Llama` objects generate in
//! parallel from Python threads; a streamed generation runs on its own thread and hands
//! pieces over a bounded channel, and Ctrl-C (KeyboardInterrupt) cancels it within a
//! token, leaving the object usable.
//!
//! One file per exposed concept: `model` (Model), `session` (Core: one context and its
//! generations), `stream` (Stream), `engine` (Engine, EngineStream), `embed` (Embedder),
//! `chat` (ChatJob, ChatAnswer: the protocol layer's chat), `errors` (exceptions by kind),
//! `functions` (module functions). Each `use super::*` (the imports below); no two import
//! each other (scripts/import-cycles.py).

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llama_rs::{
    CancelHandle, Candidates, ChatMessage, ChatTemplate, ContextParams, CustomSampler, DraftKind, DraftModel,
    FinishReason, FlashAttn, GenerateParams, GpuLayers, Grammar, KvType, LoadMode, Model as RsModel, ModelParams,
    Piece, RenderOptions, SamplerConfig, Session, Speculation, SplitMode, Token,
};
mod cache;
mod chat;
mod embed;
mod engine;
mod errors;
mod functions;
mod model;
mod session;
mod stream;

use errors::err;
use pyo3::exceptions::{PyKeyboardInterrupt, PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use embed::*;
use engine::*;
use functions::*;
use model::*;
use session::*;
use stream::*;

#[pymodule]
fn _llama_rs(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Core>()?;
    m.add_class::<Stream>()?;
    m.add_class::<Embedder>()?;
    m.add_class::<Engine>()?;
    m.add_class::<EngineStream>()?;
    m.add_class::<cache::DiskCache>()?;
    m.add_class::<chat::ChatJob>()?;
    m.add_class::<chat::ChatAnswer>()?;
    m.add_function(wrap_pyfunction!(json_schema_to_gbnf, m)?)?;
    m.add_function(wrap_pyfunction!(check_grammar, m)?)?;
    m.add_function(wrap_pyfunction!(parse_tool_calls, m)?)?;
    m.add_function(wrap_pyfunction!(supports_gpu_offload, m)?)?;
    m.add_function(wrap_pyfunction!(system_info, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_templates, m)?)?;
    m.add_function(wrap_pyfunction!(serve, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(set_log_level, m)?)?;
    // Another logger may already be installed (an embedding Rust program): keep it.
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Off);
    }
    m.add("LLAMA_CPP_COMMIT", llama_rs::LLAMA_CPP_COMMIT)?;
    Ok(())
}
