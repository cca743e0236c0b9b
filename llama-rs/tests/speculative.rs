//! Speculative decoding on the real default model: the text equals plain decoding (greedy
//! and seeded sampling), for each drafter; drafts help on repetitive text; bad settings
//! are typed errors.

use llama_rs::{
    ContextParams, DraftKind, DraftModel, Error, FlashAttn, GenerateParams, Grammar, Model, ModelParams, SamplerConfig,
    Session, SpecStats, Speculation,
};

/// The default model without repacked weights.
fn model() -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default().no_repack(true)).unwrap()
    })
}

/// One token per micro-batch: llama.cpp's CPU logits for a position depend on how many
/// positions are computed together (measured: up to 0.9 apart between a token decoded
/// alone and the same token in a batch of 2-16; docs/ENGINE.md), so a verification batch
/// and a plain decode agree bit for bit only when llama.cpp computes them the same way.
/// With `n_ubatch = 1` it does, and these tests check the speculative logic itself:
/// drafting, verification, rollback and the sampler's state.
fn ctx_params() -> ContextParams {
    ContextParams::default().n_ctx(2048).n_ubatch(1).n_threads(2).flash_attn(FlashAttn::Off)
}

fn session() -> Session {
    Session::new(model().context(ctx_params()).unwrap()).unwrap()
}

const REPETITIVE: [&str; 4] = [
    "fn add(a: i32, b: i32) -> i32 { a + b }\nfn sub(a: i32, b: i32) -> i32 { a - b }\nfn mul(a: i32, b: i32) -> i32 {",
    "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. Monday, Tuesday,",
    "{\"name\": \"Alice\", \"age\": 30, \"city\": \"Paris\"}\n{\"name\": \"Bob\", \"age\": 25, \"city\": \"London\"}\n{\"name\":",
    "1. Buy milk\n2. Buy eggs\n3. Buy bread\n4. Buy",
];

fn run(s: &mut Session, prompt: &str, p: &GenerateParams) -> (String, SpecStats) {
    let mut g = s.generate(prompt, p).unwrap();
    let mut text = String::new();
    for piece in g.by_ref() {
        text += &piece.unwrap().text;
    }
    (text, g.spec_stats())
}

fn with_spec(p: &GenerateParams, drafter: DraftKind) -> GenerateParams {
    GenerateParams { speculation: Some(Speculation { drafter, ..Default::default() }), ..p.clone() }
}

#[test]
fn greedy_text_equals_plain_decoding_for_each_ngram_drafter() {
    let plain = GenerateParams { max_tokens: Some(48), sampler: SamplerConfig::greedy(), ..Default::default() };
    let mut total = SpecStats::default();
    for prompt in REPETITIVE.iter().chain(&["The history of the Roman empire", "Once upon a time"]) {
        let (expected, _) = run(&mut session(), prompt, &plain);
        for drafter in [DraftKind::Ngram { n_min: 2, n_max: 6 }, DraftKind::NgramMap { n: 2, min_count: 1 }] {
            let (got, st) = run(&mut session(), prompt, &with_spec(&plain, drafter.clone()));
            assert_eq!(got, expected, "{drafter:?} on {prompt:?}");
            assert!(st.generated >= st.target_decodes);
            // A fixed batch shape (drafts padded to 3): the same text, one decode per step.
            let fixed = Speculation { drafter: drafter.clone(), fixed_batch: Some(3), ..Default::default() };
            let (got, fst) = run(&mut session(), prompt, &GenerateParams { speculation: Some(fixed), ..plain.clone() });
            assert_eq!(got, expected, "fixed batch, {drafter:?} on {prompt:?}");
            assert!(fst.drafted <= 3 * fst.target_decodes, "{fst:?}");
            total.drafted += st.drafted;
            total.accepted += st.accepted;
            total.target_decodes += st.target_decodes;
        }
    }
    // Repetitive text gives drafts that the target keeps.
    assert!(total.accepted > 20, "{total:?}");
}

#[test]
fn eager_decoding_with_speculation_keeps_the_text() {
    // A high acceptance floor makes the skip rule pause after the first miss.
    let plain = GenerateParams {
        max_tokens: Some(64),
        sampler: SamplerConfig::greedy(),
        eager_decode: Some(true),
        ..Default::default()
    };
    // Steps with no draft to follow (none found, or a pause) decode the next token
    // ahead; the others decode it with the draft made when it was sampled.
    for prompt in ["The history of the Roman empire", REPETITIVE[1], REPETITIVE[0]] {
        let (expected, _) = run(&mut session(), prompt, &plain);
        for min_acceptance in [0.99, 0.2] {
            let spec = Speculation { min_acceptance, ..Default::default() };
            let p = GenerateParams { speculation: Some(spec), ..plain.clone() };
            let (got, st) = run(&mut session(), prompt, &p);
            assert_eq!(got, expected, "{prompt:?}");
            assert_eq!(st.generated, 64);
            assert!(st.target_decodes < 64, "{st:?}");
        }
    }
}

#[test]
fn seeded_sampling_gives_the_same_text_with_and_without_speculation() {
    // Each position draws once from the sampler's RNG, in order, with or without drafts.
    for seed in [1, 2, 3] {
        let p = GenerateParams {
            max_tokens: Some(40),
            sampler: SamplerConfig { temperature: 0.9, seed, ..Default::default() },
            ..Default::default()
        };
        for prompt in &REPETITIVE[..2] {
            let (expected, _) = run(&mut session(), prompt, &p);
            let (got, _) = run(&mut session(), prompt, &with_spec(&p, DraftKind::Ngram { n_min: 1, n_max: 4 }));
            assert_eq!(got, expected, "seed {seed}, {prompt:?}");
        }
    }
}

#[test]
fn a_draft_model_drafts_and_the_text_is_unchanged() {
    // The default model drafting for itself, loaded a second time (same vocabulary).
    let draft_model =
        Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default().no_repack(true)).unwrap();
    let plain = GenerateParams { max_tokens: Some(32), sampler: SamplerConfig::greedy(), ..Default::default() };
    for prompt in ["The capital of France is", REPETITIVE[1]] {
        let (expected, _) = run(&mut session(), prompt, &plain);
        let mut s = session();
        s.set_draft_model(Some(DraftModel::new(model(), &draft_model, ctx_params()).unwrap()));
        let (got, st) = run(&mut s, prompt, &with_spec(&plain, DraftKind::Model));
        assert_eq!(got, expected);
        // A model drafting for itself is (nearly) always right.
        assert!(st.acceptance() > 0.8, "{st:?}");
        assert!(st.target_decodes * 2 < st.generated, "{st:?}");
        // The session keeps the draft model: a follow-up generation uses its cache.
        let (again, _) = run(&mut s, prompt, &with_spec(&plain, DraftKind::Model));
        assert_eq!(again, expected);
    }
}

#[test]
fn bad_speculation_settings_are_typed_errors() {
    let dir = llama_testkit::fixtures::TempDir::new("spec");
    let tiny = dir.join("tiny.gguf");
    llama_testkit::write_tiny_llama(&tiny).unwrap();
    let other = Model::load(&tiny, ModelParams::default()).unwrap();
    let r = DraftModel::new(model(), &other, ContextParams::default().n_ctx(256));
    assert!(matches!(r, Err(Error::InvalidParam { reason: ref m, .. }) if m.contains("vocabulary")), "{r:?}");
    let plain = GenerateParams { max_tokens: Some(8), sampler: SamplerConfig::greedy(), ..Default::default() };
    // A draft model kind without a draft model.
    assert!(matches!(session().generate("Hi", &with_spec(&plain, DraftKind::Model)), Err(Error::InvalidParam { .. })));
    // k = 0 and k beyond the bound.
    for k in [0, 65] {
        let p =
            GenerateParams { speculation: Some(Speculation { max_draft: k, ..Default::default() }), ..plain.clone() };
        assert!(matches!(session().generate("Hi", &p), Err(Error::InvalidParam { .. })), "k = {k}");
    }
}

#[test]
fn grammars_and_a_nearly_full_context_work_with_speculation() {
    // Every verified position is sampled through the request's sampler, grammar
    // included: a draft the grammar forbids is simply not kept.
    let p = GenerateParams {
        max_tokens: Some(24),
        sampler: SamplerConfig {
            grammar: Some(Grammar::new(r#"root ::= ("Monday" | "Tuesday" | ", " | " ")+"#)),
            ..SamplerConfig::greedy()
        },
        ..Default::default()
    };
    let (expected, _) = run(&mut session(), REPETITIVE[1], &p);
    let (got, _) = run(&mut session(), REPETITIVE[1], &with_spec(&p, DraftKind::Ngram { n_min: 1, n_max: 4 }));
    assert_eq!(got, expected);
    // A context with room for only a few more tokens: drafts shrink to fit, then the
    // generation ends with Length as it does without speculation.
    let small = ctx_params().n_ctx(64);
    let prompt = REPETITIVE[3];
    let n_prompt = model().vocab().tokenize(prompt, true, false).unwrap().len();
    assert!(n_prompt < 40);
    let long = GenerateParams { max_tokens: Some(200), sampler: SamplerConfig::greedy(), ..Default::default() };
    let mut a = Session::new(model().context(small.clone()).unwrap()).unwrap();
    let (ta, fa) = a.generate(prompt, &long).unwrap().text().unwrap();
    let mut b = Session::new(model().context(small).unwrap()).unwrap();
    let (tb, fb) =
        b.generate(prompt, &with_spec(&long, DraftKind::Ngram { n_min: 1, n_max: 4 })).unwrap().text().unwrap();
    assert_eq!((ta, fa), (tb, fb));
}

/// Outcomes (the first generated tokens, as text) of one generation per seed.
fn outcomes(s: &mut Session, prompt: &str, seeds: std::ops::Range<u32>, temp: f32, spec: bool) -> Vec<String> {
    seeds
        .map(|seed| {
            let p = GenerateParams {
                max_tokens: Some(3),
                sampler: SamplerConfig {
                    temperature: temp,
                    seed,
                    top_k: 0,
                    top_p: 1.0,
                    min_p: 0.0,
                    ..Default::default()
                },
                ..Default::default()
            };
            let p = if spec { with_spec(&p, DraftKind::Ngram { n_min: 1, n_max: 4 }) } else { p };
            run(s, prompt, &p).0
        })
        .collect()
}

/// Pearson's chi-square test of homogeneity of two samples (categories with fewer than
/// 10 occurrences in both together are pooled). Returns (statistic, critical value at
/// α = 0.01, degrees of freedom).
fn chi_square(a: &[String], b: &[String]) -> (f64, f64, usize) {
    let mut counts: std::collections::BTreeMap<&str, (f64, f64)> = Default::default();
    a.iter().for_each(|x| counts.entry(x).or_default().0 += 1.0);
    b.iter().for_each(|x| counts.entry(x).or_default().1 += 1.0);
    let mut cells: Vec<(f64, f64)> = Vec::new();
    let mut other = (0.0, 0.0);
    for (_, (x, y)) in counts {
        if x + y >= 10.0 {
            cells.push((x, y));
        } else {
            other = (other.0 + x, other.1 + y);
        }
    }
    if other.0 + other.1 > 0.0 {
        cells.push(other);
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let stat: f64 = cells
        .iter()
        .map(|&(x, y)| {
            let (ea, eb) = ((x + y) * na / (na + nb), (x + y) * nb / (na + nb));
            (x - ea).powi(2) / ea + (y - eb).powi(2) / eb
        })
        .sum();
    let df = cells.len().saturating_sub(1).max(1);
    // Wilson–Hilferty approximation of the chi-square quantile (z = 2.326 for α = 0.01).
    let d = df as f64;
    let crit = d * (1.0 - 2.0 / (9.0 * d) + 2.326 * (2.0 / (9.0 * d)).sqrt()).powi(3);
    (stat, crit, df)
}

#[test]
fn stochastic_output_distribution_is_unchanged_by_speculation() {
    // The first three tokens after a prompt whose n-gram drafts are taken at the first
    // step: 300 generations with plain decoding (seeds 0..300) against 300 with n-gram
    // speculation (other seeds, 1000..1300), temperature 1.5 over the full vocabulary,
    // micro-batches as llama.cpp chooses (verification batches really are batches).
    // Power (df 4 on this machine, critical value 13.3 at α = 0.01): moving 0.15 of probability
    // mass between two outcomes of probability ~0.3 gives a noncentrality of
    // 150 · 2 · 0.15² / 0.3 ≈ 22 — detected with probability ~0.9; a move of 0.1 (λ ≈ 10)
    // with probability ~0.5. Measured: chi2 1.4 plain vs speculative; 124 for
    // temperature 1.5 vs 1.2 (checked below, so the test can fail).
    let ctx = || model().context(ContextParams::default().n_ctx(512).n_threads(2)).unwrap();
    let prompt = REPETITIVE[1];
    let mut s = Session::new(ctx()).unwrap();
    let plain = outcomes(&mut s, prompt, 0..300, 1.5, false);
    let spec = outcomes(&mut s, prompt, 1000..1300, 1.5, true);
    let (stat, crit, df) = chi_square(&plain, &spec);
    eprintln!("plain vs speculative: chi2 {stat:.2}, critical {crit:.2}, df {df}");
    // How many outcomes are common enough to be categories depends on the CPU's kernels
    // (df 4 here, 2 on an AMX machine): any df is a valid test. What makes it mean
    // something on every CPU is the power check below, on the same categories.
    assert!(df >= 1, "a single outcome: nothing to compare");
    assert!(stat < crit, "plain vs speculative: chi2 {stat:.1} >= {crit:.1} (df {df})");
    // Drafts were made and kept (the test exercised the rejection rule).
    let p = GenerateParams {
        max_tokens: Some(3),
        sampler: SamplerConfig { temperature: 1.5, seed: 7, top_k: 0, top_p: 1.0, min_p: 0.0, ..Default::default() },
        ..Default::default()
    };
    let mut g = s.generate(prompt, &with_spec(&p, DraftKind::Ngram { n_min: 1, n_max: 4 })).unwrap();
    g.by_ref().for_each(drop);
    assert!(g.spec_stats().drafted > 0);
    drop(g);
    // The test has power: a different temperature is told apart.
    let cooler = outcomes(&mut s, prompt, 2000..2300, 1.2, true);
    let (stat2, crit2, df2) = chi_square(&plain, &cooler);
    eprintln!("temperature 1.5 vs 1.2: chi2 {stat2:.2}, critical {crit2:.2}, df {df2}");
    assert!(stat2 > crit2, "temperature 1.5 vs 1.2 not told apart: chi2 {stat2:.1} < {crit2:.1} (df {df2})");
}

#[test]
fn a_generation_that_ends_inside_a_verified_draft_keeps_all_its_text() {
    // The stop string ends the generation in the middle of an accepted draft: the pieces
    // before it come out of one verification and must all be handed out (found through
    // the Python module: the last pieces were dropped).
    let prompt = "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. Monday, Tuesday,";
    for stop in ["Saturday", "Friday,", " Sunday."] {
        let plain = GenerateParams {
            max_tokens: Some(40),
            stop: vec![stop.into()],
            sampler: SamplerConfig::greedy(),
            ..Default::default()
        };
        let (expected, _) = run(&mut session(), prompt, &plain);
        assert!(!expected.is_empty());
        let (got, st) = run(&mut session(), prompt, &with_spec(&plain, DraftKind::Ngram { n_min: 1, n_max: 4 }));
        assert_eq!(got, expected, "stop {stop:?}");
        assert!(st.accepted > 0, "{st:?}");
    }
}

#[test]
fn verification_with_a_device_sampler_keeps_the_text() {
    // A context whose device sampler takes max_draft + 1 outputs per sequence keeps it
    // attached for verifications (token ids instead of rows of logits; on a GPU this is
    // what makes speculation pay). Where the backend refuses a device sampler, the host
    // samples: the text is the same either way.
    use llama_rs::DeviceSampling;
    let plain = GenerateParams {
        max_tokens: Some(40),
        sampler: SamplerConfig::greedy(),
        device_sampling: DeviceSampling::On,
        ..Default::default()
    };
    let ctx = || {
        let p = ctx_params().n_outputs_max_per_seq(16);
        Session::new(model().context(p).unwrap()).unwrap()
    };
    for prompt in REPETITIVE {
        let (expected, _) = run(&mut ctx(), prompt, &plain);
        let (got, st) = run(&mut ctx(), prompt, &with_spec(&plain, DraftKind::Ngram { n_min: 1, n_max: 4 }));
        assert_eq!(got, expected, "{prompt:?}");
        assert!(st.generated > 0);
    }
    // Out of range: a typed error, not llama.cpp's abort.
    let r = model().context(ctx_params().n_outputs_max_per_seq(0));
    assert!(matches!(r, Err(Error::InvalidParam { .. })), "{r:?}");
}

/// A synthetic GLM-4.5-layout MoE model with one MTP block (random weights, Qwen2's
/// vocabulary), written once.
fn mtp_model_path() -> std::path::PathBuf {
    static P: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let vocab =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp/models/ggml-vocab-qwen2.gguf");
        let path = std::env::temp_dir().join(format!("llama-rs-mtp-tiny-{}.gguf", std::process::id()));
        let shape = llama_testkit::SyntheticShape::named("mtp-tiny").unwrap();
        llama_testkit::write_synthetic_qwen2(shape, &vocab, &path, 21, 1).unwrap();
        path
    })
    .clone()
}

#[test]
fn mtp_drafts_from_the_models_own_head_and_keeps_the_text() {
    let path = mtp_model_path();
    let model = Model::load(&path, ModelParams::default().no_repack(true).mtp(true)).unwrap();
    assert_eq!((model.n_mtp_layers(), model.mtp_loaded()), (1, true));
    let new_session = || {
        let mut s = Session::new(model.context(ctx_params()).unwrap()).unwrap();
        s.set_mtp(Some(llama_rs::Mtp::new(&model, ctx_params()).unwrap())).unwrap();
        s
    };
    let plain = GenerateParams { max_tokens: Some(32), sampler: SamplerConfig::greedy(), ..Default::default() };
    let mut total = SpecStats::default();
    for prompt in REPETITIVE.iter().chain(&["The history of the Roman empire"]) {
        let mut plain_session = Session::new(model.context(ctx_params()).unwrap()).unwrap();
        let (expected, _) = run(&mut plain_session, prompt, &plain);
        let mut s = new_session();
        let (got, st) = run(&mut s, prompt, &with_spec(&plain, DraftKind::Mtp));
        assert_eq!(got, expected, "MTP on {prompt:?}");
        // A follow-up in the same session (a cached prefix; the head continues) too.
        let follow = format!("{prompt}{got} And then");
        let (expected2, _) = run(&mut plain_session, &follow, &plain);
        let (got2, st2) = run(&mut s, &follow, &with_spec(&plain, DraftKind::Mtp));
        assert_eq!(got2, expected2, "MTP follow-up on {prompt:?}");
        for st in [st, st2] {
            total.drafted += st.drafted;
            total.accepted += st.accepted;
            total.target_decodes += st.target_decodes;
            total.generated += st.generated;
        }
    }
    // The head drafted and its drafts were verified (random weights: how many are kept
    // says nothing about a trained head).
    assert!(total.drafted > 0, "{total:?}");
    assert!(total.generated > total.target_decodes || total.accepted == 0, "{total:?}");
    eprintln!("mtp on a random-weight model: {total:?}");

    // The head sees each token with the target's hidden state of the token before it,
    // whichever way the target decoded them: the prompt in one batch, in chunks of 3, or
    // one token at a time (eval) give the same head cache, hence the same draft.
    let toks = model.vocab().tokenize(REPETITIVE[2], true, false).unwrap();
    let draft_with = |n_batch: u32, one_by_one: bool| {
        let cp = ctx_params().n_batch(n_batch);
        let mut s = Session::new(model.context(cp.clone()).unwrap()).unwrap();
        s.set_mtp(Some(llama_rs::Mtp::new(&model, cp).unwrap())).unwrap();
        if one_by_one {
            for t in &toks {
                s.eval(&[*t]).unwrap();
            }
        } else {
            s.eval(&toks).unwrap();
        }
        let mut history = toks.clone();
        history.push(toks[3]);
        llama_rs::Drafter::draft(s.mtp_mut().unwrap(), &history, 4).unwrap()
    };
    let whole = draft_with(512, false);
    assert_eq!(whole.len(), 4);
    assert_eq!(draft_with(3, false), whole);
    assert_eq!(draft_with(512, true), whole);

    // Typed errors: a model without MTP layers, a model loaded without them, no head set,
    // a head of another model, the engine.
    let e = llama_rs::Mtp::new(self::model(), ctx_params()).unwrap_err();
    assert!(matches!(&e, Error::InvalidParam { reason: m, .. } if m.contains("no multi-token-prediction")), "{e}");
    let without = Model::load(&path, ModelParams::default()).unwrap();
    assert_eq!((without.n_mtp_layers(), without.mtp_loaded()), (1, false));
    let e = llama_rs::Mtp::new(&without, ctx_params()).unwrap_err();
    assert!(matches!(&e, Error::InvalidParam { reason: m, .. } if m.contains("ModelParams::mtp")), "{e}");
    let mut s = Session::new(without.context(ctx_params()).unwrap()).unwrap();
    let e = s.generate("x", &with_spec(&plain, DraftKind::Mtp)).err().unwrap();
    assert!(matches!(&e, Error::InvalidParam { reason: m, .. } if m.contains("set_mtp")), "{e}");
    let e = s.set_mtp(Some(llama_rs::Mtp::new(&model, ctx_params()).unwrap())).unwrap_err();
    assert!(matches!(&e, Error::InvalidParam { reason: m, .. } if m.contains("another model")), "{e}");
    let engine =
        llama_rs::Engine::new(&without, llama_rs::EngineParams { n_ctx: 512, slots: 1, ..Default::default() }).unwrap();
    let req = llama_rs::Request { prompt: "x".into(), params: with_spec(&plain, DraftKind::Mtp) };
    let e = engine.submit(req).err().unwrap();
    assert!(matches!(&e, Error::InvalidParam { reason: m, .. } if m.contains("ModelParams::mtp")), "{e}");

    // The engine over the model with its head: four MTP requests at once (the head keeps
    // one sequence per slot), each equal to plain decoding in the exact profile; n-gram
    // requests through the same engine after them.
    let exact = llama_rs::EngineParams {
        slots: 4,
        n_ctx: 2048,
        n_threads: 2,
        deterministic: true,
        ubatch_tokens: Some(1),
        ..Default::default()
    };
    let engine = llama_rs::Engine::new(&model, exact).unwrap();
    let submit_all = |p: &GenerateParams| -> Vec<llama_rs::Completion> {
        let streams: Vec<_> =
            REPETITIVE.iter().map(|pr| engine.submit(llama_rs::Request::text(*pr, p.clone())).unwrap()).collect();
        streams.into_iter().map(|s| s.text().unwrap()).collect()
    };
    let expected = submit_all(&plain);
    let got = submit_all(&with_spec(&plain, DraftKind::Mtp));
    let mut drafted = 0;
    for (g, e) in got.iter().zip(&expected) {
        assert_eq!(g.text, e.text);
        drafted += g.usage.accepted_draft_tokens + g.usage.rejected_draft_tokens;
    }
    assert!(drafted > 0, "the head drafted in the engine");
    let mixed = submit_all(&with_spec(&plain, DraftKind::Ngram { n_min: 1, n_max: 4 }));
    for (g, e) in mixed.iter().zip(&expected) {
        assert_eq!(g.text, e.text);
    }
}
