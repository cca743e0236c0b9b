//! Where the pinned llama.cpp source lives.
//!
//! `llama-sys` uses this crate as a build-dependency. In a git checkout the tree is created
//! by `python3 vendor/fetch.py source`; the published crate ships it (see `include` in
//! Cargo.toml).
//!
//! ```
//! let dir = llama_cpp_src::source_dir();
//! assert!(dir.ends_with("llama.cpp"));
//! println!("llama.cpp@{} at {}", llama_cpp_src::UPSTREAM_COMMIT, dir.display());
//! ```

#![warn(missing_docs)] // published: every public item is documented (CI denies warnings)

use std::path::PathBuf;

/// The pin file: package, version, sha256 and upstream commit of the source.
pub const PIN_TOML: &str = include_str!("../pin.toml");

/// Upstream llama.cpp commit of the pinned source (from pin.toml, by the build script).
pub const UPSTREAM_COMMIT: &str = env!("LLAMA_CPP_COMMIT");

/// Directory that holds (or will hold, once fetched) the pinned llama.cpp tree.
pub fn source_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("llama.cpp")
}

/// Whether the tree at [`source_dir`] is present and matches the pinned checksum.
pub fn is_fetched() -> bool {
    let stamp = source_dir().join(".llama-rs-pin");
    match std::fs::read_to_string(stamp) {
        Ok(s) => PIN_TOML.contains(&format!("sha256 = \"{}\"", s.trim())),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn pin_names_the_commit() {
        assert!(super::PIN_TOML.contains(&format!("commit = \"{}\"", super::UPSTREAM_COMMIT)));
        // The crate version's build metadata names the same commit (Cargo cannot read it
        // from pin.toml, so this test keeps the two in step).
        assert!(env!("CARGO_PKG_VERSION").ends_with(&format!("+llama.cpp-{}", super::UPSTREAM_COMMIT)));
    }
}
