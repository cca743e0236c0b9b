//! Where the default model lives (shared with `vendor/fetch.py`).

use std::path::PathBuf;

use llama_rs::{Error, Result};

/// File name of the default model (Gemma 3 270M Q4_K_M).
pub const DEFAULT_MODEL_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

/// The download cache: `$LLAMA_RS_CACHE`, else `$XDG_CACHE_HOME/llama-rs`, else
/// `~/.cache/llama-rs` (the same rule as `vendor/fetch.py`).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LLAMA_RS_CACHE").filter(|v| !v.is_empty()) {
        return d.into();
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    base.join("llama-rs")
}

/// The model everything uses by default: `$LLAMA_RS_MODEL` if set, else the fetched
/// default model. Errors (with the fix) if the file is not there.
///
/// ```
/// let path = llama_testkit::default_model_path()?;
/// let model = llama_rs::Model::load(&path, Default::default())?;
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn default_model_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_RS_MODEL").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::ModelFile {
                path: p,
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "LLAMA_RS_MODEL points at no file"),
            });
        }
        return Ok(p);
    }
    let p = cache_dir().join("models").join(DEFAULT_MODEL_FILE);
    if !p.is_file() {
        return Err(Error::ModelFile {
            path: p,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "default model not fetched; run `python3 vendor/fetch.py model` (or set LLAMA_RS_MODEL=/path/to/model.gguf)",
            ),
        });
    }
    Ok(p)
}
