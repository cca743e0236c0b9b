//! The generation API: text pieces, stop strings, finish reasons, UTF-8 safety,
//! log-probabilities, cancellation and prompt-prefix reuse.
use common::*;
use llama_rs::{DeviceSampler, DeviceSampling, Error, FinishReason, GenerateParams, SamplerConfig, Session, Token};
use llama_testkit::fixtures as common;

fn greedy(max: usize) -> GenerateParams {
    GenerateParams { max_tokens: Some(max), sampler: SamplerConfig::greedy(), ..Default::default() }
}

fn session() -> Session {
    Session::new(ctx()).unwrap()
}

#[test]
fn greedy_text_matches_the_cli_and_finishes_with_length() {
    let mut s = session();
    let (text, finish) = s.generate(PROMPT, &greedy(20)).unwrap().text().unwrap();
    let want = if on_gpu() { " the capital of the country of France." } else { CLI_GREEDY };
    assert!(text.starts_with(want), "{text:?}");
    assert_eq!(finish, FinishReason::Length);
}

#[test]
fn stop_strings_spanning_tokens_are_cut_exactly() {
    let mut s = session();
    // This model's own greedy text (on GPUs it drifts from the CPU's after ~10 tokens).
    let full = s.generate(PROMPT, &greedy(40)).unwrap().text().unwrap().0;
    assert!(full.starts_with(" the capital of the country of France. It is the"), "{full:?}");
    for stop in [" It is the", ". It", "France."] {
        let p = GenerateParams { stop: vec!["never".into(), stop.into()], ..greedy(40) };
        let mut g = s.generate(PROMPT, &p).unwrap();
        let mut text = String::new();
        let mut last = None;
        for piece in &mut g {
            let piece = piece.unwrap();
            assert!(!piece.text.contains(stop));
            text += &piece.text;
            last = piece.finish_reason;
        }
        assert_eq!(last, Some(FinishReason::Stop));
        let cut = full.find(stop).unwrap();
        assert_eq!(text, &full[..cut], "stop {stop:?}");
    }
}

#[test]
fn end_of_generation_is_a_stop() {
    let eos = model().vocab().eos().unwrap();
    let p = GenerateParams {
        sampler: SamplerConfig { logit_bias: vec![(eos, 1000.0)], ..SamplerConfig::greedy() },
        ..greedy(10)
    };
    let mut s = session();
    let mut g = s.generate(PROMPT, &p).unwrap();
    let piece = g.next().unwrap().unwrap();
    assert_eq!(piece.finish_reason, Some(FinishReason::Stop));
    assert_eq!(piece.text, "");
    assert_eq!(piece.tokens, vec![eos]);
    assert!(g.next().is_none());
    // ignore_eos keeps going.
    let p = GenerateParams { ignore_eos: true, ..p };
    let (_, finish) = s.generate(PROMPT, &p).unwrap().text().unwrap();
    assert_eq!(finish, FinishReason::Length);
}

#[test]
fn multibyte_output_is_never_split() {
    let mut s = session();
    for prompt in ["日本の首都は", "Emoji time: 🦀🦀", "Ünïcödé façade — «quotes» and"] {
        let p =
            GenerateParams { sampler: SamplerConfig { seed: 7, temperature: 1.0, ..Default::default() }, ..greedy(48) };
        let mut g = s.generate(prompt, &p).unwrap();
        let mut text = String::new();
        let mut tokens: Vec<Token> = Vec::new();
        for piece in &mut g {
            let piece = piece.unwrap();
            assert!(!piece.text.contains('\u{FFFD}') || piece.finish_reason.is_some(), "{:?}", piece.text);
            text += &piece.text;
            tokens.extend(&piece.tokens);
        }
        let eog: Vec<Token> = tokens.iter().copied().filter(|t| !model().vocab().is_eog(*t)).collect();
        assert_eq!(text, model().vocab().detokenize(&eog, false, false).unwrap(), "{prompt}");
    }
}

#[test]
fn cancellation_from_a_handle() {
    let mut s = session();
    let mut g = s.generate(PROMPT, &greedy(100)).unwrap();
    let h = g.cancel_handle();
    let mut n = 0;
    let mut last = None;
    for piece in &mut g {
        let piece = piece.unwrap();
        n += 1;
        if n == 3 {
            h.cancel();
        }
        last = piece.finish_reason;
    }
    assert_eq!(last, Some(FinishReason::Cancelled));
    assert_eq!(g.finish_reason(), Some(FinishReason::Cancelled));
    assert!(n <= 5);
    drop(g);
    // The session stays usable and consistent.
    let (text, _) = s.generate(PROMPT, &greedy(20)).unwrap().text().unwrap();
    assert!(text.starts_with(" the capital of the country of France."), "{text:?}");
}

#[test]
fn prompt_prefix_is_reused_between_calls() {
    let mut s = session();
    let (first, _) = s.generate(PROMPT, &greedy(6)).unwrap().text().unwrap();
    let before = s.context().perf().prompt_tokens;
    let longer = format!("{PROMPT}{first}");
    let (second, _) = s.generate(longer.as_str(), &greedy(6)).unwrap().text().unwrap();
    let decoded = s.context().perf().prompt_tokens - before;
    let n_longer = model().vocab().tokenize(&longer, true, false).unwrap().len() as i32;
    assert!(decoded < n_longer / 2, "decoded {decoded} of {n_longer} prompt tokens");
    // A fresh session making the same calls gives the same text (the cache really holds
    // the prefix); one decoding everything at once agrees on the next token (batch shape
    // changes CPU summation order, so later tokens may drift apart).
    let mut same = session();
    same.generate(PROMPT, &greedy(6)).unwrap().text().unwrap();
    assert_eq!(same.generate(longer.as_str(), &greedy(6)).unwrap().text().unwrap().0, second);
    let mut fresh = session();
    let first_piece = fresh.generate(longer.as_str(), &greedy(6)).unwrap().next().unwrap().unwrap();
    assert!(second.starts_with(&first_piece.text), "{second:?} vs {:?}", first_piece.text);
    // The identical prompt again: only the last token is re-decoded.
    let before = s.context().perf().prompt_tokens + s.context().perf().eval_tokens;
    s.generate(longer.as_str(), &greedy(1)).unwrap().text().unwrap();
    let after = s.context().perf().prompt_tokens + s.context().perf().eval_tokens;
    assert!(after - before <= 2, "{}", after - before);
}

#[test]
fn logprobs_are_reported() {
    let mut s = session();
    let p = GenerateParams { logprobs: Some(3), ..greedy(5) };
    let pieces: Vec<_> = s.generate(PROMPT, &p).unwrap().collect::<Result<_, _>>().unwrap();
    let lps: Vec<_> = pieces.iter().flat_map(|p| p.logprobs.clone()).collect();
    assert_eq!(lps.len(), 5);
    for lp in lps {
        assert!(lp.logprob <= 0.0);
        assert_eq!(lp.top.len(), 3);
        assert_eq!(lp.top[0].0, lp.token, "greedy picks the most likely");
        assert!((lp.top[0].1 - lp.logprob).abs() < 1e-5);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(lp.top.iter().map(|(_, l)| l.exp()).sum::<f32>() <= 1.0001);
    }
}

#[test]
fn bad_prompts_and_a_full_context() {
    let mut small = Session::new(model().context(params().n_ctx(64).n_batch(64).n_ubatch(64)).unwrap()).unwrap();
    let long = "word ".repeat(5000);
    assert!(matches!(small.generate(long.as_str(), &greedy(4)), Err(Error::PromptTooLong { .. })));
    assert!(matches!(small.generate(Vec::<Token>::new(), &greedy(4)), Err(Error::InvalidParam { .. })));
    assert!(matches!(small.generate(vec![Token(2), Token(-4)], &greedy(4)), Err(Error::InvalidToken { .. })));
    let p = GenerateParams { max_tokens: None, ignore_eos: true, ..greedy(0) };
    let (_, finish) = small.generate(PROMPT, &p).unwrap().text().unwrap();
    assert_eq!(finish, FinishReason::Length, "a full context ends with `length`");
    assert!(small.tokens().len() < small.context().n_ctx_seq() as usize);
    assert!(small.tokens().len() >= 60, "{} tokens", small.tokens().len());
    // max_tokens 0: nothing generated.
    let (t, f) = small.generate(PROMPT, &greedy(0)).unwrap().text().unwrap();
    assert_eq!((t.as_str(), f), ("", FinishReason::Length));
}

/// Tokens of one generation, token by token.
fn tokens_of(s: &mut Session, prompt: &str, p: &GenerateParams) -> Vec<Token> {
    let mut out = Vec::new();
    for piece in s.generate(prompt, p).unwrap() {
        out.extend(piece.unwrap().tokens);
    }
    out
}

#[test]
fn device_sampling_gives_the_host_tokens() {
    let sampled = SamplerConfig { seed: 7, ..Default::default() }; // top-k 40 .. dist
    let penalised = SamplerConfig { seed: 9, repeat_penalty: 1.3, penalty_last_n: 16, ..Default::default() };
    for (config, step) in [
        (SamplerConfig::greedy(), DeviceSampler::Greedy),
        (sampled, DeviceSampler::TopK(40)),
        (penalised, DeviceSampler::TopK(56)),
    ] {
        let p = GenerateParams { max_tokens: Some(48), sampler: config, ignore_eos: true, ..Default::default() };
        let on = GenerateParams { device_sampling: DeviceSampling::On, ..p.clone() };
        let off = GenerateParams { device_sampling: DeviceSampling::Off, ..p };
        let mut dev = session();
        let got = tokens_of(&mut dev, PROMPT, &on);
        assert_eq!(dev.context().device_sampler(0), Some(step));
        let mut host = session();
        let want = tokens_of(&mut host, PROMPT, &off);
        assert_eq!(host.context().device_sampler(0), None);
        assert_eq!(got.len(), 48);
        // The device computes the same logits; only where they are read differs.
        assert_eq!(got, want, "{step:?}");
        // Logprobs need the logits: the same session switches back to host sampling.
        let lp = GenerateParams { logprobs: Some(2), max_tokens: Some(4), ..on.clone() };
        let n = dev.generate(PROMPT, &lp).unwrap().map(|p| p.unwrap().logprobs.len()).sum::<usize>();
        assert_eq!(n, 4);
        assert_eq!(dev.context().device_sampler(0), None);
    }
    // Greedy from a device top-1 (what Auto picks on Vulkan) is the same too.
    let host_params = GenerateParams { ignore_eos: true, device_sampling: DeviceSampling::Off, ..greedy(16) };
    let want = tokens_of(&mut session(), PROMPT, &host_params);
    let mut c = ctx();
    assert!(c.set_device_sampler(0, Some(DeviceSampler::TopK(1))).unwrap());
    let mut sampler = SamplerConfig::greedy().build(model()).unwrap();
    let prompt = model().vocab().tokenize(PROMPT, true, false).unwrap();
    let mut b = llama_rs::Batch::new(512, 1).unwrap();
    b.add_sequence(&prompt, 0, 0, true).unwrap();
    c.decode(&mut b).unwrap();
    let (mut got, mut index) = (Vec::new(), prompt.len() - 1);
    for pos in prompt.len()..prompt.len() + 16 {
        let t = sampler.sample(&c, index).unwrap();
        sampler.accept(t).unwrap();
        got.push(t);
        b.clear();
        b.add(t, pos as i32, &[0], true).unwrap();
        c.decode(&mut b).unwrap();
        index = 0;
    }
    assert_eq!(got, want);

    // Auto samples on the device exactly when the logits are computed there.
    let mut auto = session();
    tokens_of(&mut auto, PROMPT, &greedy(2));
    let want = match model().output_backend().as_deref() {
        None => None,
        Some("Vulkan") => Some(DeviceSampler::TopK(1)),
        Some(_) => Some(DeviceSampler::Greedy),
    };
    assert_eq!(auto.context().device_sampler(0), want);
    if on_gpu() {
        assert!(model().output_on_device()); // default params offload every layer
    } else if llama_rs::Device::all().iter().all(|d| d.kind == llama_rs::DeviceType::Cpu) {
        assert!(!model().output_on_device());
    }
}

#[test]
fn device_sampler_preconditions_are_typed_errors() {
    let mut c = ctx();
    assert!(matches!(c.set_device_sampler(5, Some(DeviceSampler::Greedy)), Err(Error::InvalidSeqId { .. })));
    assert!(matches!(c.set_device_sampler(0, Some(DeviceSampler::TopK(0))), Err(Error::InvalidParam { .. })));
    let too_many = model().n_vocab() as u32 + 1;
    assert!(matches!(c.set_device_sampler(0, Some(DeviceSampler::TopK(too_many))), Err(Error::InvalidParam { .. })));
    let mut e = model().context(params().embeddings(true)).unwrap();
    assert!(matches!(e.set_device_sampler(0, Some(DeviceSampler::Greedy)), Err(Error::InvalidParam { .. })));

    assert!(c.set_device_sampler(0, Some(DeviceSampler::TopK(8))).unwrap());
    let prompt = model().vocab().tokenize(PROMPT, true, false).unwrap();
    let mut b = llama_rs::Batch::new(512, 1).unwrap();
    b.add_sequence(&prompt, 0, 0, true).unwrap();
    c.decode(&mut b).unwrap();
    let last = prompt.len() - 1;
    assert!(matches!(c.logits(last), Err(Error::DeviceSampled { .. })));
    assert!(matches!(c.sampled_token(last), Err(Error::DeviceSampled { .. })));
    assert!(matches!(c.sampled_token(0), Err(Error::NoOutput { .. })));
    let (ids, logits) = c.sampled_candidates(last).unwrap();
    assert_eq!((ids.len(), logits.len()), (8, 8));
    // Greedy takes the best of the 8; a chain that needs the top 40 refuses them.
    let best = ids.iter().zip(logits).max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
    let mut greedy = SamplerConfig::greedy().build(model()).unwrap();
    assert_eq!(greedy.sample(&c, last).unwrap(), *best);
    let mut top40 = SamplerConfig::default().build(model()).unwrap();
    assert!(matches!(top40.sample(&c, last), Err(Error::InvalidParam { .. })));
    let mut top8 = SamplerConfig { top_k: 8, ..SamplerConfig::greedy() };
    top8.temperature = 0.5;
    let t = top8.build(model()).unwrap().sample(&c, last).unwrap();
    assert!(ids.contains(&t));
    // Detached: the next decode has host logits again.
    assert!(c.set_device_sampler(0, None).unwrap());
    b.clear();
    b.add(t, prompt.len() as i32, &[0], true).unwrap();
    c.decode(&mut b).unwrap();
    assert!(c.logits(0).is_ok());
}

/// Every piece of one generation, and the session's cache afterwards.
/// (text, tokens, finish) of each piece.
type Pieces = Vec<(String, Vec<Token>, Option<FinishReason>)>;

fn run(s: &mut Session, prompt: &str, p: &GenerateParams) -> (Pieces, Vec<Token>) {
    let pieces = s
        .generate(prompt, p)
        .unwrap()
        .map(|p| p.map(|p| (p.text, p.tokens, p.finish_reason)))
        .collect::<Result<_, _>>()
        .unwrap();
    (pieces, s.tokens().to_vec())
}

#[test]
fn eager_decoding_changes_nothing_but_timing() {
    let eos = model().vocab().eos().unwrap();
    let cases = [
        greedy(24),
        GenerateParams { stop: vec![". It".into()], ..greedy(40) },
        GenerateParams { sampler: SamplerConfig { seed: 7, ..Default::default() }, ..greedy(24) },
        GenerateParams {
            sampler: SamplerConfig { logit_bias: vec![(eos, 1000.0)], ..SamplerConfig::greedy() },
            ..greedy(8)
        },
        GenerateParams { logprobs: Some(2), ..greedy(6) },
    ];
    let (mut lazy, mut eager) = (session(), session());
    for case in cases {
        let (l, e) = (
            GenerateParams { eager_decode: Some(false), ..case.clone() },
            GenerateParams { eager_decode: Some(true), ..case.clone() },
        );
        let (lp, lt) = run(&mut lazy, PROMPT, &l);
        let (ep, et) = run(&mut eager, PROMPT, &e);
        assert_eq!(lp, ep, "{case:?}");
        let generated: Vec<Token> = lp.iter().flat_map(|p| p.1.clone()).collect();
        let prompt = model().vocab().tokenize(PROMPT, true, false).unwrap();
        // Both caches hold the prompt and a prefix of the generated tokens; eager decoding
        // holds at most one more (the token that completed a stop string).
        for (cache, extra) in [(&lt, 0), (&et, 1)] {
            assert_eq!(&cache[..prompt.len()], &prompt[..]);
            let held = &cache[prompt.len()..];
            assert!(generated.starts_with(held), "{case:?}");
            assert!(held.len() + 1 + extra >= generated.len(), "{} of {} held", held.len(), generated.len());
            assert!(held.len() < generated.len() || extra == 1);
        }
        // The length-limited last token is never decoded, eagerly or not.
        if lp.last().unwrap().2 == Some(FinishReason::Length) {
            assert_eq!(lt.len(), et.len());
            assert_eq!(lt.len(), prompt.len() + generated.len() - 1);
        }
        // Continuing from either cache gives the same text.
        let text: String = lp.iter().map(|p| p.0.as_str()).collect();
        let next = format!("{PROMPT}{text}");
        assert_eq!(
            run(&mut lazy, &next, &greedy(6)).0,
            run(&mut eager, &next, &GenerateParams { eager_decode: Some(true), ..greedy(6) }).0
        );
    }
    // A full context ends with `length` either way, with the same tokens.
    let full = |eager| {
        let mut small = Session::new(model().context(params().n_ctx(64).n_batch(64).n_ubatch(64)).unwrap()).unwrap();
        let p = GenerateParams { max_tokens: None, ignore_eos: true, eager_decode: Some(eager), ..greedy(0) };
        let r = run(&mut small, PROMPT, &p);
        assert_eq!(r.0.last().unwrap().2, Some(FinishReason::Length));
        assert!(small.tokens().len() < small.context().n_ctx_seq() as usize);
        r
    };
    assert_eq!(full(false), full(true));
    // Cancelling stops an eager generation too, and leaves the session usable.
    let mut s = session();
    let p = GenerateParams { eager_decode: Some(true), ..greedy(100) };
    let mut g = s.generate(PROMPT, &p).unwrap();
    let h = g.cancel_handle();
    let mut n = 0;
    for piece in &mut g {
        n += 1;
        if n == 3 {
            h.cancel();
        }
        if piece.unwrap().finish_reason.is_some() {
            break;
        }
    }
    assert!(n <= 5);
    drop(g);
    let (text, _) = s.generate(PROMPT, &p).unwrap().text().unwrap();
    assert!(text.starts_with(" the capital of the country of France."), "{text:?}");
}

#[test]
fn a_reasoning_budget_closes_the_think_block_after_n_tokens() {
    use llama_rs::{Grammar, ReasoningBudget};
    let mut s = session();
    let close = s.context().model().vocab().tokenize("\n</think>\n\n", false, true).unwrap();
    let prompt = "Question: what is two plus two? Think step by step.\n<think>\n";
    let free = tokens_of(&mut s, prompt, &greedy(24));
    for n in [0, 1, 5] {
        // The prompt opened the block: after n tokens, the end tag is generated, then the
        // model goes on (the answer).
        let p = GenerateParams { reasoning_budget: Some(ReasoningBudget { tokens: n, started: true }), ..greedy(24) };
        let got = tokens_of(&mut s, prompt, &p);
        assert_eq!(got[..n], free[..n], "budget {n}: the thought is the free one up to the budget");
        assert_eq!(got[n..n + close.len()], close[..], "budget {n}");
        assert_eq!(got.len(), 24);
    }
    // The block opened by the model itself counts from its "<think>"; text that does not
    // open a block is never touched.
    let p = GenerateParams { reasoning_budget: Some(ReasoningBudget { tokens: 2, started: false }), ..greedy(24) };
    assert_eq!(tokens_of(&mut s, PROMPT, &p), tokens_of(&mut s, PROMPT, &greedy(24)));
    let grammar = Grammar::new(r#"root ::= "<think>" [a-z ]+ "</think>" [a-z ]*"#);
    let mut forced = greedy(40);
    forced.sampler.grammar = Some(grammar.clone());
    forced.reasoning_budget = Some(ReasoningBudget { tokens: 3, started: false });
    let text = s.generate(PROMPT, &forced).unwrap().text().unwrap().0;
    // With a grammar the budget is not applied (forcing could break the grammar).
    let mut plain = greedy(40);
    plain.sampler.grammar = Some(grammar);
    assert_eq!(text, s.generate(PROMPT, &plain).unwrap().text().unwrap().0);
}
