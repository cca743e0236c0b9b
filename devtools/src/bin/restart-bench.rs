//! Time to first token after a server restart, for a request whose long system prompt
//! an earlier process already read: llama-rs-server cold (recomputes), llama-rs-server
//! with `--cache-disk` (restores), llama-server cold (recomputes) and llama-server with
//! its manual slot restore (`--slot-save-path`, `POST /slots/0?action=restore` before the
//! request). Also the disk restore's throughput against the sequential read speed of the
//! same entry file on the same disk (page cache dropped before both where the machine
//! allows it, else both from the page cache; said in the output).
//!
//! ```sh
//! cargo run --release -p llama-devtools --bin restart-bench -- \
//!   --ours target/release/llama-rs-server --theirs "$(scripts/llama-tools.sh)/llama-server"
//! ```

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// llama-rs-server binary.
    #[arg(long)]
    ours: PathBuf,
    /// llama-server binary (same llama.cpp source).
    #[arg(long)]
    theirs: Option<PathBuf>,
    /// Model (default: the fetched chat model).
    #[arg(short, long)]
    model: Option<PathBuf>,
    /// System prompt sizes in tokens.
    #[arg(long, value_delimiter = ',', default_value = "2000,8000")]
    tokens: Vec<usize>,
    /// Repetitions (median reported).
    #[arg(short, long, default_value_t = 3)]
    reps: usize,
    /// Threads for both servers.
    #[arg(short, long, default_value_t = 2)]
    threads: u32,
    /// Extra flags for both servers (e.g. `--flag=-ngl --flag=99` on a GPU).
    #[arg(long = "flag", allow_hyphen_values = true)]
    flags: Vec<String>,
    /// Where entries and slot files go (default: a directory under /var/tmp, on disk).
    #[arg(long)]
    dir: Option<PathBuf>,
}

struct Proc(Child, String);

impl Drop for Proc {
    fn drop(&mut self) {
        // A polite stop (SIGTERM), so the servers end as on a restart; then make sure.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(900)).build().unwrap()
}

fn start(bin: &Path, a: &Args, model: &Path, port: u16, extra: &[String]) -> anyhow::Result<Proc> {
    let child = Command::new(bin)
        .args(["-m", &model.display().to_string(), "-c", "16384", "-np", "1", "-t", &a.threads.to_string()])
        .args(["--port", &port.to_string()])
        .args(&a.flags)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Proc(child, format!("http://127.0.0.1:{port}"));
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(180) {
        if client().get(format!("{}/health", p.1)).send().is_ok_and(|r| r.status().is_success()) {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("{} did not become healthy", bin.display())
}

/// A streamed completion, read to its end; TTFT in ms.
fn ttft(base: &str, prompt: &str) -> anyhow::Result<f64> {
    let body = json!({"prompt": prompt, "max_tokens": 4, "temperature": 0, "stream": true, "cache_prompt": true});
    let t = Instant::now();
    let r = client().post(format!("{base}/v1/completions")).json(&body).send()?;
    anyhow::ensure!(r.status().is_success(), "status {}", r.status());
    let mut first = None;
    for line in BufReader::new(r).lines() {
        let line = line?;
        let Some(d) = line.strip_prefix("data: ") else { continue };
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(d)?;
        if first.is_none() && v["choices"][0]["text"].as_str().is_some_and(|s| !s.is_empty()) {
            first = Some(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    first.ok_or_else(|| anyhow::anyhow!("no text came"))
}

fn post(base: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let r = client().post(format!("{base}{path}")).json(&body).send()?;
    anyhow::ensure!(r.status().is_success(), "{path}: status {}", r.status());
    Ok(r.json()?)
}

fn metric(base: &str, name: &str) -> f64 {
    let text = client().get(format!("{base}/metrics")).send().and_then(|r| r.text()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(f64::NAN)
}

/// Drops the page cache (root on a machine that allows it); whether it worked.
fn drop_caches() -> bool {
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// Sequential read speed of `path` in MB/s (1 MiB reads, as `dd bs=1M` does).
fn read_speed(path: &Path) -> anyhow::Result<f64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (t, mut n) = (Instant::now(), 0usize);
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n as f64 / 1e6 / t.elapsed().as_secs_f64())
}

fn entries(d: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(d)
        .map(|r| r.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "lrkv")).collect())
        .unwrap_or_default()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A system prompt of about `n` tokens of the model's vocabulary.
fn system_prompt(model: &Path, n: usize) -> anyhow::Result<String> {
    let m = llama_rs::Model::load(model, llama_rs::ModelParams::default().vocab_only(true))?;
    let mut s = String::new();
    let mut i = 0;
    while m.vocab().tokenize(&s, true, false)?.len() < n {
        for _ in 0..20 {
            s.push_str(&format!(
                "Rule {i}: when a request mentions item {i}, answer with its code {}. ",
                i * 7919 % 1000
            ));
            i += 1;
        }
    }
    Ok(s)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => llama_testkit::cache_dir().join("models").join(llama_rs_server::state::DEFAULT_CHAT_MODEL),
    };
    let root = a.dir.clone().unwrap_or_else(|| PathBuf::from(format!("/var/tmp/restart-bench-{}", std::process::id())));
    let page_cache_dropped = drop_caches();
    println!(
        "model {}, {} threads, page cache {} before each restart",
        model.display(),
        a.threads,
        if page_cache_dropped { "dropped" } else { "NOT dropped (not permitted here)" }
    );
    println!("| prompt tokens | server | TTFT after restart, ms (median of {}) | vs. recompute |", a.reps);
    println!("|---|---|---|---|");
    let mut port = 18700;
    let mut next_port = || {
        port += 1;
        port
    };
    for &n in &a.tokens {
        let system = system_prompt(&model, n)?;
        let prompt = format!("{system}\nRequest: what is the code of item 3?\nAnswer:");
        let (mut ours_cold, mut ours_disk, mut theirs_cold, mut theirs_slot, mut theirs_slot_total) =
            (vec![], vec![], vec![], vec![], vec![]);
        let (mut restore_mbs, mut read_mbs) = (vec![], vec![]);
        for rep in 0..a.reps {
            let dir = root.join(format!("{n}-{rep}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("slots"))?;
            // llama-rs-server, cold.
            drop_caches();
            let p = start(&a.ours, &a, &model, next_port(), &[])?;
            ours_cold.push(ttft(&p.1, &prompt)?);
            drop(p);
            // llama-rs-server with the disk tier: one process reads, the next restores.
            let flags = vec!["--cache-disk".to_string(), dir.join("cache").display().to_string(), "--metrics".into()];
            let p = start(&a.ours, &a, &model, next_port(), &flags)?;
            ttft(&p.1, &prompt)?;
            drop(p);
            anyhow::ensure!(!entries(&dir.join("cache")).is_empty(), "no disk cache entry was written");
            drop_caches();
            let p = start(&a.ours, &a, &model, next_port(), &flags)?;
            ours_disk.push(ttft(&p.1, &prompt)?);
            let bytes = metric(&p.1, "llama_rs:disk_cache_read_bytes_total");
            let secs = metric(&p.1, "llama_rs:disk_cache_restore_seconds_total");
            restore_mbs.push(bytes / 1e6 / secs);
            drop(p);
            drop_caches();
            let entry = entries(&dir.join("cache")).into_iter().max_by_key(|e| e.metadata().map_or(0, |m| m.len()));
            read_mbs.push(read_speed(&entry.expect("an entry"))?);
            if let Some(theirs) = &a.theirs {
                drop_caches();
                let p = start(theirs, &a, &model, next_port(), &[])?;
                theirs_cold.push(ttft(&p.1, &prompt)?);
                drop(p);
                let flags = vec!["--slot-save-path".to_string(), format!("{}/", dir.join("slots").display())];
                let p = start(theirs, &a, &model, next_port(), &flags)?;
                ttft(&p.1, &prompt)?;
                post(&p.1, "/slots/0?action=save", json!({"filename": "s.bin"}))?;
                drop(p);
                drop_caches();
                let p = start(theirs, &a, &model, next_port(), &flags)?;
                let t = Instant::now();
                post(&p.1, "/slots/0?action=restore", json!({"filename": "s.bin"}))?;
                let restore_ms = t.elapsed().as_secs_f64() * 1e3;
                let first = ttft(&p.1, &prompt)?;
                theirs_slot.push(first);
                theirs_slot_total.push(first + restore_ms);
                drop(p);
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
        let cold = median(ours_cold);
        let row = |who: &str, v: f64, base: f64| println!("| {n} | {who} | {v:.0} | {:.1}x |", base / v);
        row("llama-rs-server, recomputes", cold, cold);
        row("llama-rs-server --cache-disk (restores)", median(ours_disk), cold);
        if !theirs_cold.is_empty() {
            let tc = median(theirs_cold);
            row("llama-server, recomputes", tc, tc);
            row("llama-server, slot restored first (request only)", median(theirs_slot), tc);
            row("llama-server, slot restored first (restore + request)", median(theirs_slot_total), tc);
        }
        println!(
            "|  | disk restore {:.0} MB/s vs. sequential read of the entry {:.0} MB/s ({:.0} %) | | |",
            median(restore_mbs.clone()),
            median(read_mbs.clone()),
            100.0 * median(restore_mbs) / median(read_mbs)
        );
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
