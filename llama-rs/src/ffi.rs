//! The shared helpers at the C boundary: C strings and paths, strings llama.cpp writes
//! into caller buffers, and the owner of a `llama_sampler*`. Every module that calls
//! llama.cpp uses these; they depend on nothing but the error type.

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;

use llama_sys as sys;

use crate::error::{backend_error, Error, Result};

/// `s` as a C string; an interior NUL is an [`Error::Nul`] naming `what` (the string
/// itself, or a label where it may be long).
pub(crate) fn c_string(s: &str, what: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::Nul(what.into()))
}

/// A NUL-terminated string llama.cpp or ggml owns, copied (lossily) into a `String`;
/// NULL is the empty string.
///
/// # Safety
/// (contract) `p` is NULL or points to a NUL-terminated string valid for this call.
pub(crate) unsafe fn owned_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: (contract) non-null and NUL-terminated per this function's contract.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// The path as a C string, from its own bytes.
pub(crate) fn path_cstring(p: &Path) -> Result<CString> {
    // The path's own bytes: a lossy conversion would hand llama.cpp another file's name
    // (`m\xff.gguf` would become `m\u{FFFD}.gguf`).
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = p
        .to_str()
        .ok_or_else(|| Error::invalid("", format!("path {} is not valid Unicode", p.display())))?
        .as_bytes()
        .to_vec();
    CString::new(bytes).map_err(|_| Error::Nul(p.display().to_string()))
}

/// Calls a llama.cpp "write into buf, return needed length" function, growing once.
pub(crate) fn read_string(mut f: impl FnMut(*mut c_char, usize) -> i32) -> Option<String> {
    let mut buf = vec![0u8; 256];
    let n = f(buf.as_mut_ptr() as *mut c_char, buf.len());
    if n < 0 {
        return None;
    }
    let n = n as usize;
    if n >= buf.len() {
        buf = vec![0u8; n + 1];
        let m = f(buf.as_mut_ptr() as *mut c_char, buf.len());
        if m < 0 {
            return None;
        }
    }
    buf.truncate(n);
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// Owner of one `llama_sampler*` (a chain or a grammar).
pub(crate) struct RawSampler(pub(crate) NonNull<sys::llama_sampler>);

impl Drop for RawSampler {
    fn drop(&mut self) {
        // SAFETY: created by llama_sampler_*_init / chain_init, freed once here.
        unsafe { sys::llama_sampler_free(self.0.as_ptr()) }
    }
}

impl RawSampler {
    /// A new, empty llama.cpp sampler chain.
    pub(crate) fn chain() -> Result<RawSampler> {
        // SAFETY: plain struct by value; chain_init returns a new owned sampler.
        let p = unsafe { sys::llama_sampler_chain_init(sys::llama_sampler_chain_default_params()) };
        NonNull::new(p).map(RawSampler).ok_or_else(|| backend_error("llama_sampler_chain_init", None))
    }
}
