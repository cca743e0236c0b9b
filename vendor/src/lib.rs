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

/// Patches that `llama-sys` applies to its own copy of the tree before building it, in
/// order: `(file name, unified diff)`. Each one is upstream-ready (`git apply`, with its
/// reason in the header); `vendor/patches/README.md` says why each is carried.
pub const PATCHES: &[(&str, &str)] = &[
    (
        "0001-ggml-cpu-amx-load-the-whole-tile-config.patch",
        include_str!("../patches/0001-ggml-cpu-amx-load-the-whole-tile-config.patch"),
    ),
    (
        "0002-ggml-rpc-failing-server-is-an-error.patch",
        include_str!("../patches/0002-ggml-rpc-failing-server-is-an-error.patch"),
    ),
];

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
    fn every_patch_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("patches");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".patch"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = super::PATCHES.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(on_disk, listed, "vendor/patches/*.patch and PATCHES differ");
    }

    #[test]
    fn pin_names_the_commit() {
        assert!(super::PIN_TOML.contains(&format!("commit = \"{}\"", super::UPSTREAM_COMMIT)));
        // The crate version's build metadata names the same commit (Cargo cannot read it
        // from pin.toml, so this test keeps the two in step).
        assert!(env!("CARGO_PKG_VERSION").ends_with(&format!("+llama.cpp-{}", super::UPSTREAM_COMMIT)));
    }
}
