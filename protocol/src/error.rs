//! The protocol's error: a kind (which fixes the HTTP status and the Python class, see
//! [`llama_rs::ErrorKind`]), the request field at fault, and a machine-readable code.

use llama_rs::ErrorKind;

/// A request that cannot be served as asked, or a generation that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProtocolError {
    /// What kind of failure (the HTTP status and Python class follow from it).
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault (`"temperature"`, `"messages[2].content"`), when known.
    pub param: Option<String>,
    /// OpenAI's machine-readable code (`invalid_value`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

impl ProtocolError {
    /// A field that cannot be used (400 / `InvalidArgumentError`).
    pub fn invalid(param: &str, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            kind: ErrorKind::InvalidArgument,
            message: message.into(),
            param: Some(param.into()),
            code: Some("invalid_value"),
        }
    }

    /// A field asking for more than the context holds.
    pub fn context(param: &str, message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            kind: ErrorKind::ContextFull,
            code: Some("context_length_exceeded"),
            ..ProtocolError::invalid(param, message)
        }
    }

    /// A model the request names that is not served (404).
    pub fn model_not_found(message: impl Into<String>) -> ProtocolError {
        ProtocolError {
            kind: ErrorKind::NotFound,
            message: message.into(),
            param: Some("model".into()),
            code: Some("model_not_found"),
        }
    }

    /// The same error, blamed on `param` when it names none yet.
    pub fn at(mut self, param: &str) -> ProtocolError {
        self.param.get_or_insert_with(|| param.to_string());
        self
    }

    /// The same error, blamed on `param`.
    pub fn with_param(mut self, param: &str) -> ProtocolError {
        self.param = Some(param.to_string());
        self
    }

    /// The HTTP status of the error's kind.
    pub fn http_status(&self) -> u16 {
        self.kind.http_status()
    }
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ProtocolError {}

impl From<llama_rs::Error> for ProtocolError {
    fn from(e: llama_rs::Error) -> ProtocolError {
        use llama_rs::Error as E;
        let kind = e.kind();
        let code = match kind {
            ErrorKind::ContextFull => Some("context_length_exceeded"),
            ErrorKind::InvalidArgument | ErrorKind::OutOfRange | ErrorKind::Rejected => Some("invalid_value"),
            ErrorKind::Unsupported => Some("unsupported"),
            ErrorKind::LimitExceeded => Some("limit_exceeded"),
            ErrorKind::Cancelled => Some("cancelled"),
            _ => None,
        };
        let param = match &e {
            E::JsonSchema(_) => Some("response_format"),
            E::Grammar(_) => Some("grammar"),
            E::Template(_) | E::PromptTooLong { .. } => Some("messages"),
            e => e.param(),
        };
        ProtocolError { kind, message: e.to_string(), param: param.map(str::to_string), code }
    }
}

/// `Result` with [`ProtocolError`].
pub type Result<T, E = ProtocolError> = std::result::Result<T, E>;
