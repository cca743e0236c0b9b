//! The tree CMake builds: a mirror of the source in `OUT_DIR/llama.cpp` with the carried
//! patches of `llama-cpp-src` (vendor/patches/) applied. Unchanged files are hard links
//! (copies across file systems); a patched file is always a file of its own, so the
//! source tree — the pinned one or a user's `LLAMA_CPP_SRC` — is never written. Files
//! whose content did not change are left alone, so ninja's rebuilds stay incremental.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::env;

/// What CMake and the tools build need from the tree (what `llama-cpp-src` publishes,
/// plus `tools/` where present for `scripts/llama-tools.sh`).
const MIRRORED: &[&str] =
    &["CMakeLists.txt", "LICENSE", "cmake", "include", "src", "ggml", "common", "vendor", "licenses", "tools"];

/// Mirrors `src` into `out_dir/llama.cpp`, applies the patches and returns the mirror.
/// `LLAMA_SYS_PATCHES=0` mirrors the tree unchanged (a tree that carries its own fixes;
/// the AMX check still guards the build).
pub fn prepare(src: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let dst = out_dir.join("llama.cpp");
    let patched = if env::flag("LLAMA_SYS_PATCHES")?.unwrap_or(true) { patched_files(src)? } else { BTreeMap::new() };
    let mut wanted = BTreeSet::new();
    for top in MIRRORED {
        let from = src.join(top);
        if from.exists() {
            mirror(&from, &dst.join(top), Path::new(top), &patched, &mut wanted)?;
        }
    }
    // Files the source no longer has (a pin bump) must not linger: CMake globs some dirs.
    for top in MIRRORED {
        remove_stale(&dst.join(top), Path::new(top), &wanted)?;
    }
    Ok(dst)
}

/// Applies every patch to the source's text; returns the new content per relative path.
fn patched_files(src: &Path) -> Result<BTreeMap<PathBuf, String>, String> {
    let mut out: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (name, text) in llama_cpp_src::PATCHES {
        for (rel, diff) in split_files(text).map_err(|e| format!("vendor/patches/{name}: {e}"))? {
            let rel = PathBuf::from(rel);
            let original = match out.get(&rel) {
                Some(t) => t.clone(),
                None => fs::read_to_string(src.join(&rel))
                    .map_err(|e| format!("vendor/patches/{name}: {}: {e}", src.join(&rel).display()))?,
            };
            let patch = diffy::Patch::from_str(diff).map_err(|e| format!("vendor/patches/{name}: {e}"))?;
            match diffy::apply(&original, &patch) {
                Ok(new) => {
                    out.insert(rel, new);
                }
                // The tree already holds the change (upstream took it, or a patched tree
                // was given as LLAMA_CPP_SRC): nothing to do, but say so.
                Err(_) if diffy::apply(&original, &patch.reverse()).is_ok() => {
                    println!("cargo:warning=vendor/patches/{name} is already in {}: skipped", src.display());
                }
                Err(e) => {
                    return Err(format!(
                        "vendor/patches/{name} does not apply to {} ({e}).\n  This llama.cpp differs from \
                         the pin. If it fixes the cause itself (see the patch's header), drop the patch; \
                         otherwise refresh it for this tree. The build does not go on without it: the \
                         patch keeps a known crash out.",
                        src.join(&rel).display()
                    ));
                }
            }
        }
    }
    Ok(out)
}

/// A `git diff` may cover several files: split it into (path, one-file unified diff).
fn split_files(text: &str) -> Result<Vec<(String, &str)>, String> {
    let mut starts: Vec<usize> = Vec::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if line.starts_with("--- ") {
            starts.push(pos);
        }
        pos += line.len();
    }
    if starts.is_empty() {
        return Err("no `--- a/<file>` line: not a unified diff".into());
    }
    let mut files = Vec::new();
    for (i, &s) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        // Cut at the next file's `diff --git` line, if any, so each part is one file.
        let mut part = &text[s..end];
        if let Some(cut) = part.find("\ndiff --git ") {
            part = &part[..cut + 1];
        }
        let path = part
            .lines()
            .nth(1)
            .and_then(|l| l.strip_prefix("+++ b/"))
            .map(|p| p.split('\t').next().unwrap_or(p).trim().to_string())
            .ok_or("each `--- a/` line must be followed by `+++ b/<path>`")?;
        files.push((path, part));
    }
    Ok(files)
}

fn mirror(
    from: &Path,
    to: &Path,
    rel: &Path,
    patched: &BTreeMap<PathBuf, String>,
    wanted: &mut BTreeSet<PathBuf>,
) -> Result<(), String> {
    let io = |e: std::io::Error, p: &Path| format!("mirroring the llama.cpp tree: {}: {e}", p.display());
    let meta = fs::symlink_metadata(from).map_err(|e| io(e, from))?;
    if meta.is_dir() {
        fs::create_dir_all(to).map_err(|e| io(e, to))?;
        for entry in fs::read_dir(from).map_err(|e| io(e, from))? {
            let entry = entry.map_err(|e| io(e, from))?;
            let name = entry.file_name();
            mirror(&entry.path(), &to.join(&name), &rel.join(&name), patched, wanted)?;
        }
        return Ok(());
    }
    wanted.insert(rel.to_path_buf());
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(|e| io(e, parent))?;
    }
    if let Some(text) = patched.get(rel) {
        // Never through a hard link: that would write the source tree.
        if fs::read_to_string(to).ok().as_deref() != Some(text.as_str()) {
            let _ = fs::remove_file(to);
            fs::write(to, text).map_err(|e| io(e, to))?;
        }
        return Ok(());
    }
    if same_file(from, to) {
        return Ok(());
    }
    let _ = fs::remove_file(to);
    if fs::hard_link(from, to).is_err() {
        fs::copy(from, to).map_err(|e| io(e, to))?;
    }
    Ok(())
}

/// Same inode, or (for copies) same bytes.
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(ma), Ok(mb)) = (fs::metadata(a), fs::metadata(b)) else { return false };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if ma.dev() == mb.dev() && ma.ino() == mb.ino() {
            return true;
        }
    }
    ma.len() == mb.len() && fs::read(a).ok() == fs::read(b).ok()
}

fn remove_stale(dir: &Path, rel: &Path, wanted: &BTreeSet<PathBuf>) -> Result<(), String> {
    let Ok(meta) = fs::symlink_metadata(dir) else { return Ok(()) };
    if !meta.is_dir() {
        if !wanted.contains(rel) {
            fs::remove_file(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
        remove_stale(&entry.path(), &rel.join(entry.file_name()), wanted)?;
    }
    Ok(())
}
