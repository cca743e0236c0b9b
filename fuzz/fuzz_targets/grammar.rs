//! Arbitrary GBNF and JSON Schemas: parse, build a sampler, and sample a few tokens of
//! the tiny model under the grammar. Errors are fine; aborts are not.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use llama_rs::{Grammar, SamplerConfig};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let grammar = if mode & 1 == 0 {
        Grammar::new(text.into_owned())
    } else {
        let Ok(schema) = serde_json::from_str::<serde_json::Value>(&text) else { return };
        match Grammar::from_json_schema(&schema) {
            Ok(g) => g,
            Err(_) => return,
        }
    };
    let config = SamplerConfig {
        grammar: Some(grammar),
        temperature: if mode & 2 == 0 { 0.0 } else { 0.8 },
        seed: 1,
        ..Default::default()
    };
    let model = common::tiny();
    let Ok(mut sampler) = config.build(model) else { return };
    let n_vocab = model.n_vocab() as usize;
    let mut logits: Vec<f32> = (0..n_vocab).map(|i| ((i * 7919) % 101) as f32 / 10.0).collect();
    for step in 0..8 {
        let Ok(t) = sampler.sample_logits(&logits) else { return };
        if sampler.accept(t).is_err() {
            return;
        }
        logits[t.0 as usize] -= 1.0 + step as f32;
    }
});
