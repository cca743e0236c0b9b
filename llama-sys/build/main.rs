//! llama-sys build script: find the source, configure + build it with CMake, generate
//! bindings, emit link flags. `main` only dispatches; each concern has its own module.

mod bindings;
mod cmake_config;
mod env;
mod link;
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
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|e| e.to_string())?);
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=src/pregenerated.rs");
    println!("cargo:rerun-if-changed=shim");

    // docs.rs (and anyone who only wants `cargo doc`): no C build, no libclang.
    if env::is_set("DOCS_RS") || env::is_set("LLAMA_SYS_DOCS_ONLY") {
        return bindings::use_pregenerated(&out_dir);
    }

    let src = source::locate()?;
    let (install, backends) = cmake_config::build(&src, &out_dir)?;
    let include_dirs = [src.join("include"), src.join("ggml").join("include")];
    if cfg_feature("pregenerated-bindings") || env::is_set("LLAMA_SYS_PREGENERATED_BINDINGS") {
        bindings::use_pregenerated(&out_dir)?;
    } else {
        bindings::generate(&include_dirs, &out_dir)?;
    }
    // The shim links before libllama, whose symbols it uses.
    shim::build(&src, &out_dir)?;
    link::emit(&install, &backends)?;

    // For dependants (`DEP_LLAMA_*`): the tree and headers, e.g. to build llama.cpp tools.
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
