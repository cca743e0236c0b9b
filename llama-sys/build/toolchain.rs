//! Backend toolchain checks: find the SDK pieces each backend needs and fail early with
//! what is missing and how to get it, instead of deep inside cmake.

use std::path::{Path, PathBuf};
use std::process::Command;

use llama_build_config::Backend;

use crate::cmake_config::which;
use crate::env;

pub fn check(b: Backend, cfg: &mut cmake::Config) -> Result<(), String> {
    match b {
        Backend::Vulkan => vulkan(),
        Backend::Cuda => cuda(),
        Backend::Hip => hip(cfg),
        Backend::Rpc => Ok(()),
    }
}

fn vulkan() -> Result<(), String> {
    let dirs: Vec<PathBuf> = env::var("Vulkan_INCLUDE_DIR")
        .into_iter()
        .chain(env::var("VULKAN_SDK").map(|s| format!("{s}/include")))
        .map(PathBuf::from)
        .chain([PathBuf::from("/usr/include"), PathBuf::from("/usr/local/include")])
        .collect();
    let core = dirs.iter().map(|d| d.join("vulkan/vulkan_core.h")).find(|p| p.is_file()).ok_or(
        "Vulkan headers not found (vulkan/vulkan_core.h).\n  fix: install Vulkan-Headers >= 1.3.272 \
         (Debian 13/Ubuntu 24.04: `apt-get install libvulkan-dev spirv-headers glslc`), or set \
         Vulkan_INCLUDE_DIR / VULKAN_SDK.",
    )?;
    let text = std::fs::read_to_string(&core).map_err(|e| format!("{}: {e}", core.display()))?;
    llama_build_config::check_vulkan_header(&text).map_err(|e| format!("{e} (read {})", core.display()))?;
    if !core.with_file_name("vulkan.hpp").is_file() {
        return Err(format!(
            "{} has no vulkan.hpp (C++ headers): install the full Vulkan-Headers",
            core.parent().unwrap().display()
        ));
    }
    if env::var("Vulkan_GLSLC_EXECUTABLE").is_none() && which("glslc").is_none() {
        return Err("glslc not found: ggml-vulkan compiles its shaders with it.\n  fix: `apt-get install glslc` \
                    (or shaderc), or set Vulkan_GLSLC_EXECUTABLE."
            .into());
    }
    Ok(())
}

fn cuda() -> Result<(), String> {
    let nvcc = env::var("CUDACXX")
        .map(PathBuf::from)
        .or_else(|| env::var("CUDA_PATH").map(|p| Path::new(&p).join("bin/nvcc")))
        .filter(|p| p.is_file())
        .or_else(|| which("nvcc"))
        .or_else(|| Some(PathBuf::from("/usr/local/cuda/bin/nvcc")).filter(|p| p.is_file()));
    if nvcc.is_none() {
        return Err("nvcc not found: the CUDA backend needs the CUDA toolkit.\n  fix: install it (e.g. \
                    `apt-get install nvidia-cuda-toolkit` or NVIDIA's packages) and put nvcc on PATH, or \
                    set CUDACXX / CUDA_PATH."
            .into());
    }
    Ok(())
}

fn hip(cfg: &mut cmake::Config) -> Result<(), String> {
    let hipconfig = env::var("HIPCONFIG")
        .map(PathBuf::from)
        .or_else(|| which("hipconfig"))
        .or_else(|| Some(PathBuf::from("/opt/rocm/bin/hipconfig")).filter(|p| p.is_file()))
        .ok_or(
            "hipconfig not found: the HIP backend needs ROCm/HIP >= 6.1.\n  fix: install ROCm (or on \
             Debian sid: `apt-get install hipcc libamdhip64-dev librocblas-dev libhipblas-dev`) and put \
             hipconfig on PATH, or set HIPCONFIG.",
        )?;
    let run = |arg: &str| -> Result<String, String> {
        let out = Command::new(&hipconfig).arg(arg).output().map_err(|e| format!("{}: {e}", hipconfig.display()))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    llama_build_config::check_hip_version(&run("--version")?)?;
    // llama.cpp's HIP build wants HIPCXX = ROCm's clang and HIP_PATH = the HIP root.
    if env::var("HIPCXX").is_none() {
        cfg.env("HIPCXX", format!("{}/clang", run("-l")?));
    }
    if env::var("HIP_PATH").is_none() {
        cfg.env("HIP_PATH", run("-R")?);
    }
    Ok(())
}
