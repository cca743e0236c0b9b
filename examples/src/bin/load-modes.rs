//! What each model load mode costs: time to load and to the first decode, resident
//! memory, and whether a file truncated under the mapped model can crash the process
//! (SIGBUS). The numbers behind `LoadMode`'s default (docs/BENCHMARKS.md).
//!
//!     cargo run --release -p llama-examples --bin load-modes -- [--model M] [--runs 5]
//!
//! Each mode is measured in a fresh child process (this binary with `--child MODE`), so
//! one mode's pages do not serve another's, except what the kernel's page cache keeps.

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use llama_rs::{Batch, ContextParams, LoadMode, Model, ModelParams};

#[derive(Parser)]
#[command(about = "Cost of each model load mode")]
struct Args {
    /// GGUF model (default: $LLAMA_RS_MODEL or the fetched Gemma 3 270M).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Measure a synthetic Qwen2 model of this shape instead (`1.5b`, `7b`: written once
    /// to the cache directory; random weights, real sizes).
    #[arg(long)]
    synthetic: Option<String>,
    /// Runs per mode (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Drop the kernel's page cache before every run (Linux, root): a cold start.
    #[arg(long)]
    cold: bool,
    /// Internal: measure one mode in this process and print `load_ms first_ms rss_mib`.
    #[arg(long)]
    child: Option<String>,
}

fn mode(name: &str) -> LoadMode {
    match name {
        "mmap" => LoadMode::Mmap,
        "none" => LoadMode::None,
        _ => LoadMode::Auto,
    }
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = match (&args.model, &args.synthetic) {
        (Some(p), _) => p.clone(),
        (None, Some(shape)) => {
            let out = llama_testkit::cache_dir().join(format!("synthetic-qwen2-{shape}.gguf"));
            if !out.is_file() {
                let s =
                    llama_testkit::SyntheticShape::named(shape).ok_or_else(|| anyhow::anyhow!("no shape {shape}"))?;
                let vocab = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../vendor/llama.cpp/models/ggml-vocab-qwen2.gguf");
                eprintln!("writing {}", out.display());
                llama_testkit::write_synthetic_qwen2(s, &vocab, &out, 1, 1)?;
            }
            out
        }
        (None, None) => llama_testkit::default_model_path()?,
    };
    if let Some(m) = &args.child {
        let t = Instant::now();
        let model = Model::load(&path, ModelParams::default().load_mode(mode(m)))?;
        let load_ms = t.elapsed().as_secs_f64() * 1e3;
        let mut ctx = model.context(ContextParams::default().n_ctx(512))?;
        let toks = model.vocab().tokenize("The capital of France is", true, false)?;
        let mut b = Batch::new(64, 1)?;
        b.add_sequence(&toks, 0, 0, true)?;
        ctx.decode(&mut b)?;
        let first_ms = t.elapsed().as_secs_f64() * 1e3;
        println!("{load_ms:.1} {first_ms:.1} {:.1}", rss_mib());
        return Ok(());
    }
    println!("{} ({}):", path.display(), if args.cold { "cold page cache" } else { "warm page cache" });
    println!("| mode | load (ms) | load + first decode (ms) | RSS after (MiB) |");
    println!("|---|---|---|---|");
    for m in ["mmap", "none"] {
        let mut rows: Vec<[f64; 3]> = Vec::new();
        for _ in 0..args.runs {
            if args.cold {
                let dropped =
                    Command::new("sync").status().is_ok() && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
                anyhow::ensure!(dropped, "--cold needs root on Linux (/proc/sys/vm/drop_caches)");
            }
            let out = Command::new(std::env::current_exe()?)
                .args(["--child", m, "--model"])
                .arg(&path)
                .env("LLAMA_LOG_LEVEL", "error")
                .output()?;
            anyhow::ensure!(out.status.success(), "{m}: {}", String::from_utf8_lossy(&out.stderr));
            let v: Vec<f64> =
                String::from_utf8(out.stdout)?.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            anyhow::ensure!(v.len() == 3, "{m}: unexpected child output");
            rows.push([v[0], v[1], v[2]]);
        }
        let median = |i: usize| {
            let mut c: Vec<f64> = rows.iter().map(|r| r[i]).collect();
            c.sort_by(f64::total_cmp);
            c[c.len() / 2]
        };
        println!("| {m} | {:.1} | {:.1} | {:.1} |", median(0), median(1), median(2));
    }
    Ok(())
}
