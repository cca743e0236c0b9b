//! `harness`: the GPU inference report our users write by hand (seed 000), in one
//! command — devices, where every layer and the output went, per-device memory (planned
//! before loading, actual after), load time, a text and a chat completion, then N timed
//! generation rounds.
//!
//! ```text
//! harness --model-path qwen2.5-72b-instruct-q6_k-00001-of-00016.gguf -ngl -1 \
//!     --ctx 2048 --batch 64 --flash-attn --max-tokens 50 --benchmark 5 [--json]
//! ```
//!
//! A split GGUF's first shard loads all shards. Without a model: the default model.
//! `-ngl auto` fits the layers to the devices' free memory (`llama_rs::fit`).

use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use llama_rs::{
    ChatMessage, ChatTemplate, ContextParams, Device, FlashAttn, GenerateParams, GpuLayers, MemoryPlan, Model,
    ModelParams, RenderOptions, SamplerConfig, Session,
};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(version, about = "Load a model on the GPU(s) and report where everything went and how fast it runs")]
struct Args {
    /// The GGUF (a split model's first shard). Default: the default model.
    #[arg(short = 'm', long = "model-path")]
    model_path: Option<std::path::PathBuf>,
    /// Layers on the GPU: a number, -1 (all) or auto (as many as fit).
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", default_value = "-1", allow_hyphen_values = true)]
    n_gpu_layers: String,
    /// Tokens per completion and per benchmark round.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 50)]
    max_tokens: usize,
    /// Timed generation rounds.
    #[arg(long = "benchmark", default_value_t = 3)]
    benchmark: usize,
    #[arg(short = 'c', long = "ctx", default_value_t = 2048)]
    ctx: u32,
    #[arg(short = 'b', long = "batch", default_value_t = 512)]
    batch: u32,
    #[arg(long = "flash-attn")]
    flash_attn: bool,
    /// Threads (default: all cores).
    #[arg(short = 't', long)]
    threads: Option<u32>,
    /// The report as one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// llama.cpp's load-time lines about placement and buffers, caught from its log (it has
/// no API for where each layer went); everything at warning level and up goes to stderr.
struct Capture(Mutex<Vec<String>>);

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, r: &log::Record<'_>) {
        let msg = r.args().to_string();
        if r.target() == "llama_cpp" && (msg.contains("assigned to device") || msg.contains("offload")) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
        } else if r.level() <= log::Level::Warn {
            eprintln!("{}: {msg}", r.level());
        }
    }
    fn flush(&self) {}
}

/// `layer N assigned to device X` lines → (layer, device).
fn placements(lines: &[String]) -> Vec<(u32, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.split("layer").nth(1)?;
            let (n, dev) = rest.split_once("assigned to device")?;
            Some((n.trim().parse().ok()?, dev.split(',').next()?.trim().to_string()))
        })
        .collect()
}

/// Consecutive layers on the same device as `first–last → device`.
fn ranges(p: &[(u32, String)]) -> Vec<(u32, u32, String)> {
    let mut out: Vec<(u32, u32, String)> = Vec::new();
    for (l, d) in p {
        match out.last_mut() {
            Some((_, last, dev)) if dev == d && *last + 1 == *l => *last = *l,
            _ => out.push((*l, *l, d.clone())),
        }
    }
    out
}

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

fn plan_json(p: &MemoryPlan) -> Value {
    json!(p
        .entries
        .iter()
        .map(|e| json!({"buffer_type": e.buffer_type, "device": e.device, "host": e.host,
            "weights_mib": mib(e.model), "kv_mib": mib(e.context), "compute_mib": mib(e.compute)}))
        .collect::<Vec<_>>())
}

fn main() -> anyhow::Result<()> {
    let argv = llama_examples::llama_style_args(&["-ngl"]);
    let a = Args::parse_from(argv);
    log::set_logger(&CAPTURE).map_err(|e| anyhow::anyhow!("{e}"))?;
    log::set_max_level(log::LevelFilter::Debug);
    let path = match &a.model_path {
        Some(p) => p.clone(),
        None => llama_testkit::default_model_path()?,
    };
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(4, |n| n.get() as u32));
    let cp = ContextParams::default()
        .n_ctx(a.ctx)
        .n_batch(a.batch.min(a.ctx))
        .n_ubatch(a.batch.min(a.ctx).min(512))
        .n_threads(threads)
        .flash_attn(if a.flash_attn { FlashAttn::On } else { FlashAttn::Off });
    let (layers, fit_reason) = match a.n_gpu_layers.as_str() {
        "-1" | "all" => (GpuLayers::All, None),
        "auto" => {
            let f = llama_rs::fit(&path, ModelParams::default, &cp, &llama_rs::FitParams::default())?;
            (f.gpu_layers, Some(f.reason))
        }
        n => (GpuLayers::Count(n.parse().with_context(|| format!("-ngl {n}: a number, -1, all or auto"))?), None),
    };
    let mp = || ModelParams::default().gpu_layers(layers);
    let devices = Device::all();
    let planned = MemoryPlan::estimate(&path, mp(), &cp).with_context(|| path.display().to_string())?;
    CAPTURE.0.lock().unwrap_or_else(|p| p.into_inner()).clear(); // the dry run's lines
    let t = Instant::now();
    let model = if a.json { Model::load(&path, mp())? } else { llama_examples::load_with_progress(&path, mp())? };
    let load_s = t.elapsed().as_secs_f64();
    let lines = std::mem::take(&mut *CAPTURE.0.lock().unwrap_or_else(|p| p.into_inner()));
    let place = placements(&lines);
    let mut session = Session::new(model.context(cp.clone())?)?;
    let actual = session.context().memory_breakdown()?;
    let greedy =
        GenerateParams { max_tokens: Some(a.max_tokens), sampler: SamplerConfig::greedy(), ..Default::default() };
    let prompt = "The capital of France is";
    let (text, _) = session.generate(prompt, &greedy)?.text()?;
    let chat = match ChatTemplate::from_model(&model) {
        Ok(t) => {
            let msgs = [ChatMessage::user("Name three primary colors.")];
            let p = t.render(&msgs, &RenderOptions { add_generation_prompt: true, ..Default::default() })?;
            let params = GenerateParams { add_special: false, parse_special: true, ..greedy.clone() };
            Some(session.generate(p, &params)?.text()?.0)
        }
        Err(_) => None,
    };
    let bench = GenerateParams { ignore_eos: true, ..greedy.clone() };
    let mut rounds = Vec::new();
    for _ in 0..a.benchmark {
        session.reset();
        let t = Instant::now();
        let mut g = session.generate(prompt, &bench)?;
        let mut first = None;
        let mut n = 0;
        for p in g.by_ref() {
            let p = p?;
            first.get_or_insert_with(|| t.elapsed().as_secs_f64());
            n += p.tokens.len();
        }
        let total = t.elapsed().as_secs_f64();
        let ttft = first.unwrap_or(total);
        // Decode speed after the first token, as llama.cpp's eval time counts it.
        let tps = if n > 1 { (n - 1) as f64 / (total - ttft).max(1e-9) } else { 0.0 };
        rounds.push(json!({"tokens": n, "ttft_ms": ttft * 1e3, "total_s": total, "tokens_per_s": tps}));
    }
    let tps: Vec<f64> = rounds.iter().filter_map(|r| r["tokens_per_s"].as_f64()).collect();
    let mean = tps.iter().sum::<f64>() / tps.len().max(1) as f64;
    let sd = if tps.len() > 1 {
        (tps.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (tps.len() - 1) as f64).sqrt()
    } else {
        0.0
    };
    let report = json!({
        "model": {"path": path.display().to_string(), "description": model.description(), "size_bytes": model.size(),
                  "params": model.n_params(), "n_layer": model.n_layer(), "n_ctx_train": model.n_ctx_train()},
        "devices": devices.iter().map(|d| json!({"name": d.name, "description": d.description,
            "kind": format!("{:?}", d.kind), "free_mib": mib(d.free), "total_mib": mib(d.total)})).collect::<Vec<_>>(),
        "n_gpu_layers": format!("{layers:?}"), "fit": fit_reason,
        // llama.cpp numbers the output layer n_layer.
        "layers": place.iter().map(|(l, d)| json!({"layer": l, "device": d, "output": *l == model.n_layer()}))
            .collect::<Vec<_>>(),
        "offload": lines.iter().filter(|l| !l.contains("assigned to device")).collect::<Vec<_>>(),
        "memory_planned": plan_json(&planned), "memory_actual": plan_json(&actual),
        "load_s": load_s,
        "completion": {"prompt": prompt, "text": text},
        "chat": chat,
        "benchmark": {"rounds": rounds, "tokens_per_s_mean": mean, "tokens_per_s_sd": sd},
        "settings": {"ctx": a.ctx, "batch": a.batch, "flash_attn": a.flash_attn, "threads": threads,
                     "max_tokens": a.max_tokens},
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("== devices");
    for d in &devices {
        println!("  {:8} {} ({:?}): {:.0} of {:.0} MiB free", d.name, d.description, d.kind, mib(d.free), mib(d.total));
    }
    println!(
        "== model\n  {} — {}, {:.2} GiB, {:.2} B params, {} layers",
        path.display(),
        model.description(),
        model.size() as f64 / (1u64 << 30) as f64,
        model.n_params() as f64 / 1e9,
        model.n_layer()
    );
    println!("== placement (-ngl {})", a.n_gpu_layers);
    if let Some(r) = &fit_reason {
        println!("  fit: {r}");
    }
    let n_layer = model.n_layer();
    let blocks: Vec<(u32, String)> = place.iter().filter(|(l, _)| *l < n_layer).cloned().collect();
    for (first, last, dev) in ranges(&blocks) {
        println!("  layers {first:>3}–{last:<3} → {dev}");
    }
    if let Some((_, dev)) = place.iter().find(|(l, _)| *l == n_layer) {
        println!("  output      → {dev}");
    }
    for l in lines.iter().filter(|l| !l.contains("assigned to device")) {
        println!("  {}", l.trim_start_matches("load_tensors: "));
    }
    println!("== memory (MiB)                planned                      actual");
    println!(
        "  {:14} {:>8} {:>8} {:>8}   {:>8} {:>8} {:>8}",
        "buffer", "weights", "KV", "compute", "weights", "KV", "compute"
    );
    for e in &actual.entries {
        let p = planned.entries.iter().find(|x| x.buffer_type == e.buffer_type);
        let (pw, pk, pc) = p.map_or((0, 0, 0), |p| (p.model, p.context, p.compute));
        println!(
            "  {:14} {:>8.1} {:>8.1} {:>8.1}   {:>8.1} {:>8.1} {:>8.1}",
            e.buffer_type,
            mib(pw),
            mib(pk),
            mib(pc),
            mib(e.model),
            mib(e.context),
            mib(e.compute)
        );
    }
    println!("== load: {load_s:.2} s");
    println!("== completion\n  {prompt}{text}");
    match &chat {
        Some(c) => println!("== chat (the model's template)\n  {}", c.trim()),
        None => println!("== chat: the model has no chat template"),
    }
    println!("== benchmark: {} rounds × {} tokens", a.benchmark, a.max_tokens);
    for (i, r) in rounds.iter().enumerate() {
        println!(
            "  round {}: {:.1} t/s, first token after {:.0} ms",
            i + 1,
            r["tokens_per_s"].as_f64().unwrap_or(0.0),
            r["ttft_ms"].as_f64().unwrap_or(0.0)
        );
    }
    println!("  mean {mean:.1} ± {sd:.1} t/s");
    Ok(())
}
