//! Errors as HTTP answers: a status and OpenAI's error body
//! (`{"error": {"message", "type", "param", "code"}}`). Every failure a request can cause
//! is a 4xx; a 5xx means llama.cpp or the machine failed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

impl ApiError {
    /// 400 for a bad field.
    pub fn bad(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.into()),
            code: Some("invalid_value"),
        }
    }

    /// Any status, with a message.
    pub fn status(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), param: None, code: None }
    }

    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            404 => "not_found_error",
            408 | 504 => "timeout_error",
            413 => "invalid_request_error",
            503 => "unavailable_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({"error": {"message": self.message, "type": self.kind(), "param": self.param, "code": self.code}})
    }
}

impl From<llama_protocol::ProtocolError> for ApiError {
    fn from(e: llama_protocol::ProtocolError) -> ApiError {
        // The one mapping: ErrorKind → status (llama_rs::ErrorKind::http_status).
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { status, message: e.message, param: e.param, code: e.code }
    }
}

impl From<llama_rs::Error> for ApiError {
    fn from(e: llama_rs::Error) -> ApiError {
        llama_protocol::ProtocolError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            log::error!("{}: {}", self.status, self.message);
        }
        (self.status, axum::Json(self.body())).into_response()
    }
}

/// `Result` of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
