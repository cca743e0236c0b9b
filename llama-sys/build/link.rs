//! Link flags: the static libraries CMake installed, in dependency order, plus the
//! system libraries they need on the target.

use std::path::Path;

use std::collections::BTreeSet;

use llama_build_config::Backend;

use crate::cmake_config::Built;
use crate::env;

pub fn emit(built: &Built) -> Result<(), String> {
    let (install, backends, shared): (&Path, &BTreeSet<Backend>, bool) =
        (&built.install, &built.backends, built.shared);
    let lib_dir = install.join("lib");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    // For llama-rs: where the libraries (and a DL build's backend modules) are.
    println!(
        "cargo:rustc-env=LLAMA_SYS_LIB_DIR={}",
        if shared { lib_dir.display().to_string() } else { String::new() }
    );
    println!("cargo:rustc-env=LLAMA_SYS_BACKEND_DL={}", u8::from(built.backend_dl));
    let names: Vec<String> = std::fs::read_dir(&lib_dir)
        .map_err(|e| format!("no libraries in {}: {e}", lib_dir.display()))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    if shared {
        // libllama.so pulls in the ggml libraries of whatever build sits next to it, so
        // a llama.cpp built with another backend can be swapped in at run time.
        // The backend modules of a DL build (libggml-cpu-haswell.so, ...) are loaded at
        // run time, never linked: only llama, ggml and ggml-base (and, in a build without
        // DL, the backend libraries).
        let mut libs: Vec<&str> = names
            .iter()
            .filter_map(|n| {
                n.strip_prefix("lib")?.strip_suffix(".so").or_else(|| n.strip_prefix("lib")?.strip_suffix(".dylib"))
            })
            .filter(|n| matches!(*n, "llama" | "mtmd") || n.starts_with("ggml"))
            .filter(|n| !built.backend_dl || matches!(*n, "llama" | "mtmd" | "ggml" | "ggml-base"))
            .collect();
        libs.sort();
        if !libs.contains(&"llama") {
            return Err(format!("CMake did not install a shared libllama into {}", lib_dir.display()));
        }
        for l in libs {
            println!("cargo:rustc-link-lib=dylib={l}");
        }
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
        println!("cargo:libdir={}", lib_dir.display());
    } else {
        let mut libs: Vec<String> = names
            .iter()
            .filter_map(|n| {
                let stem = n.strip_prefix("lib")?;
                stem.strip_suffix(".a").or_else(|| stem.strip_suffix(".lib")).map(str::to_owned)
            })
            .filter(|n| matches!(n.as_str(), "llama" | "mtmd" | "vendor-hash") || n.starts_with("ggml"))
            .collect();
        // GNU ld resolves left to right: users of a library come before it.
        libs.sort_by_key(|n| match n.as_str() {
            "mtmd" => 0,
            "vendor-hash" => 1,
            "llama" => 2,
            "ggml" => 3,
            "ggml-base" => 5,
            _ => 4,
        });
        if !libs.iter().any(|l| l == "llama") {
            return Err(format!("CMake did not install libllama into {}", lib_dir.display()));
        }
        for l in &libs {
            println!("cargo:rustc-link-lib=static={l}");
        }
    }

    let os = env::cargo("CARGO_CFG_TARGET_OS");
    let env_abi = env::cargo("CARGO_CFG_TARGET_ENV");
    match os.as_str() {
        "macos" | "ios" => {
            println!("cargo:rustc-link-lib=c++");
            println!("cargo:rustc-link-lib=framework=Accelerate");
            println!("cargo:rustc-link-lib=framework=Foundation");
            println!("cargo:rustc-link-lib=framework=Metal");
            println!("cargo:rustc-link-lib=framework=MetalKit");
        }
        "windows" if env_abi == "msvc" => {}
        _ => {
            println!("cargo:rustc-link-lib=stdc++");
            if built.openmp {
                println!("cargo:rustc-link-lib=gomp");
            }
        }
    }
    if backends.contains(&Backend::Vulkan) && !built.backend_dl {
        println!("cargo:rustc-link-lib=vulkan");
    }
    if backends.contains(&Backend::Cuda) && !built.backend_dl {
        let root = env::var("CUDA_PATH").unwrap_or_else(|| "/usr/local/cuda".into());
        for sub in ["lib64", "lib64/stubs", "lib", "targets/x86_64-linux/lib"] {
            println!("cargo:rustc-link-search=native={root}/{sub}");
        }
        for l in ["cudart", "cublas", "cublasLt", "cuda"] {
            println!("cargo:rustc-link-lib={l}");
        }
    }
    if backends.contains(&Backend::Hip) && !built.backend_dl {
        let root = env::var("ROCM_PATH").unwrap_or_else(|| "/opt/rocm".into());
        println!("cargo:rustc-link-search=native={root}/lib");
        for l in ["amdhip64", "hipblas", "rocblas"] {
            println!("cargo:rustc-link-lib={l}");
        }
    }
    Ok(())
}
