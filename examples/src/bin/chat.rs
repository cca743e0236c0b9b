//! `chat`: a terminal chat with a model's chat template, streaming, line editing and
//! history; or one answer for scripts (`--prompt TEXT`, `--prompt -` reads stdin).
//!
//! ```sh
//! cargo run --release -p llama-examples --bin chat                     # SmolLM2, interactive
//! cargo run --release -p llama-examples --bin chat -- -p "Name three rivers." -n 64
//! echo "Hi" | cargo run --release -p llama-examples --bin chat -- -p - --temp 0
//! ```
//!
//! Commands: `/reset`, `/save FILE`, `/load FILE`, `/stats`, `/system TEXT`, `/help`,
//! `/quit`. Ctrl-C stops an answer; Ctrl-C or Ctrl-D at the prompt quits.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use llama_rs::{
    ChatMessage, ChatTemplate, ContextParams, DraftKind, FinishReason, GenerateParams, GpuLayers, ModelParams,
    RenderOptions, SamplerConfig, Session, Speculation,
};

/// Flags named as llama-cli's where one exists.
#[derive(Parser)]
#[command(name = "chat", about = "Chat with a GGUF model in the terminal (llama-rs)")]
struct Args {
    /// Model GGUF (default: the fetched SmolLM2-135M-Instruct chat model).
    #[arg(short = 'm', long)]
    model: Option<std::path::PathBuf>,
    /// One answer to this prompt, then exit ("-": read it from stdin).
    #[arg(short = 'p', long)]
    prompt: Option<String>,
    /// System prompt.
    #[arg(long = "system-prompt", visible_alias = "sys", short = 's')]
    system: Option<String>,
    /// Context size.
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096)]
    ctx_size: u32,
    /// Most tokens per answer (-1: until the context is full).
    #[arg(short = 'n', long = "n-predict", default_value_t = 512)]
    n_predict: i64,
    /// GPU layers: a number, `all`, or `auto` (as many as fit, from the memory plan).
    #[arg(long = "n-gpu-layers", visible_alias = "ngl", default_value = "all")]
    n_gpu_layers: String,
    /// Threads (0: all cores).
    #[arg(short = 't', long, default_value_t = 0)]
    threads: u32,
    /// Temperature (0: greedy).
    #[arg(long, default_value_t = 0.8)]
    temp: f32,
    /// Top-k (0: off).
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: i32,
    /// Top-p (1: off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    top_p: f32,
    /// Min-p (0: off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    /// Repeat penalty (1: off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    /// Seed (default: random).
    #[arg(long)]
    seed: Option<u32>,
    /// Chat template: a built-in name (chatml, llama3, gemma, ...) or a Jinja file.
    #[arg(long = "chat-template")]
    chat_template: Option<String>,
    /// Speculative decoding: none, ngram (prompt lookup) or ngram-map.
    #[arg(long = "spec-type", default_value = "none")]
    spec_type: String,
    /// Most tokens drafted per step.
    #[arg(long = "draft-max", default_value_t = 8)]
    draft_max: usize,
}

/// The conversation and the session that holds its cache.
struct Chat {
    session: Session,
    template: ChatTemplate,
    messages: Vec<ChatMessage>,
    params: GenerateParams,
    /// Totals for /stats.
    answers: usize,
    generated: usize,
    gen_s: f64,
}

impl Chat {
    fn reset(&mut self, system: Option<&str>) {
        self.session.reset();
        self.messages.clear();
        if let Some(s) = system {
            self.messages.push(ChatMessage::system(s));
        }
    }

    /// Answers the last user message, streaming to `out`; returns (text, tokens, TTFT s,
    /// total s, finish).
    fn answer(
        &mut self,
        out: &mut dyn Write,
        stop: &AtomicBool,
    ) -> anyhow::Result<(String, usize, f64, f64, FinishReason)> {
        let opts = RenderOptions { add_generation_prompt: true, ..Default::default() };
        let prompt = self.template.render(&self.messages, &opts)?;
        let t0 = Instant::now();
        // The rendered conversation shares its prefix with the cache: only the new turn is
        // decoded (Session reuses the longest common prefix).
        let mut g = self.session.generate(prompt, &self.params)?;
        let cancel = g.cancel_handle();
        let (mut text, mut n, mut ttft) = (String::new(), 0, None);
        for piece in g.by_ref() {
            if stop.swap(false, Ordering::Relaxed) {
                cancel.cancel();
            }
            let p = piece?;
            if ttft.is_none() && !p.tokens.is_empty() {
                ttft = Some(t0.elapsed().as_secs_f64());
            }
            n += p.tokens.len();
            write!(out, "{}", p.text)?;
            out.flush()?;
            text += &p.text;
        }
        let finish = g.finish_reason().unwrap_or(FinishReason::Stop);
        let total = t0.elapsed().as_secs_f64();
        self.answers += 1;
        self.generated += n;
        self.gen_s += total;
        Ok((text, n, ttft.unwrap_or(total), total, finish))
    }
}

fn chat_model_path(a: &Args) -> anyhow::Result<std::path::PathBuf> {
    if let Some(m) = &a.model {
        return Ok(m.clone());
    }
    let p = llama_testkit::cache_dir().join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf");
    anyhow::ensure!(
        p.is_file(),
        "no -m given and the default chat model is not at {}: run `python3 vendor/fetch.py chat-model`",
        p.display()
    );
    Ok(p)
}

fn template(a: &Args, model: &llama_rs::Model) -> anyhow::Result<ChatTemplate> {
    Ok(match &a.chat_template {
        Some(t) if std::path::Path::new(t).is_file() => {
            let v = model.vocab();
            let piece = |t: Option<llama_rs::Token>| t.and_then(|t| v.token_to_piece(t, true).ok()).unwrap_or_default();
            ChatTemplate::jinja(std::fs::read_to_string(t)?, piece(v.bos()), piece(v.eos()))?
        }
        Some(name) => ChatTemplate::builtin(name)?,
        None => ChatTemplate::from_model(model)?,
    })
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let a = Args::parse_from(llama_examples::llama_style_args(&["-ngl", "-sys"]));
    let path = chat_model_path(&a)?;
    let mut cp = ContextParams::default().n_ctx(a.ctx_size);
    if a.threads > 0 {
        cp = cp.n_threads(a.threads);
    }
    let ngl = match a.n_gpu_layers.as_str() {
        "all" => GpuLayers::All,
        "auto" => {
            // As many layers as fit with a margin, from the dry-run memory plan.
            let f = llama_rs::fit(&path, ModelParams::default, &cp, &llama_rs::FitParams::default())?;
            eprintln!("-ngl auto: {:?} ({})", f.gpu_layers, f.reason);
            f.gpu_layers
        }
        n => GpuLayers::Count(n.parse().with_context(|| format!("-ngl {n}: a number, all or auto"))?),
    };
    let model = llama_examples::load_with_progress(&path, ModelParams::default().gpu_layers(ngl))
        .with_context(|| format!("loading {}", path.display()))?;
    let speculation = match a.spec_type.as_str() {
        "none" => None,
        "ngram" => Some(DraftKind::Ngram { n_min: 2, n_max: 6 }),
        "ngram-map" => Some(DraftKind::NgramMap { n: 3, min_count: 1 }),
        t => anyhow::bail!("--spec-type {t}: expected none, ngram or ngram-map"),
    }
    .map(|drafter| Speculation { drafter, max_draft: a.draft_max, ..Default::default() });
    let params = GenerateParams {
        max_tokens: (a.n_predict > 0).then_some(a.n_predict as usize),
        sampler: SamplerConfig {
            temperature: a.temp,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repeat_penalty: a.repeat_penalty,
            seed: a.seed.unwrap_or_else(rand_seed),
            ..Default::default()
        },
        add_special: false,
        parse_special: true,
        speculation,
        ..Default::default()
    };
    let mut chat = Chat {
        session: Session::new(model.context(cp)?)?,
        template: template(&a, &model)?,
        messages: Vec::new(),
        params,
        answers: 0,
        generated: 0,
        gen_s: 0.0,
    };
    chat.reset(a.system.as_deref());
    // Ctrl-C during an answer stops the answer (the line editor reads Ctrl-C as a key).
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    ctrlc::set_handler(move || s2.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;

    if let Some(p) = &a.prompt {
        let text = if p == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            p.clone()
        };
        chat.messages.push(ChatMessage::user(text.trim_end()));
        let mut out = std::io::stdout();
        let (_, n, ttft, total, _) = chat.answer(&mut out, &stop)?;
        writeln!(out)?;
        eprintln!("[{n} tokens, {:.1} t/s, TTFT {:.0} ms]", rate(n, ttft, total), ttft * 1e3);
        return Ok(());
    }

    eprintln!("{} — /help for commands, Ctrl-D to quit", model.description());
    let mut rl = rustyline::DefaultEditor::new()?;
    let history = llama_testkit::cache_dir().join("chat_history.txt");
    let _ = rl.load_history(&history);
    // No prompt when the input is piped: stdout then holds only the answers.
    let prompt = if std::io::IsTerminal::is_terminal(&std::io::stdin()) { "> " } else { "" };
    loop {
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted | rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let _ = rl.add_history_entry(line);
        if let Some(cmd) = line.strip_prefix('/') {
            let (name, arg) = cmd.split_once(' ').map_or((cmd, ""), |(n, a)| (n, a.trim()));
            if let Err(e) = command(&mut chat, name, arg, a.system.as_deref()) {
                eprintln!("error: {e:#}");
            }
            if name == "quit" || name == "exit" {
                break;
            }
            continue;
        }
        chat.messages.push(ChatMessage::user(line));
        stop.store(false, Ordering::Relaxed);
        let mut out = std::io::stdout();
        match chat.answer(&mut out, &stop) {
            Ok((text, n, ttft, total, finish)) => {
                println!();
                chat.messages.push(ChatMessage::assistant(text));
                let note = if finish == FinishReason::Cancelled { ", stopped" } else { "" };
                eprintln!("[{n} tokens, {:.1} t/s, TTFT {:.0} ms{note}]", rate(n, ttft, total), ttft * 1e3);
            }
            Err(e) => {
                chat.messages.pop();
                eprintln!("\nerror: {e:#}");
            }
        }
    }
    let _ = std::fs::create_dir_all(llama_testkit::cache_dir());
    let _ = rl.save_history(&history);
    Ok(())
}

/// Generation speed after the first token.
fn rate(n: usize, ttft: f64, total: f64) -> f64 {
    if n > 1 && total > ttft {
        (n - 1) as f64 / (total - ttft)
    } else {
        0.0
    }
}

fn command(chat: &mut Chat, name: &str, arg: &str, system: Option<&str>) -> anyhow::Result<()> {
    match name {
        "reset" => {
            chat.reset(system);
            eprintln!("(conversation cleared)");
        }
        "system" => {
            chat.reset(Some(arg).filter(|s| !s.is_empty()));
            eprintln!("(new conversation with this system prompt)");
        }
        "save" => {
            anyhow::ensure!(!arg.is_empty(), "usage: /save FILE");
            // The KV state, and the messages beside it (FILE.json).
            let state = chat.session.save_state()?;
            std::fs::write(arg, state)?;
            std::fs::write(format!("{arg}.json"), serde_json::to_string_pretty(&chat.messages)?)?;
            eprintln!("(saved {} messages to {arg} and {arg}.json)", chat.messages.len());
        }
        "load" => {
            anyhow::ensure!(!arg.is_empty(), "usage: /load FILE");
            let messages: Vec<ChatMessage> = serde_json::from_str(&std::fs::read_to_string(format!("{arg}.json"))?)?;
            chat.session.load_state(&std::fs::read(arg)?)?;
            chat.messages = messages;
            eprintln!("(loaded {} messages, {} cached tokens)", chat.messages.len(), chat.session.tokens().len());
        }
        "stats" => {
            eprintln!(
                "{} answers, {} tokens generated, {:.1} t/s overall; {} tokens in the cache of {}",
                chat.answers,
                chat.generated,
                if chat.gen_s > 0.0 { chat.generated as f64 / chat.gen_s } else { 0.0 },
                chat.session.tokens().len(),
                chat.session.context().n_ctx()
            );
        }
        "quit" | "exit" => {}
        _ => eprintln!("commands: /reset, /system TEXT, /save FILE, /load FILE, /stats, /quit"),
    }
    Ok(())
}

fn rand_seed() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}
