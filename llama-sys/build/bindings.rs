//! Rust declarations for wrapper.h. By default the committed `src/pregenerated.rs` is
//! used: no libclang, no bindgen to compile. It fits any tree whose headers are the ones
//! it was generated from, which `src/pregenerated.headers` records (one FNV-1a hash per
//! header reachable from wrapper.h). A tree with other headers (`LLAMA_CPP_SRC`, a bumped
//! pin, an edited shim) needs the `bindgen` feature, which runs bindgen on the spot.
//!
//! The bindings do not depend on backend features: wrapper.h has no conditionals and
//! bindgen gets no defines, so one file serves cpu/vulkan/cuda/hip/rpc alike
//! (`check_feature_independent` keeps it that way).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::env;

const WRAPPER: &str = "wrapper.h";
const COMMITTED: &str = "src/pregenerated.rs";
const COMMITTED_HEADERS: &str = "src/pregenerated.headers";

/// Writes `$OUT_DIR/bindings.rs` (and `$OUT_DIR/headers.txt`, the fingerprint of the
/// headers it was made from, which `scripts/regen-bindings.sh` commits beside it).
pub fn emit(include_dirs: &[PathBuf], out_dir: &Path) -> Result<(), String> {
    check_feature_independent()?;
    let headers = fingerprint(include_dirs)?;
    std::fs::write(out_dir.join("headers.txt"), render(&headers)).map_err(|e| format!("writing headers.txt: {e}"))?;
    if cfg!(feature = "bindgen") && !env::flag("LLAMA_SYS_PREGENERATED_BINDINGS")?.unwrap_or(false) {
        return generate(include_dirs, out_dir);
    }
    check_committed_fit(&headers)?;
    copy_committed(out_dir)
}

pub fn copy_committed(out_dir: &Path) -> Result<(), String> {
    std::fs::copy(COMMITTED, out_dir.join("bindings.rs")).map(|_| ()).map_err(|e| format!("copying {COMMITTED}: {e}"))
}

/// The committed bindings fit only the headers they were generated from.
fn check_committed_fit(headers: &BTreeMap<String, u64>) -> Result<(), String> {
    let text = std::fs::read_to_string(COMMITTED_HEADERS).map_err(|e| format!("reading {COMMITTED_HEADERS}: {e}"))?;
    let committed = parse(&text)?;
    let mut differ: Vec<String> = Vec::new();
    for (name, hash) in headers {
        match committed.get(name) {
            Some(h) if h == hash => {}
            Some(_) => differ.push(format!("{name} (changed)")),
            None => differ.push(format!("{name} (new)")),
        }
    }
    differ.extend(committed.keys().filter(|n| !headers.contains_key(*n)).map(|n| format!("{n} (gone)")));
    if differ.is_empty() {
        return Ok(());
    }
    Err(format!(
        "the headers of this llama.cpp tree differ from those the committed bindings \
         ({COMMITTED}) were generated from: {}.\n  fix: enable llama-sys's `bindgen` feature \
         (`--features llama-sys/bindgen`, or `bindgen` on llama-rs; needs libclang, e.g. \
         `apt-get install libclang-dev`) to generate bindings for this tree, or run \
         scripts/regen-bindings.sh if you changed the pin or wrapper.h on purpose.",
        differ.join(", ")
    ))
}

/// Every header wrapper.h reaches through `#include "..."`, found in the shim's folder
/// or the include dirs, with the FNV-1a 64 hash of its bytes. Keys are paths relative to
/// the folder each was found in. System headers (`<...>`) are not followed.
pub fn fingerprint(include_dirs: &[PathBuf]) -> Result<BTreeMap<String, u64>, String> {
    let mut roots: Vec<PathBuf> = vec![PathBuf::from(".")];
    roots.extend(include_dirs.iter().cloned());
    let mut seen = BTreeMap::new();
    let mut todo = vec![WRAPPER.to_string()];
    while let Some(name) = todo.pop() {
        if seen.contains_key(&name) {
            continue;
        }
        let path = roots
            .iter()
            .map(|r| r.join(&name))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("header {name:?} (reached from {WRAPPER}) not found in {roots:?}"))?;
        let bytes = std::fs::read(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        println!("cargo:rerun-if-changed={}", path.display());
        for line in String::from_utf8_lossy(&bytes).lines() {
            if let Some(rest) = line.trim_start().strip_prefix("#include") {
                let rest = rest.trim();
                if let Some(inner) = rest.strip_prefix('"').and_then(|r| r.split('"').next()) {
                    // Nested includes resolve against the include dirs (the shim header
                    // lives in-tree and names llama.h by its plain name).
                    todo.push(inner.to_string());
                }
            }
        }
        seen.insert(name, fnv1a(&bytes));
    }
    seen.remove(WRAPPER);
    Ok(seen)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

fn render(headers: &BTreeMap<String, u64>) -> String {
    let mut s = String::from(
        "# Headers src/pregenerated.rs was generated from: path, FNV-1a 64 of the file.\n\
         # Written by scripts/regen-bindings.sh; the build compares it with the tree it builds.\n",
    );
    for (name, hash) in headers {
        s.push_str(&format!("{name} {hash:016x}\n"));
    }
    s
}

fn parse(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut map = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let (name, hash) = line.rsplit_once(' ').ok_or_else(|| format!("{COMMITTED_HEADERS}: bad line {line:?}"))?;
        let hash = u64::from_str_radix(hash, 16).map_err(|_| format!("{COMMITTED_HEADERS}: bad hash in {line:?}"))?;
        map.insert(name.to_string(), hash);
    }
    Ok(map)
}

/// One bindings file for every backend feature holds only while wrapper.h selects
/// nothing by configuration.
fn check_feature_independent() -> Result<(), String> {
    let text = std::fs::read_to_string(WRAPPER).map_err(|e| format!("reading {WRAPPER}: {e}"))?;
    match text.lines().find(|l| l.trim_start().starts_with("#if")) {
        Some(l) => Err(format!(
            "{WRAPPER} has a conditional ({l:?}): the committed bindings are shared by every \
             backend feature, so wrapper.h must include the same headers for all of them"
        )),
        None => Ok(()),
    }
}

#[cfg(feature = "bindgen")]
fn generate(include_dirs: &[PathBuf], out_dir: &Path) -> Result<(), String> {
    let mut b = bindgen::Builder::default()
        .header(WRAPPER)
        .allowlist_function("(llama|ggml|gguf|mtmd|llama_rs)_.*")
        .allowlist_type("(llama|ggml|gguf|mtmd)_.*")
        .allowlist_var("(LLAMA|GGML|GGUF|MTMD)_.*")
        .prepend_enum_name(false)
        .derive_debug(true)
        .layout_tests(false)
        .generate_comments(true)
        .use_core();
    for d in include_dirs {
        b = b.clang_arg(format!("-I{}", d.display()));
    }
    // bindgen panics when libclang is missing; turn that into an actionable message.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || b.generate()));
    std::panic::set_hook(prev);
    let bindings = match result {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Err(format!("bindgen could not parse {WRAPPER}: {e}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!(
                "bindgen failed: {msg}\n  fix: install libclang (`apt-get install libclang-dev`) or \
                 set LIBCLANG_PATH to its directory; or build without the `bindgen` feature \
                 (the committed bindings fit the pinned source)."
            ));
        }
    };
    bindings.write_to_file(out_dir.join("bindings.rs")).map_err(|e| format!("writing bindings: {e}"))
}

#[cfg(not(feature = "bindgen"))]
fn generate(_: &[PathBuf], _: &Path) -> Result<(), String> {
    unreachable!("generate is only called with the bindgen feature")
}
