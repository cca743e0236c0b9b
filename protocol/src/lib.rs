//! One protocol layer over llama-rs: typed OpenAI request and response shapes, the one
//! "wire request → generation job" path ([`job`]) and the one "engine events → response"
//! path ([`answer`]). The server's wire formats (OpenAI, Anthropic, Ollama, Responses)
//! are thin translations onto it, and the Python module calls the same code, so a
//! feature or a fix lands in all of them at once.
//!
//! A crate of its own (not a module of llama-rs): it is wire-format code with no FFI, the
//! core crate stays free of OpenAI's shapes, and the layering is checked by the
//! dependency graph (llama-rs cannot reach it).
//!
//! ```
//! use llama_protocol::openai::ChatRequest;
//! let req: ChatRequest = serde_json::from_str(
//!     r#"{"messages": [{"role": "user", "content": "Hi"}], "temperature": 0, "max_tokens": 8}"#,
//! )?;
//! assert_eq!(req.sampling.max_tokens, Some(8));
//! # Ok::<(), serde_json::Error>(())
//! ```

#![warn(missing_docs)]

pub mod answer;
pub mod anthropic;
pub mod error;
pub mod job;
pub mod media;
pub mod ollama;
pub mod openai;
pub mod rerank;
pub mod responses;

pub use error::{ProtocolError, Result};
pub use job::{ChatJob, Defaults, Job, Target};
