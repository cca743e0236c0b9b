//! Metadata overrides and context parameters from the input, on the tiny model: the
//! loader's and the context's preconditions (block/expert counts, rope and norm values,
//! tokenizer models, n_threads, n_batch vs n_ctx, pooled embeddings with several
//! sequences) are checked in Rust first. Errors are fine; aborts are not.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use llama_rs::{Batch, ContextParams, KvOverride, Model, ModelParams, Pooling, Token};

#[derive(Arbitrary, Debug)]
enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    overrides: Vec<(u8, Value)>,
    n_ctx: u16,
    n_batch: u16,
    n_ubatch: u16,
    n_seq_max: u8,
    n_threads: u32,
    embeddings: bool,
    pooling: u8,
    n_tokens: u8,
}

const KEYS: &[&str] = &[
    "llama.block_count",
    "llama.expert_count",
    "llama.expert_used_count",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.rope.dimension_count",
    "llama.rope.scaling.type",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.embedding_length",
    "llama.context_length",
    "tokenizer.ggml.model",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token",
    "general.architecture",
];

fuzz_target!(|input: Input| {
    common::tiny(); // writes the file
    let mut params = ModelParams::default();
    for (k, v) in input.overrides.iter().take(4) {
        let key = KEYS[*k as usize % KEYS.len()];
        let v = match v {
            Value::Int(i) => KvOverride::Int(*i),
            Value::Float(f) => KvOverride::Float(*f),
            Value::Bool(b) => KvOverride::Bool(*b),
            Value::Str(s) => KvOverride::Str(s.chars().take(32).collect()),
        };
        params = params.kv_override(key, v);
    }
    let Ok(model) = Model::load(common::scratch("tiny.gguf"), params) else { return };
    let pooling =
        [Pooling::Unspecified, Pooling::None, Pooling::Mean, Pooling::Cls, Pooling::Last][input.pooling as usize % 5];
    let cp = ContextParams::default()
        .n_ctx(input.n_ctx as u32 % 512)
        .n_batch(input.n_batch as u32 % 1024)
        .n_ubatch(input.n_ubatch as u32 % 1024)
        .n_seq_max(input.n_seq_max as u32 % 9)
        .n_threads(input.n_threads % 1024)
        .embeddings(input.embeddings)
        .pooling(pooling);
    let Ok(mut ctx) = model.context(cp) else { return };
    let Ok(mut batch) = Batch::new(input.n_tokens as usize, 1) else { return };
    let n = input.n_tokens as i32;
    let toks: Vec<Token> = (0..n).map(|i| Token(3 + i % 10)).collect();
    if batch.add_sequence(&toks, 0, 0, true).is_ok() {
        let _ = ctx.decode(&mut batch);
    }
});
