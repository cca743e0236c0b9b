//! Per-token sampling cost over the default model's 262,144-entry vocabulary: greedy
//! vs the full default chain (top-k 40, top-p 0.95, min-p 0.05, temp 0.8, dist), with
//! and without the top-k fast path.
//!
//!     cargo bench -p llama-benches --bench sampling

use criterion::{criterion_group, criterion_main, Criterion};
use llama_rs::{Batch, ContextParams, Model, ModelParams, SamplerConfig};

fn bench(c: &mut Criterion) {
    let model = Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default()).unwrap();
    let mut ctx = model.context(ContextParams::default().n_ctx(512)).unwrap();
    let toks = model.vocab().tokenize("The capital of France is", true, false).unwrap();
    let mut b = Batch::new(64, 1).unwrap();
    b.add_sequence(&toks, 0, 0, true).unwrap();
    ctx.decode(&mut b).unwrap();
    let logits = ctx.logits_last().unwrap().to_vec();

    let mut g = c.benchmark_group("sample_per_token");
    let mut greedy = SamplerConfig::greedy().build(&model).unwrap();
    g.bench_function("greedy", |bn| {
        bn.iter(|| {
            let t = greedy.sample_logits(&logits).unwrap();
            greedy.accept(t).unwrap();
            t
        })
    });
    let mut chain = SamplerConfig { seed: 1, ..Default::default() }.build(&model).unwrap();
    g.bench_function("default_chain_fast_path", |bn| {
        bn.iter(|| {
            let t = chain.sample_logits(&logits).unwrap();
            chain.accept(t).unwrap();
            t
        })
    });
    let mut full = SamplerConfig { seed: 1, ..Default::default() }.build(&model).unwrap();
    full.set_full_vocab(true);
    g.bench_function("default_chain_full_vocab", |bn| {
        bn.iter(|| {
            let t = full.sample_logits(&logits).unwrap();
            full.accept(t).unwrap();
            t
        })
    });
    let mut pen = SamplerConfig { seed: 1, repeat_penalty: 1.1, ..Default::default() }.build(&model).unwrap();
    g.bench_function("default_chain_with_repeat_penalty", |bn| {
        bn.iter(|| {
            let t = pen.sample_logits(&logits).unwrap();
            pen.accept(t).unwrap();
            t
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
