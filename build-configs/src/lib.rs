//! Named llama.cpp build configurations and the cmake arguments they produce.
//!
//! `llama-sys`'s build script uses this crate: `LLAMA_BUILD_CONFIG=gfx1151-hip cargo
//! build` selects `configs/gfx1151-hip.toml`, which turns on its backends (no cargo
//! feature needed) and adds its cmake options. Everything here is plain data and pure
//! functions, so the arguments for every configuration are unit-tested on any machine.
//!
//! ```
//! let cfg = llama_build_config::named("gfx1151-hip").unwrap();
//! let inputs = llama_build_config::Inputs { native: true, ..Default::default() };
//! let out = llama_build_config::cmake_options(&inputs, Some(&cfg), &Default::default()).unwrap();
//! assert!(out.options.contains(&("GGML_HIP".to_string(), "ON".to_string())));
//! assert!(out.options.contains(&("GPU_TARGETS".to_string(), "gfx1151".to_string())));
//! ```

#![warn(missing_docs)] // published: every public item is documented (CI denies warnings)

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A GPU / distributed backend of ggml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `GGML_VULKAN`: Vulkan (RADV, NVIDIA, lavapipe).
    Vulkan,
    /// `GGML_CUDA`: NVIDIA CUDA.
    Cuda,
    /// `GGML_HIP`: AMD ROCm/HIP.
    Hip,
    /// `GGML_RPC`: offload to `rpc-server` processes over TCP.
    Rpc,
}

impl Backend {
    /// The CMake option that enables this backend (`GGML_VULKAN`, ...).
    pub fn cmake_option(self) -> &'static str {
        match self {
            Backend::Vulkan => "GGML_VULKAN",
            Backend::Cuda => "GGML_CUDA",
            Backend::Hip => "GGML_HIP",
            Backend::Rpc => "GGML_RPC",
        }
    }
    /// Every backend, in a fixed order.
    pub fn all() -> [Backend; 4] {
        [Backend::Vulkan, Backend::Cuda, Backend::Hip, Backend::Rpc]
    }
}

/// One `configs/*.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildConfig {
    /// The name `LLAMA_BUILD_CONFIG` selects it by.
    pub name: String,
    /// One line on who it is for.
    pub description: String,
    /// Backends it turns on (in addition to the enabled cargo features).
    pub backends: Vec<Backend>,
    /// Ask for rocWMMA flash attention (only passed if the source supports it).
    #[serde(default)]
    pub rocwmma: bool,
    #[serde(default)]
    /// Extra CMake cache entries (`-DKEY=VALUE`), applied after the backend defaults.
    pub cmake: BTreeMap<String, String>,
    /// Build-time environment (documentation; HIPCXX/HIP_PATH are derived when unset).
    #[serde(default)]
    pub build_env: BTreeMap<String, String>,
    /// Environment users set when running.
    #[serde(default)]
    pub runtime_env: BTreeMap<String, String>,
    /// Recommended runtime parameters (flash attention, KV types, ubatch, load mode...).
    #[serde(default)]
    pub runtime: BTreeMap<String, String>,
}

const CONFIGS: &[(&str, &str)] = &[
    ("cpu-native", include_str!("../configs/cpu-native.toml")),
    ("cpu-portable", include_str!("../configs/cpu-portable.toml")),
    ("cpu-all", include_str!("../configs/cpu-all.toml")),
    ("gfx1151-vulkan", include_str!("../configs/gfx1151-vulkan.toml")),
    ("gfx1151-hip", include_str!("../configs/gfx1151-hip.toml")),
    ("gfx1100-hip", include_str!("../configs/gfx1100-hip.toml")),
    ("cuda-sm90", include_str!("../configs/cuda-sm90.toml")),
    ("rpc", include_str!("../configs/rpc.toml")),
];

/// Names of all configurations.
pub fn names() -> Vec<&'static str> {
    CONFIGS.iter().map(|(n, _)| *n).collect()
}

/// Loads a configuration by name.
pub fn named(name: &str) -> Result<BuildConfig, String> {
    let (_, text) = CONFIGS
        .iter()
        .find(|(n, _)| *n == name)
        .ok_or_else(|| format!("unknown build config {name:?}; known: {}", names().join(", ")))?;
    let cfg: BuildConfig = toml::from_str(text).map_err(|e| format!("configs/{name}.toml: {e}"))?;
    if cfg.name != name {
        return Err(format!("configs/{name}.toml names itself {:?}", cfg.name));
    }
    Ok(cfg)
}

/// What the cmake arguments depend on besides the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inputs {
    /// GGML_NATIVE default: on for host builds, off when cross-compiling.
    pub native: bool,
    /// An explicit LLAMA_SYS_NATIVE=0/1 (wins over the config).
    pub native_override: Option<bool>,
    /// Whether the `openmp` cargo feature is on.
    pub openmp: bool,
    /// Backends enabled through cargo features.
    pub features: BTreeSet<Backend>,
    /// LLAMA_SYS_CUDA_ARCHITECTURES (wins over the config).
    pub cuda_archs: Option<String>,
    /// LLAMA_SYS_GPU_TARGETS (wins over the config).
    pub gpu_targets: Option<String>,
    /// LLAMA_SYS_ROCWMMA=1.
    pub rocwmma: bool,
    /// LLAMA_SYS_SHARED=1: shared libraries (swap in a llama.cpp built elsewhere, e.g.
    /// with another backend, without relinking).
    pub shared: bool,
}

/// Facts read from the llama.cpp source tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceCaps {
    /// The tree defines the GGML_HIP_ROCWMMA_FATTN option.
    pub has_rocwmma_option: bool,
}

/// The result: `-D` options, the effective backends, and warnings for the user.
#[derive(Debug, Clone, PartialEq)]
pub struct CmakeArgs {
    /// CMake `-D` options in the order they are passed.
    pub options: Vec<(String, String)>,
    /// The backends this build enables.
    pub backends: BTreeSet<Backend>,
    /// Things the caller should be told (ignored or overridden settings).
    pub warnings: Vec<String>,
}

fn on(b: bool) -> String {
    (if b { "ON" } else { "OFF" }).into()
}

/// Builds the cmake options. Errors name what is missing (e.g. GPU targets for HIP).
pub fn cmake_options(i: &Inputs, cfg: Option<&BuildConfig>, caps: &SourceCaps) -> Result<CmakeArgs, String> {
    let mut backends = i.features.clone();
    if let Some(c) = cfg {
        backends.extend(c.backends.iter().copied());
    }
    let mut o: Vec<(String, String)> = vec![
        ("BUILD_SHARED_LIBS".into(), on(i.shared)),
        ("CMAKE_POSITION_INDEPENDENT_CODE".into(), on(true)),
        ("CMAKE_INSTALL_LIBDIR".into(), "lib".into()),
        ("LLAMA_BUILD_COMMON".into(), on(false)),
        ("LLAMA_BUILD_TESTS".into(), on(false)),
        ("LLAMA_BUILD_TOOLS".into(), on(false)),
        ("LLAMA_BUILD_EXAMPLES".into(), on(false)),
        ("LLAMA_BUILD_SERVER".into(), on(false)),
        ("LLAMA_BUILD_APP".into(), on(false)),
        // The multimodal library (tools/mtmd) alone, without the tools; its video path
        // runs ffmpeg in a subprocess, which a library must not.
        ("LLAMA_BUILD_MTMD".into(), on(true)),
        ("MTMD_VIDEO".into(), on(false)),
        ("LLAMA_OPENSSL".into(), on(false)),
        ("LLAMA_ALL_WARNINGS".into(), on(false)),
        ("GGML_NATIVE".into(), on(i.native)),
        ("GGML_OPENMP".into(), on(i.openmp)),
    ];
    for b in Backend::all() {
        o.push((b.cmake_option().into(), on(backends.contains(&b))));
    }
    let set = |o: &mut Vec<(String, String)>, k: &str, v: String| match o.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v,
        None => o.push((k.to_string(), v)),
    };
    if let Some(c) = cfg {
        for (k, v) in &c.cmake {
            set(&mut o, k, v.clone());
        }
    }
    // Explicit environment overrides win over the configuration.
    if let Some(n) = i.native_override {
        set(&mut o, "GGML_NATIVE", on(n));
    }
    if backends.contains(&Backend::Cuda) {
        if let Some(a) = &i.cuda_archs {
            set(&mut o, "CMAKE_CUDA_ARCHITECTURES", a.clone());
        } else if !o.iter().any(|(k, _)| k == "CMAKE_CUDA_ARCHITECTURES") {
            set(&mut o, "CMAKE_CUDA_ARCHITECTURES", "native".into());
        }
    }
    if let Some(t) = &i.gpu_targets {
        set(&mut o, "GPU_TARGETS", t.clone());
    }
    let is_on = |o: &Vec<(String, String)>, k: &str| o.iter().any(|(key, v)| key == k && v == "ON");
    if is_on(&o, "GGML_CPU_ALL_VARIANTS") && !is_on(&o, "GGML_BACKEND_DL") {
        return Err("GGML_CPU_ALL_VARIANTS needs GGML_BACKEND_DL=ON (each variant is a loadable module)".into());
    }
    if is_on(&o, "GGML_BACKEND_DL") {
        // ggml refuses DL backends in static builds; the modules link libggml-base.so.
        set(&mut o, "BUILD_SHARED_LIBS", on(true));
        if is_on(&o, "GGML_NATIVE") {
            return Err("GGML_BACKEND_DL with GGML_NATIVE=ON would build modules for this CPU only: use \
                        LLAMA_BUILD_CONFIG=cpu-all (or set GGML_NATIVE OFF)"
                .into());
        }
    }
    let mut warnings = Vec::new();
    if backends.contains(&Backend::Hip) {
        let targets = o.iter().find(|(k, _)| k == "GPU_TARGETS").map(|(_, v)| v.clone());
        match targets {
            None => {
                return Err("the HIP backend needs GPU targets: set LLAMA_SYS_GPU_TARGETS=gfx1151 (Strix Halo), \
                            gfx1100 (7900 XTX), ... or use LLAMA_BUILD_CONFIG=gfx1151-hip. Unset, llama.cpp \
                            would build for the GPUs of the build machine only."
                    .into())
            }
            Some(t) if t.split([';', ',']).any(|g| !g.trim().starts_with("gfx")) => {
                return Err(format!("GPU targets {t:?}: expected gfx names such as gfx1151;gfx1100"));
            }
            Some(t) => set(&mut o, "GPU_TARGETS", t.replace(',', ";")),
        }
        if o.iter().any(|(k, v)| k == "GGML_STATIC" && v == "ON") {
            return Err("GGML_STATIC=ON cannot be combined with HIP (llama.cpp refuses it)".into());
        }
        let want_rocwmma = i.rocwmma || cfg.is_some_and(|c| c.rocwmma);
        if want_rocwmma {
            if caps.has_rocwmma_option {
                set(&mut o, "GGML_HIP_ROCWMMA_FATTN", "ON".into());
            } else {
                warnings.push(
                    "rocWMMA flash attention requested but ignored: this llama.cpp no longer has \
                     GGML_HIP_ROCWMMA_FATTN (removed upstream in PR #26046; RDNA3/3.5 use the WMMA \
                     mma/tile kernels instead, which are faster on gfx1151)"
                        .into(),
                );
            }
        }
    } else if o.iter().any(|(k, _)| k == "GPU_TARGETS") && cfg.is_none_or(|c| !c.cmake.contains_key("GPU_TARGETS")) {
        warnings.push("LLAMA_SYS_GPU_TARGETS is set but the HIP backend is off; ignored".into());
    }
    Ok(CmakeArgs { options: o, backends, warnings })
}

/// Reads `VK_HEADER_VERSION_COMPLETE` from `vulkan_core.h` and checks it is at least
/// 1.3.272 (ggml-vulkan uses `vk::LayerSettingEXT` unguarded).
pub fn check_vulkan_header(vulkan_core_h: &str) -> Result<(u32, u32, u32), String> {
    let patch = vulkan_core_h
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define VK_HEADER_VERSION ")?.trim().parse::<u32>().ok())
        .ok_or("no VK_HEADER_VERSION in vulkan_core.h")?;
    let complete = vulkan_core_h
        .lines()
        .find_map(|l| l.trim().strip_prefix("#define VK_HEADER_VERSION_COMPLETE "))
        .ok_or("no VK_HEADER_VERSION_COMPLETE in vulkan_core.h")?;
    // e.g. VK_MAKE_API_VERSION(0, 1, 3, VK_HEADER_VERSION)
    let args: Vec<u32> = complete.split(['(', ')', ',']).filter_map(|s| s.trim().parse().ok()).collect();
    let (major, minor) = match args.as_slice() {
        [_, ma, mi, ..] => (*ma, *mi),
        [ma, mi] => (*ma, *mi),
        _ => return Err(format!("cannot read {complete:?}")),
    };
    let v = (major, minor, patch);
    if (major, minor, patch) < (1, 3, 272) {
        return Err(format!(
            "Vulkan-Headers {major}.{minor}.{patch} are too old: llama.cpp needs >= 1.3.272 \
             (Debian 12's libvulkan-dev is 1.3.239; use Debian 13 / Ubuntu 24.04 packages, the \
             LunarG SDK, or point Vulkan_INCLUDE_DIR at newer headers)"
        ));
    }
    Ok(v)
}

/// Parses `hipconfig --version` (e.g. `6.4.43484-123`) and checks HIP >= 6.1.
pub fn check_hip_version(s: &str) -> Result<(u32, u32), String> {
    let mut it = s.trim().split(['.', '-']).map(|p| p.parse::<u32>());
    let (Some(Ok(major)), Some(Ok(minor))) = (it.next(), it.next()) else {
        return Err(format!("cannot read the HIP version from {s:?}"));
    };
    if (major, minor) < (6, 1) {
        return Err(format!("HIP {major}.{minor} is too old: llama.cpp needs ROCm/HIP >= 6.1"));
    }
    Ok((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(a: &'a CmakeArgs, k: &str) -> Option<&'a str> {
        a.options.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str())
    }

    fn host() -> Inputs {
        Inputs { native: true, openmp: true, ..Default::default() }
    }

    #[test]
    fn every_config_parses_and_names_itself() {
        for n in names() {
            let c = named(n).unwrap();
            assert!(!c.description.is_empty());
            let a = cmake_options(&host(), Some(&c), &SourceCaps::default()).unwrap();
            for b in &c.backends {
                assert_eq!(get(&a, b.cmake_option()), Some("ON"), "{n}");
            }
        }
        assert!(named("nope").unwrap_err().contains("gfx1151-hip"));
    }

    #[test]
    fn default_cpu_build() {
        let a = cmake_options(&host(), None, &SourceCaps::default()).unwrap();
        assert_eq!(get(&a, "GGML_NATIVE"), Some("ON"));
        assert_eq!(get(&a, "GGML_OPENMP"), Some("ON"));
        assert_eq!(get(&a, "BUILD_SHARED_LIBS"), Some("OFF"));
        for b in Backend::all() {
            assert_eq!(get(&a, b.cmake_option()), Some("OFF"));
        }
        assert!(a.backends.is_empty() && a.warnings.is_empty());
        let shared = Inputs { shared: true, ..host() };
        assert_eq!(get(&cmake_options(&shared, None, &Default::default()).unwrap(), "BUILD_SHARED_LIBS"), Some("ON"));
        // Cross builds turn native off; an explicit override wins over everything.
        let cross = Inputs { native: false, ..host() };
        assert_eq!(get(&cmake_options(&cross, None, &Default::default()).unwrap(), "GGML_NATIVE"), Some("OFF"));
        let forced = Inputs { native_override: Some(false), ..host() };
        let cfg = named("cpu-native").unwrap();
        assert_eq!(get(&cmake_options(&forced, Some(&cfg), &Default::default()).unwrap(), "GGML_NATIVE"), Some("OFF"));
    }

    #[test]
    fn cpu_all_variants_build() {
        let a =
            cmake_options(&Inputs { openmp: true, ..host() }, Some(&named("cpu-all").unwrap()), &Default::default())
                .unwrap();
        for (k, v) in [
            ("GGML_BACKEND_DL", "ON"),
            ("GGML_CPU_ALL_VARIANTS", "ON"),
            ("BUILD_SHARED_LIBS", "ON"),
            ("GGML_NATIVE", "OFF"),
            ("GGML_OPENMP", "OFF"),
        ] {
            assert_eq!(get(&a, k), Some(v), "{k}");
        }
        // A native override cannot make the variant modules native.
        let forced = Inputs { native_override: Some(true), ..host() };
        let err = cmake_options(&forced, Some(&named("cpu-all").unwrap()), &Default::default()).unwrap_err();
        assert!(err.contains("cpu-all"), "{err}");
    }

    #[test]
    fn hip_configs() {
        for (name, target) in [("gfx1151-hip", "gfx1151"), ("gfx1100-hip", "gfx1100")] {
            let a = cmake_options(&host(), Some(&named(name).unwrap()), &SourceCaps::default()).unwrap();
            assert_eq!(get(&a, "GGML_HIP"), Some("ON"));
            assert_eq!(get(&a, "GPU_TARGETS"), Some(target));
            assert_eq!(get(&a, "GGML_HIP_ROCWMMA_FATTN"), None);
        }
        // rocWMMA: passed only when the source defines it, else a warning says why not.
        let cfg = named("gfx1151-hip").unwrap();
        let without = cmake_options(&host(), Some(&cfg), &SourceCaps { has_rocwmma_option: false }).unwrap();
        assert!(without.warnings.iter().any(|w| w.contains("PR #26046")));
        let with = cmake_options(&host(), Some(&cfg), &SourceCaps { has_rocwmma_option: true }).unwrap();
        assert_eq!(get(&with, "GGML_HIP_ROCWMMA_FATTN"), Some("ON"));
        // HIP through the feature needs targets; the env override wins and is normalised.
        let mut i = host();
        i.features.insert(Backend::Hip);
        assert!(cmake_options(&i, None, &Default::default()).unwrap_err().contains("LLAMA_SYS_GPU_TARGETS"));
        i.gpu_targets = Some("gfx1151,gfx1100".into());
        assert_eq!(get(&cmake_options(&i, None, &Default::default()).unwrap(), "GPU_TARGETS"), Some("gfx1151;gfx1100"));
        i.gpu_targets = Some("sm_90".into());
        assert!(cmake_options(&i, None, &Default::default()).is_err());
        let env_wins = Inputs { gpu_targets: Some("gfx1150".into()), ..host() };
        assert_eq!(
            get(&cmake_options(&env_wins, Some(&cfg), &Default::default()).unwrap(), "GPU_TARGETS"),
            Some("gfx1150")
        );
    }

    #[test]
    fn cuda_and_vulkan_configs() {
        let a = cmake_options(&host(), Some(&named("cuda-sm90").unwrap()), &Default::default()).unwrap();
        assert_eq!(get(&a, "GGML_CUDA"), Some("ON"));
        assert_eq!(get(&a, "CMAKE_CUDA_ARCHITECTURES"), Some("90"));
        let mut i = host();
        i.features.insert(Backend::Cuda);
        assert_eq!(
            get(&cmake_options(&i, None, &Default::default()).unwrap(), "CMAKE_CUDA_ARCHITECTURES"),
            Some("native")
        );
        i.cuda_archs = Some("89;90".into());
        assert_eq!(
            get(&cmake_options(&i, None, &Default::default()).unwrap(), "CMAKE_CUDA_ARCHITECTURES"),
            Some("89;90")
        );
        let v = cmake_options(&host(), Some(&named("gfx1151-vulkan").unwrap()), &Default::default()).unwrap();
        assert_eq!(get(&v, "GGML_VULKAN"), Some("ON"));
        assert_eq!(get(&v, "GGML_HIP"), Some("OFF"));
    }

    #[test]
    fn toolchain_version_checks() {
        let h = |p: u32| {
            format!("#define VK_HEADER_VERSION {p}\n#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, 1, 3, VK_HEADER_VERSION)\n")
        };
        assert!(check_vulkan_header(&h(239)).unwrap_err().contains("1.3.239"));
        assert_eq!(check_vulkan_header(&h(272)).unwrap(), (1, 3, 272));
        let v14 = "#define VK_HEADER_VERSION 309\n#define VK_HEADER_VERSION_COMPLETE VK_MAKE_API_VERSION(0, 1, 4, VK_HEADER_VERSION)";
        assert_eq!(check_vulkan_header(v14).unwrap(), (1, 4, 309));
        assert!(check_vulkan_header("garbage").is_err());
        assert_eq!(check_hip_version("6.4.43484-123abc").unwrap(), (6, 4));
        assert_eq!(check_hip_version("7.0.2").unwrap(), (7, 0));
        assert!(check_hip_version("6.0.32830").unwrap_err().contains(">= 6.1"));
        assert!(check_hip_version("n/a").is_err());
    }
}
