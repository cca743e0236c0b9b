//! `llama-rs-bench`: llama-bench's sweep, on llama-rs — the same test definitions and
//! flags, so the numbers compare with llama-bench's (and with each other across builds).
//!
//!     llama-rs-bench -m model.gguf -p 512 -n 128 -d 0,4096,16384 -ctk f16,q8_0,q4_0 -ctv f16,q8_0,q4_0 -fa 1
//!     llama-rs-bench ... -o jsonl > after.jsonl
//!     llama-rs-bench compare before.jsonl after.jsonl      # per-test ratio table
//!     llama-rs-bench ... --plot depth.svg                  # t/s vs depth, one line per KV type
//!
//! Tests (as llama-bench): `pp N` decodes N random tokens in n_batch chunks, `tg N`
//! decodes N single tokens, `pp N + tg M` (`-pg N,M`) both, each after `-d` tokens of
//! context that are decoded first and not timed (once per test, kept for its runs); one
//! warm-up run per test, then `-r` timed runs. Comma lists and ranges (`first-last`,
//! `first-last+step`, `first-last*mult`) sweep every combination. Output: markdown (the
//! default), CSV, JSON or JSONL with llama-bench's column names where they overlap; the
//! schema is the same for every run (no columns that come and go).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use llama_rs::{Batch, ContextParams, FlashAttn, GpuLayers, KvType, Model, ModelParams, SplitMode, Token};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(version, about = "llama-bench's sweep on llama-rs, with a compare mode and plots")]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Models (comma list; repeatable). Default: the embedded default model.
    #[arg(short = 'm', long = "model", value_delimiter = ',')]
    models: Vec<PathBuf>,
    /// Prompt lengths of the pp tests (0: none).
    #[arg(short = 'p', long = "n-prompt", default_value = "512")]
    n_prompt: String,
    /// Generated tokens of the tg tests (0: none).
    #[arg(short = 'n', long = "n-gen", default_value = "128")]
    n_gen: String,
    /// pp+tg tests as `pp,tg` pairs (`;`-separated for several).
    #[arg(long = "pg")]
    pg: Vec<String>,
    /// Context depth before each test.
    #[arg(short = 'd', long = "n-depth", default_value = "0")]
    depth: String,
    /// Timed repetitions per test.
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    reps: usize,
    #[arg(long = "ctk", default_value = "f16")]
    type_k: String,
    #[arg(long = "ctv", default_value = "f16")]
    type_v: String,
    #[arg(short = 'b', long = "batch-size", default_value = "2048")]
    n_batch: String,
    #[arg(long = "ub", default_value = "512")]
    n_ubatch: String,
    /// Flash attention: 0, 1 (comma list).
    #[arg(long = "fa", default_value = "0")]
    flash_attn: String,
    /// Threads (default: the physical cores llama-bench would pick; here all cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<String>,
    /// Layers on the GPU (-1: all, as llama-bench's default).
    #[arg(long = "ngl", default_value = "-1", allow_hyphen_values = true)]
    n_gpu_layers: String,
    /// Split mode: none, layer, row (comma list).
    #[arg(long = "sm", default_value = "layer")]
    split_mode: String,
    /// Tensor split: `/`-separated proportions (`;`-separated for several).
    #[arg(long = "ts")]
    tensor_split: Vec<String>,
    /// Output: md, csv, json, jsonl.
    #[arg(short = 'o', long = "output", default_value = "md")]
    output: String,
    /// Also draw t/s against depth (one line per test and KV type) into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Per-test ratios between two runs (JSON or JSONL of llama-rs-bench or llama-bench).
    Compare { before: PathBuf, after: PathBuf },
}

/// A comma list of numbers, each a value or a range `a-b`, `a-b+s`, `a-b*m` (llama-bench's).
fn int_list(flag: &str, s: &str) -> anyhow::Result<Vec<u64>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("{flag} {part}: a number or a range first-last[+step|*mult]");
        if let Some((a, rest)) = part.split_once('-') {
            let (b, step, mul) = if let Some((b, st)) = rest.split_once('+') {
                (b, st.parse::<u64>().with_context(bad)?, 1)
            } else if let Some((b, m)) = rest.split_once('*') {
                (b, 0, m.parse::<u64>().with_context(bad)?)
            } else {
                (rest, 1, 1)
            };
            let (a, b) = (a.parse::<u64>().with_context(bad)?, b.parse::<u64>().with_context(bad)?);
            if a > b || (step == 0 && mul < 2) || (mul == 1 && step == 0) {
                bail!(bad());
            }
            let mut v = a;
            while v <= b {
                out.push(v);
                if out.len() > 10_000 {
                    bail!("{flag} {part}: more than 10000 values");
                }
                v = if step > 0 { v + step } else { v.max(1) * mul };
            }
        } else {
            out.push(part.parse().with_context(bad)?);
        }
    }
    if out.is_empty() {
        bail!("{flag}: no values");
    }
    Ok(out)
}

/// `-ngl`: numbers, -1 for all layers.
fn ngl_list(s: &str) -> anyhow::Result<Vec<i64>> {
    s.split(',')
        .map(|x| match x.trim() {
            "-1" => Ok(-1),
            x => Ok(int_list("-ngl", x)?[0] as i64),
        })
        .collect()
}

fn kv(flag: &str, s: &str) -> anyhow::Result<Vec<KvType>> {
    s.split(',').map(|t| t.trim().parse::<KvType>().map_err(|e| anyhow::anyhow!("{flag} {t}: {e}"))).collect()
}

fn split_mode(s: &str) -> anyhow::Result<SplitMode> {
    Ok(match s.trim() {
        "none" => SplitMode::None,
        "layer" => SplitMode::Layer,
        "row" => SplitMode::Row,
        o => bail!("-sm {o}: none, layer or row"),
    })
}

/// One test: what llama-bench calls a "test" row.
#[derive(Clone, Copy)]
struct Test {
    n_prompt: u64,
    n_gen: u64,
    n_depth: u64,
}

impl Test {
    fn name(&self) -> String {
        let mut s = match (self.n_prompt, self.n_gen) {
            (p, 0) => format!("pp{p}"),
            (0, g) => format!("tg{g}"),
            (p, g) => format!("pp{p}+tg{g}"),
        };
        if self.n_depth > 0 {
            s += &format!(" @ d{}", self.n_depth);
        }
        s
    }
}

/// One configuration of the sweep (everything but the test).
#[derive(Clone)]
struct Config {
    model: PathBuf,
    type_k: KvType,
    type_v: KvType,
    n_batch: u32,
    n_ubatch: u32,
    flash_attn: bool,
    threads: u32,
    /// -1: all.
    ngl: i64,
    split_mode: SplitMode,
    tensor_split: Vec<f32>,
}

struct Runner {
    rng: u64,
}

impl Runner {
    fn token(&mut self, n_vocab: i32) -> Token {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Token((self.rng % n_vocab as u64) as i32)
    }

    /// Decodes `n` random tokens from position `pos` in chunks of the batch's capacity.
    fn decode(&mut self, ctx: &mut llama_rs::Context, b: &mut Batch, pos: u64, n: u64) -> llama_rs::Result<()> {
        if n == 0 {
            return Ok(());
        }
        let n_vocab = ctx.model().n_vocab();
        let mut done = 0;
        while done < n {
            let m = (n - done).min(b.capacity() as u64);
            b.clear();
            for i in 0..m {
                let t = self.token(n_vocab);
                b.add(t, (pos + done + i) as i32, &[0], i + 1 == m)?;
            }
            ctx.decode(b)?;
            done += m;
        }
        // Reading a logit waits for the device, as llama-bench's llama_synchronize does.
        std::hint::black_box(ctx.logits_last()?.first().copied());
        Ok(())
    }

    /// Decodes the test's depth (untimed) into an empty cache.
    fn fill_depth(&mut self, ctx: &mut llama_rs::Context, n_depth: u64) -> llama_rs::Result<()> {
        ctx.clear_memory(false);
        let mut b = Batch::new(ctx.n_batch() as usize, 1)?;
        self.decode(ctx, &mut b, 0, n_depth)
    }

    /// One timed run of `t` after its depth: what a previous run added after the depth is
    /// removed first, so the depth is decoded once per test rather than once per run
    /// (llama-bench decodes it again every run; the timed part is the same), except for
    /// sliding-window models.
    fn run(&mut self, ctx: &mut llama_rs::Context, t: Test) -> llama_rs::Result<f64> {
        // A sliding-window cache drops old cells as a run goes on: the depth is decoded
        // again (as llama-bench does) whenever its cells may be gone.
        if ctx.model().n_swa() > 0 || !ctx.seq_rm(Some(0), t.n_depth as i32..)? {
            self.fill_depth(ctx, t.n_depth)?;
        }
        let mut b = Batch::new(ctx.n_batch() as usize, 1)?;
        let start = Instant::now();
        if t.n_prompt > 0 {
            self.decode(ctx, &mut b, t.n_depth, t.n_prompt)?;
        }
        let mut one = Batch::new(1, 1)?;
        for i in 0..t.n_gen {
            self.decode(ctx, &mut one, t.n_depth + t.n_prompt + i, 1)?;
        }
        Ok(start.elapsed().as_secs_f64())
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
    let sd =
        if v.len() > 1 { (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt() } else { 0.0 };
    (m, sd)
}

/// The columns every output has, in order (llama-bench's names where it has them).
const COLUMNS: &[&str] = &[
    "build_commit",
    "backends",
    "cpu_variant",
    "model_filename",
    "model_type",
    "model_size",
    "model_n_params",
    "n_batch",
    "n_ubatch",
    "n_threads",
    "type_k",
    "type_v",
    "n_gpu_layers",
    "split_mode",
    "tensor_split",
    "flash_attn",
    "n_prompt",
    "n_gen",
    "n_depth",
    "test",
    "avg_ns",
    "stddev_ns",
    "avg_ts",
    "stddev_ts",
    "samples_ts",
];

fn sweep(a: &Args) -> anyhow::Result<Vec<Value>> {
    let models = if a.models.is_empty() { vec![llama_testkit::default_model_path()?] } else { a.models.clone() };
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get() as u64);
    let threads = match &a.threads {
        Some(t) => int_list("-t", t)?,
        None => vec![cores],
    };
    let mut tests: Vec<(u64, u64)> = Vec::new();
    for p in int_list("-p", &a.n_prompt)? {
        if p > 0 {
            tests.push((p, 0));
        }
    }
    for g in int_list("-n", &a.n_gen)? {
        if g > 0 {
            tests.push((0, g));
        }
    }
    for pg in a.pg.iter().flat_map(|s| s.split(';')) {
        let v = int_list("-pg", pg)?;
        let [p, g] = v[..] else { bail!("-pg {pg}: two numbers, pp,tg") };
        tests.push((p, g));
    }
    if tests.is_empty() {
        bail!("nothing to run: -p and -n are both 0 and no -pg");
    }
    let splits: Vec<Vec<f32>> = if a.tensor_split.is_empty() {
        vec![vec![]]
    } else {
        a.tensor_split
            .iter()
            .flat_map(|s| s.split(';'))
            .map(|s| s.split('/').map(|x| x.trim().parse::<f32>().with_context(|| format!("-ts {s}"))).collect())
            .collect::<anyhow::Result<_>>()?
    };
    let mut configs = Vec::new();
    for model in &models {
        for &type_k in &kv("-ctk", &a.type_k)? {
            for &type_v in &kv("-ctv", &a.type_v)? {
                for &n_batch in &int_list("-b", &a.n_batch)? {
                    for &n_ubatch in &int_list("-ub", &a.n_ubatch)? {
                        for &fa in &int_list("-fa", &a.flash_attn)? {
                            for &t in &threads {
                                for &ngl in &ngl_list(&a.n_gpu_layers)? {
                                    for sm in a.split_mode.split(',') {
                                        for ts in &splits {
                                            configs.push(Config {
                                                model: model.clone(),
                                                type_k,
                                                type_v,
                                                n_batch: n_batch as u32,
                                                n_ubatch: n_ubatch as u32,
                                                flash_attn: fa != 0,
                                                threads: t as u32,
                                                ngl,
                                                split_mode: split_mode(sm)?,
                                                tensor_split: ts.clone(),
                                            });
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let depths = int_list("-d", &a.depth)?;
    let total = (configs.len() * tests.len() * depths.len()) as u64;
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{msg:40} [{bar:30}] {pos}/{len} {elapsed}").unwrap().progress_chars("=> "),
    );
    let mut rows = Vec::new();
    let mut runner = Runner { rng: 0x2545_f491_4f6c_dd1d };
    let mut loaded: Option<((PathBuf, i64, String, String), Model)> = None;
    for c in &configs {
        let key = (c.model.clone(), c.ngl, format!("{:?}", c.split_mode), format!("{:?}", c.tensor_split));
        let layers = if c.ngl < 0 { GpuLayers::All } else { GpuLayers::Count(c.ngl as u32) };
        if loaded.as_ref().is_none_or(|(k, _)| *k != key) {
            drop(loaded.take()); // free the previous model first
            let mut mp = ModelParams::default().gpu_layers(layers).split_mode(c.split_mode);
            if !c.tensor_split.is_empty() {
                mp = mp.tensor_split(c.tensor_split.clone());
            }
            bar.set_message(format!("loading {}", c.model.file_name().unwrap_or_default().to_string_lossy()));
            loaded = Some((key, Model::load(&c.model, mp).with_context(|| c.model.display().to_string())?));
        }
        let model = &loaded.as_ref().expect("loaded above").1;
        for &n_depth in &depths {
            for &(n_prompt, n_gen) in &tests {
                let t = Test { n_prompt, n_gen, n_depth };
                bar.set_message(t.name());
                let n_ctx = (n_depth + n_prompt + n_gen + 16) as u32;
                let cp = ContextParams::default()
                    .n_ctx(n_ctx)
                    .n_batch(c.n_batch.min(n_ctx))
                    .n_ubatch(c.n_ubatch.min(c.n_batch).min(n_ctx))
                    .n_threads(c.threads)
                    .flash_attn(if c.flash_attn { FlashAttn::On } else { FlashAttn::Off })
                    .kv_types(c.type_k, c.type_v);
                let mut ctx =
                    model.context(cp).with_context(|| format!("{} with {:?}/{:?}", t.name(), c.type_k, c.type_v))?;
                runner.fill_depth(&mut ctx, n_depth)?;
                runner.run(&mut ctx, Test { n_prompt: n_prompt.min(16), n_gen: n_gen.min(4), n_depth })?; // warm-up
                let mut secs = Vec::new();
                for _ in 0..a.reps.max(1) {
                    secs.push(runner.run(&mut ctx, t)?);
                }
                let n = (n_prompt + n_gen) as f64;
                let ts: Vec<f64> = secs.iter().map(|s| n / s).collect();
                let (avg_ts, sd_ts) = mean_sd(&ts);
                let (avg_s, sd_s) = mean_sd(&secs);
                rows.push(json!({
                    "build_commit": llama_rs::backend::llama_cpp_commit(),
                    "backends": backends(model),
                    "cpu_variant": cpu_variant(),
                    "model_filename": c.model.display().to_string(),
                    "model_type": model.description(),
                    "model_size": model.size(),
                    "model_n_params": model.n_params(),
                    "n_batch": c.n_batch,
                    "n_ubatch": c.n_ubatch,
                    "n_threads": c.threads,
                    "type_k": c.type_k.name(),
                    "type_v": c.type_v.name(),
                    "n_gpu_layers": c.ngl,
                    "split_mode": format!("{:?}", c.split_mode).to_lowercase(),
                    "tensor_split": c.tensor_split.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("/"),
                    "flash_attn": c.flash_attn,
                    "n_prompt": n_prompt,
                    "n_gen": n_gen,
                    "n_depth": n_depth,
                    "test": t.name(),
                    "avg_ns": (avg_s * 1e9) as u64,
                    "stddev_ns": (sd_s * 1e9) as u64,
                    "avg_ts": avg_ts,
                    "stddev_ts": sd_ts,
                    "samples_ts": ts,
                }));
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(rows)
}

/// The CPU variant a `cpu-all` build picked (`haswell`, `skylakex`, ...), or
/// `built-in (<build config>)` when the CPU backend is linked in.
fn cpu_variant() -> String {
    match llama_rs::backend::cpu_variant() {
        Some(v) => v.name.clone(),
        None => format!("built-in ({})", llama_rs::backend::build_config()),
    }
}

fn backends(model: &Model) -> String {
    match model.output_backend() {
        Some(b) => b,
        None => "CPU".into(),
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(";"),
        Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
        v => v.to_string(),
    }
}

fn write_rows(rows: &[Value], format: &str, out: &mut impl Write) -> anyhow::Result<()> {
    match format {
        "json" => writeln!(out, "{}", serde_json::to_string_pretty(rows)?)?,
        "jsonl" => {
            for r in rows {
                writeln!(out, "{r}")?;
            }
        }
        "csv" => {
            writeln!(out, "{}", COLUMNS.join(","))?;
            for r in rows {
                let cells: Vec<String> = COLUMNS
                    .iter()
                    .map(|c| {
                        let s = cell(&r[*c]);
                        if s.contains([',', '"']) {
                            format!("\"{}\"", s.replace('"', "\"\""))
                        } else {
                            s
                        }
                    })
                    .collect();
                writeln!(out, "{}", cells.join(","))?;
            }
        }
        "md" => {
            writeln!(
                out,
                "| model | size | params | backend | threads | n_batch | type_k | type_v | fa | ngl | test | t/s |"
            )?;
            writeln!(out, "|---|---:|---:|---|---:|---:|---|---|---:|---:|---|---:|")?;
            for r in rows {
                writeln!(
                    out,
                    "| {} | {:.2} GiB | {:.2} M | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} ± {:.2} |",
                    cell(&r["model_type"]),
                    r["model_size"].as_f64().unwrap_or(0.0) / (1u64 << 30) as f64,
                    r["model_n_params"].as_f64().unwrap_or(0.0) / 1e6,
                    cell(&r["backends"]),
                    r["n_threads"],
                    r["n_batch"],
                    cell(&r["type_k"]),
                    cell(&r["type_v"]),
                    r["flash_attn"].as_bool().map_or(0, u8::from),
                    r["n_gpu_layers"],
                    cell(&r["test"]),
                    r["avg_ts"].as_f64().unwrap_or(0.0),
                    r["stddev_ts"].as_f64().unwrap_or(0.0),
                )?;
            }
            // As llama-bench's "build:" line: which CPU code ran.
            if let Some(r) = rows.first() {
                writeln!(out, "\ncpu: {}, llama.cpp {}", cell(&r["cpu_variant"]), cell(&r["build_commit"]))?;
            }
        }
        f => bail!("-o {f}: md, csv, json or jsonl"),
    }
    Ok(())
}

/// Rows from a JSON array or JSONL file (ours or llama-bench's `-o json` / `-o jsonl`).
fn read_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let t = text.trim_start();
    if t.starts_with('[') {
        return serde_json::from_str(t).with_context(|| format!("{}: not a JSON array", path.display()));
    }
    t.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not JSON", path.display(), i + 1)))
        .collect()
}

/// What identifies a test across runs: everything but the timings and the build.
const KEY: &[&str] = &[
    "n_prompt",
    "n_gen",
    "n_depth",
    "type_k",
    "type_v",
    "n_batch",
    "n_ubatch",
    "flash_attn",
    "n_threads",
    "n_gpu_layers",
];

fn key_of(r: &Value) -> String {
    let model =
        r["model_filename"].as_str().map(|m| Path::new(m).file_name().map(|f| f.to_string_lossy().into_owned()));
    let mut k = model.flatten().unwrap_or_default();
    for c in KEY {
        // llama-bench writes flash_attn as a bool or 0/1 depending on version.
        let v = match &r[*c] {
            Value::Bool(b) => u8::from(*b).to_string(),
            v => cell(v),
        };
        k += &format!(" {c}={v}");
    }
    k
}

fn compare(before: &Path, after: &Path) -> anyhow::Result<()> {
    let (b, a) = (read_rows(before)?, read_rows(after)?);
    println!("| model | test | type_k/v | threads | before t/s | after t/s | after / before |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let mut matched = 0;
    for r in &a {
        let k = key_of(r);
        let Some(o) = b.iter().find(|x| key_of(x) == k) else { continue };
        matched += 1;
        let (x, y) = (o["avg_ts"].as_f64().unwrap_or(f64::NAN), r["avg_ts"].as_f64().unwrap_or(f64::NAN));
        let test = match r["test"].as_str() {
            Some(t) => t.to_string(),
            None => Test {
                n_prompt: r["n_prompt"].as_u64().unwrap_or(0),
                n_gen: r["n_gen"].as_u64().unwrap_or(0),
                n_depth: r["n_depth"].as_u64().unwrap_or(0),
            }
            .name(),
        };
        println!(
            "| {} | {test} | {}/{} | {} | {x:.2} | {y:.2} | {:.3} |",
            cell(&r["model_type"]),
            cell(&r["type_k"]),
            cell(&r["type_v"]),
            r["n_threads"],
            y / x
        );
    }
    if matched == 0 {
        bail!(
            "no test of {} matches one of {} (same model file, sizes, types, batch, threads, ngl)",
            after.display(),
            before.display()
        );
    }
    eprintln!("{matched} of {} tests matched", a.len());
    Ok(())
}

/// t/s against depth, one line per (test without depth, KV types).
fn plot(rows: &[Value], path: &Path) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let mut series: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
    for r in rows {
        let name = format!(
            "{} {}/{}",
            Test { n_prompt: r["n_prompt"].as_u64().unwrap_or(0), n_gen: r["n_gen"].as_u64().unwrap_or(0), n_depth: 0 }
                .name(),
            cell(&r["type_k"]),
            cell(&r["type_v"])
        );
        series
            .entry(name)
            .or_default()
            .push((r["n_depth"].as_f64().unwrap_or(0.0), r["avg_ts"].as_f64().unwrap_or(0.0)));
    }
    let x_max = rows.iter().filter_map(|r| r["n_depth"].as_f64()).fold(1.0, f64::max);
    let y_max = rows.iter().filter_map(|r| r["avg_ts"].as_f64()).fold(1.0, f64::max) * 1.1;
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("tokens/s vs context depth", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)?;
    chart.configure_mesh().x_desc("depth (tokens)").y_desc("t/s").draw()?;
    for (i, (name, mut pts)) in series.into_iter().enumerate() {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let argv = llama_examples::llama_style_args(&["-ctk", "-ctv", "-ub", "-fa", "-ngl", "-sm", "-ts", "-pg"]);
    let a = Args::parse_from(argv);
    if let Some(Cmd::Compare { before, after }) = &a.cmd {
        return compare(before, after);
    }
    if !["md", "csv", "json", "jsonl"].contains(&a.output.as_str()) {
        bail!("-o {}: md, csv, json or jsonl", a.output);
    }
    let rows = sweep(&a)?;
    write_rows(&rows, &a.output, &mut std::io::stdout().lock())?;
    if let Some(p) = &a.plot {
        plot(&rows, p)?;
        eprintln!("plot: {}", p.display());
    }
    Ok(())
}
