//! Where the llama.cpp tree comes from: `LLAMA_CPP_SRC`, else the pinned tree of the
//! `llama-cpp-src` crate (fetched in a checkout, shipped in the published crate).

use std::path::{Path, PathBuf};

use crate::env;

pub fn locate() -> Result<PathBuf, String> {
    let (dir, origin) = match env::var("LLAMA_CPP_SRC") {
        Some(p) => (PathBuf::from(p), "LLAMA_CPP_SRC"),
        None => (llama_cpp_src::source_dir(), "the pinned source"),
    };
    if !dir.join("include").join("llama.h").is_file() {
        return Err(if origin == "LLAMA_CPP_SRC" {
            format!("LLAMA_CPP_SRC={} is not a llama.cpp tree (no include/llama.h).", dir.display())
        } else {
            format!(
                "llama.cpp source not found at {}.\n  fix: run `python3 vendor/fetch.py source` in the \
                 llama-rs checkout (downloads the pinned tree with pip and checks its sha256),\n       \
                 or set LLAMA_CPP_SRC=/path/to/llama.cpp to build another tree.",
                dir.display()
            )
        });
    }
    if origin != "LLAMA_CPP_SRC" && !llama_cpp_src::is_fetched() {
        return Err(format!(
            "{} does not match vendor/pin.toml (stale or modified tree).\n  fix: run \
             `python3 vendor/fetch.py source --force`.",
            dir.display()
        ));
    }
    watch(&dir);
    Ok(dir)
}

/// Rebuild only when the parts of the tree that make the libraries change.
fn watch(src: &Path) {
    for sub in ["CMakeLists.txt", "cmake", "include", "src", "ggml", ".llama-rs-pin"] {
        println!("cargo:rerun-if-changed={}", src.join(sub).display());
    }
}
