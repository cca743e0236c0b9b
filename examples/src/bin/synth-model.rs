//! Writes a synthetic GGUF model with a real architecture shape, a real vocabulary and
//! random weights written directly in a quantized type (Q4_K where rows allow, else
//! Q8_0) — for speed tests of models that cannot be downloaded here. Speed does not
//! depend on weight values.
//!
//!     cargo run --release -p llama-examples --bin synth-model -- \
//!         --shape 7b --vocab vendor/llama.cpp/models/ggml-vocab-qwen2.gguf --out /tmp/qwen2-7b-shape.gguf

use clap::Parser;
use llama_rs::{GgufValue, GgufWriter};

#[derive(Parser)]
struct Args {
    /// 0.5b, 1.5b, 7b, 72b (Qwen2.5 shapes), or tiny.
    #[arg(long, default_value = "0.5b")]
    shape: String,
    /// A GGUF whose tokenizer.* metadata is copied (e.g. models/ggml-vocab-qwen2.gguf).
    #[arg(long)]
    vocab: std::path::PathBuf,
    #[arg(long)]
    out: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

struct Shape {
    n_embd: u64,
    n_layer: u64,
    n_head: u64,
    n_head_kv: u64,
    n_ff: u64,
}

const GGML_F32: u32 = 0;
const GGML_Q8_0: u32 = 8;
const GGML_Q4_K: u32 = 12;

fn f16_bits(x: f32) -> u16 {
    // Normal numbers only (all we need): rebias the exponent, truncate the mantissa.
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let man = ((b >> 13) & 0x3ff) as u16;
    sign | ((exp.clamp(1, 30) as u16) << 10) | man
}

fn xorshift(mut s: u64) -> impl FnMut() -> u64 {
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// Random blocks of a quantized type with fixed, small scales (sane activations).
fn quant_tensor(w: &mut GgufWriter, name: &str, ne0: u64, ne1: u64, seed: u64) {
    let (ty, block, bytes, scale_bytes): (u32, u64, usize, Vec<u8>) = if ne0 % 256 == 0 {
        let mut s = Vec::new();
        s.extend_from_slice(&f16_bits(2e-4).to_le_bytes()); // d
        s.extend_from_slice(&f16_bits(1e-4).to_le_bytes()); // dmin
        (GGML_Q4_K, 256, 144, s)
    } else {
        assert!(ne0 % 32 == 0, "{name}: row of {ne0} values");
        (GGML_Q8_0, 32, 34, f16_bits(3e-4).to_le_bytes().to_vec())
    };
    let n_bytes = (ne0 / block * ne1) as usize * bytes;
    w.tensor_gen(name, &[ne0, ne1], ty, n_bytes, move |off, chunk| {
        let mut rng = xorshift(seed.wrapping_mul(0x9E3779B97F4A7C15) ^ (off as u64 + 1));
        for c in chunk.chunks_mut(8) {
            let r = rng().to_le_bytes();
            c.copy_from_slice(&r[..c.len()]);
        }
        // Patch the scale fields at each block start inside this chunk.
        let first = off.div_ceil(bytes) * bytes;
        let mut p = first;
        while p < off + chunk.len() {
            for (k, &sb) in scale_bytes.iter().enumerate() {
                if p + k < off + chunk.len() {
                    chunk[p + k - off] = sb;
                }
            }
            p += bytes;
        }
        // A block cut by the chunk start keeps its scale bytes too.
        let cut = off % bytes;
        if cut != 0 && cut < scale_bytes.len() {
            for k in cut..scale_bytes.len() {
                if k - cut < chunk.len() {
                    chunk[k - cut] = scale_bytes[k];
                }
            }
        }
    })
    .unwrap();
}

fn ones(w: &mut GgufWriter, name: &str, n: u64) {
    w.tensor_f32(name, &[n], vec![1.0; n as usize]).unwrap();
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let s = match a.shape.as_str() {
        "tiny" => Shape { n_embd: 256, n_layer: 2, n_head: 4, n_head_kv: 2, n_ff: 512 },
        "0.5b" => Shape { n_embd: 896, n_layer: 24, n_head: 14, n_head_kv: 2, n_ff: 4864 },
        "1.5b" => Shape { n_embd: 1536, n_layer: 28, n_head: 12, n_head_kv: 2, n_ff: 8960 },
        "7b" => Shape { n_embd: 3584, n_layer: 28, n_head: 28, n_head_kv: 4, n_ff: 18944 },
        "72b" => Shape { n_embd: 8192, n_layer: 80, n_head: 64, n_head_kv: 8, n_ff: 29568 },
        other => anyhow::bail!("unknown shape {other}"),
    };
    let meta = llama_rs::read_gguf_metadata(&a.vocab)?;
    let n_vocab = meta
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::Array(t)) => Some(t.len() as u64),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("{} has no tokenizer.ggml.tokens", a.vocab.display()))?;
    let mut w = GgufWriter::new();
    let arch = "qwen2";
    w.kv_str("general.architecture", arch).kv_str("general.name", &format!("synthetic qwen2-{} shape", a.shape));
    w.kv_u32("general.file_type", 15); // "Q4_K - Medium"-like mix, for display only
    for (k, v) in meta.into_iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
        w.kv(&k, v);
    }
    let head_dim = s.n_embd / s.n_head;
    w.kv_u32(&format!("{arch}.context_length"), 32768)
        .kv_u32(&format!("{arch}.embedding_length"), s.n_embd as u32)
        .kv_u32(&format!("{arch}.block_count"), s.n_layer as u32)
        .kv_u32(&format!("{arch}.feed_forward_length"), s.n_ff as u32)
        .kv_u32(&format!("{arch}.attention.head_count"), s.n_head as u32)
        .kv_u32(&format!("{arch}.attention.head_count_kv"), s.n_head_kv as u32)
        .kv_f32(&format!("{arch}.rope.freq_base"), 1_000_000.0)
        .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6);
    let n_kv = s.n_head_kv * head_dim;
    let mut seed = a.seed;
    let mut next = || {
        seed += 1;
        seed
    };
    quant_tensor(&mut w, "token_embd.weight", s.n_embd, n_vocab, next());
    for il in 0..s.n_layer {
        let p = format!("blk.{il}");
        ones(&mut w, &format!("{p}.attn_norm.weight"), s.n_embd);
        quant_tensor(&mut w, &format!("{p}.attn_q.weight"), s.n_embd, s.n_embd, next());
        quant_tensor(&mut w, &format!("{p}.attn_k.weight"), s.n_embd, n_kv, next());
        quant_tensor(&mut w, &format!("{p}.attn_v.weight"), s.n_embd, n_kv, next());
        w.tensor_f32(&format!("{p}.attn_q.bias"), &[s.n_embd], vec![0.0; s.n_embd as usize])?;
        w.tensor_f32(&format!("{p}.attn_k.bias"), &[n_kv], vec![0.0; n_kv as usize])?;
        w.tensor_f32(&format!("{p}.attn_v.bias"), &[n_kv], vec![0.0; n_kv as usize])?;
        quant_tensor(&mut w, &format!("{p}.attn_output.weight"), s.n_embd, s.n_embd, next());
        ones(&mut w, &format!("{p}.ffn_norm.weight"), s.n_embd);
        quant_tensor(&mut w, &format!("{p}.ffn_gate.weight"), s.n_embd, s.n_ff, next());
        quant_tensor(&mut w, &format!("{p}.ffn_up.weight"), s.n_embd, s.n_ff, next());
        quant_tensor(&mut w, &format!("{p}.ffn_down.weight"), s.n_ff, s.n_embd, next());
    }
    ones(&mut w, "output_norm.weight", s.n_embd);
    quant_tensor(&mut w, "output.weight", s.n_embd, n_vocab, next());
    let _ = GGML_F32;
    let t = std::time::Instant::now();
    w.write(&a.out)?;
    let size = std::fs::metadata(&a.out)?.len();
    eprintln!("wrote {} ({:.2} GiB) in {:.1}s", a.out.display(), size as f64 / (1u64 << 30) as f64, t.elapsed().as_secs_f64());
    Ok(())
}
