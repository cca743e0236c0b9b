//! Synthetic models: a real architecture shape (Qwen2, Qwen2-MoE with shared and routed
//! experts, or GLM-4.5's MoE with multi-token-prediction heads) and a real vocabulary
//! with random
//! weights written directly in a quantized type (Q4_K where rows allow, else Q8_0). For
//! speed tests of models that cannot be downloaded, and for tests of split (sharded)
//! loading. Speed does not depend on weight values; quality is nonsense.

use std::path::{Path, PathBuf};

use llama_rs::{read_gguf_metadata, GgufValue};
use llama_rs::{Error, Result};

use crate::GgufWriter;

/// Transformer dimensions (Qwen2 layout: GQA attention with biases, SwiGLU FFN). With
/// `n_expert > 0` the FFN is Qwen2-MoE's: a router, `n_expert` routed experts of width
/// `n_ff_exp` (`n_expert_used` per token) and a shared expert of width `n_ff`. With
/// `n_nextn > 0` the model is GLM-4.5's MoE (`glm4moe`: sigmoid routing with a bias, a
/// shared expert of width `n_ff_exp`) followed by `n_nextn` multi-token-prediction
/// (NextN) blocks, which llama.cpp runs in a `LLAMA_CONTEXT_TYPE_MTP` context.
///
/// ```
/// let s = llama_testkit::SyntheticShape::named("7b").unwrap();
/// assert_eq!((s.n_embd, s.n_layer, s.n_expert), (3584, 28, 0));
/// let m = llama_testkit::SyntheticShape::named("moe-a2.7b").unwrap();
/// assert_eq!((m.n_expert, m.n_expert_used), (60, 4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticShape {
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
    pub n_expert: u64,
    pub n_expert_used: u64,
    pub n_ff_exp: u64,
    pub n_nextn: u64,
}

impl SyntheticShape {
    /// `tiny`, the Qwen2.5 shapes `0.5b`, `1.5b`, `7b`, `72b`, `smollm2-135m`; MoE: `moe-tiny`, and
    /// `moe-a2.7b` (Qwen1.5-MoE-A2.7B: 14.3B parameters, 2.7B active); with one MTP block:
    /// `mtp-tiny` (GLM-4.5 layout).
    pub fn named(name: &str) -> Option<Self> {
        let s = |n_embd, n_layer, n_head, n_head_kv, n_ff| SyntheticShape {
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            n_ff,
            n_expert: 0,
            n_expert_used: 0,
            n_ff_exp: 0,
            n_nextn: 0,
        };
        let moe = |d: SyntheticShape, n_expert, n_expert_used, n_ff_exp| SyntheticShape {
            n_expert,
            n_expert_used,
            n_ff_exp,
            ..d
        };
        Some(match name {
            "tiny" => s(256, 2, 4, 2, 512),
            "0.5b" => s(896, 24, 14, 2, 4864),
            "1.5b" => s(1536, 28, 12, 2, 8960),
            "7b" => s(3584, 28, 28, 4, 18944),
            // SmolLM2-135M's dimensions (its layout is Llama's: no attention biases).
            "smollm2-135m" => s(576, 30, 9, 3, 1536),
            "72b" => s(8192, 80, 64, 8, 29568),
            "moe-tiny" => moe(s(256, 4, 4, 2, 512), 16, 2, 512),
            "moe-a2.7b" => moe(s(2048, 24, 16, 16, 5632), 60, 4, 1408),
            "mtp-tiny" => SyntheticShape { n_nextn: 1, ..moe(s(256, 2, 4, 2, 512), 8, 2, 256) },
            _ => return None,
        })
    }
}

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

enum Kind {
    Quant { ne: Vec<u64>, seed: u64 },
    Ones(u64),
    Zeros(u64),
    Const(u64, f32),
}

/// Random quants under fixed scales: zero-mean weights with a standard deviation of about
/// 0.0074, so a row of 18,944 inputs keeps unit-sized activations and 28 layers stay far
/// from f16 overflow. (Random 6-bit sub-scales and mins gave every Q4_K weight a mean
/// of +0.045: the residual stream grew layer after layer, the CPU answered one token
/// whatever the prompt, and GPU backends that keep f16 intermediates produced NaN.)
fn add_quant(w: &mut GgufWriter, name: &str, ne: &[u64], seed: u64) -> Result<()> {
    let (ne0, rows) = (ne[0], ne[1..].iter().product::<u64>());
    let (ty, block, bytes, scale): (u32, u64, usize, Vec<u8>) = if ne0 % 256 == 0 {
        // Q4_K block: d, dmin (f16), 12 bytes of 6-bit sub-scales and mins, 128 of nibbles.
        // Every sub-scale and min is 8 (bytes 0..8 hold sub-blocks 0-3, bytes 8..12 the
        // low/high nibbles of sub-blocks 4-7), so w = 8d·q − 8·dmin with q in 0..=15, and
        // dmin = 7.5d centres it.
        let d = 2e-4;
        let mut s = f16_bits(d).to_le_bytes().to_vec();
        s.extend_from_slice(&f16_bits(7.5 * d).to_le_bytes());
        s.extend_from_slice(&[8; 8]);
        s.extend_from_slice(&[0x88; 4]);
        (GGML_Q4_K, 256, 144, s)
    } else if ne0 % 32 == 0 {
        // Q8_0: w = d·q with q a random i8, already centred.
        (GGML_Q8_0, 32, 34, f16_bits(1e-4).to_le_bytes().to_vec())
    } else {
        return Err(Error::invalid("", format!("{name}: rows of {ne0} values cannot be quantized")));
    };
    let n_bytes = (ne0 / block * rows) as usize * bytes;
    w.tensor_gen(name, ne, ty, n_bytes, move |off, chunk| {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (off as u64 + 1);
        for c in chunk.chunks_mut(8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            c.copy_from_slice(&s.to_le_bytes()[..c.len()]);
        }
        // Overwrite the scale bytes of every block that overlaps this chunk.
        let end = off + chunk.len();
        let mut block_start = off - off % bytes;
        while block_start < end {
            for (k, &b) in scale.iter().enumerate() {
                let p = block_start + k;
                if p >= off && p < end {
                    chunk[p - off] = b;
                }
            }
            block_start += bytes;
        }
    })?;
    Ok(())
}

/// Writes a synthetic Qwen2 model of `shape` with the tokenizer of `vocab_gguf` (e.g.
/// llama.cpp's `models/ggml-vocab-qwen2.gguf`). With `n_splits > 1` it writes
/// `<stem>-00001-of-0000N.gguf` ... next to `out` (llama.cpp's split naming) and returns
/// those paths; the same seed gives the same weights however it is split.
pub fn write_synthetic_qwen2(
    shape: SyntheticShape,
    vocab_gguf: &Path,
    out: &Path,
    seed: u64,
    n_splits: usize,
) -> Result<Vec<PathBuf>> {
    let meta = read_gguf_metadata(vocab_gguf)?;
    let n_vocab = meta
        .iter()
        .find_map(|(k, v)| match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::Array(t)) => Some(t.len() as u64),
            _ => None,
        })
        .ok_or_else(|| Error::invalid("", format!("{} has no tokenizer.ggml.tokens", vocab_gguf.display())))?;
    let s = shape;
    let n_kv = s.n_head_kv * (s.n_embd / s.n_head);
    let mut specs: Vec<(String, Kind)> = Vec::new();
    let mut next = seed;
    let mut q = |name: String, ne: &[u64], specs: &mut Vec<(String, Kind)>| {
        next += 1;
        specs.push((name, Kind::Quant { ne: ne.to_vec(), seed: next }));
    };
    q("token_embd.weight".into(), &[s.n_embd, n_vocab], &mut specs);
    let glm = s.n_nextn > 0;
    for il in 0..s.n_layer + s.n_nextn {
        let p = format!("blk.{il}");
        specs.push((format!("{p}.attn_norm.weight"), Kind::Ones(s.n_embd)));
        q(format!("{p}.attn_q.weight"), &[s.n_embd, s.n_embd], &mut specs);
        q(format!("{p}.attn_k.weight"), &[s.n_embd, n_kv], &mut specs);
        q(format!("{p}.attn_v.weight"), &[s.n_embd, n_kv], &mut specs);
        specs.push((format!("{p}.attn_q.bias"), Kind::Zeros(s.n_embd)));
        specs.push((format!("{p}.attn_k.bias"), Kind::Zeros(n_kv)));
        specs.push((format!("{p}.attn_v.bias"), Kind::Zeros(n_kv)));
        q(format!("{p}.attn_output.weight"), &[s.n_embd, s.n_embd], &mut specs);
        let norm = if glm { "post_attention_norm" } else { "ffn_norm" };
        specs.push((format!("{p}.{norm}.weight"), Kind::Ones(s.n_embd)));
        if s.n_expert == 0 {
            q(format!("{p}.ffn_gate.weight"), &[s.n_embd, s.n_ff], &mut specs);
            q(format!("{p}.ffn_up.weight"), &[s.n_embd, s.n_ff], &mut specs);
            q(format!("{p}.ffn_down.weight"), &[s.n_ff, s.n_embd], &mut specs);
        } else {
            q(format!("{p}.ffn_gate_inp.weight"), &[s.n_embd, s.n_expert], &mut specs);
            q(format!("{p}.ffn_gate_exps.weight"), &[s.n_embd, s.n_ff_exp, s.n_expert], &mut specs);
            q(format!("{p}.ffn_up_exps.weight"), &[s.n_embd, s.n_ff_exp, s.n_expert], &mut specs);
            q(format!("{p}.ffn_down_exps.weight"), &[s.n_ff_exp, s.n_embd, s.n_expert], &mut specs);
            let n_ff_sh = if glm { s.n_ff_exp } else { s.n_ff };
            if glm {
                specs.push((format!("{p}.exp_probs_b.bias"), Kind::Zeros(s.n_expert)));
            } else {
                // Not zeros: llama.cpp computes this gate's sigmoid as silu(x) / x (0/0 = NaN).
                specs.push((format!("{p}.ffn_gate_inp_shexp.weight"), Kind::Const(s.n_embd, 0.01)));
            }
            q(format!("{p}.ffn_gate_shexp.weight"), &[s.n_embd, n_ff_sh], &mut specs);
            q(format!("{p}.ffn_up_shexp.weight"), &[s.n_embd, n_ff_sh], &mut specs);
            q(format!("{p}.ffn_down_shexp.weight"), &[n_ff_sh, s.n_embd], &mut specs);
        }
        if il >= s.n_layer {
            // The MTP block: the token's embedding and the trunk's hidden state, each
            // normed, concatenated and projected back to n_embd.
            q(format!("{p}.nextn.eh_proj.weight"), &[2 * s.n_embd, s.n_embd], &mut specs);
            specs.push((format!("{p}.nextn.enorm.weight"), Kind::Ones(s.n_embd)));
            specs.push((format!("{p}.nextn.hnorm.weight"), Kind::Ones(s.n_embd)));
        }
    }
    specs.push(("output_norm.weight".into(), Kind::Ones(s.n_embd)));
    q("output.weight".into(), &[s.n_embd, n_vocab], &mut specs);

    let n_splits = n_splits.clamp(1, specs.len());
    let paths: Vec<PathBuf> = if n_splits == 1 {
        vec![out.to_path_buf()]
    } else {
        let stem = out.with_extension("");
        (1..=n_splits).map(|i| PathBuf::from(format!("{}-{i:05}-of-{n_splits:05}.gguf", stem.display()))).collect()
    };
    let per = specs.len().div_ceil(n_splits);
    let n_specs = specs.len();
    let mut specs = specs.into_iter();
    for (i, path) in paths.iter().enumerate() {
        let mut w = GgufWriter::new();
        if i == 0 {
            let arch = match (s.n_expert, s.n_nextn) {
                (0, _) => "qwen2",
                (_, 0) => "qwen2moe",
                _ => "glm4moe",
            };
            w.kv_str("general.architecture", arch).kv_str("general.name", &format!("synthetic {arch} shape"));
            for (k, v) in meta.iter().filter(|(k, _)| k.starts_with("tokenizer.")) {
                w.kv(k, v.clone());
            }
            w.kv_u32(&format!("{arch}.context_length"), 32768)
                .kv_u32(&format!("{arch}.embedding_length"), s.n_embd as u32)
                .kv_u32(&format!("{arch}.block_count"), (s.n_layer + s.n_nextn) as u32)
                .kv_u32(&format!("{arch}.feed_forward_length"), s.n_ff as u32)
                .kv_u32(&format!("{arch}.attention.head_count"), s.n_head as u32)
                .kv_u32(&format!("{arch}.attention.head_count_kv"), s.n_head_kv as u32)
                .kv_f32(&format!("{arch}.rope.freq_base"), 1_000_000.0)
                .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-6);
            if s.n_expert > 0 {
                w.kv_u32(&format!("{arch}.expert_count"), s.n_expert as u32)
                    .kv_u32(&format!("{arch}.expert_used_count"), s.n_expert_used as u32)
                    .kv_u32(&format!("{arch}.expert_feed_forward_length"), s.n_ff_exp as u32)
                    .kv_u32(&format!("{arch}.expert_shared_feed_forward_length"), s.n_ff as u32);
            }
            if glm {
                w.kv_u32(&format!("{arch}.expert_shared_count"), 1)
                    .kv_u32(&format!("{arch}.leading_dense_block_count"), 0)
                    .kv_u32(&format!("{arch}.nextn_predict_layers"), s.n_nextn as u32);
            }
        }
        if n_splits > 1 {
            w.kv("split.no", GgufValue::U16(i as u16))
                .kv("split.count", GgufValue::U16(n_splits as u16))
                .kv("split.tensors.count", GgufValue::I32(n_specs as i32));
        }
        for (name, kind) in specs.by_ref().take(per) {
            match kind {
                Kind::Quant { ne, seed } => add_quant(&mut w, &name, &ne, seed)?,
                Kind::Ones(n) => {
                    w.tensor_f32(&name, &[n], vec![1.0; n as usize])?;
                }
                Kind::Zeros(n) => {
                    w.tensor_f32(&name, &[n], vec![0.0; n as usize])?;
                }
                Kind::Const(n, v) => {
                    w.tensor_f32(&name, &[n], vec![v; n as usize])?;
                }
            }
        }
        w.write(path)?;
    }
    Ok(paths)
}

/// Writes a complete, loadable llama-architecture model of a few KB: 1 layer, n_embd 8,
/// random f32 weights and a 262-token SentencePiece vocabulary (`<unk> <s> </s>`, the 256
/// byte tokens, `▁` and a few letters). Small enough to be a fuzzing seed, and a model
/// whose every field is known for tests. Its output is noise.
///
/// ```
/// let path = std::env::temp_dir().join(format!("tiny-doc-{}.gguf", std::process::id()));
/// llama_testkit::write_tiny_llama(&path)?;
/// let model = llama_rs::Model::load(&path, Default::default())?;
/// assert_eq!((model.n_layer(), model.n_embd(), model.n_vocab()), (1, 8, 262));
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn write_tiny_llama(out: &Path) -> Result<()> {
    write_tiny_llama_with(out, 0)
}

/// [`write_tiny_llama`] with `extra_tokens` more ordinary tokens (`x0`, `x1`, ...) after
/// its 262: a vocabulary that extends another, as a draft model's may (llama.cpp allows
/// 128 more), with random weights that pick the extra tokens often.
pub fn write_tiny_llama_with(out: &Path, extra_tokens: usize) -> Result<()> {
    write_tiny(out, extra_tokens, false)
}

/// A tiny reranker in Qwen3-Reranker's layout (`qwen3` architecture, pooling type rank,
/// a `cls.output` head over the labels `yes`/`no`, softmaxed by llama.cpp, and a
/// `rerank` prompt template), with [`write_tiny_llama`]'s vocabulary and random weights:
/// no small reranker can be downloaded here. Its scores are noise, but llama.cpp's.
pub fn write_tiny_reranker(out: &Path) -> Result<()> {
    write_tiny(out, 0, true)
}

fn write_tiny(out: &Path, extra_tokens: usize, reranker: bool) -> Result<()> {
    const N_EMBD: u64 = 8;
    const N_FF: u64 = 16;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    tokens.extend(["▁", "a", "b"].map(String::from));
    tokens.extend((0..extra_tokens).map(|i| format!("x{i}")));
    let n_vocab = tokens.len() as u64;
    let types: Vec<GgufValue> = (0..n_vocab)
        .map(|i| {
            GgufValue::I32(match i {
                0 => 2,       // unknown
                1 | 2 => 3,   // control
                3..=258 => 6, // byte
                _ => 1,       // normal
            })
        })
        .collect();
    let mut w = GgufWriter::new();
    let arch = if reranker { "qwen3" } else { "llama" };
    w.kv_str("general.architecture", arch)
        .kv_str("general.name", "tiny")
        .kv_u32(&format!("{arch}.context_length"), 128)
        .kv_u32(&format!("{arch}.embedding_length"), N_EMBD as u32)
        .kv_u32(&format!("{arch}.block_count"), 1)
        .kv_u32(&format!("{arch}.feed_forward_length"), N_FF as u32)
        .kv_u32(&format!("{arch}.attention.head_count"), 2)
        .kv_u32(&format!("{arch}.attention.head_count_kv"), 2)
        .kv_u32(&format!("{arch}.rope.dimension_count"), 4)
        .kv_f32(&format!("{arch}.attention.layer_norm_rms_epsilon"), 1e-5)
        .kv_str("tokenizer.ggml.model", "llama")
        .kv("tokenizer.ggml.tokens", GgufValue::Array(tokens.into_iter().map(GgufValue::Str).collect()))
        .kv("tokenizer.ggml.scores", GgufValue::Array((0..n_vocab).map(|i| GgufValue::F32(-(i as f32))).collect()))
        .kv("tokenizer.ggml.token_type", GgufValue::Array(types))
        .kv_u32("tokenizer.ggml.unknown_token_id", 0)
        .kv_u32("tokenizer.ggml.bos_token_id", 1)
        .kv_u32("tokenizer.ggml.eos_token_id", 2);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut random = |n: u64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            })
            .collect()
    };
    let ones = |n: u64| vec![1.0f32; n as usize];
    w.tensor_f32("token_embd.weight", &[N_EMBD, n_vocab], random(N_EMBD * n_vocab))?
        .tensor_f32("output_norm.weight", &[N_EMBD], ones(N_EMBD))?
        .tensor_f32("output.weight", &[N_EMBD, n_vocab], random(N_EMBD * n_vocab))?
        .tensor_f32("blk.0.attn_norm.weight", &[N_EMBD], ones(N_EMBD))?
        .tensor_f32("blk.0.ffn_norm.weight", &[N_EMBD], ones(N_EMBD))?;
    if reranker {
        // Qwen3's per-head q/k norms (head size 4), and the yes/no head.
        w.kv_u32("qwen3.pooling_type", 4)
            .kv(
                "qwen3.classifier.output_labels",
                GgufValue::Array(vec![GgufValue::Str("yes".into()), GgufValue::Str("no".into())]),
            )
            .kv_str("tokenizer.chat_template.rerank", "<s>query: {query} document: {document}");
        w.tensor_f32("blk.0.attn_q_norm.weight", &[4], ones(4))?
            .tensor_f32("blk.0.attn_k_norm.weight", &[4], ones(4))?
            .tensor_f32("cls.output.weight", &[N_EMBD, 2], random(N_EMBD * 2))?;
    }
    for name in ["attn_q", "attn_k", "attn_v", "attn_output"] {
        w.tensor_f32(&format!("blk.0.{name}.weight"), &[N_EMBD, N_EMBD], random(N_EMBD * N_EMBD))?;
    }
    w.tensor_f32("blk.0.ffn_gate.weight", &[N_EMBD, N_FF], random(N_EMBD * N_FF))?
        .tensor_f32("blk.0.ffn_up.weight", &[N_EMBD, N_FF], random(N_EMBD * N_FF))?
        .tensor_f32("blk.0.ffn_down.weight", &[N_FF, N_EMBD], random(N_FF * N_EMBD))?;
    w.write(out)
}
