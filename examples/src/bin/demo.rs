//! Greedy text generation on the default model (or `--model` / `LLAMA_RS_MODEL`),
//! printing text as it streams and the speed at the end.
//!
//!     cargo run --release -p llama-examples --bin demo -- "The capital of France is"

use std::io::Write;
use std::time::Instant;

use clap::Parser;
use llama_rs::{Batch, ContextParams, ModelParams, PieceDecoder};

#[derive(Parser)]
#[command(about = "Greedy generation with llama-rs")]
struct Args {
    /// Prompt text.
    #[arg(default_value = "The capital of France is")]
    prompt: String,
    /// GGUF model (default: $LLAMA_RS_MODEL or the fetched Gemma 3 270M).
    #[arg(long)]
    model: Option<std::path::PathBuf>,
    /// Tokens to generate.
    #[arg(short = 'n', long, default_value_t = 64)]
    n_predict: usize,
    /// Context size (0 = just enough for the prompt and the generated tokens).
    #[arg(short = 'c', long, default_value_t = 0)]
    ctx: u32,
    /// Threads (0 = all cores).
    #[arg(short, long, default_value_t = 0)]
    threads: u32,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,llama_cpp=error")).init();
    let args = Args::parse();
    let path = match args.model {
        Some(p) => p,
        None => llama_testkit::default_model_path()?,
    };
    let model = llama_examples::load_with_progress(&path, ModelParams::default())?;
    eprintln!("{} | {} params | {}", model.description(), model.n_params(), path.display());
    let vocab = model.vocab();
    let prompt = vocab.tokenize(&args.prompt, true, false)?;
    let n_ctx = if args.ctx > 0 { args.ctx } else { ((prompt.len() + args.n_predict + 8) as u32).max(256) };
    let mut ctx = model.context(ContextParams::default().n_ctx(n_ctx).n_threads(args.threads))?;

    let t0 = Instant::now();
    let mut batch = Batch::new(prompt.len().max(1), 1)?;
    batch.add_sequence(&prompt, 0, 0, true)?;
    ctx.decode(&mut batch)?;
    let t_prompt = t0.elapsed();

    print!("{}", args.prompt);
    let mut out = std::io::stdout().lock();
    let mut text = PieceDecoder::default();
    let mut piece = Vec::new();
    let mut one = Batch::new(1, 1)?;
    let mut pos = prompt.len() as i32;
    let mut generated = 0;
    let t1 = Instant::now();
    loop {
        let next = llama_rs::argmax(ctx.logits_last()?);
        if vocab.is_eog(next) || generated == args.n_predict {
            break;
        }
        vocab.token_to_piece_bytes(next, false, &mut piece)?;
        write!(out, "{}", text.push(&piece))?;
        out.flush()?;
        generated += 1;
        one.clear();
        one.add(next, pos, &[0], true)?;
        ctx.decode(&mut one)?;
        pos += 1;
    }
    writeln!(out, "{}", text.finish())?;
    let t_gen = t1.elapsed();
    eprintln!(
        "prompt: {} tokens in {:.1} ms ({:.1} t/s) | generated: {} tokens in {:.1} ms ({:.1} t/s)",
        prompt.len(),
        t_prompt.as_secs_f64() * 1e3,
        prompt.len() as f64 / t_prompt.as_secs_f64(),
        generated,
        t_gen.as_secs_f64() * 1e3,
        generated as f64 / t_gen.as_secs_f64()
    );
    Ok(())
}
