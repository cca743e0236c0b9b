//! Raw FFI bindings to llama.cpp (`llama.h`) and the ggml / gguf headers it exposes,
//! built from a pinned, vendored llama.cpp (see the `llama-cpp-src` crate).
//!
//! Nothing here is safe to call without reading llama.cpp's own contracts: many of its
//! preconditions are `GGML_ASSERT`s that abort the process. Use the `llama-rs` crate.
//!
//! ```
//! // The system-info string lists the CPU features the library was compiled with.
//! let info = unsafe { std::ffi::CStr::from_ptr(llama_sys::llama_print_system_info()) };
//! assert!(!info.to_bytes().is_empty());
//! ```
#![allow(non_upper_case_globals, non_camel_case_types, non_snake_case, dead_code)]
#![allow(clippy::all, rustdoc::all)]

include!(concat!(env!("OUT_DIR"), "/bindings.rs"));

/// Upstream llama.cpp commit of the pinned source (vendor/pin.toml, via `llama-cpp-src`).
pub const LLAMA_CPP_COMMIT: &str = env!("LLAMA_CPP_COMMIT");

/// What the build's AMX miscompile check found (`llama-sys/build/amx_check.rs`): ggml's
/// AMX tile-config init, compiled by this build's C++ compiler, run and compared with an
/// unoptimized build. The build fails when it differs, so this says "passed ...", or why
/// it was not run (cross build, documentation build, `LLAMA_SYS_AMX_CHECK=0`).
pub const AMX_CHECK: &str = env!("LLAMA_SYS_AMX_CHECK");

/// Whether ggml's backends — the CPU variants among them — are modules loaded at run
/// time (`GGML_BACKEND_DL`, the `cpu-all` build config). `llama-rs` then picks and loads
/// them before first use; nothing works until it has.
pub const BACKEND_DL: bool = matches!(env!("LLAMA_SYS_BACKEND_DL").as_bytes(), b"1");

/// Where a shared build's libraries (and a DL build's modules) were installed; empty for
/// a static build. A fallback only: `llama-rs` first looks next to the loaded libggml.
pub const LIB_DIR: &str = env!("LLAMA_SYS_LIB_DIR");

/// The `LLAMA_BUILD_CONFIG` this library was built with (`default` when none was set).
pub const BUILD_CONFIG: &str = env!("LLAMA_SYS_BUILD_CONFIG");

#[cfg(all(test, feature = "bindgen"))]
mod tests {
    /// With the `bindgen` feature the bindings were generated now: on the pinned source
    /// they must equal the committed ones, which builds without the feature use.
    /// `scripts/regen-bindings.sh --check` runs the same comparison without a C build.
    #[test]
    fn pregenerated_bindings_are_current() {
        let generated = include_str!(concat!(env!("OUT_DIR"), "/bindings.rs"));
        let committed = include_str!("pregenerated.rs");
        assert!(generated == committed, "src/pregenerated.rs is stale: run scripts/regen-bindings.sh");
    }
}
