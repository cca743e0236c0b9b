//! Writes a synthetic GGUF model with a real architecture shape, a real vocabulary and
//! random weights written directly in a quantized type — for speed tests of models that
//! cannot be downloaded here (see `llama_testkit::write_synthetic_qwen2`).
//!
//! ```sh
//! cargo run --release -p llama-devtools --bin synth-model -- \
//!     --shape 7b --vocab vendor/llama.cpp/models/ggml-vocab-qwen2.gguf --out /tmp/qwen2-7b-shape.gguf
//! ```

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// tiny, 0.5b, 1.5b, 7b, 72b (Qwen2.5 shapes); moe-tiny, moe-a2.7b (Qwen2-MoE);
    /// mtp-tiny (GLM-4.5 with an MTP head); tiny-reranker (Qwen3-Reranker's layout, its
    /// own tiny vocabulary: `--vocab` is not read); mmproj-gemma3 (a Gemma 3 multimodal
    /// projector for the text model given as `--vocab`, whose embedding size it takes);
    /// smollm2-135m (SmolLM2-135M's dimensions in the Qwen2 layout); vocab (only the
    /// tokenizer and chat template of `--vocab`: a small file to carry, to give a
    /// synthetic model a real model's vocabulary elsewhere).
    #[arg(long, default_value = "0.5b")]
    shape: String,
    /// A GGUF whose tokenizer.* metadata is copied (e.g. models/ggml-vocab-qwen2.gguf).
    #[arg(long)]
    vocab: std::path::PathBuf,
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write N split files (llama.cpp's -0000i-of-0000N naming).
    #[arg(long, default_value_t = 1)]
    splits: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    if a.shape == "mmproj-gemma3" {
        let n_embd = llama_rs::read_gguf_metadata(&a.vocab)?
            .into_iter()
            .find(|(k, _)| k.ends_with(".embedding_length"))
            .and_then(|(_, v)| match v {
                llama_rs::GgufValue::U32(n) => Some(n as u64),
                _ => None,
            })
            .ok_or_else(|| anyhow::anyhow!("{}: no embedding_length", a.vocab.display()))?;
        llama_testkit::write_gemma3_mmproj(&a.out, &llama_testkit::Gemma3Projector::small(n_embd), a.seed)?;
        println!("{}", a.out.display());
        return Ok(());
    }
    if a.shape == "vocab" {
        let mut w = llama_testkit::GgufWriter::new();
        w.kv_str("general.architecture", "llama").kv_str("general.name", "vocabulary only");
        for (k, v) in llama_rs::read_gguf_metadata(&a.vocab)?.into_iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
            w.kv(&k, v);
        }
        w.write(&a.out)?;
        println!("{}", a.out.display());
        return Ok(());
    }
    if a.shape == "tiny-reranker" {
        llama_testkit::write_tiny_reranker(&a.out)?;
        println!("{}", a.out.display());
        return Ok(());
    }
    let shape =
        llama_testkit::SyntheticShape::named(&a.shape).ok_or_else(|| anyhow::anyhow!("unknown shape {}", a.shape))?;
    let t = std::time::Instant::now();
    let paths = llama_testkit::write_synthetic_qwen2(shape, &a.vocab, &a.out, a.seed, a.splits)?;
    let size: u64 = paths.iter().map(|p| std::fs::metadata(p).map_or(0, |m| m.len())).sum();
    for p in &paths {
        println!("{}", p.display());
    }
    eprintln!("wrote {:.2} GiB in {:.1}s", size as f64 / (1u64 << 30) as f64, t.elapsed().as_secs_f64());
    Ok(())
}
