//! Backend modules of a `GGML_BACKEND_DL` build (the `cpu-all` build config): ggml's CPU
//! backend is built once per CPU variant (`libggml-cpu-haswell.so`, `-skylakex`,
//! `-sapphirerapids`, ...), and the best one the running CPU supports is loaded at run
//! time. ggml's own loader searches the executable's directory and the working directory,
//! which is wrong for a library (a Python extension lives in site-packages), and does not
//! say what it picked; this one looks next to the loaded libggml, can be told which
//! variant to take, and records its choice for [`super::cpu_variant`].

use std::ffi::{c_char, c_int, CStr, CString};
use std::path::{Path, PathBuf};

use llama_sys as sys;
use serde::Serialize;

/// The CPU backend variant a `cpu-all` build loaded.
///
/// ```
/// // `None` in a build with the CPU backend linked in (the default `cpu-native`).
/// if let Some(v) = llama_rs::backend::cpu_variant() {
///     println!("CPU variant {} (score {}) of {:?}", v.name, v.score, v.built);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CpuVariant {
    /// Its name: `haswell`, `skylakex`, `icelake`, `sapphirerapids`, ... (`x64` is the
    /// baseline that runs on every x86-64 CPU).
    pub name: String,
    /// The module file.
    pub path: PathBuf,
    /// ggml's score for this CPU (higher = more features used; 0 = cannot run here).
    pub score: i32,
    /// Every variant found, with its score on this CPU.
    pub built: Vec<(String, i32)>,
    /// Whether `LLAMA_RS_CPU_VARIANT` chose it (instead of the best score).
    pub forced: bool,
}

const CPU_PREFIX: &str = "libggml-cpu-";

/// Loads the backend modules: GPU/RPC modules first (ggml's order), then the CPU
/// variant. Err: why no CPU backend could be loaded.
pub(super) fn load() -> Result<CpuVariant, String> {
    if let Ok(p) = std::env::var("GGML_BACKEND_PATH") {
        // An out-of-tree backend, as ggml_backend_load_all() honours it.
        load_module(Path::new(&p));
    }
    let dir = module_dir()?;
    let mut variants = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".so") else { continue };
        if let Some(variant) = stem.strip_prefix(CPU_PREFIX) {
            variants.push((variant.to_string(), entry.path()));
        } else if stem.starts_with("libggml-") && stem != "libggml-base" {
            others.push(entry.path());
        }
    }
    others.sort();
    for p in &others {
        load_module(p);
    }
    if variants.is_empty() {
        return Err(format!("no CPU backend modules ({CPU_PREFIX}*.so) in {}", dir.display()));
    }
    variants.sort();
    let scored: Vec<(String, PathBuf, i32)> = variants.into_iter().map(|(n, p)| (n, p.clone(), score(&p))).collect();
    let built: Vec<(String, i32)> = scored.iter().map(|(n, _, s)| (n.clone(), *s)).collect();
    let forced = std::env::var("LLAMA_RS_CPU_VARIANT").ok().filter(|v| !v.is_empty());
    let (name, path, score) = match &forced {
        Some(want) => {
            let (n, p, s) = scored.iter().find(|(n, _, _)| n == want).cloned().ok_or_else(|| {
                format!("LLAMA_RS_CPU_VARIANT={want}: no such variant in {} (built: {built:?})", dir.display())
            })?;
            // A module for features this CPU lacks would die on an illegal instruction.
            if s <= 0 {
                return Err(format!("LLAMA_RS_CPU_VARIANT={want}: this CPU lacks features that variant needs"));
            }
            (n, p, s)
        }
        None => scored.iter().filter(|(_, _, s)| *s > 0).max_by_key(|(_, _, s)| *s).cloned().ok_or_else(|| {
            format!("none of the CPU variants in {} can run on this CPU (scores {built:?})", dir.display())
        })?,
    };
    if !load_module(&path) {
        return Err(format!("could not load {}", path.display()));
    }
    log::info!(target: "llama_rs", "CPU backend: variant {name} (score {score}) from {}", path.display());
    Ok(CpuVariant { name, path, score, built, forced: forced.is_some() })
}

/// `LLAMA_RS_BACKEND_DIR`, else the directory of the libggml this process loaded (next
/// to it in a build tree, a wheel or a release archive), else where the build put them.
fn module_dir() -> Result<PathBuf, String> {
    if let Ok(d) = std::env::var("LLAMA_RS_BACKEND_DIR") {
        return Ok(PathBuf::from(d));
    }
    let has_modules = |d: &Path| {
        std::fs::read_dir(d)
            .is_ok_and(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with(CPU_PREFIX)))
    };
    if let Some(d) = loaded_ggml_dir().filter(|d| has_modules(d)) {
        return Ok(d);
    }
    let built = PathBuf::from(sys::LIB_DIR);
    if !sys::LIB_DIR.is_empty() && has_modules(&built) {
        return Ok(built);
    }
    Err(format!(
        "no CPU backend modules found next to libggml ({:?}) or in {}: set LLAMA_RS_BACKEND_DIR",
        loaded_ggml_dir(),
        sys::LIB_DIR
    ))
}

fn loaded_ggml_dir() -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables; the address is a function of
    // libggml that this binary links, and `info` is a valid out-pointer.
    let file = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        let f: unsafe extern "C" fn(*const c_char) -> sys::ggml_backend_reg_t = sys::ggml_backend_load;
        if libc::dladdr(f as *const libc::c_void, &mut info) == 0 || info.dli_fname.is_null() {
            return None;
        }
        CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned()
    };
    let p = std::fs::canonicalize(file).ok()?;
    p.parent().map(Path::to_path_buf)
}

/// The module's `ggml_backend_score()`: 0 when the CPU lacks what it was built for.
fn score(path: &Path) -> i32 {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return 0 };
    // ggml's own loader scores variants the same way: their load-time code uses no
    // variant-specific instructions, and nothing from the module is kept after dlclose.
    // SAFETY: a NUL-terminated path; `ggml_backend_score` is `int (void)`; dlsym's and
    // dlopen's NULLs are checked; the handle is closed once, after the call.
    unsafe {
        let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return 0;
        }
        let f = libc::dlsym(h, c"ggml_backend_score".as_ptr());
        let s = if f.is_null() {
            0
        } else {
            let f: extern "C" fn() -> c_int = std::mem::transmute(f);
            f()
        };
        libc::dlclose(h);
        s
    }
}

fn load_module(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a NUL-terminated path; ggml_backend_load registers the module's backend
    // (or returns NULL and logs why) and keeps it loaded for the process lifetime.
    let reg = unsafe { sys::ggml_backend_load(c.as_ptr()) };
    !reg.is_null()
}
