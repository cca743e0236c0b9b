//! Throughput of llama-rs next to llama.cpp's own `llama-bench`, built from the same
//! source with the same flags (`scripts/llama-tools.sh`), in one run, alternating, with
//! the spread over repetitions and the ratio ours / theirs.
//!
//!     cargo run --release -p llama-devtools --bin bench -- --llama-bench "$(scripts/llama-tools.sh)/llama-bench"
//!
//! Tests: `pp` (prompt of -p tokens in n_batch chunks, as llama-bench), `tg` (-n single-
//! token decodes, as llama-bench), `tg+argmax` (tg that also reads the logits and takes
//! their argmax), `gen` (the full generation API: greedy sampling where
//! `DeviceSampling::Auto` puts it, detokenization, stop-string matching — what a user
//! gets), `gen-default` (llama-cpp-python's default chain, top-k 40 then top-p / min-p /
//! temperature / dist), and both again with sampling forced onto the host (`-host`).
//! The table says where each sampled.
//! Each repetition runs ours once (after a warm-up in the same context, like
//! llama-bench) and then one llama-bench invocation with `-r 3` (its own warm-up, mean
//! of three); the table gives mean ± sd over repetitions and the per-pair ratio.
//!
//! `--batched --llama-batched-bench PATH`: many sequences in one batch, next to
//! llama.cpp's `llama-batched-bench` (same sizes, one KV stream per sequence).

use std::process::Command;
use std::time::Instant;

use clap::Parser;
use llama_rs::{
    Batch, ContextParams, DeviceSampler, DeviceSampling, FlashAttn, GenerateParams, GpuLayers, Model, ModelParams,
    SamplerConfig, Session, Token,
};

#[derive(Parser)]
struct Args {
    #[arg(short, long)]
    model: Option<std::path::PathBuf>,
    #[arg(short = 'p', long, default_value_t = 512)]
    n_prompt: usize,
    #[arg(short = 'n', long, default_value_t = 128)]
    n_gen: usize,
    #[arg(short, long, default_value_t = 5)]
    reps: usize,
    /// Threads (0 = physical cores as llama-bench picks; here: available parallelism).
    #[arg(short, long, default_value_t = 0)]
    threads: u32,
    /// GPU layers: all, or a count.
    #[arg(long, default_value = "all")]
    ngl: String,
    /// Flash attention: auto, on, off.
    #[arg(long, default_value = "auto")]
    fa: String,
    /// Path of llama-bench to compare with.
    #[arg(long)]
    llama_bench: Option<std::path::PathBuf>,
    /// Skip the generation-API test.
    #[arg(long)]
    no_gen: bool,
    /// Instead of the comparison: where each token's time goes, per way of sampling
    /// (llama.cpp's own eval time vs the host work around it; no llama-bench).
    #[arg(long)]
    breakdown: bool,
    /// Instead of the comparison: one greedy generation of -n tokens after this prompt in a
    /// context of --ctx tokens, then exit (for peak-memory comparisons with
    /// `llama-completion -c CTX -n N --temp 0 -p PROMPT`).
    #[arg(long)]
    once: Option<String>,
    #[arg(long, default_value_t = 4096)]
    ctx: u32,
    /// --once: n_batch of the context.
    #[arg(long, default_value_t = 512)]
    once_batch: u32,
    /// Instead of the comparison: many sequences decoded together, as llama.cpp's
    /// `llama-batched-bench` does (each of --npl sequences gets its own --npp-token
    /// prompt, then --ntg steps decode one token for every sequence at once).
    #[arg(long)]
    batched: bool,
    /// Path of llama-batched-bench to compare the --batched runs with.
    #[arg(long)]
    llama_batched_bench: Option<std::path::PathBuf>,
    /// --batched: parallel sequence counts.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    npl: Vec<usize>,
    /// --batched: prompt tokens per sequence.
    #[arg(long, default_value_t = 128)]
    npp: usize,
    /// --batched: generated tokens per sequence.
    #[arg(long, default_value_t = 64)]
    ntg: usize,
    /// Instead of the comparison: the engine with --npl concurrent requests of --npp
    /// prompt tokens and --ntg generated tokens each (next to llama-batched-bench when
    /// given), then the prefix-reuse scenario (8 requests sharing a 1,000-token prompt).
    #[arg(long)]
    engine: bool,
    /// Instead of the comparison: speculative decoding (n-gram drafters) vs plain
    /// decoding on repetitive work and on prose, -n tokens each, greedy.
    #[arg(long)]
    spec: bool,
    /// Instead of the comparison: the time of one target decode of n tokens (a verified
    /// draft of n - 1) relative to a single-token decode, after --depth tokens of context;
    /// with --draft, also the draft model's single-token decode and the speedups those
    /// costs imply at acceptance 0.5 / 0.7 / 0.9.
    #[arg(long)]
    verify_cost: bool,
    /// --verify-cost: the draft model; --spec: also speculation with this draft model
    /// (in the engine too with --spec-engine).
    #[arg(long)]
    draft: Option<std::path::PathBuf>,
    /// --spec: most tokens drafted per step.
    #[arg(long, default_value_t = 8)]
    draft_max: usize,
    /// --spec: verify exactly this many drafted tokens every step (`Speculation::fixed_batch`).
    #[arg(long)]
    spec_fixed: Option<usize>,
    /// --verify-cost: context tokens before the measured decodes.
    #[arg(long, default_value_t = 256)]
    depth: usize,
    /// --spec: also run the four tasks as concurrent engine requests, speculation on vs
    /// off.
    #[arg(long)]
    spec_engine: bool,
    /// --engine / --batched: one KV pool for all sequences (llama-batched-bench `-kvu`)
    /// instead of one stream per sequence.
    #[arg(long)]
    kvu: bool,
}

fn stats(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (v.len().max(2) - 1) as f64).sqrt();
    (m, sd)
}

/// Our side of each test, mirroring llama-bench: one context per test, a warm-up run,
/// then every timed run starts from an empty KV cache.
struct Ours {
    model: Model,
    params: ContextParams,
    n_vocab: i32,
    rng: u64,
    pp_ctx: Option<llama_rs::Context>,
    tg_ctx: Option<llama_rs::Context>,
    /// One session per generation test, so each keeps its device sampler attached (as
    /// llama-bench keeps one context per test).
    gen_sessions: std::collections::HashMap<&'static str, Session>,
    /// Where each generation test sampled (`DeviceSampler` or host).
    placement: std::collections::HashMap<&'static str, String>,
}

impl Ours {
    fn rand_token(&mut self) -> Token {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        Token((self.rng % self.n_vocab as u64) as i32)
    }

    fn run_pp(&mut self, ctx: &mut llama_rs::Context, n: usize) -> f64 {
        ctx.clear_memory(false);
        let nb = self.params.n_batch as usize;
        let mut b = Batch::new(nb, 1).unwrap();
        let t = Instant::now();
        let mut done = 0;
        while done < n {
            let m = (n - done).min(nb);
            b.clear();
            for i in 0..m {
                let tok = self.rand_token();
                b.add(tok, (done + i) as i32, &[0], i + 1 == m).unwrap();
            }
            ctx.decode(&mut b).unwrap();
            done += m;
        }
        // Reading the logits synchronises with the device, as llama_synchronize does.
        std::hint::black_box(ctx.logits_last().unwrap()[0]);
        n as f64 / t.elapsed().as_secs_f64()
    }

    fn pp(&mut self, n: usize) -> f64 {
        let mut ctx = match self.pp_ctx.take() {
            Some(c) => c,
            None => {
                let mut c = self.model.context(self.params.clone()).unwrap();
                self.run_pp(&mut c, n); // warm-up
                c
            }
        };
        let r = self.run_pp(&mut ctx, n);
        self.pp_ctx = Some(ctx);
        r
    }

    fn run_tg(&mut self, ctx: &mut llama_rs::Context, n: usize) -> f64 {
        ctx.clear_memory(false);
        let mut b = Batch::new(1, 1).unwrap();
        let t = Instant::now();
        for i in 0..n {
            let tok = self.rand_token();
            b.clear();
            b.add(tok, i as i32, &[0], true).unwrap();
            ctx.decode(&mut b).unwrap();
            std::hint::black_box(ctx.logits(0).unwrap()[0]);
        }
        n as f64 / t.elapsed().as_secs_f64()
    }

    /// tg plus a greedy pick over the full logits each step: separates the cost of
    /// reading the logits from the rest of the generation API.
    fn tg_argmax(&mut self, n: usize) -> f64 {
        let mut ctx = match self.tg_ctx.take() {
            Some(c) => c,
            None => self.model.context(self.params.clone()).unwrap(),
        };
        let r = self.tg_picking(&mut ctx, n, None);
        self.tg_ctx = Some(ctx);
        r
    }

    fn tg(&mut self, n: usize) -> f64 {
        let mut ctx = match self.tg_ctx.take() {
            Some(c) => c,
            None => {
                let mut c = self.model.context(self.params.clone()).unwrap();
                self.run_tg(&mut c, 4); // warm-up
                c
            }
        };
        let r = self.run_tg(&mut ctx, n);
        self.tg_ctx = Some(ctx);
        r
    }

    /// The generation API end to end: sampling, detokenization, streaming pieces.
    fn gen(&mut self, test: &'static str, n: usize, sampler: SamplerConfig, device_sampling: DeviceSampling) -> f64 {
        self.gen_with(test, n, sampler, device_sampling, None, 0)
    }

    /// `busy_us`: the caller's own work per piece (a server writing it out, a Python
    /// callback), simulated by spinning.
    fn gen_with(
        &mut self,
        test: &'static str,
        n: usize,
        sampler: SamplerConfig,
        device_sampling: DeviceSampling,
        eager_decode: Option<bool>,
        busy_us: u64,
    ) -> f64 {
        let mut s = match self.gen_sessions.remove(test) {
            Some(s) => s,
            None => Session::new(self.model.context(self.params.clone()).unwrap()).unwrap(),
        };
        s.reset();
        let p = GenerateParams {
            max_tokens: Some(n),
            ignore_eos: true,
            sampler,
            device_sampling,
            eager_decode,
            ..Default::default()
        };
        let bos = self.model.vocab().bos().unwrap_or(Token(0));
        let t = Instant::now();
        let mut g = s.generate(vec![bos], &p).unwrap();
        let mut count = 0;
        for piece in &mut g {
            match piece {
                Ok(p) => {
                    count += p.tokens.len();
                    let t = Instant::now();
                    while t.elapsed().as_micros() < busy_us as u128 {
                        std::hint::spin_loop();
                    }
                }
                Err(e) => {
                    // Reported in the table (NaN), not a panic: the remaining tests still run.
                    eprintln!("{test}: {e}");
                    count = 0;
                    break;
                }
            }
        }
        drop(g);
        let r = if count == 0 { f64::NAN } else { count as f64 / t.elapsed().as_secs_f64() };
        let at = s.context().device_sampler(0).map_or("host".to_string(), |d| format!("device {d:?}"));
        self.placement.insert(test, at);
        self.gen_sessions.insert(test, s);
        r
    }
}

/// One row of `--breakdown`: tokens per second, and per token llama.cpp's eval time
/// (decode through the device finishing) vs everything else, in µs.
struct Split {
    tps: Vec<f64>,
    eval_us: Vec<f64>,
    host_us: Vec<f64>,
    reused: i32,
}

impl Ours {
    /// tg where each step decodes the previous step's pick: the host's argmax over the
    /// logits (`None`), or the device sampler's token / best candidate (only a token id
    /// or k candidates come back).
    fn tg_picking(&mut self, ctx: &mut llama_rs::Context, n: usize, step: Option<DeviceSampler>) -> f64 {
        ctx.clear_memory(false);
        let mut b = Batch::new(1, 1).unwrap();
        let mut tok = self.rand_token();
        let t = Instant::now();
        for i in 0..n {
            b.clear();
            b.add(tok, i as i32, &[0], true).unwrap();
            ctx.decode(&mut b).unwrap();
            tok = match step {
                None => llama_rs::argmax(ctx.logits(0).unwrap()),
                Some(DeviceSampler::Greedy) => ctx.sampled_token(0).unwrap(),
                Some(DeviceSampler::TopK(_)) => ctx.sampled_candidates(0).unwrap().0[0],
            };
        }
        n as f64 / t.elapsed().as_secs_f64()
    }

    fn breakdown(&mut self, n: usize, reps: usize) {
        let mut rows: Vec<(String, Split)> = Vec::new();
        let record =
            |name: String, perf0: llama_rs::Perf, perf1: llama_rs::Perf, tps: f64, rows: &mut Vec<(String, Split)>| {
                // Per decode (the generation API decodes its prompt and every token but the last).
                let decodes = (perf1.eval_tokens - perf0.eval_tokens).max(1) as f64;
                let eval = (perf1.eval_ms - perf0.eval_ms) * 1e3 / decodes;
                let wall = n as f64 / tps * 1e6 / decodes;
                let row = match rows.iter_mut().find(|r| r.0 == name) {
                    Some(r) => r,
                    None => {
                        rows.push((name, Split { tps: vec![], eval_us: vec![], host_us: vec![], reused: 0 }));
                        rows.last_mut().unwrap()
                    }
                };
                row.1.tps.push(tps);
                row.1.eval_us.push(eval);
                row.1.host_us.push(wall - eval);
                row.1.reused = perf1.reused - perf0.reused;
            };
        let steps: [(&str, Option<DeviceSampler>); 4] = [
            ("tg + host argmax", None),
            ("tg + device argmax", Some(DeviceSampler::Greedy)),
            ("tg + device top-1", Some(DeviceSampler::TopK(1))),
            ("tg + device top-40", Some(DeviceSampler::TopK(40))),
        ];
        let mut raw: Vec<llama_rs::Context> = steps
            .iter()
            .map(|(_, step)| {
                let mut c = self.model.context(self.params.clone()).unwrap();
                let on = c.set_device_sampler(0, *step).unwrap();
                assert!(on || step.is_none(), "llama.cpp refused {step:?} here");
                c
            })
            .collect();
        for (c, (_, step)) in raw.iter_mut().zip(&steps) {
            self.tg_picking(c, 4, *step);
        }
        let default_chain = SamplerConfig { seed: 1, ..Default::default() };
        let gens: [(&str, SamplerConfig, DeviceSampling, Option<bool>, u64); 8] = [
            ("gen greedy, Auto", SamplerConfig::greedy(), DeviceSampling::Auto, None, 0),
            ("gen greedy, Auto, decode after the piece", SamplerConfig::greedy(), DeviceSampling::Auto, Some(false), 0),
            (
                "gen greedy, Auto, caller busy 300 µs per piece",
                SamplerConfig::greedy(),
                DeviceSampling::Auto,
                None,
                300,
            ),
            (
                "gen greedy, Auto, caller busy 300 µs, decode after the piece",
                SamplerConfig::greedy(),
                DeviceSampling::Auto,
                Some(false),
                300,
            ),
            ("gen greedy, host", SamplerConfig::greedy(), DeviceSampling::Off, None, 0),
            ("gen default chain, Auto", default_chain.clone(), DeviceSampling::Auto, None, 0),
            (
                "gen default chain, Auto, decode after the piece",
                default_chain.clone(),
                DeviceSampling::Auto,
                Some(false),
                0,
            ),
            ("gen default chain, host", default_chain, DeviceSampling::Off, None, 0),
        ];
        for (name, sampler, placement, eager, busy) in &gens {
            self.gen_with(name, 4, sampler.clone(), *placement, *eager, *busy);
        }
        let bar = llama_devtools::steps_progress(reps as u64, "repetitions");
        for _ in 0..reps {
            bar.inc(1);
            let mut c = self.tg_ctx.take().unwrap_or_else(|| self.model.context(self.params.clone()).unwrap());
            let p0 = c.perf();
            let tps = self.run_tg(&mut c, n);
            record("tg (logits read)".into(), p0, c.perf(), tps, &mut rows);
            self.tg_ctx = Some(c);
            for (c, (name, step)) in raw.iter_mut().zip(&steps) {
                let p0 = c.perf();
                let tps = self.tg_picking(c, n, *step);
                record(name.to_string(), p0, c.perf(), tps, &mut rows);
            }
            for (name, sampler, placement, eager, busy) in &gens {
                let p0 = self.gen_sessions[name].context().perf();
                let tps = self.gen_with(name, n, sampler.clone(), *placement, *eager, *busy);
                let p1 = self.gen_sessions[name].context().perf();
                record(format!("{name} → {}", self.placement[name]), p0, p1, tps, &mut rows);
            }
        }
        bar.finish_and_clear();
        println!("| test | t/s | eval µs/decode (llama.cpp) | other µs/decode | graphs reused (last rep) |");
        println!("|---|---|---|---|---|");
        for (name, s) in &rows {
            let (t, tsd) = stats(&s.tps);
            let (e, esd) = stats(&s.eval_us);
            let (h, hsd) = stats(&s.host_us);
            println!("| {name} | {t:.1} ± {tsd:.1} | {e:.1} ± {esd:.1} | {h:.1} ± {hsd:.1} | {} |", s.reused);
        }
    }
}

/// One --batched measurement: prompt and generation throughput over all sequences.
#[derive(Clone, Copy)]
struct BatchedRun {
    pp_tps: f64,
    tg_tps: f64,
}

impl Ours {
    /// llama-batched-bench's loop through llama-rs: `pl` prompts of `pp` random tokens in
    /// one batch (decoded in n_batch chunks, logits for each prompt's last token), then
    /// `tg` steps of one token per sequence with logits for all, each step synchronised.
    fn batched(&mut self, ctx: &mut llama_rs::Context, pp: usize, tg: usize, pl: usize) -> BatchedRun {
        ctx.clear_memory(false);
        let nb = ctx.n_batch() as usize;
        let mut b = Batch::new(nb.max(pl), 1).unwrap();
        let entries: Vec<(i32, usize)> = (0..pl as i32).flat_map(|s| (0..pp).map(move |i| (s, i))).collect();
        let t = Instant::now();
        for chunk in entries.chunks(nb) {
            b.clear();
            for &(seq, i) in chunk {
                let tok = self.rand_token();
                b.add(tok, i as i32, &[seq], i + 1 == pp).unwrap();
            }
            ctx.decode(&mut b).unwrap();
        }
        std::hint::black_box(ctx.logits_last().unwrap()[0]);
        let t_pp = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..tg {
            b.clear();
            for seq in 0..pl as i32 {
                let tok = self.rand_token();
                b.add(tok, (pp + i) as i32, &[seq], true).unwrap();
            }
            ctx.decode(&mut b).unwrap();
            // Reading an output synchronises, as llama-batched-bench's llama_synchronize.
            std::hint::black_box(ctx.logits(pl - 1).unwrap()[0]);
        }
        let t_tg = t.elapsed().as_secs_f64();
        BatchedRun { pp_tps: (pl * pp) as f64 / t_pp, tg_tps: (pl * tg) as f64 / t_tg }
    }
}

/// llama-batched-bench with the same sizes, parsed from its JSON lines (one per npl).
fn llama_batched_bench(
    bin: &std::path::Path,
    a: &Args,
    model: &std::path::Path,
    threads: u32,
    n_ctx: u32,
) -> Option<Vec<BatchedRun>> {
    let ngl = if a.ngl == "all" { "999".to_string() } else { a.ngl.clone() };
    let npl = a.npl.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let out = Command::new(bin)
        .args(["-m", &model.to_string_lossy(), "-c", &n_ctx.to_string(), "-b", "2048", "-ub", "512"])
        .args(["-npp", &a.npp.to_string(), "-ntg", &a.ntg.to_string(), "-npl", &npl])
        .args(["-t", &threads.to_string(), "-ngl", &ngl, "-fa", &a.fa, "--output-format", "jsonl"])
        .args(if a.kvu { &["-kvu"][..] } else { &[][..] })
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let runs: Vec<BatchedRun> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
        .filter_map(|v| Some(BatchedRun { pp_tps: v.get("speed_pp")?.as_f64()?, tg_tps: v.get("speed_tg")?.as_f64()? }))
        .collect();
    (runs.len() == a.npl.len()).then_some(runs)
}

fn batched_main(a: &Args, ours: &mut Ours, path: &std::path::Path, threads: u32) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.npp > 0 && a.ntg > 0 && !a.npl.is_empty() && !a.npl.contains(&0),
        "--batched needs --npp, --ntg and every --npl value > 0"
    );
    let max_pl = a.npl.iter().copied().max().unwrap_or(1);
    // llama-batched-bench's context: room for every sequence's prompt and generation,
    // one KV stream per sequence (kv_unified off, its default).
    let n_ctx = (max_pl * (a.npp + a.ntg)) as u32;
    let params = ours.params.clone().n_ctx(n_ctx).n_seq_max(max_pl as u32).kv_unified(a.kvu);
    let mut ctx = ours.model.context(params)?;
    ours.batched(&mut ctx, 16, 0, 1); // warm-up, as llama-batched-bench
    let mut rows: Vec<(Vec<BatchedRun>, Vec<BatchedRun>)> = vec![(vec![], vec![]); a.npl.len()];
    let bar = llama_devtools::steps_progress(a.reps as u64, "repetitions");
    for _ in 0..a.reps {
        bar.inc(1);
        for (row, &pl) in rows.iter_mut().zip(&a.npl) {
            row.0.push(ours.batched(&mut ctx, a.npp, a.ntg, pl));
        }
        if let Some(bin) = &a.llama_batched_bench {
            match llama_batched_bench(bin, a, path, threads, n_ctx) {
                Some(theirs) => rows.iter_mut().zip(theirs).for_each(|(row, r)| row.1.push(r)),
                None => eprintln!("llama-batched-bench gave no results"),
            }
        }
    }
    bar.finish_and_clear();
    println!(
        "pp {} and tg {} tokens per sequence, n_ctx {n_ctx}, one KV stream per sequence
",
        a.npp, a.ntg
    );
    println!("| sequences | pp t/s llama-rs | pp t/s llama-batched-bench | pp ratio | tg t/s llama-rs | tg t/s llama-batched-bench | tg ratio |");
    println!("|---|---|---|---|---|---|---|");
    let cell = |v: &[f64]| {
        let (m, sd) = stats(v);
        format!("{m:.1} ± {sd:.1}")
    };
    let ratio = |o: &[f64], t: &[f64]| {
        if t.is_empty() {
            return "–".to_string();
        }
        let (m, sd) = stats(&o.iter().zip(t).map(|(x, y)| x / y).collect::<Vec<_>>());
        format!("{m:.3} ± {sd:.3}")
    };
    for ((o, t), pl) in rows.iter().zip(&a.npl) {
        let (opp, otg): (Vec<f64>, Vec<f64>) = o.iter().map(|r| (r.pp_tps, r.tg_tps)).unzip();
        let (tpp, ttg): (Vec<f64>, Vec<f64>) = t.iter().map(|r| (r.pp_tps, r.tg_tps)).unzip();
        let theirs = |v: &[f64]| if v.is_empty() { "–".to_string() } else { cell(v) };
        println!(
            "| {pl} | {} | {} | {} | {} | {} | {} |",
            cell(&opp),
            theirs(&tpp),
            ratio(&opp, &tpp),
            cell(&otg),
            theirs(&ttg),
            ratio(&otg, &ttg)
        );
    }
    Ok(())
}

/// One engine run: `pl` requests submitted at once.
#[derive(Clone, Copy)]
struct EngineRun {
    /// Generated tokens per second over the whole run (prompts included in the time).
    agg_tps: f64,
    /// Generated tokens per second once every request produced its first token (the
    /// decode phase: comparable to llama-batched-bench's tg speed).
    tg_tps: f64,
    ttft_p50: f64,
    ttft_p95: f64,
}

fn engine_run(engine: &llama_rs::Engine, prompts: Vec<Vec<Token>>, ntg: usize) -> EngineRun {
    let p = GenerateParams {
        max_tokens: Some(ntg),
        ignore_eos: true,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let streams: Vec<_> =
        prompts.into_iter().map(|t| engine.submit(llama_rs::Request::tokens(t, p.clone())).unwrap()).collect();
    // Every stream read at once (a consumer that reads one stream to its end while the
    // others fill their channels would pause them: backpressure).
    let readers: Vec<_> = streams.into_iter().map(|s| std::thread::spawn(move || s.text().unwrap())).collect();
    let done: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    let total = t0.elapsed().as_secs_f64();
    let n = done.len();
    let mut ttft: Vec<f64> = done.iter().map(|c| c.timings.ttft_ms).collect();
    ttft.sort_by(f64::total_cmp);
    let pct = |q: f64| ttft[((q / 100.0) * (n - 1) as f64).round() as usize];
    let last_first = ttft[n - 1] / 1e3;
    let gen: usize = done.iter().map(|c| c.usage.completion_tokens).sum();
    EngineRun {
        agg_tps: gen as f64 / total,
        tg_tps: (gen - n) as f64 / (total - last_first).max(1e-9),
        ttft_p50: pct(50.0),
        ttft_p95: pct(95.0),
    }
}

fn engine_main(a: &Args, ours: &mut Ours, path: &std::path::Path, threads: u32) -> anyhow::Result<()> {
    let max_pl = a.npl.iter().copied().max().unwrap_or(1);
    let n_ctx = (max_pl * (a.npp + a.ntg)) as u32;
    let fa = match a.fa.as_str() {
        "on" => FlashAttn::On,
        "off" => FlashAttn::Off,
        _ => FlashAttn::Auto,
    };
    let params = llama_rs::EngineParams {
        n_ctx,
        slots: max_pl as u32,
        step_tokens: 2048,
        n_threads: threads,
        flash_attn: fa,
        prefix_cache: false,
        kv_unified: a.kvu,
        ..Default::default()
    };
    let engine = llama_rs::Engine::new(&ours.model, params.clone())?;
    engine_run(&engine, vec![(0..16).map(|_| ours.rand_token()).collect()], 4); // warm-up
    let mut rows: Vec<(Vec<EngineRun>, Vec<BatchedRun>)> = vec![(vec![], vec![]); a.npl.len()];
    let bar = llama_devtools::steps_progress(a.reps as u64, "repetitions");
    for _ in 0..a.reps {
        bar.inc(1);
        for (row, &pl) in rows.iter_mut().zip(&a.npl) {
            let prompts = (0..pl).map(|_| (0..a.npp).map(|_| ours.rand_token()).collect()).collect();
            row.0.push(engine_run(&engine, prompts, a.ntg));
        }
        if let Some(bin) = &a.llama_batched_bench {
            match llama_batched_bench(bin, a, path, threads, n_ctx) {
                Some(theirs) => rows.iter_mut().zip(theirs).for_each(|(row, r)| row.1.push(r)),
                None => eprintln!("llama-batched-bench gave no results"),
            }
        }
    }
    bar.finish_and_clear();
    drop(engine);
    let layout = if a.kvu { "one unified KV pool (llama-batched-bench -kvu)" } else { "one KV stream per sequence" };
    println!("engine: {} prompt + {} generated tokens per request, n_ctx {n_ctx}, {layout}\n", a.npp, a.ntg);
    println!("| requests | gen t/s (whole run) | tg t/s (decode phase) | llama-batched-bench tg t/s | tg ratio | TTFT p50 ms | TTFT p95 ms |");
    println!("|---|---|---|---|---|---|---|");
    let cell = |v: &[f64]| {
        let (m, sd) = stats(v);
        format!("{m:.1} ± {sd:.1}")
    };
    for ((o, t), pl) in rows.iter().zip(&a.npl) {
        let f = |g: fn(&EngineRun) -> f64| o.iter().map(g).collect::<Vec<_>>();
        let ttg: Vec<f64> = t.iter().map(|r| r.tg_tps).collect();
        let (theirs, ratio) = if ttg.is_empty() {
            ("–".to_string(), "–".to_string())
        } else {
            let r: Vec<f64> = o.iter().zip(&ttg).map(|(x, y)| x.tg_tps / y).collect();
            let (m, sd) = stats(&r);
            (cell(&ttg), format!("{m:.3} ± {sd:.3}"))
        };
        println!(
            "| {pl} | {} | {} | {theirs} | {ratio} | {} | {} |",
            cell(&f(|r| r.agg_tps)),
            cell(&f(|r| r.tg_tps)),
            cell(&f(|r| r.ttft_p50)),
            cell(&f(|r| r.ttft_p95)),
        );
    }
    // Prefix reuse: 8 requests sharing a 1,000-token system prompt, each with its own
    // 24-token question, submitted one after another once the first has finished.
    println!("\nprefix reuse: 8 requests sharing a 1,000-token prefix (+24 own tokens), {} generated each\n", a.ntg);
    println!("| prefix cache | prompt tokens decoded | TTFT p50 ms (requests 2-8) | total s |");
    println!("|---|---|---|---|");
    let system: Vec<Token> = (0..1000).map(|_| ours.rand_token()).collect();
    let questions: Vec<Vec<Token>> = (0..8).map(|_| (0..24).map(|_| ours.rand_token()).collect()).collect();
    for cache in [false, true] {
        let p = llama_rs::EngineParams { n_ctx: 16384, prefix_cache: cache, kv_unified: true, ..params.clone() };
        let engine = llama_rs::Engine::new(&ours.model, p)?;
        let t0 = Instant::now();
        let first = [system.clone(), questions[0].clone()].concat();
        engine_run(&engine, vec![first], a.ntg);
        let rest: Vec<Vec<Token>> = questions[1..].iter().map(|q| [system.clone(), q.clone()].concat()).collect();
        let r = engine_run(&engine, rest, a.ntg);
        let m = engine.metrics();
        println!(
            "| {} | {} | {:.1} | {:.2} |",
            if cache { "on" } else { "off" },
            m.prompt_tokens,
            r.ttft_p50,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Prompts for the speculative benchmark: tasks whose answers repeat their input (the
/// case n-gram drafting is for), and prose (where it must not slow things down).
const SPEC_PROMPTS: [(&str, &str); 4] = [
    (
        "rewrite code",
        "Rename the variable `total` to `sum` in this function and print the whole function again.\n\n\
         ```python\ndef average(values):\n    total = 0\n    count = 0\n    for v in values:\n        total += v\n        \
         count += 1\n    if count == 0:\n        return 0\n    return total / count\n```\n\nRenamed:\n\n```python\n",
    ),
    (
        "edit JSON",
        "Change Bob's age to 26 and output the full JSON document again.\n\n\
         [{\"name\": \"Alice\", \"age\": 30, \"city\": \"Paris\", \"email\": \"alice@example.com\"},\n \
         {\"name\": \"Bob\", \"age\": 25, \"city\": \"London\", \"email\": \"bob@example.com\"},\n \
         {\"name\": \"Carol\", \"age\": 35, \"city\": \"Berlin\", \"email\": \"carol@example.com\"}]\n\nUpdated:\n\n[",
    ),
    (
        "continue a list",
        "Packing list for the trip:\n- passport\n- charger for the phone\n- charger for the laptop\n- \
         toothbrush\n- toothpaste\n- sunscreen\n\nThe same list, sorted alphabetically:\n-",
    ),
    ("prose", "Write a short essay about the history of bread making in Europe.\n\n"),
];

fn spec_main(a: &Args, model: &Model, threads: u32) -> anyhow::Result<()> {
    use llama_rs::{DraftKind, Speculation};
    // n_outputs_max_per_seq: verifications keep a GPU device sampler (no effect on the CPU).
    let ctx = || model.context(ContextParams::default().n_ctx(4096).n_threads(threads).n_outputs_max_per_seq(16));
    let plain = GenerateParams { max_tokens: Some(a.n_gen), sampler: SamplerConfig::greedy(), ..Default::default() };
    let mut variants: Vec<(&str, Option<DraftKind>)> = vec![
        ("plain", None),
        ("ngram", Some(DraftKind::Ngram { n_min: 2, n_max: 6 })),
        ("ngram-map", Some(DraftKind::NgramMap { n: 3, min_count: 1 })),
    ];
    if model.mtp_loaded() {
        variants.push(("mtp", Some(DraftKind::Mtp)));
    }
    let draft = match &a.draft {
        Some(d) => {
            variants.push(("draft model", Some(DraftKind::Model)));
            Some(Model::load(d, draft_params(a)?)?)
        }
        None => None,
    };
    println!("speculative decoding, greedy, {} tokens, {} reps, threads {threads}\n", a.n_gen, a.reps);
    println!("| task | drafter | t/s | speedup | acceptance | tokens per target decode | ms per drafted token |");
    println!("|---|---|---|---|---|---|---|");
    for (task, prompt) in SPEC_PROMPTS {
        let mut base = 0.0;
        for (name, kind) in &variants {
            let p = GenerateParams {
                speculation: kind.clone().map(|drafter| Speculation {
                    drafter,
                    max_draft: a.draft_max,
                    fixed_batch: a.spec_fixed,
                    ..Default::default()
                }),
                ..plain.clone()
            };
            let mut tps = Vec::new();
            let mut last = None;
            let mut n_last = 0;
            for _ in 0..a.reps {
                let mut s = Session::new(ctx()?)?;
                if let (Some(DraftKind::Model), Some(d)) = (kind, &draft) {
                    let cp = ContextParams::default().n_ctx(4096).n_threads(threads);
                    s.set_draft_model(Some(llama_rs::DraftModel::new(model, d, cp)?));
                }
                if kind == &Some(DraftKind::Mtp) {
                    let cp = ContextParams::default().n_ctx(4096).n_threads(threads);
                    s.set_mtp(Some(llama_rs::Mtp::new(model, cp)?))?;
                }
                let t = Instant::now();
                let mut g = s.generate(prompt, &p)?;
                let mut n = 0;
                for piece in g.by_ref() {
                    n += piece?.tokens.len();
                }
                tps.push(n as f64 / t.elapsed().as_secs_f64());
                last = Some(g.spec_stats());
                n_last = n;
            }
            let (m, sd) = stats(&tps);
            if kind.is_none() {
                base = m;
            }
            let st = last.unwrap_or_default();
            let per = if st.target_decodes > 0 { n_last as f64 / st.target_decodes as f64 } else { 1.0 };
            let draft_ms = if st.drafted > 0 { 1e3 * st.draft_s / st.drafted as f64 } else { 0.0 };
            println!(
                "| {task} | {name} | {m:.1} ± {sd:.1} | {:.2}× | {:.2} | {per:.2} | {draft_ms:.3} |",
                m / base,
                st.acceptance()
            );
        }
    }
    Ok(())
}

/// The draft model's load parameters (`--ngl`, as the target's).
fn draft_params(a: &Args) -> anyhow::Result<ModelParams> {
    let ngl = if a.ngl == "all" { GpuLayers::All } else { GpuLayers::Count(a.ngl.parse()?) };
    Ok(ModelParams::default().gpu_layers(ngl))
}

/// Concurrent requests (the four speculative tasks at once) through the engine, with
/// n-gram speculation on and off: aggregate generated tokens per second.
fn spec_engine_main(a: &Args, model: &Model, threads: u32) -> anyhow::Result<()> {
    use llama_rs::{DraftKind, Speculation};
    println!(
        "\nengine, {} concurrent requests (the tasks above), {} greedy tokens each\n",
        SPEC_PROMPTS.len(),
        a.n_gen
    );
    println!("| speculation | aggregate t/s | speedup | accepted / drafted |");
    println!("|---|---|---|---|");
    let params = llama_rs::EngineParams { n_ctx: 4096, slots: 4, n_threads: threads, ..Default::default() };
    let engine = match &a.draft {
        Some(d) => llama_rs::Engine::with_draft_model(model, params, &Model::load(d, draft_params(a)?)?)?,
        None => llama_rs::Engine::new(model, params)?,
    };
    let mut base = 0.0;
    let mut specs = vec![None, Some(DraftKind::Ngram { n_min: 2, n_max: 6 })];
    if a.draft.is_some() {
        specs.push(Some(DraftKind::Model));
    }
    for kind in specs {
        let spec = kind.map(|drafter| Speculation { drafter, max_draft: a.draft_max, ..Default::default() });
        let p = GenerateParams {
            max_tokens: Some(a.n_gen),
            sampler: SamplerConfig::greedy(),
            speculation: spec.clone(),
            ..Default::default()
        };
        let mut tps = Vec::new();
        let (mut drafted, mut accepted) = (0, 0);
        for _ in 0..a.reps {
            let t = Instant::now();
            let streams: Vec<_> = SPEC_PROMPTS
                .iter()
                .map(|(_, prompt)| engine.submit(llama_rs::Request::text(*prompt, p.clone())))
                .collect::<Result<_, _>>()?;
            let readers: Vec<_> = streams.into_iter().map(|s| std::thread::spawn(move || s.text())).collect();
            let mut n = 0;
            for r in readers {
                let c = r.join().map_err(|_| anyhow::anyhow!("reader panicked"))??;
                n += c.usage.completion_tokens;
                accepted += c.usage.accepted_draft_tokens;
                drafted += c.usage.accepted_draft_tokens + c.usage.rejected_draft_tokens;
            }
            tps.push(n as f64 / t.elapsed().as_secs_f64());
        }
        let (m, sd) = stats(&tps);
        if spec.is_none() {
            base = m;
        }
        let name = match spec.as_ref().map(|s| &s.drafter) {
            None => "off",
            Some(DraftKind::Model) => "draft model",
            Some(_) => "ngram",
        };
        println!("| {name} | {m:.1} ± {sd:.1} | {:.2}× | {accepted} / {drafted} |", m / base);
    }
    Ok(())
}

/// Seconds of one decode of `n` random tokens after `depth` tokens of context (the cache
/// is cut back to `depth` after each, as a rejected draft is).
fn decode_time(ours: &mut Ours, ctx: &mut llama_rs::Context, depth: usize, n: usize, reps: usize) -> f64 {
    let mut b = Batch::new(n.max(1), 1).unwrap();
    let mut times = Vec::new();
    for r in 0..reps + 1 {
        b.clear();
        for i in 0..n {
            let tok = ours.rand_token();
            b.add(tok, (depth + i) as i32, &[0], true).unwrap();
        }
        let t = Instant::now();
        ctx.decode(&mut b).unwrap();
        std::hint::black_box(ctx.logits(n - 1).unwrap()[0]);
        if r > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
        ctx.seq_rm(Some(0), depth as i32..).unwrap();
    }
    stats(&times).0
}

/// Fills a context with `depth` random tokens.
fn fill(ours: &mut Ours, ctx: &mut llama_rs::Context, depth: usize) {
    let mut b = Batch::new(depth, 1).unwrap();
    for i in 0..depth {
        let tok = ours.rand_token();
        b.add(tok, i as i32, &[0], i + 1 == depth).unwrap();
    }
    ctx.decode(&mut b).unwrap();
}

fn verify_cost_main(a: &Args, ours: &mut Ours, threads: u32, ngl: GpuLayers) -> anyhow::Result<()> {
    let cp = ContextParams::default()
        .n_ctx((a.depth + 64) as u32)
        .n_batch((a.depth + 64) as u32)
        .n_ubatch(((a.depth + 64) as u32).min(512))
        .n_threads(threads);
    let mut ctx = ours.model.context(cp.clone())?;
    fill(ours, &mut ctx, a.depth);
    let sizes = [1usize, 2, 3, 5, 9, 17];
    let reps = a.reps.max(3) * 4;
    let times: Vec<f64> = sizes.iter().map(|&n| decode_time(ours, &mut ctx, a.depth, n, reps)).collect();
    println!("target decode of n tokens after {} tokens of context ({} timed decodes each)\n", a.depth, reps);
    println!("| n (draft k = n - 1) | ms | × single-token decode |");
    println!("|---|---|---|");
    for (n, t) in sizes.iter().zip(&times) {
        println!("| {n} | {:.2} | {:.2} |", t * 1e3, t / times[0]);
    }
    let draft_s = match &a.draft {
        Some(p) => {
            let dm = Model::load(p, ModelParams::default().gpu_layers(ngl))?;
            println!("\ndraft model: {} ({:.2} GiB)", dm.description(), dm.size() as f64 / (1u64 << 30) as f64);
            let mut dctx = dm.context(cp)?;
            fill(ours, &mut dctx, a.depth);
            let d = decode_time(ours, &mut dctx, a.depth, 1, reps);
            println!("draft single-token decode: {:.2} ms ({:.3} × target's)", d * 1e3, d / times[0]);
            d
        }
        None => 0.0,
    };
    // Expected tokens per verification with k drafted tokens each accepted with
    // probability p (independently): (1 - p^(k+1)) / (1 - p). Cost: k draft decodes
    // (sequential) + one target decode of k + 1 tokens.
    println!(
        "\nimplied speedup over plain decoding (best k of {:?})\n",
        &sizes[1..].iter().map(|n| n - 1).collect::<Vec<_>>()
    );
    println!("| acceptance | drafter | best k | speedup |");
    println!("|---|---|---|---|");
    for p in [0.5f64, 0.7, 0.9] {
        for (name, d) in [("n-gram (free)", 0.0), ("draft model", draft_s)] {
            if name == "draft model" && a.draft.is_none() {
                continue;
            }
            let (k, s) = sizes[1..]
                .iter()
                .zip(&times[1..])
                .map(|(&n, &t)| {
                    let k = n - 1;
                    let e = (1.0 - p.powi(n as i32)) / (1.0 - p);
                    (k, e * times[0] / (t + k as f64 * d))
                })
                .fold((0, 0.0), |acc, x| if x.1 > acc.1 { x } else { acc });
            println!("| {p} | {name} | {k} | {s:.2}× |");
        }
    }
    Ok(())
}

fn llama_bench(bin: &std::path::Path, a: &Args, model: &std::path::Path, threads: u32, test: &str) -> Option<f64> {
    let (p, n) = if test == "pp" { (a.n_prompt, 0) } else { (0, a.n_gen) };
    let ngl = if a.ngl == "all" { "999".to_string() } else { a.ngl.clone() };
    let fa = match a.fa.as_str() {
        "on" => "1",
        "off" => "0",
        _ => "auto",
    };
    let out = Command::new(bin)
        .args(["-m", &model.to_string_lossy(), "-p", &p.to_string(), "-n", &n.to_string(), "-r", "3"])
        .args(["-t", &threads.to_string(), "-ngl", &ngl, "-fa", fa, "-o", "json"])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array()?.first()?.get("avg_ts")?.as_f64()
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let a = Args::parse();
    let path = match &a.model {
        Some(p) => p.clone(),
        None => llama_testkit::default_model_path()?,
    };
    let ngl = if a.ngl == "all" { GpuLayers::All } else { GpuLayers::Count(a.ngl.parse()?) };
    if let Some(prompt) = &a.once {
        let model = Model::load(&path, ModelParams::default().gpu_layers(ngl))?;
        let threads =
            if a.threads == 0 { std::thread::available_parallelism().map_or(4, |n| n.get() as u32) } else { a.threads };
        let fa = match a.fa.as_str() {
            "on" => FlashAttn::On,
            "off" => FlashAttn::Off,
            _ => FlashAttn::Auto,
        };
        let cp = ContextParams::default()
            .n_ctx(a.ctx)
            .n_batch(a.once_batch)
            .n_ubatch(a.once_batch.min(512))
            .n_threads(threads)
            .flash_attn(fa);
        let mut s = Session::new(model.context(cp)?)?;
        let p = GenerateParams {
            max_tokens: Some(a.n_gen),
            ignore_eos: true,
            sampler: SamplerConfig::greedy(),
            ..Default::default()
        };
        // -r runs after one warm-up; each timed run is the whole call (prompt included),
        // as a script times `llm(prompt, max_tokens=n)`.
        let mut tps = Vec::new();
        let mut text = String::new();
        for r in 0..=a.reps {
            s.reset();
            let t = Instant::now();
            let (out, _) = s.generate(prompt.as_str(), &p)?.text()?;
            if r > 0 {
                tps.push(a.n_gen as f64 / t.elapsed().as_secs_f64());
            }
            text = out;
        }
        let (m, sd) = stats(&tps);
        println!("{prompt}{text}");
        eprintln!("once: {} tokens, {m:.2} ± {sd:.2} t/s over {} runs", a.n_gen, tps.len());
        return Ok(());
    }
    // --spec also drafts with the model's own MTP head when the file has one.
    let model = llama_examples::load_with_progress(&path, ModelParams::default().gpu_layers(ngl).mtp(a.spec))?;
    let threads =
        if a.threads == 0 { std::thread::available_parallelism().map_or(4, |n| n.get() as u32) } else { a.threads };
    let fa = match a.fa.as_str() {
        "on" => FlashAttn::On,
        "off" => FlashAttn::Off,
        _ => FlashAttn::Auto,
    };
    // llama-bench's defaults: n_ctx = p + n, n_batch 2048, n_ubatch 512.
    let params = ContextParams::default()
        .n_ctx((a.n_prompt + a.n_gen + 16) as u32)
        .n_batch(2048)
        .n_ubatch(512)
        .n_threads(threads)
        .flash_attn(fa);
    let n_vocab = model.n_vocab();
    let mut ours = Ours {
        model: model.clone(),
        params,
        n_vocab,
        rng: 0x12345678,
        pp_ctx: None,
        tg_ctx: None,
        gen_sessions: Default::default(),
        placement: Default::default(),
    };
    println!(
        "model: {} ({:.2} GiB), {}",
        model.description(),
        model.size() as f64 / (1u64 << 30) as f64,
        path.display()
    );
    println!("devices: {}", llama_rs::Device::all().iter().map(|d| d.name.clone()).collect::<Vec<_>>().join(", "));
    println!("threads {threads}, ngl {}, fa {}, reps {} (alternating)\n", a.ngl, a.fa, a.reps);

    if a.breakdown {
        ours.breakdown(a.n_gen, a.reps);
        return Ok(());
    }
    if a.batched {
        return batched_main(&a, &mut ours, &path, threads);
    }
    if a.engine {
        return engine_main(&a, &mut ours, &path, threads);
    }
    if a.verify_cost {
        return verify_cost_main(&a, &mut ours, threads, ngl);
    }
    if a.spec {
        spec_main(&a, &ours.model, threads)?;
        if a.spec_engine {
            spec_engine_main(&a, &ours.model, threads)?;
        }
        return Ok(());
    }
    // Generation tests: llama-cpp-python's greedy and default chains, placed by
    // DeviceSampling::Auto and forced onto the host.
    let default_chain = SamplerConfig { seed: 1, ..Default::default() };
    let gen_tests: [(&str, SamplerConfig, DeviceSampling); 4] = [
        ("gen", SamplerConfig::greedy(), DeviceSampling::Auto),
        ("gen-host", SamplerConfig::greedy(), DeviceSampling::Off),
        ("gen-default", default_chain.clone(), DeviceSampling::Auto),
        ("gen-default-host", default_chain, DeviceSampling::Off),
    ];
    for (name, sampler, placement) in &gen_tests {
        ours.gen(name, 4, sampler.clone(), *placement); // warm-up, as llama-bench does
    }
    let mut tests: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![("pp", vec![], vec![]), ("tg", vec![], vec![])];
    if !a.no_gen {
        tests.push(("tg+argmax", vec![], vec![]));
        tests.extend(gen_tests.iter().map(|(name, ..)| (*name, vec![], vec![])));
    }
    let bar = llama_devtools::steps_progress((a.reps * tests.len()) as u64, "tests");
    for _ in 0..a.reps {
        for (name, o, t) in tests.iter_mut() {
            bar.inc(1);
            o.push(match *name {
                "pp" => ours.pp(a.n_prompt),
                "tg" => ours.tg(a.n_gen),
                "tg+argmax" => ours.tg_argmax(a.n_gen),
                gen => {
                    let (name, sampler, placement) = gen_tests.iter().find(|t| t.0 == gen).unwrap();
                    ours.gen(name, a.n_gen, sampler.clone(), *placement)
                }
            });
            if let Some(bin) = &a.llama_bench {
                let which = if *name == "pp" { "pp" } else { "tg" };
                if let Some(v) = llama_bench(bin, &a, &path, threads, which) {
                    t.push(v);
                }
            }
        }
    }
    bar.finish_and_clear();
    println!("| test | llama-rs t/s | llama-bench t/s | ratio |");
    println!("|---|---|---|---|");
    for (name, o, t) in &tests {
        let label = match *name {
            "pp" => format!("pp{}", a.n_prompt),
            "tg" => format!("tg{}", a.n_gen),
            "tg+argmax" => format!("tg{} + argmax (raw) vs tg{}", a.n_gen, a.n_gen),
            gen => {
                let chain = if gen.starts_with("gen-default") { "default chain" } else { "greedy" };
                let policy = if gen.ends_with("-host") { "Off" } else { "Auto" };
                format!(
                    "gen{} {chain}, device sampling {policy} → {} (API) vs tg{}",
                    a.n_gen, ours.placement[gen], a.n_gen
                )
            }
        };
        let (om, osd) = stats(o);
        if t.is_empty() {
            println!("| {label} | {om:.1} ± {osd:.1} | – | – |");
        } else {
            let (tm, tsd) = stats(t);
            let r: Vec<f64> = o.iter().zip(t).map(|(x, y)| x / y).collect();
            let (rm, rsd) = stats(&r);
            println!("| {label} | {om:.1} ± {osd:.1} | {tm:.1} ± {tsd:.1} | {rm:.3} ± {rsd:.3} |");
        }
    }
    Ok(())
}
