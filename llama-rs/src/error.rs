//! The one error type of llama-rs.

use std::path::PathBuf;

/// Everything that can go wrong in llama-rs. llama.cpp return codes are kept in `code`
/// fields where llama.cpp produced one.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model file that does not exist or cannot be read.
    #[error("model file {path}: {source}")]
    ModelFile {
        /// The path as given.
        path: PathBuf,
        /// Why it could not be opened.
        source: std::io::Error,
    },
    /// A file that is not a GGUF model (wrong magic, unsupported version, truncated header).
    #[error("{path} is not a valid GGUF file: {reason}")]
    NotGguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// llama.cpp refused to load the model (its log says why; enable the `log` crate).
    #[error(
        "llama.cpp could not load the model from {path} (corrupt, truncated or unsupported; see the llama.cpp log)"
    )]
    ModelLoad {
        /// The file.
        path: PathBuf,
    },
    /// The progress callback asked to stop the load.
    #[error("model load cancelled by the progress callback")]
    LoadCancelled,
    /// A multimodal projector (`mmproj`) that cannot be used: not a projector, damaged,
    /// or refused by llama.cpp's mtmd.
    #[error("projector {path}: {reason}")]
    ProjectorLoad {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// An image or audio clip that cannot be used: an unknown format, undecodable bytes,
    /// or a size outside the bounds.
    #[error("media: {0}")]
    Media(String),
    /// llama.cpp could not create a context with these parameters.
    #[error("llama.cpp could not create the context (out of memory or unsupported parameters; see the llama.cpp log)")]
    ContextCreate,
    /// Parameters that llama.cpp would reject or abort on. `name` is the parameter at
    /// fault as the API spells it (`top_p`, `speculation.max_draft`, `n_threads`), empty
    /// where no single parameter is (see [`Error::param`]).
    #[error("invalid parameter: {reason}")]
    InvalidParam {
        /// The parameter, or empty.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The model was loaded with `vocab_only` and cannot run.
    #[error("the model was loaded vocab-only and has no weights to decode with")]
    VocabOnly,
    /// A token id outside `0..n_vocab`.
    #[error("token id {token} is out of range (the vocabulary has {n_vocab} tokens)")]
    InvalidToken {
        /// The id given.
        token: i32,
        /// The vocabulary's size.
        n_vocab: i32,
    },
    /// A sequence id outside `0..n_seq_max`.
    #[error("sequence id {seq_id} is out of range (the context has n_seq_max = {n_seq_max})")]
    InvalidSeqId {
        /// The id given.
        seq_id: i32,
        /// The context's number of sequences.
        n_seq_max: u32,
    },
    /// Positions that break llama.cpp's rule: each sequence continues at `pos_max + 1`.
    #[error("sequence {seq_id}: position {got} given where {expected} was required")]
    InvalidPosition {
        /// The sequence.
        seq_id: i32,
        /// The position it continues at.
        expected: i32,
        /// The position given.
        got: i32,
    },
    /// Adding to a batch that is already at capacity.
    #[error("batch is full ({capacity} tokens)")]
    BatchFull {
        /// The batch's capacity in tokens.
        capacity: usize,
    },
    /// A batch with no tokens.
    #[error("batch is empty")]
    EmptyBatch,
    /// More tokens than the context accepts in one call.
    #[error("batch has {n_tokens} tokens but the context's n_batch is {n_batch}")]
    BatchTooLarge {
        /// Tokens in the batch.
        n_tokens: usize,
        /// The context's applied `n_batch`.
        n_batch: u32,
    },
    /// A batch whose shape does not fit this context (embedding width, seq ids per token).
    #[error("batch does not fit the context: {0}")]
    BatchMismatch(String),
    /// A prompt that does not fit the context (with room for one generated token).
    #[error("prompt of {n_prompt} tokens does not fit the context of {n_ctx} tokens")]
    PromptTooLong {
        /// Tokens in the prompt.
        n_prompt: usize,
        /// Tokens the context holds.
        n_ctx: usize,
    },
    /// No room in the KV cache (llama_decode returned 1): the context is full.
    #[error("no KV cache slot for the batch: the context is full (clear or shift a sequence, or use a larger n_ctx)")]
    ContextFull,
    /// The engine was shut down (or dropped) before the request could be queued.
    #[error("the engine has shut down")]
    EngineStopped,
    /// The abort handle stopped the computation (llama_decode returned 2).
    #[error("decode aborted by the abort handle")]
    Aborted,
    /// A llama.cpp call failed: a non-zero return code (`code`), or a NULL handle where
    /// an object was to be created (`code` is `None`). `op` names the C function.
    #[error("llama.cpp's {op} failed{}", code.map(|c| format!(" with code {c}")).unwrap_or_default())]
    Backend {
        /// The llama.cpp function.
        op: &'static str,
        /// Its return code; `None` for a NULL handle.
        code: Option<i32>,
    },
    /// A llama.cpp call threw: a backend failed in the middle of its work (an RPC
    /// server that crashed, closed the connection, timed out or answered something
    /// malformed). The context that ran it cannot be trusted after this: make a new one.
    #[error("llama.cpp's {op} failed: {message}")]
    BackendFailed {
        /// The llama.cpp function.
        op: &'static str,
        /// What the backend reported.
        message: String,
    },
    /// Asked for logits/embeddings of a batch position that produced none.
    #[error("batch index {index} produced no output (set `output` for it when adding it to the batch)")]
    NoOutput {
        /// The batch index.
        index: usize,
    },
    /// Asked for the host-side result of a batch entry that was sampled on the device, or
    /// for the device result of one that was not.
    #[error("batch index {index}: {reason}")]
    DeviceSampled {
        /// The batch index.
        index: usize,
        /// Which result exists instead.
        reason: &'static str,
    },
    /// Embeddings asked of a context created without `embeddings(true)`.
    #[error("the context was created without embeddings")]
    NoEmbeddings,
    /// Code called back from the generation (a custom sampler) panicked; the request
    /// failed, the engine goes on.
    #[error("{0}")]
    Panicked(String),
    /// Valid, but not possible with this model (e.g. reranking without a ranking head).
    #[error("{0}")]
    Unsupported(String),
    /// Text with an interior NUL byte where llama.cpp needs a C string.
    #[error("string contains a NUL byte: {0:?}")]
    Nul(String),
    /// Tokenization failed (e.g. the result would not fit an i32 count).
    #[error("tokenization failed: {0}")]
    Tokenize(String),
    /// A saved state that does not belong to this model/context or is damaged.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A state that llama.cpp itself refused (code 0 from llama_state_*_set_data).
    #[error("llama.cpp rejected the state data")]
    StateRejected,
    /// A GBNF grammar llama.cpp cannot use (syntax, undefined rule, left recursion).
    #[error("invalid grammar: {0}")]
    Grammar(String),
    /// A JSON Schema that cannot be turned into a grammar.
    #[error("JSON schema: {0}")]
    JsonSchema(String),
    /// The grammar allows none of the candidate tokens (or the sampler selected none).
    #[error("no token is allowed: the grammar (or sampler chain) rejected every candidate")]
    GrammarRejectedAll,
    /// The sampler's pick has a NaN logit: the forward pass overflowed (seen with
    /// random-weight test models on some GPU backends), so no token can be chosen.
    #[error("the model produced NaN logits (numerical overflow in the forward pass?)")]
    NanLogits,
    /// `accept` of a token the grammar does not allow here.
    #[error("token {0} is not allowed by the grammar at this point")]
    GrammarRejected(i32),
    /// A chat template that fails to parse or render.
    #[error("chat template: {0}")]
    Template(String),
    /// A metadata key that the model does not have.
    #[error("model has no metadata key {0:?}")]
    NoSuchKey(String),
    /// A device index or name that does not exist.
    #[error("no such device: {0}")]
    NoSuchDevice(String),
    /// An adapter (LoRA / control vector) problem.
    #[error("adapter: {0}")]
    Adapter(String),
    /// A size, or an amount of work, beyond a bound llama-rs enforces (memory, time,
    /// nesting depth; docs/SAFETY.md lists them), or an allocation that failed: the input
    /// is refused instead of aborting or hanging the process.
    #[error("{what}: {detail}")]
    Limit {
        /// The bounded input or resource.
        what: &'static str,
        /// The bound and the value that passed it.
        detail: String,
    },
    /// I/O around files llama-rs writes or reads itself (state files, ...).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// What kind of failure an [`Error`] is, for programs that react to it: the Python
/// module maps kinds onto exception classes and the server onto HTTP statuses — both
/// through [`ErrorKind::python_exception`] and [`ErrorKind::http_status`], the one
/// mapping (this table is checked against them by a unit test).
///
/// | kind | meaning | Python (`llama_rs.errors`) | HTTP |
/// |---|---|---|---|
/// | `InvalidArgument` | a value the caller passed cannot be used | `InvalidArgumentError` (a `ValueError`) | 400 |
/// | `OutOfRange` | an id, index or position outside what exists | `InvalidArgumentError` (a `ValueError`) | 400 |
/// | `ContextFull` | the input or the generation does not fit the context | `ContextFullError` (a `ValueError`) | 400 |
/// | `NotFound` | a file, metadata key, device or model that does not exist | `ModelLoadError` (a `ValueError`) | 404 |
/// | `Corrupt` | a model, state or GGUF file that is malformed | `ModelLoadError` (a `ValueError`) | 500 |
/// | `Unsupported` | valid, but not possible with this model or build | `UnsupportedError` (a `ValueError`) | 400 |
/// | `LimitExceeded` | over a bound on time, memory or nesting (docs/SAFETY.md) | `ResourceLimitError` (a `MemoryError`) | 400 |
/// | `Rejected` | a grammar or sampler left no token to choose | `RejectedError` (a `ValueError`) | 400 |
/// | `Cancelled` | stopped by a cancel / abort handle or a progress callback | `CancelledError` (a `KeyboardInterrupt`) | 503 |
/// | `Backend` | llama.cpp failed (allocation, compute, load) | `BackendError` (a `RuntimeError`) | 500 |
/// | `Io` | reading or writing a file failed | `ModelLoadError` (a `ValueError`) | 500 |
///
/// Every kind a request can cause is a 4xx: `Corrupt`, `Backend` and `Io` come from the
/// machine or its files, `Cancelled` from the server shutting down.
///
/// ```
/// use llama_rs::{Batch, ErrorKind};
/// let e = Batch::new(usize::MAX, 1).unwrap_err();
/// assert_eq!(e.kind(), ErrorKind::InvalidArgument);
/// assert_eq!(e.kind().http_status(), 400);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A value the caller passed cannot be used.
    InvalidArgument,
    /// An id, index or position outside what exists.
    OutOfRange,
    /// The input or the generation does not fit the context.
    ContextFull,
    /// A file, metadata key or device that does not exist.
    NotFound,
    /// A malformed model, state or GGUF file.
    Corrupt,
    /// Valid, but not possible with this model or build.
    Unsupported,
    /// Over a bound on time, memory or nesting.
    LimitExceeded,
    /// A grammar or sampler left no token to choose.
    Rejected,
    /// Stopped on request.
    Cancelled,
    /// llama.cpp itself failed.
    Backend,
    /// File I/O failed.
    Io,
}

impl ErrorKind {
    /// Every kind (for tables and tests).
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::InvalidArgument,
        ErrorKind::OutOfRange,
        ErrorKind::ContextFull,
        ErrorKind::NotFound,
        ErrorKind::Corrupt,
        ErrorKind::Unsupported,
        ErrorKind::LimitExceeded,
        ErrorKind::Rejected,
        ErrorKind::Cancelled,
        ErrorKind::Backend,
        ErrorKind::Io,
    ];

    /// The kind's name as written in the table above (`"InvalidArgument"`, ...).
    pub fn name(self) -> &'static str {
        self.row().0
    }

    /// The HTTP status the server answers with (see the table above).
    pub fn http_status(self) -> u16 {
        self.row().1
    }

    /// The class in the Python package's `llama_rs.errors` an error of this kind raises.
    pub fn python_exception(self) -> &'static str {
        self.row().2
    }

    /// The one mapping: (name, HTTP status, Python class).
    fn row(self) -> (&'static str, u16, &'static str) {
        use ErrorKind as K;
        match self {
            K::InvalidArgument => ("InvalidArgument", 400, "InvalidArgumentError"),
            K::OutOfRange => ("OutOfRange", 400, "InvalidArgumentError"),
            K::ContextFull => ("ContextFull", 400, "ContextFullError"),
            K::NotFound => ("NotFound", 404, "ModelLoadError"),
            K::Corrupt => ("Corrupt", 500, "ModelLoadError"),
            K::Unsupported => ("Unsupported", 400, "UnsupportedError"),
            K::LimitExceeded => ("LimitExceeded", 400, "ResourceLimitError"),
            K::Rejected => ("Rejected", 400, "RejectedError"),
            K::Cancelled => ("Cancelled", 503, "CancelledError"),
            K::Backend => ("Backend", 500, "BackendError"),
            K::Io => ("Io", 500, "ModelLoadError"),
        }
    }
}

impl Error {
    /// An `InvalidParam` blaming `name` (empty: no single parameter).
    pub fn invalid(name: &str, reason: String) -> Error {
        Error::InvalidParam { name: name.to_string(), reason }
    }

    /// The parameter at fault, where the error names one (the server's OpenAI `param`,
    /// Python's `param` attribute).
    ///
    /// ```
    /// let e = llama_rs::SamplerConfig { top_p: 2.0, ..Default::default() }.validate().unwrap_err();
    /// assert_eq!(e.param(), Some("top_p"));
    /// ```
    pub fn param(&self) -> Option<&str> {
        match self {
            Error::InvalidParam { name, .. } if !name.is_empty() => Some(name),
            _ => None,
        }
    }

    /// The kind of this error (see [`ErrorKind`] for the intended mappings).
    pub fn kind(&self) -> ErrorKind {
        use ErrorKind as K;
        match self {
            Error::ModelFile { source, .. } if source.kind() == std::io::ErrorKind::NotFound => K::NotFound,
            Error::ModelFile { .. } | Error::Io { .. } => K::Io,
            Error::NotGguf { .. } | Error::InvalidState(_) | Error::StateRejected | Error::ProjectorLoad { .. } => {
                K::Corrupt
            }
            Error::ModelLoad { .. } | Error::ContextCreate | Error::Backend { .. } | Error::BackendFailed { .. } => {
                K::Backend
            }
            Error::NanLogits | Error::Panicked(_) => K::Backend,
            Error::LoadCancelled | Error::Aborted | Error::EngineStopped => K::Cancelled,
            Error::InvalidParam { .. }
            | Error::BatchFull { .. }
            | Error::EmptyBatch
            | Error::BatchTooLarge { .. }
            | Error::BatchMismatch(_)
            | Error::Nul(_)
            | Error::Tokenize(_)
            | Error::Grammar(_)
            | Error::JsonSchema(_)
            | Error::Template(_)
            | Error::Adapter(_)
            | Error::Media(_) => K::InvalidArgument,
            Error::InvalidToken { .. }
            | Error::InvalidSeqId { .. }
            | Error::InvalidPosition { .. }
            | Error::NoOutput { .. }
            | Error::DeviceSampled { .. } => K::OutOfRange,
            Error::PromptTooLong { .. } | Error::ContextFull => K::ContextFull,
            Error::VocabOnly | Error::NoEmbeddings | Error::Unsupported(_) => K::Unsupported,
            Error::GrammarRejectedAll | Error::GrammarRejected(_) => K::Rejected,
            Error::NoSuchKey(_) | Error::NoSuchDevice(_) => K::NotFound,
            Error::Limit { .. } => K::LimitExceeded,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Err(InvalidParam(what()))` unless `ok`: the one helper for argument checks.
/// `InvalidParam` naming `name` unless `v` is a number (NaN and ±inf are refused: llama.cpp
/// reads them as "default" through its comparisons, or computes NaN with them).
pub(crate) fn check_finite(name: &str, v: f32) -> Result<()> {
    check_param(name, v.is_finite(), || format!("{name} must be finite, got {v}"))
}

/// `Err(InvalidParam { name, reason: what() })` unless `ok`.
pub(crate) fn check_param(name: &str, ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(name, what()))
    }
}

pub(crate) fn check_arg(ok: bool, what: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid("", what()))
    }
}

/// A `Vec` of `n` elements, allocated fallibly: a size from a caller becomes an error
/// instead of a capacity-overflow panic or an allocation abort.
pub(crate) fn try_vec<T>(n: usize, what: &'static str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(n).map_err(|_| Error::Limit {
        what,
        detail: format!("cannot allocate {n} elements of {} bytes", std::mem::size_of::<T>()),
    })?;
    Ok(v)
}

/// What the shim's exception barriers return when they caught an exception.
pub(crate) const CAUGHT: i32 = -100;

/// The message of the exception the shim last caught on this thread.
pub(crate) fn last_exception() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local string it owns, valid until
    // the next barrier call on this thread.
    let p = unsafe { llama_sys::llama_rs_last_error() };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: non-null and NUL-terminated (above); copied at once. (Not `ffi::owned_string`:
    // `ffi` builds on this module, and modules do not import each other in circles.)
    unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The one place a llama.cpp failure becomes an [`Error`]: a non-zero return code of
/// `op` (`Some(code)`) or a NULL handle (`None`). llama_decode / llama_encode give their
/// codes meaning: 1 is "no KV slot", 2 "aborted by the callback"; the shim's barriers
/// return [`CAUGHT`] for an exception.
#[cold]
pub(crate) fn backend_error(op: &'static str, code: Option<i32>) -> Error {
    match (op, code) {
        (_, Some(CAUGHT)) => Error::BackendFailed { op, message: last_exception() },
        ("llama_decode" | "llama_encode", Some(1)) => Error::ContextFull,
        ("llama_decode" | "llama_encode", Some(2)) => Error::Aborted,
        _ => Error::Backend { op, code },
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    /// The table in `ErrorKind`'s docs is the mapping `row` gives, row for row, and every
    /// kind is in it once.
    #[test]
    fn the_documented_kind_table_is_the_mapping() {
        let src = include_str!("error.rs");
        let rows: Vec<Vec<String>> = src
            .lines()
            .filter_map(|l| l.trim().strip_prefix("/// | `"))
            .map(|l| l.split('|').map(|c| c.trim().trim_matches('`').to_string()).collect())
            .collect();
        assert_eq!(rows.len(), ErrorKind::ALL.len(), "{rows:?}");
        for (k, row) in ErrorKind::ALL.iter().zip(&rows) {
            assert_eq!(row[0], k.name());
            assert!(row[2].starts_with(k.python_exception()), "{row:?}");
            assert_eq!(row[3], k.http_status().to_string(), "{row:?}");
        }
        let mut names: Vec<_> = ErrorKind::ALL.iter().map(|k| k.name()).collect();
        names.dedup();
        assert_eq!(names.len(), ErrorKind::ALL.len());
        // What a request can cause is never a 5xx.
        for k in [ErrorKind::InvalidArgument, ErrorKind::OutOfRange, ErrorKind::ContextFull, ErrorKind::Unsupported] {
            assert!((400..500).contains(&k.http_status()), "{k:?}");
        }
    }
}
