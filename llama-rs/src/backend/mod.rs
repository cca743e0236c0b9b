//! Process-wide llama.cpp initialisation and log routing.
//!
//! llama.cpp keeps global state (backend registry, log sink). It is initialised once,
//! lazily, by the first `Model` load (or an explicit [`init`]), and never torn down:
//! tearing it down while another thread still holds a model would be use-after-free.

use std::ffi::{c_char, c_void, CStr};
use std::sync::{Once, OnceLock};

use llama_sys as sys;

mod modules;
pub use modules::CpuVariant;

static INIT: Once = Once::new();
/// A `cpu-all` build's module loading: the variant, or why none was loaded.
static MODULES: OnceLock<std::result::Result<CpuVariant, String>> = OnceLock::new();

/// Initialise llama.cpp's backends and route its logs into the `log` crate (target
/// `llama_cpp`). Idempotent and thread-safe; called implicitly by model loads.
///
/// ```
/// llama_rs::backend::init();
/// assert!(llama_rs::backend::system_info().contains("CPU"));
/// ```
pub fn init() {
    INIT.call_once(|| {
        // SAFETY: called exactly once (under `Once`) before any other llama.cpp call made
        // by this crate; `log_trampoline` is a valid `extern "C"` fn that never unwinds and
        // needs no user data.
        unsafe { sys::llama_log_set(Some(log_trampoline), std::ptr::null_mut()) };
        // SAFETY: as above; mtmd (and the clip encoder it owns) keep their own log sink.
        unsafe { sys::mtmd_helper_log_set(Some(log_trampoline), std::ptr::null_mut()) };
        if sys::BACKEND_DL {
            // Before llama_backend_init, which loads modules itself (from the wrong
            // places) only while none is registered.
            let r = modules::load();
            if let Err(e) = &r {
                log::error!(target: "llama_rs", "CPU backend: {e}");
            }
            let _ = MODULES.set(r);
        }
        // SAFETY: as above; after the log sink is set, once.
        unsafe { sys::llama_backend_init() };
    });
}

/// The CPU variant a `cpu-all` build picked for this CPU (`LLAMA_RS_CPU_VARIANT`
/// overrides); `None` when the CPU backend is linked in (`cpu-native`, `cpu-portable`)
/// or no variant could be loaded ([`check_cpu_backend`] says why).
pub fn cpu_variant() -> Option<&'static CpuVariant> {
    init();
    MODULES.get()?.as_ref().ok()
}

/// Ok when a CPU backend is registered; otherwise why not (a `cpu-all` build whose
/// modules are missing, or a forced variant this CPU cannot run). Model loads check it.
///
/// ```
/// llama_rs::backend::check_cpu_backend().unwrap();
/// ```
pub fn check_cpu_backend() -> crate::Result<()> {
    init();
    if let Some(Err(e)) = MODULES.get() {
        return Err(crate::Error::NoSuchDevice(format!("CPU backend: {e}")));
    }
    Ok(())
}

/// llama.cpp's system-info line (compiled CPU features and backends), after which CPU
/// backend this build uses: `CPU variant = haswell (score 64, cpu-all)` in a build that
/// picks one at run time, `CPU = built in (cpu-native)` otherwise.
///
/// ```
/// let info = llama_rs::backend::system_info();
/// assert!(info.starts_with("CPU"), "{info}");
/// ```
pub fn system_info() -> String {
    init();
    // SAFETY: returns a pointer to a static, NUL-terminated buffer owned by llama.cpp.
    let s = unsafe { CStr::from_ptr(sys::llama_print_system_info()) };
    let cpu = match MODULES.get() {
        Some(Ok(v)) => format!(
            "CPU variant = {} (score {}{}, {})",
            v.name,
            v.score,
            if v.forced { ", forced" } else { "" },
            sys::BUILD_CONFIG
        ),
        Some(Err(e)) => format!("CPU variant = none ({e})"),
        None => format!("CPU = built in ({})", sys::BUILD_CONFIG),
    };
    format!("{cpu} | {}", s.to_string_lossy())
}

/// Whether the build can offload layers to a GPU (any GPU backend compiled in).
pub fn supports_gpu_offload() -> bool {
    init();
    // SAFETY: a pure query with no preconditions.
    unsafe { sys::llama_supports_gpu_offload() }
}

/// Whether memory-mapped loading is available on this platform.
pub fn supports_mmap() -> bool {
    // SAFETY: a pure query with no preconditions.
    unsafe { sys::llama_supports_mmap() }
}

/// The `LLAMA_BUILD_CONFIG` llama.cpp was built with (`cpu-all`, `cuda-sm90`, ...), or
/// `default` (the `cpu-native` options) when none was set.
///
/// ```
/// assert!(!llama_rs::backend::build_config().is_empty());
/// ```
pub fn build_config() -> &'static str {
    sys::BUILD_CONFIG
}

/// Upstream llama.cpp commit of the linked library.
pub fn llama_cpp_commit() -> &'static str {
    sys::LLAMA_CPP_COMMIT
}

extern "C" fn log_trampoline(level: sys::ggml_log_level, text: *const c_char, _: *mut c_void) {
    // A panic must not unwind into C: swallow it (logging is best effort).
    let _ = std::panic::catch_unwind(|| {
        if text.is_null() {
            return;
        }
        // SAFETY: llama.cpp passes a NUL-terminated string valid for this call.
        let msg = unsafe { CStr::from_ptr(text) }.to_string_lossy();
        let msg = msg.trim_end_matches('\n');
        if msg.is_empty() {
            return;
        }
        let lvl = match level {
            sys::GGML_LOG_LEVEL_ERROR => log::Level::Error,
            sys::GGML_LOG_LEVEL_WARN => log::Level::Warn,
            sys::GGML_LOG_LEVEL_INFO => log::Level::Info,
            _ => log::Level::Debug,
        };
        log::log!(target: "llama_cpp", lvl, "{msg}");
    });
}

/// Runs a closure called from C: a panic is caught and stored so the Rust caller can
/// resume it after the C function returns. Returns `fallback` if it panicked.
pub(crate) fn guard<R>(slot: &mut Option<Box<dyn std::any::Any + Send>>, fallback: R, f: impl FnOnce() -> R) -> R {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            slot.get_or_insert(p);
            fallback
        }
    }
}
