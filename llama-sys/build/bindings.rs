//! Rust declarations for wrapper.h: generated with bindgen (needs libclang), or the
//! committed `src/pregenerated.rs` (regenerate with `scripts/regen-bindings.sh`).

use std::path::{Path, PathBuf};

pub fn generate(include_dirs: &[PathBuf], out_dir: &Path) -> Result<(), String> {
    let mut b = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("(llama|ggml|gguf|llama_rs)_.*")
        .allowlist_type("(llama|ggml|gguf)_.*")
        .allowlist_var("(LLAMA|GGML|GGUF)_.*")
        .prepend_enum_name(false)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(true)
        .use_core();
    for d in include_dirs {
        b = b.clang_arg(format!("-I{}", d.display()));
    }
    // bindgen panics when libclang is missing; turn that into an actionable message.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || b.generate()));
    std::panic::set_hook(prev);
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("bindgen could not parse wrapper.h: {e}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!(
                "bindgen failed: {msg}\n  fix: install libclang (`apt-get install libclang-dev`), \
                 set LIBCLANG_PATH to its directory, or build with the committed bindings: \
                 feature `pregenerated-bindings` or LLAMA_SYS_PREGENERATED_BINDINGS=1."
            ));
        }
    };
    bindings
        .write_to_file(out_dir.join("bindings.rs"))
        .map_err(|e| format!("writing bindings: {e}"))
}

pub fn use_pregenerated(out_dir: &Path) -> Result<(), String> {
    std::fs::copy("src/pregenerated.rs", out_dir.join("bindings.rs"))
        .map(|_| ())
        .map_err(|e| format!("copying src/pregenerated.rs: {e}"))
}
