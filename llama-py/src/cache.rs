//! `DiskCache`: the prompt cache on disk (`llama_rs::DiskCache`) behind
//! `LlamaDiskCache` and `AsyncLlama(cache=...)`.

use super::*;

/// A directory of saved prompt states, bounded by bytes, shared by processes.
#[pyclass(module = "llama_rs._llama_rs", frozen)]
pub(crate) struct DiskCache {
    pub(crate) inner: Arc<llama_rs::DiskCache>,
}

#[pymethods]
impl DiskCache {
    #[new]
    fn new(py: Python<'_>, cache_dir: std::path::PathBuf, capacity_bytes: u64) -> PyResult<DiskCache> {
        let c = py.allow_threads(move || llama_rs::DiskCache::open(cache_dir, capacity_bytes)).map_err(err)?;
        Ok(DiskCache { inner: Arc::new(c) })
    }

    /// The directory.
    #[getter]
    fn cache_dir(&self) -> std::path::PathBuf {
        self.inner.dir().to_path_buf()
    }

    /// The bound in bytes.
    #[getter]
    fn capacity_bytes(&self) -> u64 {
        self.inner.max_bytes()
    }

    /// `(bytes, entries)` on disk now.
    fn usage(&self) -> (u64, usize) {
        self.inner.usage()
    }

    /// Removes every entry.
    fn clear(&self) -> PyResult<()> {
        self.inner.clear().map_err(err)
    }

    /// This handle's counters (hits, bytes read and written, evictions, rejected, ...).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("hits", s.hits),
            ("hit_tokens", s.hit_tokens),
            ("stores", s.stores),
            ("bytes_written", s.bytes_written),
            ("bytes_read", s.bytes_read),
            ("evictions", s.evictions),
            ("rejected", s.rejected),
            ("write_errors", s.write_errors),
        ] {
            d.set_item(k, v)?;
        }
        d.set_item("restore_ms", s.restore_ms)?;
        Ok(d)
    }
}
