//! Shared by the fuzz targets: the tiny model (written once per process) and a context.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use llama_rs::{ContextParams, Model, ModelParams};

/// `write_tiny_llama`'s model: loads and decodes in microseconds.
pub fn tiny() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let path = scratch("tiny.gguf");
        llama_testkit::write_tiny_llama(&path).expect("write tiny model");
        Model::load(&path, ModelParams::default()).expect("load tiny model")
    })
}

pub fn tiny_params() -> ContextParams {
    ContextParams::default().n_ctx(64).n_batch(16).n_ubatch(16).n_seq_max(3).n_threads(1)
}

/// A per-process scratch file.
pub fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("llama-rs-fuzz-{}-{name}", std::process::id()))
}
