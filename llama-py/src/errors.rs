//! Errors as Python exceptions: the class of the error's kind (one mapping,
//! `llama_rs::ErrorKind::python_exception`), with `kind` and `param` attributes.
//!
//! The classes live in `llama_rs/errors.py`, not in this module: each derives from
//! `LlamaError` *and* the built-in a llama-cpp-python script already catches
//! (`ValueError`, `MemoryError`, ...), a multiple inheritance pyo3's `create_exception!`
//! cannot declare. They are looked up once per process (`GILOnceCell`), not per error.

use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyType;

use llama_rs::ErrorKind;

static MODULE: GILOnceCell<Option<Py<PyModule>>> = GILOnceCell::new();

/// The exception of `kind`, carrying the message, `kind` (its name) and `param`.
pub(crate) fn raise(kind: ErrorKind, msg: String, param: Option<String>) -> PyErr {
    Python::with_gil(|py| {
        let module = MODULE.get_or_init(py, || py.import("llama_rs.errors").ok().map(|m| m.unbind()));
        let class = module
            .as_ref()
            .and_then(|m| m.bind(py).getattr(kind.python_exception()).ok())
            .and_then(|c| c.downcast_into::<PyType>().ok());
        let e = match class {
            Some(t) => PyErr::from_type(t, msg),
            // The native module used on its own (without the Python package).
            None => match kind {
                ErrorKind::LimitExceeded => PyMemoryError::new_err(msg),
                ErrorKind::Cancelled => PyKeyboardInterrupt::new_err(msg),
                ErrorKind::Backend => PyRuntimeError::new_err(msg),
                _ => PyValueError::new_err(msg),
            },
        };
        let v = e.value(py);
        let _ = v.setattr("kind", kind.name());
        let _ = v.setattr("param", param);
        e
    })
}

/// A llama-rs error as its exception.
pub(crate) fn err(e: llama_rs::Error) -> PyErr {
    raise(e.kind(), e.to_string(), e.param().map(str::to_string))
}

/// A protocol error (a request field at fault) as its exception.
pub(crate) fn protocol_err(e: llama_protocol::ProtocolError) -> PyErr {
    raise(e.kind, e.message, e.param)
}
