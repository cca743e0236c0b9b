//! Safe Rust API over llama.cpp.
//!
//! ```
//! use llama_rs::{Batch, ContextParams, Model, ModelParams};
//!
//! let model = Model::load(llama_testkit::default_model_path()?, ModelParams::default())?;
//! let mut ctx = model.context(ContextParams::default().n_ctx(2048))?;
//! let vocab = model.vocab();
//! let mut tokens = vocab.tokenize("The capital of France is", true, false)?;
//! let mut batch = Batch::new(512, 1)?;
//! batch.add_sequence(&tokens, 0, 0, true)?;
//! for _ in 0..16 {
//!     ctx.decode(&mut batch)?;
//!     let next = llama_rs::argmax(ctx.logits_last()?);
//!     if vocab.is_eog(next) { break; }
//!     print!("{}", vocab.token_to_piece(next, false)?);
//!     batch.clear();
//!     batch.add(next, tokens.len() as i32, &[0], true)?;
//!     tokens.push(next);
//! }
//! # Ok::<(), llama_rs::Error>(())
//! ```
//!
//! Layers: `llama-sys` (raw FFI) → this crate. One owner type per C handle
//! ([`Model`], [`Context`]); children hold a [`Model`] clone, so nothing outlives its
//! parent. Every llama.cpp precondition reachable from here is checked before the call
//! and reported as an [`Error`]: llama.cpp's asserts would abort the whole process.

#![warn(missing_docs)] // published: every public item is documented (CI denies warnings)

/// Builder setters `fn name(mut self, v: T) -> Self` for plain fields of a params
/// struct, each documented as setting its field (one definition for every params type).
macro_rules! setters {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("Sets `", stringify!($name), "`.")]
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            }
        )*
    };
}

pub mod backend;
mod batch;
mod chat;
mod context;
mod device;
mod disk_cache;
mod embed;
mod engine;
mod error;
mod ffi;
mod fit;
mod generate;
mod gguf;
mod media;
mod model;
mod quantize;
#[cfg(feature = "rpc")]
pub mod rpc;
mod sampling;
mod speculative;
mod tempfile;
mod token;
mod vocab;

pub use batch::Batch;
pub use chat::{
    apply_builtin, parse_tool_calls, ChatMessage, ChatTemplate, FunctionCall, ReasoningSplitter, RenderOptions,
    ToolCall, ToolCallStream, ToolEvent, TEMPLATE_FUEL, TEMPLATE_MAX_DEPTH, TEMPLATE_MAX_INDENT, TEMPLATE_MAX_OUTPUT,
    TEMPLATE_MAX_TAG_OPERATORS,
};
pub use context::{
    AbortHandle, AttentionType, Context, ContextParams, ControlVector, DeviceSampler, FlashAttn, KvType, LoraAdapter,
    MemoryEntry, MemoryPlan, Perf, Pooling, RopeScaling, DEVICE_TOP_K_MAX,
};
pub use device::{Device, DeviceType};
pub use disk_cache::{DiskCache, DiskCacheStats, Found};
pub use embed::{rerank_input, EmbedParams, Embedder, Normalize};
pub use engine::{
    Completion, Engine, EngineHandle, EngineParams, Event, Latency, Metrics, Request, RequestCanceller, RequestStream,
    SlotFile, StepTimes, Timings, Usage, MAX_CHANNEL_CAPACITY,
};
pub use error::{Error, ErrorKind, Result};
pub use fit::{fit, Fit, FitParams};
pub use generate::{
    CancelHandle, DeviceSampling, FinishReason, GenerateParams, Generator, Piece, Prompt, ReasoningBudget, Session,
    TokenLogprob,
};
pub use gguf::{read_gguf_metadata, GgufValue};
pub use media::{
    Chunk, ChunkKind, Media, MediaKind, MediaPrompt, Projector, ProjectorParams, MAX_AUDIO_SAMPLES, MAX_IMAGE_PIXELS,
    MAX_IMAGE_SIDE, MAX_MEDIA_BYTES,
};
pub use model::{BufferTarget, GpuLayers, KvOverride, LoadMode, Model, ModelParams, SplitMode};
pub use quantize::{quantize, FileType, QuantizeParams};
pub use sampling::json_schema;
pub use sampling::{
    argmax, Candidates, CustomSampler, Grammar, Sampler, SamplerBuilder, SamplerConfig, Stage, GRAMMAR_MAX_DEPTH,
    GRAMMAR_MAX_EXPANDED, GRAMMAR_MAX_LEFT_CHAIN, GRAMMAR_MAX_REPETITION, MAX_PENALTY_LAST_N, MAX_TRIGGER_PATTERN,
};
pub use speculative::{
    DraftKind, DraftModel, Drafter, Mtp, NgramDrafter, NgramMapDrafter, SpecStats, Speculation, MAX_NGRAM,
};
pub use token::{Pos, SeqId, Token};
pub use vocab::{PieceDecoder, TokenAttr, Vocab, TOKENIZE_MAX_BYTES};

/// The raw bindings, for what the safe API does not cover yet (rusqlite's `ffi`
/// pattern): an escape hatch whose calls are `unsafe` and carry none of this crate's
/// checks. Our own crates (the protocol layer, the server, the Python module) do not use
/// it: what they need is re-exported below as safe items.
pub use llama_sys as sys;

/// The llama.cpp commit this build links (from the vendored source).
pub const LLAMA_CPP_COMMIT: &str = llama_sys::LLAMA_CPP_COMMIT;

/// llama.cpp's "pick a random seed" value (`LLAMA_DEFAULT_SEED`).
pub const DEFAULT_SEED: u32 = llama_sys::LLAMA_DEFAULT_SEED;
