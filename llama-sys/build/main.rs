//! llama-sys build script: find the source, configure + build it with CMake, generate
//! bindings, emit link flags. `main` only dispatches; each concern has its own module.

mod amx_check;
mod bindings;
mod cmake_config;
mod env;
mod link;
mod patch;
mod shim;
mod source;
mod toolchain;

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            // One clear message instead of a panic backtrace or a wall of cmake output.
            eprintln!("\nllama-sys: error: {msg}\n");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rustc-env=LLAMA_CPP_COMMIT={}", llama_cpp_src::UPSTREAM_COMMIT);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/pregenerated.rs");
    println!("cargo:rerun-if-changed=src/pregenerated.headers");
    println!("cargo:rerun-if-changed=shim");

    let include_dirs_of =
        |src: &std::path::Path| [src.join("include"), src.join("ggml").join("include"), src.join("tools").join("mtmd")];

    // docs.rs (and anyone who only wants `cargo doc`/`cargo check`): no C build.
    if env::flag("DOCS_RS")?.unwrap_or(false) || env::flag("LLAMA_SYS_DOCS_ONLY")?.unwrap_or(false) {
        println!("cargo:rustc-env=LLAMA_SYS_AMX_CHECK=not run (documentation build: no C build)");
        println!("cargo:rustc-env=LLAMA_SYS_BACKEND_DL=0");
        println!("cargo:rustc-env=LLAMA_SYS_LIB_DIR=");
        println!("cargo:rustc-env=LLAMA_SYS_BUILD_CONFIG=default");
        // Without a source tree (nothing to check against) the committed bindings serve.
        return match source::locate() {
            Ok(src) => bindings::emit(&include_dirs_of(&src), &out_dir),
            Err(_) => bindings::copy_committed(&out_dir),
        };
    }

    let src = source::locate()?;
    let include_dirs = include_dirs_of(&src);
    // Before the long C build: a tree the committed bindings do not fit fails in seconds.
    bindings::emit(&include_dirs, &out_dir)?;
    // CMake builds a patched mirror of the tree (vendor/patches/), never the tree itself.
    let src = {
        let original = src;
        let patched = patch::prepare(&original, &out_dir)?;
        let amx = amx_check::run(&patched, &original, &out_dir)?;
        println!("cargo:rustc-env=LLAMA_SYS_AMX_CHECK={amx}");
        patched
    };
    let built = cmake_config::build(&src, &out_dir)?;
    // The shim links before libllama, whose symbols it uses.
    shim::build(&src, &out_dir)?;
    link::emit(&built)?;
    let install = built.install;

    // For dependants (`DEP_LLAMA_*`): the (patched) tree and headers, e.g. to build
    // llama.cpp's tools from what the library was built from.
    println!("cargo:src={}", src.display());
    println!("cargo:include={}", include_dirs[0].display());
    println!("cargo:root={}", install.display());
    Ok(())
}

/// Cargo features arrive as `CARGO_FEATURE_*` variables (never `cfg!` in a build script).
pub fn cfg_feature(name: &str) -> bool {
    let var = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
    std::env::var_os(var).is_some()
}
