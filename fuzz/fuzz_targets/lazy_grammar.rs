//! Lazy grammars: arbitrary trigger patterns, trigger tokens and accepted tokens on the
//! tiny model. A trigger pattern that would make std::regex backtrack for ever or
//! overflow its stack, a trigger text the grammar rejects, a token trigger mid-output:
//! every call returns `Ok` or a typed error, and a sampler whose grammar failed works
//! again after `reset`.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use llama_rs::{Grammar, SamplerConfig, Token};

fuzz_target!(|data: &[u8]| {
    // pattern \0 gbnf \0 token bytes
    let mut parts = data.splitn(3, |&b| b == 0);
    let (Some(pattern), Some(gbnf), Some(tokens)) = (parts.next(), parts.next(), parts.next()) else { return };
    let model = common::tiny();
    let n_vocab = model.n_vocab();
    let gbnf = String::from_utf8_lossy(gbnf);
    let gbnf = if gbnf.trim().is_empty() { "root ::= \"a\" [a-z]*".to_string() } else { gbnf.into_owned() };
    let trigger_tokens: Vec<Token> = tokens.iter().take(2).map(|&b| Token(b as i32 % n_vocab)).collect();
    let patterns = if pattern.is_empty() { Vec::new() } else { vec![String::from_utf8_lossy(pattern).into_owned()] };
    let g = Grammar::lazy(gbnf, patterns, trigger_tokens);
    let Ok(mut s) = SamplerConfig { grammar: Some(g), seed: 1, ..SamplerConfig::greedy() }.build(model) else {
        return;
    };
    let logits: Vec<f32> = (0..n_vocab as usize).map(|i| ((i * 7919) % 101) as f32 / 10.0).collect();
    for round in 0..2 {
        for &b in tokens.iter().skip(2).take(256) {
            let t = Token(b as i32 % n_vocab);
            if s.accept(t).is_err() {
                // Refused (the grammar disallows it) or failed (then every use errs).
                let _ = s.sample_logits(&logits);
            }
        }
        let _ = s.sample_logits(&logits);
        s.reset();
        let _ = round;
    }
});
