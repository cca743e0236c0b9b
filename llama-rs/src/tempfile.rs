//! Scratch files for writes that must appear whole: written beside the destination
//! under a name no other file has, then renamed over it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Creates (exclusively) an empty scratch file in `dest`'s directory, named
/// `.<dest name>.<pid>-<n>.partial`. The exclusive create means it can never be an
/// existing file — in particular not an input that llama.cpp has mapped (writing to
/// `dest.with_extension("partial")` once truncated `model.partial` while it was being
/// quantized).
pub(crate) fn create_beside(dest: &Path) -> Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match dest.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = dest.file_name().ok_or_else(|| Error::invalid("", format!("{} names no file", dest.display())))?;
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}-{n}.partial", std::process::id()));
        let tmp = dir.join(tmp_name);
        match File::options().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::Io { path: dest.into(), source: e }),
        }
    }
    Err(Error::Io { path: dest.into(), source: std::io::Error::other("no free scratch file name") })
}

/// Renames the finished scratch file over `dest`; removes it on failure.
pub(crate) fn persist(tmp: &Path, dest: &Path) -> Result<()> {
    std::fs::rename(tmp, dest).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        Error::Io { path: dest.into(), source: e }
    })
}
