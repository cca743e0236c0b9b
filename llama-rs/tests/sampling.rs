//! Every sampler changes the distribution as documented; grammars constrain without
//! ever aborting; the fast paths equal the full-vocabulary path.
use common::*;
use llama_rs::{
    Batch, Candidates, Context, CustomSampler, Error, Grammar, Sampler, SamplerBuilder, SamplerConfig, Stage, Token,
};
use llama_testkit::fixtures as common;

fn prompt_ctx(text: &str) -> (Context, usize) {
    let mut c = ctx();
    let toks = model().vocab().tokenize(text, true, false).unwrap();
    prefill(&mut c, &toks);
    (c, toks.len())
}

/// Samples `n` tokens with `s`, feeding each back (accept + decode).
fn run(s: &mut Sampler, text: &str, n: usize) -> Vec<Token> {
    let (mut c, mut pos) = prompt_ctx(text);
    let mut out = Vec::new();
    let mut b = Batch::new(1, 1).unwrap();
    let mut idx = pos - 1;
    for _ in 0..n {
        let t = s.sample(&c, idx).unwrap();
        s.accept(t).unwrap();
        out.push(t);
        if model().vocab().is_eog(t) {
            break;
        }
        b.clear();
        b.add(t, pos as i32, &[0], true).unwrap();
        c.decode(&mut b).unwrap();
        pos += 1;
        idx = 0;
    }
    out
}

fn greedy_ref(text: &str, n: usize) -> Vec<Token> {
    let (mut c, pos) = prompt_ctx(text);
    let l = c.logits_last().unwrap().to_vec();
    greedy_continue(&mut c, 0, pos as i32, &l, n)
}

#[test]
fn top_k_1_and_greedy_configs_equal_argmax() {
    let want = greedy_ref(PROMPT, 12);
    let mut k1 = SamplerBuilder::new(model()).stage(Stage::TopK(1)).stage(Stage::Dist { seed: 3 }).build().unwrap();
    assert_eq!(run(&mut k1, PROMPT, 12), want);
    let mut g = SamplerConfig::greedy().build(model()).unwrap();
    assert_eq!(run(&mut g, PROMPT, 12), want);
    // min_p = 1 keeps only the most likely token.
    let mut mp =
        SamplerConfig { min_p: 1.0, top_k: 0, top_p: 1.0, seed: 9, ..Default::default() }.build(model()).unwrap();
    assert_eq!(run(&mut mp, PROMPT, 12), want);
}

#[test]
fn fixed_seed_reproduces_and_fast_path_equals_full_vocab() {
    let cfg = SamplerConfig { temperature: 1.2, seed: 1234, ..Default::default() };
    let a = run(&mut cfg.build(model()).unwrap(), PROMPT, 24);
    let b = run(&mut cfg.build(model()).unwrap(), PROMPT, 24);
    assert_eq!(a, b, "same seed, same tokens");
    let mut full = cfg.build(model()).unwrap();
    full.set_full_vocab(true);
    assert_eq!(run(&mut full, PROMPT, 24), a, "top-k fast path differs from the full-vocabulary path");
    let others: Vec<Vec<Token>> = (0..4)
        .map(|s| run(&mut SamplerConfig { seed: 99 + s, ..cfg.clone() }.build(model()).unwrap(), PROMPT, 24))
        .collect();
    assert!(others.iter().any(|o| *o != a), "seed has no effect");
}

#[test]
fn logit_bias_of_minus_infinity_bans_a_token() {
    let want = greedy_ref(PROMPT, 1)[0];
    let cfg = SamplerConfig { logit_bias: vec![(want, f32::NEG_INFINITY)], ..SamplerConfig::greedy() };
    let got = run(&mut cfg.build(model()).unwrap(), PROMPT, 1)[0];
    assert_ne!(got, want);
    // It is the runner-up.
    let (c, n) = prompt_ctx(PROMPT);
    let mut l = c.logits(n - 1).unwrap().to_vec();
    l[want.0 as usize] = f32::NEG_INFINITY;
    assert_eq!(got, llama_rs::argmax(&l));
    // Out-of-range bias tokens are errors.
    let bad = SamplerConfig { logit_bias: vec![(Token(-1), 1.0)], ..SamplerConfig::greedy() };
    assert!(matches!(bad.build(model()), Err(Error::InvalidToken { .. })));
}

#[test]
fn penalties_push_away_repeated_tokens() {
    let (c, n) = prompt_ctx(PROMPT);
    let logits = c.logits(n - 1).unwrap().to_vec();
    let top = llama_rs::argmax(&logits);
    let cfg = SamplerConfig { presence_penalty: 100.0, top_k: 1, ..Default::default() };
    let mut s = cfg.build(model()).unwrap();
    assert_eq!(s.sample_logits(&logits).unwrap(), top);
    s.accept(top).unwrap();
    assert_ne!(s.sample_logits(&logits).unwrap(), top, "presence penalty ignored");
    s.reset();
    assert_eq!(s.sample_logits(&logits).unwrap(), top, "reset clears the history");
}

#[test]
fn every_sampler_runs_and_validates_its_parameters() {
    let (c, n) = prompt_ctx(PROMPT);
    let logits = c.logits(n - 1).unwrap().to_vec();
    let stages = vec![
        Stage::TopP { p: 0.5, min_keep: 1 },
        Stage::MinP { p: 0.1, min_keep: 1 },
        Stage::Typical { p: 0.9, min_keep: 1 },
        Stage::Temp(0.5),
        Stage::TempExt { t: 0.8, delta: 0.3, exponent: 1.0 },
        Stage::Xtc { p: 0.5, t: 0.1, min_keep: 1, seed: 1 },
        Stage::TopNSigma(1.0),
        Stage::Penalties { last_n: 64, repeat: 1.3, freq: 0.1, present: 0.1 },
        Stage::Dry { multiplier: 0.8, base: 1.75, allowed_length: 2, last_n: -1, breakers: vec!["\n".into()] },
        Stage::LogitBias(vec![(Token(5), 2.0)]),
    ];
    for st in stages {
        let mut s = SamplerBuilder::new(model()).stage(st.clone()).stage(Stage::Dist { seed: 5 }).build().unwrap();
        let t = s.sample_logits(&logits).unwrap();
        assert!(t.0 >= 0 && t.0 < model().n_vocab(), "{st:?}");
        s.accept(t).unwrap();
    }
    for st in
        [Stage::Mirostat { seed: 2, tau: 5.0, eta: 0.1, m: 100 }, Stage::MirostatV2 { seed: 2, tau: 5.0, eta: 0.1 }]
    {
        let a = run(&mut SamplerBuilder::new(model()).stage(st.clone()).build().unwrap(), PROMPT, 8);
        let b = run(&mut SamplerBuilder::new(model()).stage(st.clone()).build().unwrap(), PROMPT, 8);
        assert_eq!(a, b, "{st:?} is not reproducible with a seed");
    }
    // top-p 0 / min-p ... keep the top token: equal to greedy.
    let mut tp = SamplerBuilder::new(model())
        .stage(Stage::TopP { p: 0.0, min_keep: 1 })
        .stage(Stage::Dist { seed: 1 })
        .build()
        .unwrap();
    assert_eq!(tp.sample_logits(&logits).unwrap(), llama_rs::argmax(&logits));
    for st in [
        Stage::TopP { p: 1.5, min_keep: 1 },
        Stage::MinP { p: f32::NAN, min_keep: 1 },
        Stage::Temp(f32::INFINITY),
        Stage::Penalties { last_n: 64, repeat: 0.0, freq: 0.0, present: 0.0 },
        Stage::Mirostat { seed: 1, tau: 5.0, eta: 0.1, m: 0 },
        Stage::Dry { multiplier: 1.0, base: 0.5, allowed_length: 2, last_n: 1, breakers: vec![] },
    ] {
        assert!(
            matches!(SamplerBuilder::new(model()).stage(st.clone()).build(), Err(Error::InvalidParam { .. })),
            "{st:?}"
        );
    }
    assert!(matches!(s_wrong_len(), Err(Error::InvalidParam { .. })));
}

fn s_wrong_len() -> Result<Token, Error> {
    SamplerConfig::default().build(model()).unwrap().sample_logits(&[0.0; 10])
}

struct Ban(Token);
impl CustomSampler for Ban {
    fn apply(&mut self, c: &mut Candidates<'_>) {
        for i in 0..c.len() {
            if c.token(i) == self.0 {
                c.set_logit(i, f32::NEG_INFINITY);
            }
        }
    }
}

struct Boom;
impl CustomSampler for Boom {
    fn apply(&mut self, _: &mut Candidates<'_>) {
        panic!("custom sampler panicked");
    }
}

#[test]
fn custom_samplers_run_in_the_chain_and_panics_do_not_cross_into_c() {
    let want = greedy_ref(PROMPT, 1)[0];
    let mut s = SamplerBuilder::new(model()).custom(Ban(want)).stage(Stage::Greedy).build().unwrap();
    let got = run(&mut s, PROMPT, 1)[0];
    assert_ne!(got, want);
    let mut boom = SamplerBuilder::new(model()).custom(Boom).stage(Stage::Greedy).build().unwrap();
    let (c, n) = prompt_ctx(PROMPT);
    let logits = c.logits(n - 1).unwrap().to_vec();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| boom.sample_logits(&logits)));
    assert_eq!(r.unwrap_err().downcast_ref::<&str>(), Some(&"custom sampler panicked"));
    drop(boom);
}

/// Generates greedily under `s` until EOG or `n` tokens; returns the text.
fn constrained(s: &mut Sampler, text: &str, n: usize) -> String {
    let toks = run(s, text, n);
    let v = model().vocab();
    let body: Vec<Token> = toks.into_iter().filter(|t| !v.is_eog(*t)).collect();
    v.detokenize(&body, false, false).unwrap()
}

#[test]
fn grammars_constrain_and_never_abort() {
    let g = Grammar::new(r#"root ::= "yes" | "no""#);
    let mut s = SamplerBuilder::new(model()).stage(Stage::Greedy).grammar(g.clone()).build().unwrap();
    let out = constrained(&mut s, "Is Paris in France? Answer:", 8);
    assert!(out == "yes" || out == "no", "{out:?}");

    // Bad grammars are errors.
    for bad in ["root ::= foo", "root ::= \"unterminated", "", "root ::= root \"a\"", "x ::= \"a\""] {
        let r = SamplerBuilder::new(model()).grammar(Grammar::new(bad)).build();
        assert!(matches!(r, Err(Error::Grammar(_))), "{bad:?}: {r:?}");
    }

    // Accepting a token the grammar forbids (or EOG before it is complete) is refused.
    let mut s = SamplerBuilder::new(model()).stage(Stage::Greedy).grammar(g.clone()).build().unwrap();
    let paris = model().vocab().tokenize(" Paris", false, false).unwrap()[0];
    assert!(matches!(s.accept(paris), Err(Error::GrammarRejected(_))));
    let eos = model().vocab().eos().unwrap();
    assert!(matches!(s.accept(eos), Err(Error::GrammarRejected(_))));

    // A chain that bans every token the grammar allows: an error, not an abort.
    let mut probe = SamplerBuilder::new(model()).grammar(g.clone()).build().unwrap();
    let allowed: Vec<(Token, f32)> = (0..model().n_vocab())
        .map(Token)
        .filter(|&t| probe.grammar_allows(t))
        .map(|t| (t, f32::NEG_INFINITY))
        .collect();
    assert!(!allowed.is_empty() && allowed.len() < 100, "{} tokens allowed", allowed.len());
    let mut s =
        SamplerBuilder::new(model()).stage(Stage::LogitBias(allowed)).stage(Stage::Greedy).grammar(g).build().unwrap();
    let (c, n) = prompt_ctx(PROMPT);
    assert!(matches!(s.sample(&c, n - 1), Err(Error::GrammarRejectedAll)));
}

#[test]
fn lazy_grammar_activates_on_its_trigger() {
    // Free text until "Answer:", then only yes/no.
    let g = Grammar::lazy(r#"root ::= "Answer: " ("yes" | "no")"#, vec![r"[\s\S]*?(Answer: [\s\S]*)".into()], vec![]);
    let mut s = SamplerBuilder::new(model()).stage(Stage::Greedy).grammar(g).build().unwrap();
    let free = constrained(&mut s, PROMPT, 6);
    assert_eq!(
        free,
        model().vocab().detokenize(&greedy_ref(PROMPT, 6), false, false).unwrap(),
        "inactive before the trigger"
    );
}

#[test]
fn lazy_grammar_constrains_from_its_trigger_on_even_inside_a_token() {
    let m = model();
    let v = m.vocab();
    let one = |text: &str| v.tokenize(text, false, false).unwrap()[0];
    let (yes, maybe) = (one("yes"), one("maybe"));
    let words = v.tokenize("So the Answer: ", false, false).unwrap();
    // "swer" starts inside the piece " Answer": the grammar starts mid-token.
    for (pattern, gbnf) in [
        (r"[\s\S]*?(Answer: [\s\S]*)", r#"root ::= "Answer: " ("yes" | "no")"#),
        (r"[\s\S]*?(swer: [\s\S]*)", r#"root ::= "swer: " ("yes" | "no")"#),
    ] {
        let g = Grammar::lazy(gbnf, vec![pattern.into()], vec![]);
        let mut s = SamplerBuilder::new(m).stage(Stage::Greedy).grammar(g).build().unwrap();
        for _ in 0..2 {
            assert!(s.grammar_allows(maybe), "{pattern}: constrained before its trigger");
            for &t in &words {
                s.accept(t).unwrap_or_else(|e| panic!("{pattern}: {e}"));
            }
            assert!(s.grammar_allows(yes) && !s.grammar_allows(maybe), "{pattern}: not constrained after it");
            s.reset(); // waits for the trigger again
        }
    }
}

#[test]
fn json_schema_output_parses_and_validates() {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": { "enum": ["Paris", "Lyon", "Nice"] },
            "population": { "type": "integer" },
            "capital": { "type": "boolean" },
            "tags": { "type": "array", "items": { "type": "string", "maxLength": 6 }, "maxItems": 2 }
        },
        "required": ["city", "capital"]
    });
    let g = Grammar::from_json_schema(&schema).unwrap();
    let mut s = SamplerBuilder::new(model()).stage(Stage::Greedy).grammar(g).build().unwrap();
    let out = constrained(&mut s, "A JSON record about the capital of France:\n", 120);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    let o = v.as_object().unwrap();
    assert!(["Paris", "Lyon", "Nice"].contains(&o["city"].as_str().unwrap()), "{out}");
    assert!(o["capital"].is_boolean());
    if let Some(p) = o.get("population") {
        assert!(p.is_i64() || p.is_u64(), "{out}");
    }
    if let Some(t) = o.get("tags") {
        let t = t.as_array().unwrap();
        assert!(t.len() <= 2 && t.iter().all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 6)), "{out}");
    }
    assert!(o.keys().all(|k| ["city", "population", "capital", "tags"].contains(&k.as_str())));
}

#[test]
fn penalties_and_biases_keep_the_fast_path_exact() {
    let (c, n) = prompt_ctx(PROMPT);
    let base = c.logits(n - 1).unwrap().to_vec();
    let top = llama_rs::argmax(&base);
    let cfgs = [
        SamplerConfig {
            repeat_penalty: 1.3,
            presence_penalty: 0.5,
            frequency_penalty: 0.2,
            seed: 3,
            ..Default::default()
        },
        SamplerConfig { logit_bias: vec![(top, -5.0), (Token(12345), 30.0)], seed: 4, ..Default::default() },
        SamplerConfig {
            logit_bias: vec![(Token(777), 8.0)],
            repeat_penalty: 1.5,
            top_k: 5,
            seed: 5,
            ..Default::default()
        },
    ];
    for cfg in cfgs {
        let mut fast = cfg.build(model()).unwrap();
        let mut full = cfg.build(model()).unwrap();
        full.set_full_vocab(true);
        // Vary the logits a little each step so the history matters.
        for step in 0..40 {
            let mut l = base.clone();
            let i = (step * 7919) % l.len();
            l[i] += 25.0;
            let a = fast.sample_logits(&l).unwrap();
            let b = full.sample_logits(&l).unwrap();
            assert_eq!(a, b, "{cfg:?} step {step}");
            fast.accept(a).unwrap();
            full.accept(b).unwrap();
        }
    }
}

#[test]
fn nan_logits_are_a_typed_error() {
    let n = model().n_vocab() as usize;
    let nan = vec![f32::NAN; n];
    for cfg in
        [SamplerConfig::default(), SamplerConfig { top_k: 0, ..SamplerConfig::default() }, SamplerConfig::greedy()]
    {
        let mut s = cfg.build(model()).unwrap();
        assert!(matches!(s.sample_logits(&nan), Err(Error::NanLogits)), "{cfg:?}");
    }
    // A few NaN among finite logits: greedy still picks the largest finite one.
    let mut some = vec![0.0f32; n];
    some[7] = f32::NAN;
    some[9] = 3.0;
    assert_eq!(SamplerConfig::greedy().build(model()).unwrap().sample_logits(&some).unwrap(), Token(9));
}
