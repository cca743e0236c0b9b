//! The engine on the real default model: concurrency gives the same text as running
//! alone, queueing, cancellation, admission errors, pool pressure, prefix reuse, async.

use std::time::{Duration, Instant};

use llama_rs::{
    Engine, EngineParams, Error, Event, FinishReason, GenerateParams, Model, ModelParams, Request, SamplerConfig,
};
use llama_testkit::fixtures as common;

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time",
    "The best way to learn a language is",
    "In 1969, astronauts",
    "def fibonacci(n):",
    "Water boils at",
    "My favourite animal is",
    "The three primary colours are",
];

/// The model the engine tests use: without repacked CPU weights (the engine's
/// deterministic configuration; see docs/ENGINE.md).
fn model() -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default().no_repack(true)).unwrap()
    })
}

fn greedy(n: usize) -> GenerateParams {
    GenerateParams { max_tokens: Some(n), sampler: SamplerConfig::greedy(), ..Default::default() }
}

fn engine(p: EngineParams) -> Engine {
    Engine::new(model(), EngineParams { n_threads: 2, ..p }).unwrap()
}

fn run_alone(prompt: &str, n: usize) -> String {
    run_alone_with(prompt, n, true)
}

fn run_alone_with(prompt: &str, n: usize, deterministic: bool) -> String {
    let e = engine(EngineParams { slots: 1, n_ctx: 1024, deterministic, ..Default::default() });
    e.submit(Request::text(prompt, greedy(n))).unwrap().text().unwrap().text
}

#[test]
fn concurrent_greedy_requests_give_the_text_each_gives_alone() {
    let alone: Vec<String> = PROMPTS.iter().map(|p| run_alone(p, 24)).collect();
    for run in 0..2 {
        let e = engine(EngineParams { slots: 8, n_ctx: 2048, deterministic: true, ..Default::default() });
        let streams: Vec<_> = PROMPTS.iter().map(|p| e.submit(Request::text(*p, greedy(24))).unwrap()).collect();
        let together: Vec<String> = streams.into_iter().map(|s| s.text().unwrap().text).collect();
        for (i, (a, t)) in alone.iter().zip(&together).enumerate() {
            assert_eq!(a, t, "run {run}, prompt {:?}: alone vs with 7 others", PROMPTS[i]);
        }
        let m = e.metrics();
        assert_eq!(m.finished, 8);
        assert_eq!(m.generated_tokens, 8 * 24);
    }
    // The engine's text is the Session's text (one generation core).
    let ctx = model().context(common::params().flash_attn(llama_rs::FlashAttn::Off)).unwrap();
    let mut s = llama_rs::Session::new(ctx).unwrap();
    let (t, _) = s.generate(PROMPTS[0], &greedy(24)).unwrap().text().unwrap();
    assert_eq!(t, alone[0]);
}

#[test]
fn n_completions_with_a_seed_differ_and_repeat() {
    let params = GenerateParams {
        max_tokens: Some(16),
        sampler: SamplerConfig { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: 7, ..Default::default() },
        ..Default::default()
    };
    let run = || {
        let e = engine(EngineParams { slots: 4, n_ctx: 2048, deterministic: true, ..Default::default() });
        let streams = e.submit_n(Request::text(PROMPTS[1], params.clone()), 4).unwrap();
        streams.into_iter().map(|s| s.text().unwrap().text).collect::<Vec<_>>()
    };
    let a = run();
    let distinct: std::collections::HashSet<_> = a.iter().collect();
    assert_eq!(distinct.len(), 4, "{a:?}");
    assert_eq!(run(), a);
    // With the unified pool the 4 share the prompt's cells: it is decoded once.
    let long = format!("{} {}", "Tell me a story about a brave knight and a dragon.".repeat(6), PROMPTS[1]);
    let e = engine(EngineParams { slots: 4, n_ctx: 4096, ..Default::default() });
    let streams = e.submit_n(Request::text(long, params.clone()), 4).unwrap();
    let done: Vec<_> = streams.into_iter().map(|s| s.text().unwrap()).collect();
    let prompt = done[0].usage.prompt_tokens;
    assert!(
        done[1..].iter().all(|c| c.usage.cached_tokens == prompt - 1),
        "{:?}",
        done.iter().map(|c| c.usage).collect::<Vec<_>>()
    );
    assert!(e.metrics().prompt_tokens < 2 * prompt as u64, "{:?}", e.metrics());
    assert!(e.submit_n(Request::text("hi", params), 0).is_err());
}

#[test]
fn more_requests_than_slots_queue_and_all_finish() {
    let e = engine(EngineParams { slots: 2, n_ctx: 1024, ..Default::default() });
    let streams: Vec<_> = PROMPTS.iter().map(|p| e.submit(Request::text(*p, greedy(8))).unwrap()).collect();
    for s in streams {
        let c = s.text().unwrap();
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!(c.usage.completion_tokens, 8);
    }
    assert_eq!(e.metrics().finished, 8);
}

#[test]
fn cancelling_one_stream_leaves_the_others_unchanged() {
    let expected = run_alone(PROMPTS[1], 32);
    let e = engine(EngineParams { slots: 4, n_ctx: 2048, deterministic: true, ..Default::default() });
    let mut victim = e.submit(Request::text(PROMPTS[0], greedy(200))).unwrap();
    let other = e.submit(Request::text(PROMPTS[1], greedy(32))).unwrap();
    // Read a few pieces, then cancel.
    let mut pieces = 0;
    while let Some(ev) = Iterator::next(&mut victim) {
        if let Event::Piece(_) = ev.unwrap() {
            pieces += 1;
            if pieces == 3 {
                victim.cancel();
            }
        }
        if pieces > 50 {
            panic!("cancel was not honoured");
        }
    }
    assert_eq!(other.text().unwrap().text, expected);
    // A dropped stream frees its sequence too: the engine takes new work.
    drop(e.submit(Request::text(PROMPTS[2], greedy(500))).unwrap());
    let c = e.submit(Request::text(PROMPTS[3], greedy(4))).unwrap().text().unwrap();
    assert_eq!(c.usage.completion_tokens, 4);
}

#[test]
fn a_request_that_can_never_fit_is_refused_at_submission() {
    let e = engine(EngineParams { slots: 2, n_ctx: 256, ..Default::default() });
    let long = "word ".repeat(400);
    let r = e.submit(Request::text(long, greedy(4)));
    assert!(matches!(r, Err(Error::PromptTooLong { .. })), "{r:?}");
    let bad = GenerateParams { sampler: SamplerConfig { top_p: 2.0, ..Default::default() }, ..greedy(4) };
    assert!(e.submit(Request::text("hi", bad)).is_err());
    let capped = engine(EngineParams { slots: 2, n_ctx: 1024, max_request_tokens: Some(16), ..Default::default() });
    let r = capped.submit(Request::text("word ".repeat(20), greedy(4)));
    assert!(matches!(r, Err(Error::PromptTooLong { n_ctx: 16, .. })), "{r:?}");
    // The cap ends generation with Length.
    let c = capped.submit(Request::text("Hello", greedy(100))).unwrap().text().unwrap();
    assert_eq!(c.finish_reason, FinishReason::Length);
    assert!(c.usage.prompt_tokens + c.usage.completion_tokens <= 17, "{:?}", c.usage);
}

/// The host-memory prompt cache (`ram_cache_bytes`): a prompt whose cells another
/// request took is copied back rather than recomputed, and gives the same text; off, it
/// is recomputed.
#[test]
fn a_prompt_whose_cells_were_taken_comes_back_from_host_memory() {
    let long = |topic: &str| format!("{topic}: ") + &"the quick brown fox jumps over the lazy dog. ".repeat(6);
    for kv_unified in [false, true] {
        for ram_cache_bytes in [1 << 30, 0] {
            let e = engine(EngineParams { slots: 1, n_ctx: 1024, kv_unified, ram_cache_bytes, ..Default::default() });
            let run = |p: &str| e.submit(Request::text(p, greedy(8))).unwrap().text().unwrap();
            let first = run(&long("Foxes"));
            let _other = run(&long("Dogs")); // one slot: its cells now hold this prompt
            let again = run(&long("Foxes"));
            assert_eq!(again.text, first.text, "unified {kv_unified}, ram {ram_cache_bytes}");
            let m = e.metrics();
            if ram_cache_bytes > 0 {
                assert_eq!(again.usage.cached_tokens, first.usage.prompt_tokens - 1, "{:?}", again.usage);
                assert_eq!(m.ram_cache_hits, 1, "{m:?}");
                assert!(m.ram_cache_bytes > 0, "{m:?}");
            } else {
                assert!(again.usage.cached_tokens <= 1, "{:?}", again.usage);
                assert_eq!((m.ram_cache_hits, m.ram_cache_bytes), (0, 0));
            }
        }
    }
}

/// `prefill_step_ms`: a burst of long prompts is read oldest first in short steps, so the
/// first answer starts while later prompts are still being read; without the bound one
/// step reads them all. A prompt alone in the engine is never cut.
#[test]
fn a_step_time_bound_reads_a_burst_of_prompts_oldest_first() {
    let prompt = |i: usize| format!("Report {i}: ") + &"the quick brown fox jumps over the lazy dog. ".repeat(15);
    let burst = |ms: u32| {
        let e = engine(EngineParams { slots: 4, n_ctx: 4096, prefill_step_ms: ms, ..Default::default() });
        let alone = e.submit(Request::text(prompt(9), greedy(2))).unwrap().text().unwrap();
        assert!(alone.usage.prompt_tokens > 100, "{:?}", alone.usage);
        let steps_alone = e.metrics().steps;
        let streams: Vec<_> = (0..4).map(|i| e.submit(Request::text(prompt(i), greedy(4))).unwrap()).collect();
        let done: Vec<_> = streams.into_iter().map(|s| s.text().unwrap()).collect();
        for c in &done {
            assert_eq!(c.usage.completion_tokens, 4);
        }
        (steps_alone, e.metrics().steps - steps_alone, done)
    };
    // 1 ms: every step with company takes the floor of 32 prompt tokens.
    let (alone, steps, done) = burst(1);
    assert_eq!(alone, 2, "a prompt alone: one step for the prompt, one for the second token");
    assert!(steps >= 12, "~450 prompt tokens after the first request, 32 a step: {steps} steps");
    let ttft: Vec<f64> = done.iter().map(|c| c.timings.ttft_ms).collect();
    assert!(ttft[0] < ttft[3], "the oldest request answers first: {ttft:?}");
    let (alone, steps, _) = burst(0);
    assert_eq!(alone, 2);
    assert!(steps <= 8, "unbounded: the waiting prompts go in one or two steps, then 3 more tokens: {steps}");
}

#[test]
fn pool_pressure_evicts_then_preempts_and_every_request_finishes() {
    let n = 80;
    // The unified pool (the default): 4 requests of ~8 prompt + 80 generated tokens
    // need ~350 cells; the pool has 256, and a finished request left ~140 of them cached.
    let e = engine(EngineParams { slots: 5, n_ctx: 256, step_tokens: 64, ..Default::default() });
    let filler = e.submit(Request::text("word ".repeat(100), greedy(40))).unwrap().text().unwrap();
    assert_eq!(filler.usage.completion_tokens, 40);
    let streams: Vec<_> = PROMPTS[..4].iter().map(|p| e.submit(Request::text(*p, greedy(n))).unwrap()).collect();
    for s in streams {
        let c = s.text().unwrap();
        assert_eq!(c.usage.completion_tokens, n);
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert!(!c.text.is_empty());
    }
    let m = e.metrics();
    assert!(m.evictions > 0 && m.preemptions > 0, "{m:?}");
    // A preempted request is recomputed: with the batch-invariant configuration its text
    // is the text it gives alone (a stream per slot cannot run out of cells, so pressure
    // there comes from a small stream: the request ends at its cap).
    let alone = run_alone(PROMPTS[0], 16);
    let d = engine(EngineParams { slots: 2, n_ctx: 1024, deterministic: true, ..Default::default() });
    assert_eq!(d.submit(Request::text(PROMPTS[0], greedy(16))).unwrap().text().unwrap().text, alone);
}

/// Requests one after another, so nothing else shares their batches. The text with a
/// reused prefix equals the text without it here; in general it can differ at near-ties,
/// because llama.cpp's logits depend on how a prompt is split into chunks (measured in
/// docs/ENGINE.md), which is why the deterministic profile reuses no prefixes.
#[test]
fn prefix_reuse_gives_the_same_text_with_fewer_prompt_tokens_decoded() {
    use llama_rs::FlashAttn::Off;
    let system = "You are a helpful assistant. Answer briefly and precisely. ".repeat(12);
    let questions = ["What is the capital of France?", "How many legs does a spider have?", "Name a prime number."];
    let run = |prefix_cache: bool| {
        let e = engine(EngineParams { slots: 4, n_ctx: 4096, prefix_cache, flash_attn: Off, ..Default::default() });
        let mut texts = Vec::new();
        let mut cached = Vec::new();
        for q in questions {
            let c = e.submit(Request::text(format!("{system}{q}"), greedy(12))).unwrap().text().unwrap();
            texts.push(c.text);
            cached.push(c.usage.cached_tokens);
        }
        (texts, cached, e.metrics().prompt_tokens)
    };
    let (t_off, c_off, p_off) = run(false);
    let (t_on, c_on, p_on) = run(true);
    assert_eq!(t_off, t_on);
    assert_eq!(c_off, vec![0, 0, 0]);
    assert_eq!(c_on[0], 0);
    assert!(c_on[1] > 100 && c_on[2] > 100, "{c_on:?}");
    assert!(p_on + 200 < p_off, "prompt tokens decoded: {p_on} with the cache, {p_off} without");
    // The default model uses a 512-token sliding window: reuse past it still works.
    let long = "The quick brown fox jumps over the lazy dog. ".repeat(70);
    let e = engine(EngineParams { slots: 2, n_ctx: 4096, flash_attn: Off, ..Default::default() });
    let a = e.submit(Request::text(format!("{long}First"), greedy(8))).unwrap().text().unwrap();
    let b = e.submit(Request::text(format!("{long}Second"), greedy(8))).unwrap().text().unwrap();
    assert!(a.usage.prompt_tokens > 600, "{:?}", a.usage);
    assert!(b.usage.cached_tokens > 600, "{:?}", b.usage);
    let fresh = engine(EngineParams { slots: 1, n_ctx: 4096, flash_attn: Off, ..Default::default() });
    let b2 = fresh.submit(Request::text(format!("{long}Second"), greedy(8))).unwrap().text().unwrap();
    assert_eq!(b.text, b2.text);
}

#[test]
fn concurrent_requests_share_a_running_prefix() {
    let system = "You are a careful assistant who answers in one sentence. ".repeat(10);
    let e = engine(EngineParams { slots: 4, n_ctx: 4096, ..Default::default() });
    let first = e.submit(Request::text(format!("{system}Hi"), greedy(40))).unwrap();
    // Wait until the first request's prompt is in the cache, then submit others.
    let mut first = first;
    assert!(matches!(Iterator::next(&mut first), Some(Ok(_))));
    let others: Vec<_> =
        (0..3).map(|i| e.submit(Request::text(format!("{system}Question {i}"), greedy(4))).unwrap()).collect();
    for o in others {
        let c = o.text().unwrap();
        assert!(c.usage.cached_tokens > 100, "{:?}", c.usage);
    }
    drop(first);
}

#[test]
fn streams_work_in_both_tokio_flavours_and_plain_threads() {
    let e = engine(EngineParams { slots: 4, n_ctx: 1024, deterministic: true, ..Default::default() });
    let expected = e.submit(Request::text(PROMPTS[0], greedy(8))).unwrap().text().unwrap().text;
    for multi in [false, true] {
        let rt = if multi {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        } else {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
        };
        let h = e.handle();
        let text = rt.block_on(async move {
            let tasks: Vec<_> = (0..3)
                .map(|_| {
                    let h = h.clone();
                    tokio::spawn(async move {
                        let mut s = h.submit(Request::text(PROMPTS[0], greedy(8))).unwrap();
                        let mut text = String::new();
                        while let Some(ev) = futures::StreamExt::next(&mut s).await {
                            if let Event::Piece(p) = ev.unwrap() {
                                text += &p.text;
                            }
                        }
                        text
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        });
        assert!(text.iter().all(|t| *t == expected), "{text:?}");
    }
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let h = e.handle();
            std::thread::spawn(move || h.submit(Request::text(PROMPTS[0], greedy(8))).unwrap().text().unwrap().text)
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), expected);
    }
}

#[test]
fn a_slow_consumer_pauses_only_itself() {
    let e = engine(EngineParams { slots: 2, n_ctx: 1024, channel_capacity: 2, ..Default::default() });
    let slow = e.submit(Request::text(PROMPTS[0], greedy(64))).unwrap();
    let fast = e.submit(Request::text(PROMPTS[1], greedy(32))).unwrap().text().unwrap();
    assert_eq!(fast.usage.completion_tokens, 32);
    // The slow one was held back by its full channel, not run to the end.
    let m = e.metrics();
    assert!(m.generated_tokens < 32 + 64, "{m:?}");
    let c = slow.text().unwrap();
    assert_eq!(c.usage.completion_tokens, 64);
}

#[test]
fn dropping_the_engine_with_requests_in_flight_ends_them() {
    let e = engine(EngineParams { slots: 2, n_ctx: 1024, ..Default::default() });
    let streams: Vec<_> = PROMPTS[..4].iter().map(|p| e.submit(Request::text(*p, greedy(400))).unwrap()).collect();
    let h = e.handle();
    let t0 = Instant::now();
    drop(e);
    assert!(t0.elapsed() < Duration::from_secs(30));
    for s in streams {
        let events: Vec<_> = Iterator::collect(s);
        match events.last() {
            Some(Ok(Event::Done { finish_reason, .. })) => assert_eq!(finish_reason, &FinishReason::Cancelled),
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(h.submit(Request::text("hi", greedy(2))), Err(Error::EngineStopped)));
    // Draining shutdown finishes the work instead.
    let e = engine(EngineParams { slots: 2, n_ctx: 1024, ..Default::default() });
    let s = e.submit(Request::text(PROMPTS[0], greedy(6))).unwrap();
    e.shutdown(true);
    assert_eq!(s.text().unwrap().usage.completion_tokens, 6);
}

#[test]
fn speculative_requests_in_the_engine_keep_their_text() {
    use llama_rs::{DraftKind, Speculation};
    // One token per micro-batch and a stream per slot: logits do not depend on batching,
    // so speculation must not change a single byte (docs/SPECULATIVE.md).
    let exact =
        EngineParams { slots: 4, n_ctx: 2048, deterministic: true, ubatch_tokens: Some(1), ..Default::default() };
    let prompts = [
        "Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday. Monday, Tuesday,",
        "1. Buy milk\n2. Buy eggs\n3. Buy bread\n4. Buy",
        PROMPTS[0],
        PROMPTS[1],
    ];
    let plain = engine(exact.clone());
    let expected: Vec<String> = {
        let s: Vec<_> = prompts.iter().map(|p| plain.submit(Request::text(*p, greedy(32))).unwrap()).collect();
        s.into_iter().map(|s| s.text().unwrap().text).collect()
    };
    let spec = GenerateParams {
        speculation: Some(Speculation { drafter: DraftKind::Ngram { n_min: 1, n_max: 4 }, ..Default::default() }),
        ..greedy(32)
    };
    let e = engine(exact);
    let s: Vec<_> = prompts.iter().map(|p| e.submit(Request::text(*p, spec.clone())).unwrap()).collect();
    let got: Vec<_> = s.into_iter().map(|s| s.text().unwrap()).collect();
    for (c, want) in got.iter().zip(&expected) {
        assert_eq!(&c.text, want);
        assert_eq!(c.usage.completion_tokens, 32);
        // Per-request statistics agree with the usage counts.
        let st = c.spec.as_ref().expect("a speculative request reports its statistics");
        assert_eq!(
            (st.accepted, st.drafted - st.accepted),
            (c.usage.accepted_draft_tokens, c.usage.rejected_draft_tokens)
        );
        assert_eq!(st.generated, 32, "{st:?}");
        assert!(st.target_decodes >= 1 && st.target_decodes <= 31, "{st:?}");
        assert_eq!(st.per_position.first().map_or(0, |p| p.1), st.per_position.iter().map(|p| p.1).max().unwrap_or(0));
        assert!(st.verify_s > 0.0 && st.draft_s >= 0.0, "{st:?}");
    }
    assert!(
        got.iter().map(|c| c.usage.accepted_draft_tokens).sum::<usize>() > 10,
        "{:?}",
        got.iter().map(|c| c.usage).collect::<Vec<_>>()
    );
    // A draft model: the default model drafting for itself, loaded a second time (the
    // vocabulary check runs), for all four requests at once; same text again.
    let by_model = GenerateParams {
        speculation: Some(Speculation { drafter: DraftKind::Model, max_draft: 4, ..Default::default() }),
        ..greedy(32)
    };
    let draft = Model::load(llama_testkit::default_model_path().unwrap(), ModelParams::default().no_repack(true));
    let exact =
        EngineParams { slots: 4, n_ctx: 2048, deterministic: true, ubatch_tokens: Some(1), ..Default::default() };
    let d = Engine::with_draft_model(model(), EngineParams { n_threads: 2, ..exact }, &draft.unwrap()).unwrap();
    let s: Vec<_> = prompts.iter().map(|p| d.submit(Request::text(*p, by_model.clone())).unwrap()).collect();
    let got: Vec<_> = s.into_iter().map(|s| s.text().unwrap()).collect();
    for (c, want) in got.iter().zip(&expected) {
        assert_eq!(&c.text, want);
        // A model drafting for itself is right nearly always.
        let u = c.usage;
        assert!(u.accepted_draft_tokens >= 20 && u.rejected_draft_tokens <= 4, "{u:?}");
    }
    // Requests with n-gram drafts still work beside it; a draft model kind without a
    // draft model is a clear error.
    assert_eq!(d.submit(Request::text(prompts[0], spec.clone())).unwrap().text().unwrap().text, expected[0]);
    let p = GenerateParams {
        speculation: Some(Speculation { drafter: DraftKind::Model, ..Default::default() }),
        ..greedy(4)
    };
    assert!(matches!(e.submit(Request::text("hi", p)), Err(Error::InvalidParam { .. })));
}

#[test]
fn many_outputs_sampled_on_threads_give_the_text_of_few() {
    // 20 outputs of a 262k vocabulary a step are sampled on 2 threads (the engine spreads
    // steps of more than 4M logits); 2 slots sample one output at a time. Seeded
    // chains (top-k, top-p, temperature) and greedy ones, logprobs on one request (read
    // from the whole row): each request's text is the same either way.
    let seeded = |i: usize| GenerateParams {
        max_tokens: Some(12),
        sampler: SamplerConfig { temperature: 0.9, seed: 100 + i as u32, ..Default::default() },
        logprobs: (i == 3).then_some(2),
        ..Default::default()
    };
    let prompts: Vec<String> = (0..20).map(|i| format!("{} ({i})", PROMPTS[i % PROMPTS.len()])).collect();
    let run = |slots: u32| {
        let p = EngineParams { slots, n_ctx: 4096, deterministic: true, sample_threads: 2, ..Default::default() };
        let e = engine(p);
        let streams: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| e.submit(Request::text(p, if i % 2 == 0 { seeded(i) } else { greedy(12) })).unwrap())
            .collect();
        let texts: Vec<String> = streams.into_iter().map(|s| s.text().unwrap().text).collect();
        (texts, e.metrics())
    };
    let (spread, m) = run(20);
    let (one_by_one, _) = run(2);
    assert_eq!(spread, one_by_one);
    assert_eq!(m.generated_tokens, 20 * 12);
    assert!(m.host.sample_s > 0.0 && m.host.decode_s > 0.0, "{:?}", m.host);
    let distinct: std::collections::HashSet<_> = spread.iter().collect();
    assert!(distinct.len() >= 10, "{spread:?}");
}
