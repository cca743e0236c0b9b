//! Configure and build llama.cpp with CMake. The options come from the pure, unit-tested
//! `llama-build-config` crate; this module gathers its inputs (features, target, env,
//! an optional `LLAMA_BUILD_CONFIG`), checks toolchains, and runs cmake.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use llama_build_config::{Backend, BuildConfig, Inputs, SourceCaps};

use crate::{cfg_feature, env, toolchain};

fn inputs() -> Result<Inputs, String> {
    let cross = env::cargo("TARGET") != env::cargo("HOST");
    let mut features = BTreeSet::new();
    for (f, b) in [("vulkan", Backend::Vulkan), ("cuda", Backend::Cuda), ("hip", Backend::Hip), ("rpc", Backend::Rpc)] {
        if cfg_feature(f) {
            features.insert(b);
        }
    }
    Ok(Inputs {
        // GGML_NATIVE tunes for the build machine: right for a host build, wrong for a
        // cross build or a binary shipped elsewhere (LLAMA_SYS_NATIVE=0).
        native: !cross,
        native_override: env::flag("LLAMA_SYS_NATIVE")?,
        openmp: cfg_feature("openmp"),
        features,
        cuda_archs: env::var("LLAMA_SYS_CUDA_ARCHITECTURES"),
        gpu_targets: env::var("LLAMA_SYS_GPU_TARGETS"),
        rocwmma: env::flag("LLAMA_SYS_ROCWMMA")?.unwrap_or(false),
        shared: env::flag("LLAMA_SYS_SHARED")?.unwrap_or(false),
    })
}

fn source_caps(src: &Path) -> SourceCaps {
    let defines = |f: &str| std::fs::read_to_string(src.join(f)).is_ok_and(|t| t.contains("GGML_HIP_ROCWMMA_FATTN"));
    SourceCaps { has_rocwmma_option: defines("ggml/CMakeLists.txt") || defines("ggml/src/ggml-hip/CMakeLists.txt") }
}

/// What was built, for linking.
pub struct Built {
    /// The install prefix (`lib/` holds the libraries, and the backend modules of a
    /// `GGML_BACKEND_DL` build).
    pub install: PathBuf,
    /// The enabled backends.
    pub backends: BTreeSet<Backend>,
    /// Shared libraries (`BUILD_SHARED_LIBS`).
    pub shared: bool,
    /// Linked against OpenMP (`GGML_OPENMP`).
    pub openmp: bool,
    /// Backends (the CPU variants among them) are modules loaded at run time.
    pub backend_dl: bool,
}

/// Builds and installs llama.cpp.
pub fn build(src: &Path, out_dir: &Path) -> Result<Built, String> {
    let config: Option<BuildConfig> = match env::var("LLAMA_BUILD_CONFIG") {
        Some(name) => Some(llama_build_config::named(&name)?),
        None => None,
    };
    let args = llama_build_config::cmake_options(&inputs()?, config.as_ref(), &source_caps(src))?;
    for w in &args.warnings {
        println!("cargo:warning={w}");
    }

    let cmake_bin = env::var("CMAKE").unwrap_or_else(|| "cmake".into());
    if Command::new(&cmake_bin).arg("--version").output().is_err() {
        return Err(format!(
            "`{cmake_bin}` not found: llama-sys builds llama.cpp with CMake (>= 3.14).\n  fix: \
             `apt-get install cmake ninja-build` (Debian/Ubuntu), `brew install cmake`, or \
             `pip install cmake`; or set CMAKE=/path/to/cmake."
        ));
    }

    let mut cfg = cmake::Config::new(src);
    // llama.cpp in Debug is 10-50x slower; our own debug builds still want a fast library.
    cfg.profile("Release").out_dir(out_dir.join("cmake"));
    // Toolchain checks fail early with the fix, and may set up compiler variables.
    for b in &args.backends {
        toolchain::check(*b, &mut cfg)?;
    }
    if which("ninja").is_some() && env::var("CMAKE_GENERATOR").is_none() {
        cfg.generator("Ninja");
    }
    if env::flag("LLAMA_SYS_CCACHE")?.unwrap_or(true) {
        if let Some(launcher) = which("sccache").or_else(|| which("ccache")) {
            for lang in ["C", "CXX", "CUDA", "HIP"] {
                cfg.define(format!("CMAKE_{lang}_COMPILER_LAUNCHER"), &launcher);
            }
            // The tree and the build dir are both inside OUT_DIR: with paths relative to
            // it, another OUT_DIR (another target dir, profile or feature set: the wheel's
            // build next to the tests') hits the same cache entries.
            cfg.env("CCACHE_BASEDIR", out_dir);
            cfg.env("CCACHE_NOHASHDIR", "1");
        }
    }
    for (k, v) in &args.options {
        cfg.define(k, v);
    }
    let is_on = |k: &str| args.options.iter().any(|(key, v)| key == k && v == "ON");
    let backend_dl = is_on("GGML_BACKEND_DL");
    if backend_dl {
        // Empty (and a STRING, which CMake leaves as given): modules install into bin/
        // (copied beside libggml below), and no build path is compiled into the code.
        // Also clears a value an older llama-sys left in the cache.
        cfg.define("GGML_BACKEND_DIR:STRING", "");
    }
    let (shared, openmp) = (is_on("BUILD_SHARED_LIBS"), is_on("GGML_OPENMP"));
    println!("cargo:rustc-env=LLAMA_SYS_BUILD_CONFIG={}", config.as_ref().map_or("default", |c| c.name.as_str()));
    // The cmake crate panics with the full log on failure; add a one-line summary.
    let dst = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.build())).map_err(|_| {
        format!(
            "building llama.cpp from {} with CMake failed (its output is above).\n  checked \
             beforehand: source present, cmake runs, toolchains of {:?}. Common causes: no C++17 \
             compiler (`apt-get install g++`), a backend SDK component missing.",
            src.display(),
            args.backends
        )
    })?;
    if backend_dl {
        install_modules_beside_libggml(&dst)?;
    }
    if !shared {
        install_vendor_hash(&dst)?;
    }
    Ok(Built { install: dst, backends: args.backends, shared, openmp, backend_dl })
}

/// ggml installs backend modules into `bin/` unless `GGML_BACKEND_DIR` is set — and that
/// option, a PATH cache entry, is made absolute by CMake and compiled into every file
/// (another OUT_DIR: no ccache hits). So the modules are copied next to `libggml.so`,
/// where llama-rs looks for them (and where they sit in the wheel).
fn install_modules_beside_libggml(install: &Path) -> Result<(), String> {
    let (bin, lib) = (install.join("bin"), install.join("lib"));
    let entries = std::fs::read_dir(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("libggml-") && name.ends_with(".so") {
            let to = lib.join(&name);
            if std::fs::read(e.path()).ok() != std::fs::read(&to).ok() {
                std::fs::copy(e.path(), &to).map_err(|err| format!("{}: {err}", to.display()))?;
            }
            n += 1;
        }
    }
    if n == 0 {
        return Err(format!("GGML_BACKEND_DL build installed no backend modules into {}", bin.display()));
    }
    Ok(())
}

/// A static libmtmd needs llama.cpp's `vendor-hash` library (image ids), which CMake
/// builds but does not install; it is copied beside the others. A shared libmtmd has it
/// linked in.
fn install_vendor_hash(install: &Path) -> Result<(), String> {
    let name = if cfg!(windows) { "vendor-hash.lib" } else { "libvendor-hash.a" };
    let built = install.join("build").join("vendor").join("hash");
    let from = [built.join(name), built.join("Release").join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("CMake built no {name} in {} (libmtmd needs it)", built.display()))?;
    let to = install.join("lib").join(name);
    std::fs::copy(&from, &to).map(|_| ()).map_err(|e| format!("{}: {e}", to.display()))
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}
