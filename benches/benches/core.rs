//! Core costs on the default model (CPU here): tokenize/detokenize throughput, batch
//! building, prompt decode (512 tokens), single-token decode, state save/load, and the
//! per-token cost of the generation API over raw decode.
//!
//!     cargo bench -p llama-benches --bench core

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llama_rs::{Batch, ContextParams, GenerateParams, Model, ModelParams, SamplerConfig, Session, Token};

fn text() -> String {
    "The quick brown fox jumps over the lazy dog. Ünïcödé, 日本語, emoji 🦀 and code `fn main() {}`.\n".repeat(40)
}

fn bench(c: &mut Criterion) {
    let model = Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default()).unwrap();
    let vocab = model.vocab();
    let t = text();
    let toks = vocab.tokenize(&t, true, false).unwrap();

    let mut g = c.benchmark_group("tokenizer");
    g.throughput(Throughput::Bytes(t.len() as u64));
    g.bench_function("tokenize", |b| b.iter(|| vocab.tokenize(&t, true, false).unwrap()));
    g.bench_function("detokenize", |b| b.iter(|| vocab.detokenize(&toks, false, false).unwrap()));
    let mut buf = Vec::new();
    g.bench_function("token_to_piece_each", |b| {
        b.iter(|| {
            for &tok in &toks {
                vocab.token_to_piece_bytes(tok, false, &mut buf).unwrap();
            }
        })
    });
    g.finish();

    let prompt: Vec<Token> = (0..512).map(|i| Token(1000 + (i * 37) % 20000)).collect();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(512));
    let mut batch = Batch::new(512, 1).unwrap();
    g.bench_function("build_512", |b| {
        b.iter(|| {
            batch.clear();
            batch.add_sequence(&prompt, 0, 0, true).unwrap();
        })
    });
    g.finish();

    let params = ContextParams::default().n_ctx(1024).n_batch(512).n_ubatch(512).n_threads(2);
    let mut ctx = model.context(params.clone()).unwrap();
    let mut g = c.benchmark_group("decode");
    g.sample_size(10);
    g.throughput(Throughput::Elements(512));
    g.bench_function("prompt_512", |b| {
        b.iter(|| {
            ctx.clear_memory(false);
            batch.clear();
            batch.add_sequence(&prompt, 0, 0, true).unwrap();
            ctx.decode(&mut batch).unwrap();
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut one = Batch::new(1, 1).unwrap();
    ctx.clear_memory(false);
    batch.clear();
    batch.add_sequence(&prompt[..64], 0, 0, true).unwrap();
    ctx.decode(&mut batch).unwrap();
    g.sample_size(50);
    g.bench_function("single_token", |b| {
        b.iter(|| {
            // Keep the cache at 64 tokens: every iteration decodes position 64.
            ctx.seq_rm(Some(0), 64..).unwrap();
            one.clear();
            one.add(Token(1234), 64, &[0], true).unwrap();
            ctx.decode(&mut one).unwrap();
        })
    });
    // One step of 8 sequences at once (the multi-sequence engine's inner loop): each
    // sequence holds 64 tokens, every iteration decodes position 64 of all eight.
    let mut multi = model.context(params.clone().n_seq_max(8)).unwrap();
    for seq in 0..8 {
        batch.clear();
        batch.add_sequence(&prompt[..64], 0, seq, false).unwrap();
        multi.decode(&mut batch).unwrap();
    }
    let mut step = Batch::new(8, 1).unwrap();
    g.throughput(Throughput::Elements(8));
    g.bench_function("step_8_sequences", |b| {
        b.iter(|| {
            multi.seq_rm(None, 64..).unwrap();
            step.clear();
            for seq in 0..8 {
                step.add(Token(1234 + seq), 64, &[seq], true).unwrap();
            }
            multi.decode(&mut step).unwrap();
            multi.logits(7).unwrap()[0]
        })
    });
    g.finish();

    let mut g = c.benchmark_group("state");
    g.sample_size(20);
    let state = ctx.save_state(&prompt[..64]).unwrap();
    g.throughput(Throughput::Bytes(state.len() as u64));
    g.bench_function("save", |b| b.iter(|| ctx.save_state(&prompt[..64]).unwrap()));
    g.bench_function("load", |b| b.iter(|| ctx.load_state(&state).unwrap()));
    g.finish();

    // Generation API: 32 tokens through Session/Generator (sampling, detokenization,
    // stop matching) vs the same 32 raw decodes with argmax.
    let mut g = c.benchmark_group("generate_32_tokens");
    g.sample_size(10);
    g.throughput(Throughput::Elements(32));
    let mut session = Session::new(model.context(params.clone()).unwrap()).unwrap();
    let gp = GenerateParams {
        max_tokens: Some(32),
        ignore_eos: true,
        sampler: SamplerConfig::greedy(),
        stop: vec!["\n\n\n".into()],
        ..Default::default()
    };
    g.bench_function("generation_api", |b| {
        b.iter(|| {
            session.reset();
            session.generate(vec![Token(2)], &gp).unwrap().text().unwrap()
        })
    });
    let mut raw = model.context(params).unwrap();
    g.bench_function("raw_decode_argmax", |b| {
        b.iter(|| {
            raw.clear_memory(false);
            let mut tok = Token(2);
            for pos in 0..32 {
                one.clear();
                one.add(tok, pos, &[0], true).unwrap();
                raw.decode(&mut one).unwrap();
                tok = llama_rs::argmax(raw.logits(0).unwrap());
            }
            tok
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
