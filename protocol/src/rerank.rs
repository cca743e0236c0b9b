//! Reranking (`POST /v1/rerank`, llama-server's and Jina/Cohere's shape): documents
//! scored against a query by a model with a ranking head, best first.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ProtocolError, Result};

/// The most documents one request may score.
pub const MAX_DOCUMENTS: usize = 4096;

/// `/v1/rerank` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RerankRequest {
    /// The model asked for.
    pub model: Option<String>,
    /// What the documents are ranked against.
    pub query: String,
    /// Strings, or `{"text": ...}` objects (Cohere's form).
    pub documents: Vec<Value>,
    /// Keep only the best `top_n` (all when absent).
    pub top_n: Option<usize>,
    /// Put each document's text into its result.
    pub return_documents: bool,
}

impl RerankRequest {
    /// The documents' texts.
    pub fn texts(&self) -> Result<Vec<String>> {
        if self.documents.is_empty() {
            return Err(ProtocolError::invalid("documents", "documents must not be empty"));
        }
        if self.documents.len() > MAX_DOCUMENTS {
            return Err(ProtocolError::invalid("documents", format!("at most {MAX_DOCUMENTS} documents")));
        }
        self.documents
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Value::String(s) => Ok(s.clone()),
                Value::Object(o) => match o.get("text") {
                    Some(Value::String(s)) => Ok(s.clone()),
                    _ => Err(ProtocolError::invalid(&format!("documents[{i}]"), "a document object needs a text")),
                },
                _ => Err(ProtocolError::invalid(&format!("documents[{i}]"), "a document is a string or {\"text\"}")),
            })
            .collect()
    }
}

/// One ranked document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResult {
    /// Its position in the request.
    pub index: usize,
    /// The model's score (higher is more relevant).
    pub relevance_score: f32,
    /// `{"text"}` when `return_documents`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document: Option<Value>,
}

/// `/v1/rerank` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RerankResponse {
    /// The served model's name.
    pub model: String,
    /// `"list"`.
    pub object: String,
    /// Tokens of all the pairs.
    pub usage: crate::openai::EmbeddingUsage,
    /// Best first.
    pub results: Vec<RerankResult>,
}

/// The answer for `scores` (one per document, in request order): best first, `top_n`
/// kept.
pub fn response(
    req: &RerankRequest,
    texts: &[String],
    scores: &[f32],
    model: String,
    n_tokens: usize,
) -> RerankResponse {
    let mut results: Vec<RerankResult> = scores
        .iter()
        .enumerate()
        .map(|(index, &relevance_score)| RerankResult {
            index,
            relevance_score,
            document: req.return_documents.then(|| serde_json::json!({"text": texts[index]})),
        })
        .collect();
    results.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score).then(a.index.cmp(&b.index)));
    results.truncate(req.top_n.unwrap_or(usize::MAX));
    RerankResponse {
        model,
        object: "list".into(),
        usage: crate::openai::EmbeddingUsage { prompt_tokens: n_tokens, total_tokens: n_tokens },
        results,
    }
}
