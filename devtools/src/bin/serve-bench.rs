//! llama-rs-server next to llama-server: both started here with the same model and
//! flags, the same streaming client against each (alternating), aggregate generated
//! tokens/s and TTFT p50/p95 at several client counts, a shared-system-prompt scenario,
//! and each server's peak RSS.
//!
//! `--direct`: what the HTTP path costs. The same streaming workload against
//! llama-rs-server and against the very engine the server builds from the same flags
//! (`llama_rs_server::state::load`), called in-process with the same rendered prompts —
//! alternating, so both see the same machine — as throughput, and as CPU time per
//! generated token (the server process's, this process's), which moves less.
//!
//! ```sh
//! cargo run --release -p llama-devtools --bin serve-bench -- \
//!   --ours target/release/llama-rs-server --theirs "$(scripts/llama-tools.sh)/llama-server"
//! cargo run --release -p llama-devtools --bin serve-bench -- --ours target/release/llama-rs-server --direct
//! ```

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    /// llama-rs-server binary.
    #[arg(long)]
    ours: std::path::PathBuf,
    /// llama-server binary.
    #[arg(long)]
    theirs: Option<std::path::PathBuf>,
    /// Model (default: the fetched chat model).
    #[arg(short, long)]
    model: Option<std::path::PathBuf>,
    /// Concurrent streaming clients per run.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    clients: Vec<usize>,
    /// Generated tokens per request.
    #[arg(short = 'n', long, default_value_t = 64)]
    n_gen: usize,
    /// Repetitions (alternating servers).
    #[arg(short, long, default_value_t = 3)]
    reps: usize,
    /// Threads for both servers.
    #[arg(short, long, default_value_t = 2)]
    threads: u32,
    /// Context tokens.
    #[arg(short = 'c', long, default_value_t = 16384)]
    ctx: u32,
    /// KV layout for both servers: `on` (`-kvu`: one pool for all slots, our default) or
    /// `off` (`-no-kvu`: a stream of ctx / slots cells per slot, llama-server's default
    /// with `-np N`).
    #[arg(long = "kv-unified", default_value = "on")]
    kv_unified: String,
    /// Compare the server with its engine called directly (no llama-server).
    #[arg(long)]
    direct: bool,
    /// Another llama-rs-server binary to run beside (e.g. the build before a change),
    /// with the same flags.
    #[arg(long)]
    before: Option<std::path::PathBuf>,
    /// Extra flags for llama-rs-server only (e.g. `--ours-flag=--prefill-step-ms=0`).
    #[arg(long = "ours-flag", allow_hyphen_values = true)]
    ours_flags: Vec<String>,
    /// Skip the shared-system-prompt scenario.
    #[arg(long)]
    no_shared: bool,
    /// Only the shared-system-prompt scenario.
    #[arg(long)]
    shared_only: bool,
    /// Shared-system-prompt scenario: concurrent clients.
    #[arg(long, default_value_t = 8)]
    shared_clients: usize,
    /// Shared-system-prompt scenario: the system prompt's length in tokens (an agent's
    /// instructions and tool definitions, each question short).
    #[arg(long, default_value_t = 2000)]
    shared_tokens: usize,
    /// Also print every request's TTFT (ms, sorted) per run, to see how a burst is served.
    #[arg(long)]
    each: bool,
}

struct Proc {
    child: Child,
    base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Peak resident memory of the process (kB), from /proc.
    fn peak_rss_kb(&self) -> Option<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        s.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
    }
}

fn start(bin: &std::path::Path, model: &std::path::Path, port: u16, a: &Args, slots: usize) -> anyhow::Result<Proc> {
    let extra = if Some(bin) != a.theirs.as_deref() { &a.ours_flags[..] } else { &[] };
    let child = Command::new(bin)
        .args(server_flags(model, a, slots))
        .args(extra)
        .args(["--port", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let p = Proc { child, base: format!("http://127.0.0.1:{port}") };
    let c = reqwest::blocking::Client::new();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if c.get(format!("{}/health", p.base)).send().is_ok_and(|r| r.status().is_success()) {
            return Ok(p);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("{} did not become healthy", bin.display())
}

struct Run {
    agg_tps: f64,
    ttft: Vec<f64>,
    itl: Vec<f64>,
    tokens: usize,
}

/// One streamed request's TTFT (ms), completion tokens and the gaps between its
/// content chunks (ms: inter-token latency as a client sees it).
type Timed = (f64, usize, Vec<f64>);

/// One streamed chat completion.
fn one(base: &str, system: &str, user: &str, n: usize) -> anyhow::Result<Timed> {
    let body = json!({
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        "max_tokens": n, "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
        "ignore_eos": true,
    });
    let t = Instant::now();
    let r = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()?;
    if !r.status().is_success() {
        let st = r.status();
        anyhow::bail!("status {st}: {}", r.text().unwrap_or_default());
    }
    let mut ttft = None;
    let mut tokens = 0;
    let (mut last, mut gaps) = (None::<Instant>, Vec::new());
    for line in BufReader::new(r).lines() {
        let line = line?;
        let Some(d) = line.strip_prefix("data: ") else { continue };
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(d)?;
        if v["choices"][0]["delta"]["content"].as_str().is_some_and(|s| !s.is_empty()) {
            let now = Instant::now();
            ttft.get_or_insert(now.duration_since(t).as_secs_f64() * 1e3);
            if let Some(l) = last {
                gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
            }
            last = Some(now);
        }
        if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
            tokens = u as usize;
        }
    }
    Ok((ttft.unwrap_or(f64::NAN), tokens, gaps))
}

/// `clients` requests at once, request `i` made by `one(i)` → (TTFT ms, tokens):
/// aggregate tokens/s over the wall time, and every TTFT.
fn concurrent(clients: usize, one: impl Fn(usize) -> anyhow::Result<Timed> + Sync) -> anyhow::Result<Run> {
    let t = Instant::now();
    let res: Vec<anyhow::Result<Timed>> = std::thread::scope(|s| {
        let one = &one;
        let hs: Vec<_> = (0..clients).map(|i| s.spawn(move || one(i))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let total = t.elapsed().as_secs_f64();
    let (mut ttft, mut itl) = (Vec::new(), Vec::new());
    let mut tokens = 0;
    for r in res {
        let (tt, n, gaps) = r?;
        ttft.push(tt);
        itl.extend(gaps);
        tokens += n;
    }
    Ok(Run { agg_tps: tokens as f64 / total, ttft, itl, tokens })
}

fn question(rep: usize, i: usize) -> String {
    format!("Request {rep}-{i}: write about topic number {i}.")
}

fn run(base: &str, clients: usize, n: usize, system: &str, rep: usize) -> anyhow::Result<Run> {
    concurrent(clients, |i| one(base, system, &question(rep, i), n))
}

/// The server's flags for `slots` requests at once (the same for llama-server).
fn server_flags(model: &std::path::Path, a: &Args, slots: usize) -> Vec<String> {
    let m = model.to_string_lossy().to_string();
    let (np, c, t) = (slots.to_string(), a.ctx.to_string(), a.threads.to_string());
    let kv = if a.kv_unified == "off" { "-no-kvu" } else { "-kvu" };
    ["-m", &m, "-np", &np, "-c", &c, "-t", &t, "-ngl", "99", kv, "--metrics"].iter().map(|s| s.to_string()).collect()
}

/// The workload of [`run`] through the engine the server builds, without HTTP: the
/// same chat prompts through the same template, greedy, `ignore_eos`, streamed.
fn run_direct(
    l: &llama_rs_server::state::Loaded,
    clients: usize,
    n: usize,
    system: &str,
    rep: usize,
) -> anyhow::Result<Run> {
    use llama_rs::{ChatMessage, Event, GenerateParams, Prompt, RenderOptions, Request, SamplerConfig};
    let tmpl = l.template.as_ref().ok_or_else(|| anyhow::anyhow!("the model has no chat template"))?;
    concurrent(clients, |i| {
        let msgs = [ChatMessage::system(system), ChatMessage::user(question(rep, i))];
        let text = tmpl.render(&msgs, &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
        let mut params = GenerateParams { max_tokens: Some(n), ignore_eos: true, ..Default::default() };
        params.sampler = SamplerConfig::greedy();
        params.add_special = false;
        params.parse_special = true;
        let t0 = Instant::now();
        let mut ttft = None;
        let mut tokens = 0;
        let (mut last, mut gaps) = (None::<Instant>, Vec::new());
        for ev in l.engine.submit(Request { prompt: Prompt::Text(text), params })? {
            match ev? {
                Event::Piece(p) if !p.text.is_empty() => {
                    let now = Instant::now();
                    ttft.get_or_insert(now.duration_since(t0).as_secs_f64() * 1e3);
                    if let Some(l) = last {
                        gaps.push(now.duration_since(l).as_secs_f64() * 1e3);
                    }
                    last = Some(now);
                }
                Event::Done { usage, .. } => tokens = usage.completion_tokens,
                _ => {}
            }
        }
        Ok((ttft.unwrap_or(f64::NAN), tokens, gaps))
    })
}

/// `--direct`: the server over HTTP vs its engine in-process, alternating.
fn direct(a: &Args, model: &std::path::Path) -> anyhow::Result<()> {
    let slots = a.clients.iter().copied().max().unwrap_or(1);
    let server = start(&a.ours, model, 18080, a, slots)?;
    let mut argv = vec!["llama-rs-server".to_string()];
    argv.extend(server_flags(model, a, slots));
    let args = llama_rs_server::args::parse_from(argv).map_err(|e| anyhow::anyhow!("{e}"))?;
    let l = llama_rs_server::state::load(&args).map_err(|e| anyhow::anyhow!(e))?;
    let short = "You are a helpful assistant.";
    run(&server.base, 2, 8, short, 0)?;
    run_direct(&l, 2, 8, short, 0)?;
    println!(
        "model {}, {} tokens per request, {} reps, threads {}, -c {} -np {slots}\n",
        model.display(),
        a.n_gen,
        a.reps,
        a.threads,
        a.ctx
    );
    // Wall-clock throughput moves 5-10 % run to run on a shared machine, and so does CPU
    // time (llama.cpp's threads spin while they wait). What the HTTP path costs, directly:
    // the share of the server's CPU time spent outside the engine's threads (the HTTP
    // runtime: parsing, template, tokenizing, SSE), an upper bound of what it takes from
    // the engine when every core is busy.
    let server_pid = server.child.id().to_string();
    println!(
        "| clients | HTTP (streaming SSE) t/s | engine direct t/s | HTTP / direct | TTFT p50 HTTP / direct ms \
         | CPU ms per token HTTP / direct | CPU ratio | server CPU outside the engine |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &c in &a.clients {
        let (mut h, mut d, mut th, mut td) = (vec![], vec![], vec![], vec![]);
        let (mut ch, mut cd, mut share) = (vec![], vec![], vec![]);
        for rep in 0..a.reps {
            let cpu0 = cpu_s(&server_pid);
            let (http0, all0) = http_cpu_s(&server_pid);
            let r = run(&server.base, c, a.n_gen, short, rep)?;
            ch.push((cpu_s(&server_pid) - cpu0) * 1e3 / r.tokens.max(1) as f64);
            let (http1, all1) = http_cpu_s(&server_pid);
            share.push((http1 - http0) / (all1 - all0).max(1e-9));
            h.push(r.agg_tps);
            th.extend(r.ttft);
            let cpu0 = cpu_s("self");
            let r = run_direct(&l, c, a.n_gen, short, rep)?;
            cd.push((cpu_s("self") - cpu0) * 1e3 / r.tokens.max(1) as f64);
            d.push(r.agg_tps);
            td.extend(r.ttft);
        }
        let ((hm, hs), (dm, ds)) = (mean_sd(&h), mean_sd(&d));
        let ((chm, chs), (cdm, cds)) = (mean_sd(&ch), mean_sd(&cd));
        let (sm, ss) = mean_sd(&share);
        println!(
            "| {c} | {hm:.1} ± {hs:.1} | {dm:.1} ± {ds:.1} | {:.3} | {:.0} / {:.0} | {chm:.2} ± {chs:.2} / {cdm:.2} ± {cds:.2} | {:.3} | {:.2} ± {:.2} % |",
            hm / dm,
            pct(&mut th, 50.0),
            pct(&mut td, 50.0),
            chm / cdm,
            sm * 100.0,
            ss * 100.0
        );
    }
    Ok(())
}

/// CPU seconds (user + system, all threads) process `pid` (or "self") has used, from
/// /proc (in USER_HZ = 100 ticks per second, fixed for /proc on Linux).
fn cpu_s(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses: utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// CPU seconds of process `pid` outside the engine's threads (the HTTP runtime's workers,
/// the main thread, threads that ended: the engine thread and llama.cpp's compute threads
/// are named `llama-rs-engine` and live as long as the server), and in all.
fn http_cpu_s(pid: &str) -> (f64, f64) {
    let mut engine = 0.0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let tid = t.file_name().to_string_lossy().to_string();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.starts_with("llama-rs-engine") {
            engine += cpu_s(&format!("{pid}/task/{tid}"));
        }
    }
    let all = cpu_s(pid);
    (all - engine, all)
}

fn pct(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((q / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt();
    (m, sd)
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let model = match &a.model {
        Some(m) => m.clone(),
        None => llama_testkit::cache_dir().join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    if a.direct {
        return direct(&a, &model);
    }
    let slots = a.clients.iter().copied().max().unwrap_or(1);
    let mut servers = vec![("llama-rs-server", start(&a.ours, &model, 18080, &a, slots)?)];
    if let Some(b) = &a.before {
        servers.push(("llama-rs-server (before)", start(b, &model, 18082, &a, slots)?));
    }
    if let Some(t) = &a.theirs {
        servers.push(("llama-server", start(t, &model, 18081, &a, slots)?));
    }
    let short = "You are a helpful assistant.";
    for (_, p) in &servers {
        run(&p.base, 2, 8, short, 0)?; // warm-up
    }
    println!(
        "model {}, {} generated tokens per request, {} reps, threads {}, -c {} -np {slots}, kv-unified {}\n",
        model.display(),
        a.n_gen,
        a.reps,
        a.threads,
        a.ctx,
        a.kv_unified
    );
    if !a.shared_only {
        sweep(&a, &servers, short)?;
    }
    if !a.no_shared {
        shared(&a, &servers)?;
    }
    println!("\n| server | peak RSS MiB |");
    println!("|---|---|");
    for (name, p) in &servers {
        println!("| {name} | {:.0} |", p.peak_rss_kb().unwrap_or(0) as f64 / 1024.0);
    }
    Ok(())
}

/// Throughput, TTFT and ITL at each client count, servers alternating; then where our
/// engine thread's time went per step at each count.
fn sweep(a: &Args, servers: &[(&str, Proc)], short: &str) -> anyhow::Result<()> {
    println!(
        "| clients | server | aggregate t/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p99 ms | ratio t/s (ours / theirs) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut phases = Vec::new();
    for &c in &a.clients {
        let mut rows: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![(vec![], vec![], vec![]); servers.len()];
        let before: Vec<_> = servers.iter().map(|(_, p)| engine_phases(&p.base)).collect();
        for rep in 0..a.reps {
            for (k, (_, p)) in servers.iter().enumerate() {
                let r = run(&p.base, c, a.n_gen, short, rep)?;
                if a.each {
                    let mut t = r.ttft.clone();
                    t.sort_by(f64::total_cmp);
                    let t: Vec<String> = t.iter().map(|x| format!("{x:.0}")).collect();
                    eprintln!("{} clients {c} rep {rep}: TTFT {}", servers[k].0, t.join(" "));
                }
                rows[k].0.push(r.agg_tps);
                rows[k].1.extend(r.ttft);
                rows[k].2.extend(r.itl);
            }
        }
        for (k, b) in before.into_iter().enumerate() {
            if let (Some(b), Some(e)) = (b, engine_phases(&servers[k].1.base)) {
                phases.push((servers[k].0, c, b, e));
            }
        }
        let base_tps = mean_sd(&rows.last().unwrap().0).0;
        for (k, (name, _)) in servers.iter().enumerate() {
            let (m, sd) = mean_sd(&rows[k].0);
            let (tt, itl) = (&mut rows[k].1.clone(), &mut rows[k].2.clone());
            let ratio =
                if a.theirs.is_some() && k + 1 < servers.len() { format!("{:.2}", m / base_tps) } else { "–".into() };
            println!(
                "| {c} | {name} | {m:.1} ± {sd:.1} | {:.0} | {:.0} | {:.2} | {:.2} | {ratio} |",
                pct(tt, 50.0),
                pct(tt, 95.0),
                pct(itl, 50.0),
                pct(itl, 99.0)
            );
        }
    }
    if phases.is_empty() {
        return Ok(());
    }
    println!("\nThe engine thread per step, µs (from /metrics, all runs at that width):\n");
    let names: Vec<&str> = PHASES.to_vec();
    println!("| server | clients | steps | {} | step total | host share (all but wait) |", names.join(" | "));
    println!("|---|---|---|{}---|---|", "---|".repeat(names.len()));
    phases.sort_by_key(|p| p.0);
    for (name, c, (s0, p0), (s1, p1)) in phases {
        let steps = (s1 - s0).max(1.0);
        let per: Vec<f64> = p0.iter().zip(&p1).map(|(x, y)| (y - x) * 1e6 / steps).collect();
        let total: f64 = per.iter().sum();
        let cells: Vec<String> = per.iter().map(|x| format!("{x:.0}")).collect();
        println!(
            "| {name} | {c} | {steps:.0} | {} | {total:.0} | {:.0} % |",
            cells.join(" | "),
            (total - per[3]) / total.max(1e-9) * 100.0
        );
    }
    Ok(())
}

/// The phases `llama_rs:engine_seconds_total` reports, in its order.
const PHASES: [&str; 8] = ["admit", "batch", "decode", "wait", "sample", "emit", "deliver", "other"];

/// Engine steps and the seconds per phase so far, from the server's `/metrics`
/// (`None` for a server without them: llama-server).
fn engine_phases(base: &str) -> Option<(f64, Vec<f64>)> {
    let m = reqwest::blocking::get(format!("{base}/metrics")).ok()?.text().ok()?;
    let value = |prefix: &str| m.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok());
    let steps = value("llama_rs:steps_total ")?;
    let p = PHASES
        .iter()
        .map(|p| value(&format!("llama_rs:engine_seconds_total{{phase=\"{p}\"}} ")))
        .collect::<Option<Vec<f64>>>()?;
    Some((steps, p))
}

/// An agent's system prompt of about `tokens` tokens (counted by `base`'s `/tokenize`):
/// instructions, then tool definitions as JSON schemas.
fn agent_system(base: &str, tokens: usize) -> anyhow::Result<String> {
    let mut s = String::from(
        "You are an operations agent for a logistics company. Answer briefly. Use a tool when \
         the answer needs live data; call it with JSON arguments that match its schema.\n\n# Tools\n",
    );
    let count = |s: &str| -> anyhow::Result<usize> {
        let r: Value = reqwest::blocking::Client::new()
            .post(format!("{base}/tokenize"))
            .json(&json!({"content": s}))
            .send()?
            .json()?;
        Ok(r["tokens"].as_array().map_or(0, |t| t.len()))
    };
    let mut i = 0;
    while count(&s)? < tokens {
        for _ in 0..8 {
            let tool = json!({"type": "function", "function": {
                "name": format!("lookup_{i}"),
                "description": format!("Looks up record kind {i}: shipments, depots, carriers and their status."),
                "parameters": {"type": "object", "properties": {
                    "id": {"type": "string", "description": "The record's identifier."},
                    "region": {"type": "string", "enum": ["north", "south", "east", "west"]},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 100}
                }, "required": ["id"]}
            }});
            s.push_str(&tool.to_string());
            s.push('\n');
            i += 1;
        }
    }
    Ok(s)
}

/// The shared-system-prompt scenario: `shared_clients` clients at once, one long system
/// prompt, different short questions.
fn shared(a: &Args, servers: &[(&str, Proc)]) -> anyhow::Result<()> {
    let system = agent_system(&servers[0].1.base, a.shared_tokens)?;
    println!("\nshared system prompt ({} tokens or more), {} clients\n", a.shared_tokens, a.shared_clients);
    println!("| server | aggregate t/s | TTFT p50 ms | TTFT p95 ms | ITL p50 ms | ITL p99 ms |");
    println!("|---|---|---|---|---|---|");
    let mut rows: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![(vec![], vec![], vec![]); servers.len()];
    let mut failed: Vec<Option<String>> = vec![None; servers.len()];
    for rep in 0..a.reps {
        for (k, (_, p)) in servers.iter().enumerate() {
            if failed[k].is_some() {
                continue;
            }
            let r = match run(&p.base, a.shared_clients, a.n_gen, &system, rep + 100) {
                Ok(r) => r,
                Err(e) => {
                    failed[k] = Some(e.to_string());
                    continue;
                }
            };
            rows[k].0.push(r.agg_tps);
            rows[k].1.extend(r.ttft);
            rows[k].2.extend(r.itl);
        }
    }
    for (k, (name, _)) in servers.iter().enumerate() {
        if let Some(e) = &failed[k] {
            println!("| {name} | failed: {} |", e.replace('\n', " "));
            continue;
        }
        let (m, sd) = mean_sd(&rows[k].0);
        let (tt, itl) = (&mut rows[k].1.clone(), &mut rows[k].2.clone());
        println!(
            "| {name} | {m:.1} ± {sd:.1} | {:.0} | {:.0} | {:.2} | {:.2} |",
            pct(tt, 50.0),
            pct(tt, 95.0),
            pct(itl, 50.0),
            pct(itl, 99.0)
        );
    }
    Ok(())
}
