//! Arbitrary bytes as a GGUF model file: the Rust metadata reader, a full load, and for
//! what loads, tokenization and one decode. Every outcome must be Ok or a typed error.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use llama_rs::{Batch, ContextParams, Model, ModelParams};

fuzz_target!(|data: &[u8]| {
    let path = common::scratch("model.gguf");
    std::fs::write(&path, data).unwrap();
    let _ = llama_rs::read_gguf_metadata(&path);
    let Ok(model) = Model::load(&path, ModelParams::default()) else { return };
    let Ok(tokens) = model.vocab().tokenize("ab \u{1F980}", true, false) else { return };
    let _ = model.vocab().detokenize(&tokens, false, false);
    let Ok(mut ctx) = model.context(ContextParams::default().n_ctx(32).n_batch(8).n_ubatch(8).n_threads(1)) else {
        return;
    };
    let mut batch = Batch::new(8, 1).unwrap();
    if batch.add_sequence(&tokens[..tokens.len().min(8)], 0, 0, true).is_ok() && ctx.decode(&mut batch).is_ok() {
        let _ = ctx.logits_last();
    }
});
