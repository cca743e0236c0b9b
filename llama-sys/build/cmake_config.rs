//! Configure and build llama.cpp with CMake. `options` is a pure function of the inputs
//! (features, target, env switches) so the arguments can be reasoned about and tested.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{cfg_feature, env};

/// What the cmake arguments depend on, gathered once.
#[derive(Debug, Default)]
pub struct Inputs {
    pub native: bool,
    pub openmp: bool,
    pub vulkan: bool,
    pub cuda: bool,
    pub hip: bool,
    pub rpc: bool,
    pub cuda_archs: Option<String>,
    pub gpu_targets: Option<String>,
}

impl Inputs {
    fn from_env() -> Result<Self, String> {
        let cross = env::cargo("TARGET") != env::cargo("HOST");
        // GGML_NATIVE tunes for the build machine: right for a host build, wrong for a
        // cross build or a binary shipped elsewhere (LLAMA_SYS_NATIVE=0).
        let native = env::flag("LLAMA_SYS_NATIVE")?.unwrap_or(!cross);
        Ok(Inputs {
            native,
            openmp: cfg_feature("openmp"),
            vulkan: cfg_feature("vulkan"),
            cuda: cfg_feature("cuda"),
            hip: cfg_feature("hip"),
            rpc: cfg_feature("rpc"),
            cuda_archs: env::var("LLAMA_SYS_CUDA_ARCHITECTURES"),
            gpu_targets: env::var("LLAMA_SYS_GPU_TARGETS"),
        })
    }
}

fn on(b: bool) -> String {
    (if b { "ON" } else { "OFF" }).to_string()
}

/// The `-D` options passed to llama.cpp's CMakeLists.txt.
pub fn options(i: &Inputs) -> Vec<(&'static str, String)> {
    let mut o = vec![
        ("BUILD_SHARED_LIBS", on(false)),
        ("CMAKE_POSITION_INDEPENDENT_CODE", on(true)), // linked into cdylibs (llama-py)
        ("CMAKE_INSTALL_LIBDIR", "lib".into()),
        ("LLAMA_BUILD_COMMON", on(false)),
        ("LLAMA_BUILD_TESTS", on(false)),
        ("LLAMA_BUILD_TOOLS", on(false)),
        ("LLAMA_BUILD_EXAMPLES", on(false)),
        ("LLAMA_BUILD_SERVER", on(false)),
        ("LLAMA_BUILD_APP", on(false)),
        ("LLAMA_OPENSSL", on(false)),
        ("LLAMA_ALL_WARNINGS", on(false)),
        ("GGML_NATIVE", on(i.native)),
        ("GGML_OPENMP", on(i.openmp)),
        ("GGML_VULKAN", on(i.vulkan)),
        ("GGML_CUDA", on(i.cuda)),
        ("GGML_HIP", on(i.hip)),
        ("GGML_RPC", on(i.rpc)),
    ];
    if i.cuda {
        o.push(("CMAKE_CUDA_ARCHITECTURES", i.cuda_archs.clone().unwrap_or_else(|| "native".into())));
    }
    if let Some(t) = &i.gpu_targets {
        o.push(("GPU_TARGETS", t.clone()));
    }
    o
}

pub fn build(src: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let inputs = Inputs::from_env()?;
    let cmake_bin = env::var("CMAKE").unwrap_or_else(|| "cmake".into());
    if Command::new(&cmake_bin).arg("--version").output().is_err() {
        return Err(format!(
            "`{cmake_bin}` not found: llama-sys builds llama.cpp with CMake (>= 3.14).\n  fix: \
             `apt-get install cmake ninja-build` (Debian/Ubuntu), `brew install cmake`, or \
             `pip install cmake`; or set CMAKE=/path/to/cmake."
        ));
    }
    if inputs.hip && inputs.gpu_targets.is_none() {
        return Err("feature `hip` needs LLAMA_SYS_GPU_TARGETS (e.g. gfx1151 or gfx1100): \
                    unset, llama.cpp builds for the GPUs of the build machine."
            .into());
    }

    let mut cfg = cmake::Config::new(src);
    // llama.cpp in Debug is 10-50x slower; our own debug builds still want a fast library.
    cfg.profile("Release").out_dir(out_dir.join("cmake"));
    if which("ninja").is_some() && env::var("CMAKE_GENERATOR").is_none() {
        cfg.generator("Ninja");
    }
    if env::flag("LLAMA_SYS_CCACHE")?.unwrap_or(true) {
        if let Some(launcher) = which("sccache").or_else(|| which("ccache")) {
            for lang in ["C", "CXX", "CUDA", "HIP"] {
                cfg.define(format!("CMAKE_{lang}_COMPILER_LAUNCHER"), &launcher);
            }
        }
    }
    for (k, v) in options(&inputs) {
        cfg.define(k, v);
    }
    // The cmake crate panics with the full log on failure; add a one-line summary.
    let dst = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || cfg.build())).map_err(|_| {
        format!(
            "building llama.cpp from {} with CMake failed (its output is above).\n  checked \
             beforehand: source present, cmake runs. Common causes: no C++17 compiler \
             (`apt-get install g++`), a backend toolchain missing for an enabled feature.",
            src.display()
        )
    })?;
    Ok(dst)
}

pub fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(bin)).find(|p| p.is_file())
}
