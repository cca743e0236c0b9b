//! Fixtures for llama-rs's own tests, doctests, fuzz targets, benches and developer
//! tools (`publish = false`: not part of the published API).
//!
//! - [`default_model_path`]: the model the suite runs on (fetched by `vendor/fetch.py`).
//! - [`GgufWriter`]: writes GGUF files (crafted hostile models, control vectors, corpora).
//! - [`write_synthetic_qwen2`], [`write_tiny_llama`], [`write_tiny_reranker`]: models of a real shape with random
//!   weights, for speed tests and split loading.
//! - [`write_gemma3_mmproj`]: a synthetic multimodal projector (Gemma 3 layout) for mtmd.
//! - [`child`]: waits on child processes that fail at once, with the signal, when they die.
//! - [`fixtures`]: the loaded default model, greedy helpers and scratch directories the
//!   integration tests share.
//!
//! ```
//! let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
//! assert!(model.n_vocab() > 0);
//! # Ok::<(), llama_rs::Error>(())
//! ```

pub mod child;
pub mod fixtures;
mod gguf_writer;
mod mmproj;
mod paths;
mod synthetic;

pub use gguf_writer::GgufWriter;
pub use mmproj::{write_gemma3_mmproj, Gemma3Projector};
pub use paths::{cache_dir, default_model_path, DEFAULT_MODEL_FILE};
pub use synthetic::{
    write_synthetic_qwen2, write_tiny_llama, write_tiny_llama_with, write_tiny_reranker, SyntheticShape,
};
