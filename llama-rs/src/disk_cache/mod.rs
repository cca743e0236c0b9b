//! A prompt cache on disk: sequences' KV states kept in a directory and found again by
//! their tokens — by this process or a later one, or by several processes at once.
//!
//! - **Keyed**: an entry belongs to one [`Context::state_key`] (model file contents, KV
//!   types, RoPE/YaRN settings, SWA mode, LoRA and control-vector set, llama.cpp
//!   version) and one exact token list; a restore never applies KV to anything else.
//! - **Crash-safe**: an entry is written to a scratch file, synced and renamed, so a
//!   reader sees it whole or not at all; a writer killed mid-write leaves only its scratch
//!   file, removed by the next [`DiskCache::open`].
//! - **Checked**: every entry carries an xxh3 checksum of all its bytes; a truncated,
//!   corrupted, foreign-version or hostile entry is deleted, never restored.
//! - **Bounded**: at most `max_bytes` of entries; least recently used (file mtime, which a
//!   restore refreshes) go first. Writers take an `flock` on `DIR/.lock`, so processes
//!   sharing a directory keep one bound; readers take none (a file removed while open
//!   stays readable).
//!
//! ```
//! # use llama_rs::*;
//! # let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
//! let dir = std::env::temp_dir().join(format!("doc-disk-cache-{}", std::process::id()));
//! let cache = DiskCache::open(&dir, 256 << 20)?;
//! let prompt = model.vocab().tokenize("A long shared system prompt", true, false)?;
//! let mut s = Session::new(model.context(ContextParams::default().n_ctx(256))?)?;
//! s.eval(&prompt)?;
//! s.save_to(&cache)?;                                   // written once, kept across runs
//! let mut fresh = Session::new(model.context(ContextParams::default().n_ctx(256))?)?;
//! let n = fresh.restore_from(&cache, &prompt)?;         // cells restored, not recomputed
//! assert!(n > 0 && n < prompt.len());
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), llama_rs::Error>(())
//! ```

mod entry;

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::context::prefix::{common_prefix, window_present};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::token::{SeqId, Token};

const EXT: &str = "lrkv";

/// Counters of one [`DiskCache`] handle (this process's reads and writes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct DiskCacheStats {
    /// Restores from disk.
    pub hits: u64,
    /// Tokens those restores brought back.
    pub hit_tokens: u64,
    /// Entries written.
    pub stores: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Bytes read by restores.
    pub bytes_read: u64,
    /// Entries removed to stay within the bound.
    pub evictions: u64,
    /// Entries found damaged, foreign or refused by llama.cpp, and removed.
    pub rejected: u64,
    /// Writes that failed (a full disk, permissions); the cache stays usable.
    pub write_errors: u64,
    /// Milliseconds spent restoring (read + checks + copy into the KV cache).
    pub restore_ms: f64,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    hit_tokens: AtomicU64,
    stores: AtomicU64,
    bytes_written: AtomicU64,
    bytes_read: AtomicU64,
    evictions: AtomicU64,
    rejected: AtomicU64,
    write_errors: AtomicU64,
    restore_us: AtomicU64,
}

/// An entry that shares a prefix with a prompt (from [`DiskCache::find`]).
#[derive(Debug, Clone)]
pub struct Found {
    name: String,
    /// The entry's tokens.
    pub tokens: Arc<[Token]>,
    /// Length of the prefix it shares with the prompt.
    pub common: usize,
    /// Leading tokens computed as whole micro-batches from position 0 (see
    /// [`Session::set_exact_reuse`](crate::Session::set_exact_reuse)), and the
    /// micro-batch size.
    pub exact: (usize, usize),
}

/// A directory of saved sequence states (module docs).
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    lock: File,
    /// Headers of entries seen, by file name (entries never change under a name: the
    /// name is the hash of key and tokens, and a rewrite holds the same tokens).
    known: Mutex<HashMap<String, Known>>,
    n: Counters,
}

impl std::fmt::Debug for DiskCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskCache").field("dir", &self.dir).field("max_bytes", &self.max_bytes).finish()
    }
}

/// What an entry's header said (its tokens, exact prefix and micro-batch size).
#[derive(Clone)]
struct Known {
    tokens: Arc<[Token]>,
    exact: (usize, usize),
}

/// An exclusive `flock` held until dropped.
struct Locked<'a>(&'a File);

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // SAFETY: a valid open descriptor; unlocking has no other precondition.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.into(), source }
}

impl DiskCache {
    /// Opens (creating) a cache directory bounded to `max_bytes` of entries, and removes
    /// scratch files that writers killed mid-write left behind.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64) -> Result<DiskCache> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join(".lock");
        let lock = File::options().create(true).truncate(false).write(true).open(&lock_path).map_err(io(&lock_path))?;
        let cache = DiskCache { dir, max_bytes, lock, known: Mutex::default(), n: Counters::default() };
        {
            let _g = cache.locked()?;
            cache.remove_orphans();
        }
        Ok(cache)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bound on entries' bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    fn locked(&self) -> Result<Locked<'_>> {
        loop {
            // SAFETY: a valid open descriptor.
            if unsafe { libc::flock(self.lock.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Locked(&self.lock));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Io { path: self.dir.join(".lock"), source: e });
            }
        }
    }

    /// Scratch files (`.<name>.<pid>-<n>.partial`) of processes that no longer run.
    fn remove_orphans(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".partial")) else { continue };
            let pid = stem.rsplit_once('.').and_then(|(_, p)| p.split_once('-')).and_then(|(p, _)| p.parse().ok());
            let alive = |pid: libc::pid_t| {
                // SAFETY: signal 0 only checks that the process exists.
                unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
            };
            if pid.is_some_and(|p| !alive(p)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// Entries on disk: (file name, bytes, mtime).
    fn entries(&self) -> Vec<(String, u64, SystemTime)> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !name.ends_with(EXT) || name.starts_with('.') {
                    return None;
                }
                let m = e.metadata().ok()?;
                m.is_file().then(|| (name, m.len(), m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
            })
            .collect()
    }

    fn file_name(key: u64, tokens: &[Token]) -> String {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&key.to_le_bytes());
        for t in tokens {
            h.update(&t.0.to_le_bytes());
        }
        format!("{key:016x}-{:016x}.{EXT}", h.digest())
    }

    /// Removes a damaged or refused entry.
    fn reject(&self, name: &str, why: &Error) {
        log::warn!("disk cache: removing {name}: {why}");
        let _ = std::fs::remove_file(self.dir.join(name));
        self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
        self.n.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// The entry of `key` sharing the longest prefix with `tokens` (ties: the shorter
    /// entry, which costs less to read). Headers are read once per entry and remembered.
    pub fn find(&self, key: u64, tokens: &[Token]) -> Option<Found> {
        let prefix = format!("{key:016x}-");
        let mut best: Option<Found> = None;
        for (name, _, _) in self.entries() {
            if !name.starts_with(&prefix) {
                continue;
            }
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).get(&name).cloned();
            let Known { tokens: toks, exact } = match known {
                Some(k) => k,
                None => {
                    let Ok(mut f) = File::open(self.dir.join(&name)) else { continue };
                    match entry::read_tokens(&mut f) {
                        Ok((h, t)) if h.key == key => {
                            let k = Known { tokens: Arc::from(t), exact: (h.exact, h.ubatch) };
                            self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), k.clone());
                            k
                        }
                        Ok(_) => {
                            self.reject(&name, &Error::InvalidState("key differs from its name".into()));
                            continue;
                        }
                        Err(e) => {
                            self.reject(&name, &e);
                            continue;
                        }
                    }
                }
            };
            let common = common_prefix(&toks, tokens);
            let better = match &best {
                None => common > 0,
                Some(b) => common > b.common || (common == b.common && toks.len() < b.tokens.len()),
            };
            if better {
                best = Some(Found { name, tokens: toks, common, exact });
            }
        }
        best
    }

    /// Reads and checks a found entry; returns the saved sequence state. A damaged entry
    /// is removed and reported as `InvalidState`.
    pub fn read(&self, key: u64, found: &Found) -> Result<Vec<u8>> {
        let (mut bytes, start) = self.read_entry(key, found)?;
        bytes.drain(..start);
        Ok(bytes)
    }

    /// The whole entry file, checked, and where its payload starts (no copy of it).
    fn read_entry(&self, key: u64, found: &Found) -> Result<(Vec<u8>, usize)> {
        let path = self.dir.join(&found.name);
        let read = File::open(&path).and_then(|mut f| {
            let len = f.metadata()?.len();
            if len > self.max_bytes {
                // Never written by a cache with this bound: not read into memory either.
                return Ok((Vec::new(), 0));
            }
            entry::read_summed(&mut f, len)
        });
        let (bytes, sum) = match read {
            Ok(r) => r,
            Err(e) => return Err(Error::Io { path, source: e }),
        };
        let checked = entry::decode_summed(&bytes, sum).and_then(|(h, t, payload)| {
            if h.key != key || *t != *found.tokens {
                return Err(Error::InvalidState("disk cache entry: not the entry its name says".into()));
            }
            Ok(bytes.len() - payload.len())
        });
        let start = match checked {
            Ok(n) => n,
            Err(e) => {
                self.reject(&found.name, &e);
                return Err(e);
            }
        };
        self.n.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // Recently used: the last to be evicted.
        if let Ok(f) = File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Ok((bytes, start))
    }

    /// Whether an entry of `key` holds exactly `tokens` or starts with them.
    pub fn covers(&self, key: u64, tokens: &[Token]) -> bool {
        self.find(key, tokens).is_some_and(|f| f.common == tokens.len())
    }

    /// Stores `state` (a [`Context::save_seq_state`] of `tokens`) under `key`, then
    /// evicts least recently used entries down to the bound. Entries of `key` that
    /// `tokens` extends are dropped (this one serves their prompts too). `Ok(false)`:
    /// not stored (larger than the bound, or already there).
    pub fn write(&self, key: u64, tokens: &[Token], exact: (usize, usize), state: &[u8]) -> Result<bool> {
        let name = Self::file_name(key, tokens);
        let path = self.dir.join(&name);
        let bytes = entry::encode(key, tokens, exact.0, exact.1, state);
        if bytes.len() as u64 > self.max_bytes || path.exists() {
            return Ok(false);
        }
        let _g = self.locked()?;
        if let Err(e) = Self::write_file(&path, &bytes) {
            self.n.write_errors.fetch_add(1, Ordering::Relaxed);
            return Err(e);
        }
        self.n.stores.fetch_add(1, Ordering::Relaxed);
        self.n.bytes_written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone(), Known { tokens: Arc::from(tokens), exact });
        self.evict(key, &name, tokens);
        Ok(true)
    }

    fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
        let (tmp, mut f) = crate::tempfile::create_beside(path)?;
        let r = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Io { path: path.into(), source: e });
        }
        drop(f);
        crate::tempfile::persist(&tmp, path)?;
        // The rename itself is durable once the directory is synced.
        if let Some(d) = path.parent().and_then(|d| File::open(d).ok()) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Keeps entries within the bound (oldest first out); `just` (just written) stays.
    fn evict(&self, key: u64, just: &str, tokens: &[Token]) {
        let mut all = self.entries();
        let prefix = format!("{key:016x}-");
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.retain(|(name, _, _)| {
            let extended = name != just
                && name.starts_with(&prefix)
                && known.get(name).is_some_and(|k| tokens.len() > k.tokens.len() && tokens.starts_with(&k.tokens));
            if extended {
                let _ = std::fs::remove_file(self.dir.join(name));
            }
            !extended
        });
        let mut used: u64 = all.iter().map(|e| e.1).sum();
        all.sort_by_key(|e| e.2);
        for (name, len, _) in all {
            if used <= self.max_bytes {
                break;
            }
            if name == just {
                continue;
            }
            if std::fs::remove_file(self.dir.join(&name)).is_ok() {
                used -= len;
                self.n.evictions.fetch_add(1, Ordering::Relaxed);
                self.known.lock().unwrap_or_else(|e| e.into_inner()).remove(&name);
            }
        }
    }

    /// Bytes and number of entries on disk now (all keys).
    pub fn usage(&self) -> (u64, usize) {
        let all = self.entries();
        (all.iter().map(|e| e.1).sum(), all.len())
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        let _g = self.locked()?;
        for (name, _, _) in self.entries() {
            let _ = std::fs::remove_file(self.dir.join(name));
        }
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clear();
        Ok(())
    }

    /// This handle's counters.
    pub fn stats(&self) -> DiskCacheStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DiskCacheStats {
            hits: g(&self.n.hits),
            hit_tokens: g(&self.n.hit_tokens),
            stores: g(&self.n.stores),
            bytes_written: g(&self.n.bytes_written),
            bytes_read: g(&self.n.bytes_read),
            evictions: g(&self.n.evictions),
            rejected: g(&self.n.rejected),
            write_errors: g(&self.n.write_errors),
            restore_ms: g(&self.n.restore_us) as f64 / 1e3,
        }
    }

    /// Saves sequence `seq` of `ctx` (holding `tokens` from position 0) unless an entry
    /// already starts with them. `exact`: see [`Found::exact`].
    pub fn store_seq(&self, ctx: &mut Context, seq: SeqId, tokens: &[Token], exact: (usize, usize)) -> Result<bool> {
        let key = ctx.state_key();
        if tokens.is_empty() || self.covers(key, tokens) {
            return Ok(false);
        }
        let state = ctx.save_seq_state(seq, tokens)?;
        self.write(key, tokens, exact, &state)
    }

    /// Restores into sequence `seq` (cleared first) the entry sharing the longest prefix
    /// with `prompt`, when it gives more than `at_least` tokens (limited to
    /// `limit(found)`); returns the tokens now cached and how many of them are exact
    /// ([`Found::exact`], for this context's micro-batch size). An entry llama.cpp
    /// refuses is removed and the sequence left empty (`Ok(Some((0, 0)))`). `None`:
    /// nothing worth it.
    pub fn restore_seq(
        &self,
        ctx: &mut Context,
        seq: SeqId,
        prompt: &[Token],
        at_least: usize,
        limit: impl Fn(&Found) -> usize,
    ) -> Result<Option<(usize, usize)>> {
        let t0 = Instant::now();
        let key = ctx.state_key();
        let Some(found) = self.find(key, prompt) else { return Ok(None) };
        let n = limit(&found).min(found.common);
        if n <= at_least {
            return Ok(None);
        }
        let (bytes, start) = match self.read_entry(key, &found) {
            Ok(s) => s,
            Err(e) if e.kind() == crate::ErrorKind::Corrupt => return Ok(None),
            Err(e) => return Err(e),
        };
        ctx.seq_rm(Some(seq), ..)?;
        let ok = match ctx.load_seq_state(seq, &bytes[start..]) {
            Ok(t) if *t == *found.tokens => ctx.seq_rm(Some(seq), n as i32..)? && window_present(ctx, seq, n),
            Ok(_) => {
                self.reject(&found.name, &Error::InvalidState("the state's tokens differ from the entry's".into()));
                false
            }
            Err(e) => {
                if e.kind() == crate::ErrorKind::Corrupt {
                    self.reject(&found.name, &e);
                }
                false
            }
        };
        if !ok {
            ctx.seq_rm(Some(seq), ..)?;
            return Ok(Some((0, 0)));
        }
        self.n.hits.fetch_add(1, Ordering::Relaxed);
        self.n.hit_tokens.fetch_add(n as u64, Ordering::Relaxed);
        self.n.restore_us.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
        let exact = if found.exact.1 == ctx.n_ubatch() as usize { found.exact.0.min(n) } else { 0 };
        Ok(Some((n, exact)))
    }
}
