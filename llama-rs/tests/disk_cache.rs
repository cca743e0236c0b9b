//! The prompt cache on disk with the real default model: exact reuse (cold == warm ==
//! restored after a restart, bit for bit), engine restarts, keys that never cross
//! models / KV types / adapters, and hostile files: flipped bytes, truncation, a foreign
//! version, entries swapped between models, a full disk, a writer killed mid-write, two
//! processes on one directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use llama_rs::{
    ContextParams, DiskCache, Engine, EngineParams, GenerateParams, KvType, Model, Request, SamplerConfig, Session,
};
use llama_testkit::fixtures::model;

fn system() -> String {
    "You are a careful assistant. You answer in one short sentence and never guess. ".repeat(6)
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llama-rs-disk-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn entries(d: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "lrkv"))
        .collect();
    v.sort();
    v
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { max_tokens: Some(n), sampler: SamplerConfig::greedy(), logprobs: Some(4), ..Default::default() }
}

fn session(m: &Model, p: ContextParams) -> Session {
    let mut s = Session::new(m.context(p).unwrap()).unwrap();
    s.set_exact_reuse(true);
    s
}

fn params() -> ContextParams {
    ContextParams::default().n_ctx(1024).n_batch(256).n_ubatch(32)
}

/// The text and every top-4 log-probability (bit patterns) of a greedy run.
type Run = (String, Vec<Vec<(i32, u32)>>);

fn run(s: &mut Session, prompt: &str) -> Run {
    let pieces: Vec<_> = s.generate(prompt, &greedy(12)).unwrap().collect::<Result<_, _>>().unwrap();
    let text = pieces.iter().map(|p| p.text.as_str()).collect();
    let lps = pieces
        .iter()
        .flat_map(|p| p.logprobs.iter())
        .map(|lp| lp.top.iter().map(|&(t, l)| (t.0, l.to_bits())).collect())
        .collect();
    (text, lps)
}

fn prompt_tokens(s: &Session) -> i32 {
    s.context().perf().prompt_tokens
}

#[test]
fn exact_reuse_gives_the_cold_logits_warm_and_after_a_restart() {
    let m = model();
    let (p1, p2) =
        (format!("{}Question: what is two plus two?", system()), format!("{}Question: name a colour.", system()));
    let n2 = m.vocab().tokenize(&p2, true, false).unwrap().len() as i32;
    let cold = run(&mut session(m, params()), &p2);

    // Warm: the shared system prompt stays in the cache, cut back to whole micro-batches.
    let mut s = session(m, params());
    run(&mut s, &p1);
    let before = prompt_tokens(&s);
    let warm = run(&mut s, &p2);
    let decoded = prompt_tokens(&s) - before;
    let p1t = m.vocab().tokenize(&p1, true, false).unwrap();
    let p2t = m.vocab().tokenize(&p2, true, false).unwrap();
    let common = p1t.iter().zip(&p2t).take_while(|(a, b)| a == b).count();
    eprintln!(
        "exact reuse: {n2}-token prompt sharing {common} tokens: {decoded} decoded (plain reuse: {})",
        n2 as usize - common.min(n2 as usize - 1)
    );
    assert!(decoded < n2 - 64 && decoded < 32 + 20, "decoded {decoded} of {n2} prompt tokens");
    assert_eq!(warm, cold, "warm run differs from the cold run");

    // Restored in a new context ("after a restart") from the disk cache.
    let d = dir("exact");
    let cache = DiskCache::open(&d, 1 << 30).unwrap();
    assert!(s.save_to(&cache).unwrap());
    assert!(!s.save_to(&cache).unwrap(), "the same tokens twice are one entry");
    drop(cache);
    let cache = DiskCache::open(&d, 1 << 30).unwrap();
    let mut fresh = session(m, params());
    let n = fresh.restore_from(&cache, &m.vocab().tokenize(&p2, true, false).unwrap()).unwrap();
    assert!(n >= 64 && n % 32 == 0, "restored {n} tokens");
    let restored = run(&mut fresh, &p2);
    assert_eq!(prompt_tokens(&fresh), n2 - n as i32, "only the rest of the prompt is decoded");
    assert_eq!(restored, cold, "restored run differs from the cold run");
    let st = cache.stats();
    assert_eq!((st.hits, st.rejected), (1, 0), "{st:?}");
    assert!(st.bytes_read > 0 && st.restore_ms > 0.0, "{st:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_engine_restart_restores_the_prefix_from_disk() {
    let d = dir("engine");
    let params = EngineParams {
        n_threads: 2,
        slots: 2,
        n_ctx: 2048,
        disk_cache: Some(d.clone()),
        disk_cache_bytes: 1 << 30,
        // A KV stream per slot: a reused or restored prefix's cells lie in position
        // order either way (docs/ENGINE.md: gaps in the unified pool change the sums).
        kv_unified: false,
        ..Default::default()
    };
    let q = |q: &str| Request::text(format!("{}{q}", system()), greedy(8));
    let e = Engine::new(model(), params.clone()).unwrap();
    let a = e.submit(q("What is the capital of France?")).unwrap().text().unwrap();
    e.submit(q("Name a prime number.")).unwrap().text().unwrap();
    // The same request again reuses all but its last prompt token from memory.
    let warm = e.submit(q("Name a prime number.")).unwrap().text().unwrap();
    assert!(warm.usage.cached_tokens > 100, "{:?}", warm.usage);
    drop(e); // joins the writer: the entries are on disk
    assert!(!entries(&d).is_empty());

    let e = Engine::new(model(), params.clone()).unwrap();
    let b = e.submit(q("Name a prime number.")).unwrap().text().unwrap();
    assert_eq!(b.usage.cached_tokens, warm.usage.cached_tokens, "{:?}", b.usage);
    assert_eq!(b.text, warm.text, "restored from disk vs. reused in memory");
    let again = e.submit(q("What is the capital of France?")).unwrap().text().unwrap();
    assert!(again.usage.cached_tokens > 90 && !a.text.is_empty(), "{:?}", again.usage);
    let disk = e.metrics().disk;
    assert!(disk.hits >= 1 && disk.hit_tokens > 100, "{disk:?}");
    assert_eq!(disk.rejected, 0);
    drop(e);

    // Another KV type never restores what the first engine stored.
    let e = Engine::new(model(), EngineParams { type_k: KvType::Q8_0, ..params }).unwrap();
    let c = e.submit(q("Name a prime number.")).unwrap().text().unwrap();
    assert_eq!(c.usage.cached_tokens, 0, "{:?}", c.usage);
    assert_eq!(e.metrics().disk.hits, 0);
    drop(e);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn keys_separate_models_kv_types_rope_and_adapters() {
    let m = model();
    let key = |p: ContextParams| m.context(p).unwrap().state_key();
    let base = key(params());
    assert_eq!(base, key(params().n_ctx(512)), "the context size does not change KV bytes");
    assert_ne!(base, key(params().kv_types(KvType::Q8_0, KvType::F16)));
    assert_ne!(base, key(params().rope_freq_base(20000.0)));
    assert_ne!(base, key(params().swa_full(!params().swa_full)));

    // A LoRA adapter applied (and its scale) changes the key.
    let path = std::env::temp_dir().join(format!("disk-cache-lora-{}.gguf", std::process::id()));
    let mut w = llama_testkit::GgufWriter::new();
    w.kv_str("general.architecture", "gemma3").kv_str("general.type", "adapter");
    w.kv_str("adapter.type", "lora").kv_f32("adapter.lora.alpha", 1.0);
    w.tensor_f32("blk.0.ffn_up.weight.lora_a", &[640, 1], vec![0.01; 640]).unwrap();
    w.tensor_f32("blk.0.ffn_up.weight.lora_b", &[1, 2048], vec![0.01; 2048]).unwrap();
    w.write(&path).unwrap();
    let lora = llama_rs::LoraAdapter::load(m, &path).unwrap();
    let mut ctx = m.context(params()).unwrap();
    ctx.set_loras(&[(lora.clone(), 0.5)]).unwrap();
    let with = ctx.state_key();
    ctx.set_loras(&[(lora, 1.0)]).unwrap();
    assert!(with != base && ctx.state_key() != with);
    ctx.set_loras(&[]).unwrap();
    assert_eq!(ctx.state_key(), base);
    std::fs::remove_file(&path).unwrap();

    // Another model: its session finds nothing in a directory of Gemma entries.
    let tiny = std::env::temp_dir().join(format!("disk-cache-tiny-{}.gguf", std::process::id()));
    llama_testkit::write_tiny_llama(&tiny).unwrap();
    let other = Model::load(&tiny, Default::default()).unwrap();
    let d = dir("models");
    let cache = DiskCache::open(&d, 1 << 30).unwrap();
    let mut s = session(m, params());
    s.eval(&m.vocab().tokenize(&system(), true, false).unwrap()).unwrap();
    assert!(s.save_to(&cache).unwrap());
    let mut t = Session::new(other.context(ContextParams::default().n_ctx(256)).unwrap()).unwrap();
    let prompt = other.vocab().tokenize(&system(), true, false).unwrap();
    assert_eq!(t.restore_from(&cache, &prompt).unwrap(), 0);
    assert_ne!(other.context(ContextParams::default()).unwrap().state_key(), base);
    std::fs::remove_dir_all(&d).unwrap();
    std::fs::remove_file(&tiny).unwrap();
}

/// A directory holding one good entry of the system prompt; returns it and the prompt.
fn one_entry(name: &str) -> (PathBuf, PathBuf, Vec<llama_rs::Token>) {
    let m = model();
    let d = dir(name);
    let cache = DiskCache::open(&d, 1 << 30).unwrap();
    let prompt = m.vocab().tokenize(&format!("{}Question: why?", system()), true, false).unwrap();
    let mut s = Session::new(m.context(params()).unwrap()).unwrap();
    s.eval(&prompt).unwrap();
    assert!(s.save_to(&cache).unwrap());
    let e = entries(&d).pop().unwrap();
    (d, e, prompt)
}

/// Restores from a damaged directory: nothing restored, the entry gone, no crash, and
/// the session still answers.
fn assert_refused(d: &Path, prompt: &[llama_rs::Token], what: &str) {
    let m = model();
    let cache = DiskCache::open(d, 1 << 30).unwrap();
    let mut s = Session::new(m.context(params()).unwrap()).unwrap();
    assert_eq!(s.restore_from(&cache, prompt).unwrap(), 0, "{what}: restored");
    assert!(entries(d).is_empty(), "{what}: the bad entry is still there");
    assert_eq!(cache.stats().rejected, 1, "{what}");
    let text = s.generate(prompt.to_vec(), &greedy(2)).unwrap().text().unwrap().0;
    assert!(!text.is_empty(), "{what}");
}

#[test]
fn damaged_foreign_and_hostile_entries_are_removed_never_restored() {
    let (d, e, prompt) = one_entry("hostile");
    let good = std::fs::read(&e).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for at in [0, 5, 9, 17, 30, 41, 60, good.len() / 2, good.len() - 1] {
        let mut b = good.clone();
        b[at] ^= 0x41;
        cases.push((format!("byte {at} flipped"), b));
    }
    for n in [10, 56, 200, good.len() / 3, good.len() - 1] {
        cases.push((format!("truncated to {n} bytes"), good[..n].to_vec()));
    }
    let mut longer = good.clone();
    longer.extend_from_slice(b"trailing");
    cases.push(("trailing bytes".into(), longer));
    cases.push(("empty".into(), Vec::new()));
    for (what, bytes) in cases {
        std::fs::write(&e, &bytes).unwrap();
        assert_refused(&d, &prompt, &what);
    }

    // Checksummed but hostile: a payload that is not a state, and a real state whose
    // llama.cpp part is damaged (written through the public API, so the checksum holds).
    let m = model();
    let key = m.context(params()).unwrap().state_key();
    let start = 56 + prompt.len() * 4;
    let state = &good[start..];
    let mut damaged = state.to_vec();
    let mid = damaged.len() - 4096;
    for b in &mut damaged[mid..mid + 64] {
        *b = 0xff;
    }
    let mut counts = state.to_vec();
    // Our state header (magic, version, kind, fingerprint, tokens, length), then llama.cpp's.
    let inner = 4 + 4 + 1 + 40 + 8 + prompt.len() * 4 + 8;
    counts[inner..inner + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    for (what, payload) in
        [("not a state", vec![7u8; 5000]), ("damaged KV data", damaged), ("huge counts in llama.cpp's header", counts)]
    {
        let cache = DiskCache::open(&d, 1 << 30).unwrap();
        assert!(cache.write(key, &prompt, (0, 0), &payload).unwrap());
        drop(cache);
        let cache = DiskCache::open(&d, 1 << 30).unwrap();
        let mut s = Session::new(m.context(params()).unwrap()).unwrap();
        let n = s.restore_from(&cache, &prompt).unwrap();
        // Damaged KV values are still KV values: llama.cpp cannot tell. Everything it
        // can tell is refused; either way the session answers.
        if what != "damaged KV data" {
            assert_eq!(n, 0, "{what}");
            assert!(entries(&d).is_empty(), "{what}");
        }
        assert!(!s.generate(prompt.clone(), &greedy(2)).unwrap().text().unwrap().0.is_empty());
        cache.clear().unwrap();
    }

    // An entry of another model renamed to this model's key.
    let tiny = std::env::temp_dir().join(format!("disk-cache-tiny2-{}.gguf", std::process::id()));
    llama_testkit::write_tiny_llama(&tiny).unwrap();
    let other = Model::load(&tiny, Default::default()).unwrap();
    let od = dir("hostile-other");
    let oc = DiskCache::open(&od, 1 << 30).unwrap();
    let mut t = Session::new(other.context(ContextParams::default().n_ctx(256)).unwrap()).unwrap();
    t.eval(&prompt[..40].iter().map(|t| llama_rs::Token(t.0 % other.n_vocab())).collect::<Vec<_>>()).unwrap();
    assert!(t.save_to(&oc).unwrap());
    std::fs::copy(entries(&od).pop().unwrap(), &e).unwrap();
    assert_refused(&d, &prompt, "another model's entry under this model's name");
    std::fs::remove_dir_all(&od).unwrap();
    std::fs::remove_file(&tiny).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_bound_evicts_least_recently_used_and_extended_entries_go() {
    let m = model();
    let d = dir("bound");
    let key = m.context(params()).unwrap().state_key();
    let big = vec![1u8; 300_000];
    let cache = DiskCache::open(&d, 1_000_000).unwrap();
    let toks = |n: i32, base: i32| (0..n).map(|i| llama_rs::Token(base + i)).collect::<Vec<_>>();
    assert!(cache.write(key, &toks(10, 100), (0, 0), &big).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert!(cache.write(key, &toks(10, 200), (0, 0), &big).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert!(cache.write(key, &toks(10, 300), (0, 0), &big).unwrap());
    // Touch the oldest (a hit), then a fourth entry evicts the least recently used.
    let f = cache.find(key, &toks(10, 100)).unwrap();
    assert_eq!(f.common, 10);
    cache.read(key, &f).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(cache.write(key, &toks(10, 400), (0, 0), &big).unwrap());
    assert!(cache.find(key, &toks(10, 200)).is_none(), "the least recently used entry stays");
    assert!(cache.find(key, &toks(10, 100)).is_some(), "a recently read entry went");
    assert_eq!(cache.stats().evictions, 1);
    assert!(cache.usage().0 <= 1_000_000);
    // An entry this one extends is dropped; one larger than the bound is not written.
    assert!(cache.write(key, &toks(20, 300), (0, 0), &big).unwrap());
    assert_eq!(cache.find(key, &toks(10, 300)).unwrap().tokens.len(), 20);
    assert!(!cache.write(key, &toks(5, 900), (0, 0), &vec![0u8; 2_000_000]).unwrap());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Runs one test of this file in a child process with `role` set.
fn child(test: &str, role: &str, d: &Path) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([test, "--exact", "--nocapture", "--test-threads=1"]).env("DISK_CACHE_ROLE", role).env("DISK_CACHE_DIR", d);
    c
}

fn role() -> Option<(String, PathBuf)> {
    Some((std::env::var("DISK_CACHE_ROLE").ok()?, std::env::var_os("DISK_CACHE_DIR")?.into()))
}

/// Child role: writes entries of 4 MB (fake states) forever, or until the bound's
/// errors stop it.
fn writer_loop(d: &Path, tag: i32, limit_file_size: bool) {
    if limit_file_size {
        // A disk that fills up: writes beyond 1 MB fail (EFBIG) like a full disk (ENOSPC).
        // SAFETY: plain libc calls on this (child) process.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 1 << 20, rlim_max: 1 << 20 };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
        }
    }
    let cache = DiskCache::open(d, 64 << 20).unwrap();
    let payload = vec![tag as u8; 4 << 20];
    let mut errors = 0;
    for i in 0.. {
        let tokens: Vec<_> = (0..64).map(|j| llama_rs::Token(tag * 1_000_000 + i * 100 + j)).collect();
        match cache.write(7, &tokens, (0, 0), &payload) {
            Ok(_) => {}
            Err(e) => {
                assert!(limit_file_size, "{e}");
                errors += 1;
                // A full disk fails the write, never the cache: smaller entries still go in.
                assert!(cache.write(7, &tokens[..2], (0, 0), b"small").unwrap());
                if errors == 3 {
                    assert_eq!(cache.stats().write_errors, 3);
                    return;
                }
            }
        }
        if i > 40 && tag == 2 {
            return;
        }
    }
}

/// Every entry in `d` reads back whole.
fn all_entries_whole(d: &Path) -> usize {
    let cache = DiskCache::open(d, 1 << 30).unwrap();
    let mut n = 0;
    for p in entries(d) {
        let bytes = std::fs::read(&p).unwrap();
        let n_tok = u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize;
        let tokens: Vec<_> = bytes[56..56 + n_tok * 4]
            .chunks_exact(4)
            .map(|c| llama_rs::Token(i32::from_le_bytes(c.try_into().unwrap())))
            .collect();
        let f = cache.find(7, &tokens).unwrap();
        cache.read(7, &f).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        n += 1;
    }
    assert_eq!(cache.stats().rejected, 0);
    n
}

#[test]
fn writers_killed_mid_write_full_disks_and_two_processes_leave_a_usable_cache() {
    if let Some((role, d)) = role() {
        match role.as_str() {
            "forever" => writer_loop(&d, 1, false),
            "bounded" => writer_loop(&d, 2, false),
            "full" => writer_loop(&d, 3, true),
            _ => unreachable!(),
        }
        return;
    }
    let test = "writers_killed_mid_write_full_disks_and_two_processes_leave_a_usable_cache";
    let d = dir("kill");
    std::fs::create_dir_all(&d).unwrap();
    // SIGKILL during writes, repeatedly: at most the entry being written is lost.
    let mut orphans = 0;
    for round in 0..4 {
        let mut c = child(test, "forever", &d).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300 + 170 * round));
        c.kill().unwrap();
        c.wait().unwrap();
        orphans += std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count();
        assert!(all_entries_whole(&d) > 0);
    }
    assert_eq!(
        std::fs::read_dir(&d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .count(),
        0,
        "open() removes dead writers' scratch files ({orphans} seen)"
    );
    // Two processes on one directory: both write under one bound.
    let mut a = child(test, "bounded", &d).spawn().unwrap();
    let mut b = child(test, "bounded", &d).spawn().unwrap();
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    all_entries_whole(&d);
    assert!(DiskCache::open(&d, 1 << 30).unwrap().usage().0 <= (64 << 20) + (4 << 20));
    // A full disk: writes fail, the cache stays usable.
    let out = child(test, "full", &d).output().unwrap();
    llama_testkit::child::assert_not_killed(&out, "the writer on a full disk");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    all_entries_whole(&d);
    std::fs::remove_dir_all(&d).unwrap();
}
