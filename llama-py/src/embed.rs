//! `Embedder`: pooled embeddings and reranking scores.

use super::*;

/// Embeddings with the model's pooling (a context of its own).
#[pyclass(module = "llama_rs._llama_rs")]
pub(crate) struct Embedder {
    inner: Mutex<llama_rs::Embedder>,
}

#[pymethods]
impl Embedder {
    #[new]
    #[pyo3(signature = (model, normalize=false, n_threads=None))]
    fn new(py: Python<'_>, model: &Model, normalize: bool, n_threads: Option<u32>) -> PyResult<Embedder> {
        let mut p = llama_rs::EmbedParams {
            normalize: if normalize { llama_rs::Normalize::L2 } else { llama_rs::Normalize::None },
            ..Default::default()
        };
        if let Some(t) = n_threads {
            p.n_threads = t;
        }
        let m = model.inner.clone();
        let e = py.allow_threads(move || llama_rs::Embedder::new(&m, p)).map_err(err)?;
        Ok(Embedder { inner: Mutex::new(e) })
    }

    /// One vector per input (token lists).
    fn embed(&self, py: Python<'_>, inputs: Vec<Vec<i32>>) -> PyResult<Vec<Vec<f32>>> {
        let toks: Vec<Vec<Token>> = inputs.into_iter().map(|v| v.into_iter().map(Token).collect()).collect();
        py.allow_threads(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).embed_tokens(&toks)).map_err(err)
    }

    /// Relevance scores of `documents` for `query` (a model with a ranking head; others
    /// raise `UnsupportedError`).
    fn rerank(&self, py: Python<'_>, query: &str, documents: Vec<String>) -> PyResult<Vec<f32>> {
        let docs: Vec<&str> = documents.iter().map(String::as_str).collect();
        py.allow_threads(|| self.inner.lock().unwrap_or_else(|p| p.into_inner()).rerank(query, &docs)).map_err(err)
    }
}
