//! The AMX miscompile check (vendor/patches/0001-*): compile the tile-config init of the
//! tree about to be built — its own text, cut out of `ggml-cpu/amx/mmq.cpp` — with the
//! C++ compiler CMake will use, run it (`build/amx_probe.cpp` reads the 64 bytes that
//! reach `ldtilecfg`, on any x86-64 CPU), and compare with an `-O0` build of the same
//! text. Any optimized build that hands `ldtilecfg` other bytes fails the build: a pin
//! bump or another compiler cannot bring the crash back unnoticed.
//!
//! The unpatched text is checked too, only to say whether this compiler needs the patch.
//! Only where the build can run what it compiles (an x86-64 Linux host building for
//! itself); elsewhere it says it did not check. `LLAMA_SYS_AMX_CHECK=0` skips it.

use std::path::Path;
use std::process::Command;

use crate::env;

/// Optimized builds compared with `-O0`: llama.cpp's Release flags and the native flags
/// a `GGML_NATIVE` build adds.
const OPT_LEVELS: &[&[&str]] = &[&["-O2"], &["-O3"], &["-O3", "-march=native"]];

/// Runs the check; returns a one-line summary for `llama_sys::AMX_CHECK`.
pub fn run(patched_src: &Path, original_src: &Path, out_dir: &Path) -> Result<String, String> {
    if !env::flag("LLAMA_SYS_AMX_CHECK")?.unwrap_or(true) {
        println!("cargo:warning=LLAMA_SYS_AMX_CHECK=0: the AMX miscompile check is skipped");
        return Ok("skipped (LLAMA_SYS_AMX_CHECK=0)".into());
    }
    let target = env::cargo("TARGET");
    if !target.starts_with("x86_64-") || !target.contains("linux") || target != env::cargo("HOST") {
        return Ok(format!(
            "not run (the probe runs only on an x86-64 Linux host building for itself; target {target})"
        ));
    }
    let rel = Path::new("ggml/src/ggml-cpu/amx/mmq.cpp");
    let read = |root: &Path| {
        std::fs::read_to_string(root.join(rel)).map_err(|e| format!("AMX check: {}: {e}", root.join(rel).display()))
    };
    let (patched, original) = (read(patched_src)?, read(original_src)?);
    let compiler = cc::Build::new().cpp(true).cargo_metadata(false).get_compiler();
    let cxx = compiler.path().to_path_buf();
    let dir = out_dir.join("amx-check");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let driver = dir.join("amx_probe.cpp");
    std::fs::write(&driver, include_str!("amx_probe.cpp")).map_err(|e| format!("{}: {e}", driver.display()))?;

    let probe = |name: &str, text: &str, flags: &[&str]| -> Result<String, String> {
        let unit = dir.join(format!("{name}.cpp"));
        std::fs::write(&unit, probe_unit(text)?).map_err(|e| format!("{}: {e}", unit.display()))?;
        let exe = dir.join(format!("{name}{}", flags.join("").replace(['-', '='], "_")));
        let out = Command::new(&cxx)
            .args(flags)
            .args(["-mamx-tile", "-std=c++17"])
            .arg(&unit)
            .arg(&driver)
            .arg("-o")
            .arg(&exe)
            .output()
            .map_err(|e| format!("AMX check: running {}: {e}", cxx.display()))?;
        if !out.status.success() {
            return Err(format!(
                "AMX check: {} {} could not compile the probe:\n{}",
                cxx.display(),
                flags.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let run = Command::new(&exe).output().map_err(|e| format!("AMX check: {}: {e}", exe.display()))?;
        let stdout = String::from_utf8_lossy(&run.stdout).trim().to_string();
        if !run.status.success() || stdout.len() < 128 {
            return Err(format!("AMX check: the probe {} ended with {} ({stdout:?})", exe.display(), run.status));
        }
        Ok(stdout)
    };
    let bytes = |s: &str| s.split(' ').next().unwrap_or("").to_string();

    // A compiler without AMX support (GCC < 11, old Clang) cannot build ggml's AMX code
    // either (ggml enables it only where the compiler defines the AMX macros): nothing to
    // check then, and no reason to fail the build.
    let reference = match probe("patched", &patched, &["-O0"]) {
        Ok(r) => r,
        Err(e) if e.contains("could not compile the probe") => {
            println!("cargo:warning=AMX check not run: {} cannot compile AMX code", cxx.display());
            return Ok(format!("not run ({} cannot compile AMX code, so ggml builds none)", cxx.display()));
        }
        Err(e) => return Err(e),
    };
    for flags in OPT_LEVELS {
        let got = probe("patched", &patched, flags)?;
        if bytes(&got) != bytes(&reference) {
            return Err(format!(
                "AMX check failed: {} {} miscompiles ggml's AMX tile-config init \
                 (ggml/src/ggml-cpu/amx/mmq.cpp, ggml_tile_config_init):\n  -O0 hands ldtilecfg  {reference}\n  \
                 {} hands it      {got}\n  A llama.cpp built so crashes (SIGSEGV) or computes wrong results \
                 on AMX CPUs (Sapphire Rapids and later). Use another compiler (CXX=...), or refresh \
                 vendor/patches/0001-*. Skipping the check (LLAMA_SYS_AMX_CHECK=0) is safe only for \
                 machines without AMX.",
                cxx.display(),
                flags.join(" "),
                flags.join(" "),
            ));
        }
    }
    // Whether the carried patch was needed with this compiler (for the build's report).
    let needed = match probe("unpatched", &original, &["-O3"]) {
        Ok(got) if bytes(&got) != bytes(&reference) => "the unpatched code is miscompiled by this compiler",
        Ok(_) => "the unpatched code is compiled correctly too",
        Err(_) => "the unpatched code was not checked",
    };
    Ok(format!("passed with {} at -O2, -O3, -O3 -march=native ({needed})", cxx.display()))
}

/// The probe's translation unit: the tree's `tile_config_t`, its loader helper if the
/// patch added one, and `ggml_tile_config_init` made out-of-line as `probe_init`.
fn probe_unit(mmq: &str) -> Result<String, String> {
    let missing = |what: &str| {
        format!(
            "AMX check: {what} not found in ggml/src/ggml-cpu/amx/mmq.cpp. The tile-config code moved \
             (a llama.cpp other than the pin?): update llama-sys/build/amx_check.rs and \
             vendor/patches/0001-* for it."
        )
    };
    let config = item(mmq, "struct tile_config_t").ok_or_else(|| missing("`struct tile_config_t`"))?;
    let init = item(mmq, "inline void ggml_tile_config_init(").ok_or_else(|| missing("`ggml_tile_config_init`"))?;
    let helper = item(mmq, "static inline void ggml_tile_loadconfig(").unwrap_or_default();
    let init = init.replacen(
        "inline void ggml_tile_config_init",
        "__attribute__((noinline)) static void ggml_tile_config_init",
        1,
    );
    Ok(format!(
        "#include <immintrin.h>\n#include <cstdint>\n{config}\n{helper}\n{init}\nvoid probe_init(void) {{ ggml_tile_config_init(); }}\n"
    ))
}

/// The text from `start` to the `}` (or `};`) that closes its first `{`.
fn item(text: &str, start: &str) -> Option<String> {
    let begin = text.find(start)?;
    let open = begin + text[begin..].find('{')?;
    let mut depth = 0usize;
    for (i, c) in text[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let mut end = open + i + 1;
                    if text[end..].starts_with(';') {
                        end += 1;
                    }
                    return Some(text[begin..end].to_string());
                }
            }
            _ => {}
        }
    }
    None
}
