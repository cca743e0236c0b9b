//! Hostile inputs, by class (the hardening issue's list): each must give a typed error
//! (or a correct result) within a deadline — never an abort, a hang or a panic. An
//! abort kills this test binary, so the suite failing is the signal; hangs are caught
//! by running each case in a thread with a deadline.

use llama_testkit::fixtures as common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use llama_rs::{
    Batch, ChatMessage, ChatTemplate, ContextParams, Error, GenerateParams, Grammar, Model, ModelParams, RenderOptions,
    SamplerConfig, Session, Token,
};
use llama_testkit::GgufWriter;

/// Runs `f` in a thread; fails the test if it takes longer than `secs`.
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer after {:?} (hang)", start.elapsed()),
    }
}

fn sampler_error(cfg: SamplerConfig) -> Error {
    cfg.build(common::model()).expect_err("hostile sampler config accepted")
}

// Class 1: what llama.cpp applied, not what was asked.
#[test]
fn checks_use_the_batch_size_llama_cpp_applied() {
    let m = common::model();
    let mut ctx = m.context(ContextParams::default().n_ctx(512).n_threads(2)).unwrap();
    assert!(ctx.n_batch() <= ctx.n_ctx(), "n_batch {} > n_ctx {}", ctx.n_batch(), ctx.n_ctx());
    assert_eq!(ctx.params().n_batch, ctx.n_batch());
    let mut batch = Batch::new(600, 1).unwrap();
    let toks: Vec<Token> = (0..600).map(|i| Token(100 + i)).collect();
    batch.add_sequence(&toks, 0, 0, true).unwrap();
    assert!(matches!(ctx.decode(&mut batch), Err(Error::BatchTooLarge { .. })));

    // A session chunks a long prompt by the applied n_batch.
    let ctx = m.context(ContextParams::default().n_ctx(300).n_batch(4096).n_threads(2)).unwrap();
    let mut s = Session::new(ctx).unwrap();
    let prompt: Vec<Token> = (0..400).map(|i| Token(1000 + i)).collect();
    let p = GenerateParams { max_tokens: Some(2), sampler: SamplerConfig::greedy(), ..Default::default() };
    match s.generate(prompt, &p).and_then(|g| g.text()) {
        Ok(_) | Err(Error::PromptTooLong { .. }) => {}
        Err(e) => panic!("unexpected {e}"),
    }
}

// Class 2: sizes from callers are bounded; allocations are fallible.
#[test]
fn huge_sizes_are_errors_not_aborts() {
    assert!(Batch::new(usize::MAX, 1).is_err());
    assert!(Batch::new(1 << 30, 256).is_err());
    assert!(Batch::new_embd(usize::MAX / 2, 1 << 20, 1).is_err());
    let e = sampler_error(SamplerConfig { dry_multiplier: 0.8, dry_penalty_last_n: i32::MAX, ..Default::default() });
    assert!(e.to_string().contains("dry_penalty_last_n"), "{e}");
    let e = sampler_error(SamplerConfig { penalty_last_n: i32::MAX, repeat_penalty: 1.1, ..Default::default() });
    assert!(e.to_string().contains("penalty_last_n"), "{e}");
    // Thread counts ggml cannot create.
    assert!(common::model().context(ContextParams::default().n_threads(100_000)).is_err());
    assert!(common::model().context(ContextParams::default().n_threads_batch(513)).is_err());
    let mut ctx = common::ctx();
    assert!(ctx.set_threads(100_000, 1).is_err());
}

fn render(src: &str) -> llama_rs::Result<String> {
    let t = ChatTemplate::jinja(src, "<s>", "</s>")?;
    t.render(&[ChatMessage::user("hi")], &RenderOptions::default())
}

// Classes 2, 3, 7: templates are untrusted (they come with model files and requests).
#[test]
fn hostile_chat_templates_are_bounded() {
    // Output past the size bound (a string doubled 24 times: 128 MiB > 64 MiB), and a
    // string doubled 40 times that is never printed (8 TiB; minijinja's fuel charges
    // every byte an operator builds, and checks before it allocates).
    for (n, print) in [(24, true), (40, false), (40, true)] {
        let out = if print { "{{ s.v }}" } else { "{{ s.v | length > 0 }}" };
        let src = format!(
            "{{% set s = namespace(v='xxxxxxxx') %}}{{% for i in range({n}) %}}{{% set s.v = s.v ~ s.v %}}{{% endfor %}}{out}"
        );
        let r = within(30, "large strings", move || render(&src));
        assert!(matches!(r, Err(Error::Template(_))), "{n} {print}: {r:?}");
    }
    // The same through a recursive macro, and through `*` and `join`.
    for src in [
        "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s | length }}{% endif %}{% endmacro %}{{ d('xxxxxxxx', 40) }}",
        "{{ ('x' * 1000000) * 100000 }}",
        "{% set s = namespace(v=['xxxxxxxx']) %}{% for i in range(40) %}{% set s.v = [s.v | join, s.v | join] %}{% endfor %}{{ s.v | length }}",
    ] {
        let r = within(30, "large strings", move || render(src));
        assert!(matches!(r, Err(Error::Template(_))), "{src}: {r:?}");
    }
    let r = within(30, "indent", || render("{{ messages | tojson(indent=1000000000000000000) }}"));
    assert!(matches!(r, Err(Error::Template(_))), "{r:?}");
    let r = within(30, "nested loops", || {
        render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
    });
    assert!(matches!(r, Err(Error::Template(_))), "{r:?}");
    let r = within(30, "strftime", || render("{{ strftime_now('%Q') }}"));
    assert!(matches!(r, Err(Error::Template(_))), "{r:?}");
    let r = within(30, "recursion", || render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"));
    assert!(matches!(r, Err(Error::Template(_))), "{r:?}");
    // Values built by repetition share their items: small in memory, gigabytes written
    // out. And operator chains as deep as the source is long (a stack overflow in
    // minijinja's parser and evaluator), and values nested as deep as the fuel allows.
    let deep_value = |out: &str| {
        format!(
            "{{% set ns = namespace(l=[]) %}}{{% for i in range(100000) %}}{{% for j in range(10) %}}\
             {{% set ns.l = [ns.l] %}}{{% endfor %}}{{% endfor %}}{out}"
        )
    };
    let shared = "{% set l = [[1]*1000]*1000 %}";
    let cases = [
        format!("{shared}{{{{ ([l]*1000)|tojson|length }}}}"),
        format!("{shared}{{{{ ([l]*1000)|string|length }}}}"),
        format!("{shared}{{{{ ([l]*1000)|join|length }}}}"),
        format!("{shared}{{{{ ([l]*1000)|pprint|length }}}}"),
        format!("{shared}{{{{ ([l]*1000) }}}}"),
        format!("{{{{ {}true }}}}", "not ".repeat(50_000)),
        format!("{{{{ x{} }}}}", ".a".repeat(50_000)),
        format!("{{{{ {}1 }}}}", "1 + ".repeat(50_000)),
        format!("{{{{ x{} }}}}", "|string".repeat(50_000)),
        format!("{{{{ {}1 }}}}", "-".repeat(50_000)),
        format!("{{% if {}true %}}{{% endif %}}", "not ".repeat(50_000)),
        deep_value("{{ ns.l|tojson }}"),
    ];
    for src in cases {
        let r = within(60, "template", move || render(&src));
        assert!(matches!(r, Err(Error::Template(_))), "{r:?}");
    }
    // Deep values printed, compared and dropped: an error (fuel) or a result, never an
    // overflow. A single render thread of `RENDER_STACK` holds them.
    for out in ["{{ ns.l }}", "{{ ns.l == ns.l }}", "{{ 1 }}"] {
        let src = deep_value(out);
        let r = within(120, "deep value", move || render(&src));
        assert!(matches!(r, Err(Error::Template(_)) | Ok(_)), "{r:?}");
    }
    // An ordinary template still renders.
    let ok =
        render("{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{{ strftime_now('%Y') }}").unwrap();
    assert!(ok.starts_with("<user>hi"));
}

fn grammar_error(gbnf: String) -> Error {
    within(20, "grammar", move || {
        SamplerConfig { grammar: Some(Grammar::new(gbnf)), ..SamplerConfig::greedy() }.build(common::model()).err()
    })
    .expect("hostile grammar accepted")
}

// Classes 3, 4, 11: grammars.
#[test]
fn hostile_grammars_are_refused_quickly() {
    for g in [
        r#"root ::= "x"{5,2}"#.to_string(),
        r#"root ::= (("a"|"b"){0,40}){0,40}"#.to_string(),
        r#"root ::= "x"{0,1000000}"#.to_string(),
        format!("root ::= {}\"x\"{}", "(".repeat(100_000), ")".repeat(100_000)),
        r#"root ::= (("ab"){1,2000}){1,2000}"#.to_string(),
    ] {
        let e = grammar_error(g.clone());
        assert!(matches!(e, Error::Grammar(_)), "{:.40}: {e}", g);
    }
    // A real grammar still builds and constrains.
    let s = SamplerConfig {
        grammar: Some(Grammar::new(r#"root ::= ("yes" | "no") [a-z]{0,20}"#)),
        ..SamplerConfig::greedy()
    };
    s.build(common::model()).unwrap();
}

#[test]
fn hostile_json_schemas_are_refused() {
    // A 50,000-long $ref chain.
    let mut defs = serde_json::Map::new();
    for i in 0..50_000 {
        defs.insert(format!("d{i}"), serde_json::json!({ "$ref": format!("#/$defs/d{}", i + 1) }));
    }
    defs.insert("d50000".into(), serde_json::json!({ "type": "string" }));
    let schema = serde_json::json!({ "$ref": "#/$defs/d0", "$defs": defs });
    let r = within(20, "ref chain", move || llama_rs::json_schema::to_gbnf(&schema));
    assert!(matches!(r, Err(Error::JsonSchema(_))), "{r:?}");
    let r = llama_rs::json_schema::to_gbnf(&serde_json::json!({ "type": "string", "maxLength": 5000 }));
    assert!(matches!(&r, Err(Error::JsonSchema(m)) if m.contains("maxLength")), "{r:?}");
    // A deep but legal schema converts.
    let mut s = serde_json::json!({ "type": "string", "maxLength": 2000 });
    for _ in 0..20 {
        s = serde_json::json!({ "type": "array", "items": s, "maxItems": 3 });
    }
    llama_rs::json_schema::to_gbnf(&s).unwrap();
}

// Class 7 and 11: no panics from safe functions; no silent substitutes.
#[test]
fn values_that_cannot_be_honoured_are_errors() {
    let b = Batch::new(4, 1).unwrap();
    assert!(b.seq_ids(3).is_empty());
    assert!(b.seq_ids(usize::MAX).is_empty());
    let mut b = Batch::new(4, 1).unwrap();
    // Positions that would overflow leave the batch untouched (all or nothing).
    assert!(b.add_sequence(&[Token(1), Token(2), Token(3)], i32::MAX - 1, 0, true).is_err());
    assert!(b.is_empty());

    for (name, cfg) in [
        ("top_p", SamplerConfig { top_p: f32::NAN, ..Default::default() }),
        ("top_p", SamplerConfig { top_p: 2.0, ..Default::default() }),
        ("min_p", SamplerConfig { min_p: f32::NAN, ..Default::default() }),
        ("typical_p", SamplerConfig { typical_p: f32::NAN, ..Default::default() }),
        ("xtc_probability", SamplerConfig { xtc_probability: f32::NAN, ..Default::default() }),
        ("temperature", SamplerConfig { temperature: f32::NAN, ..Default::default() }),
    ] {
        let e = sampler_error(cfg);
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
    let mut w = GgufWriter::new();
    assert!(w.tensor_f32("t", &[1 << 32, 1 << 32], vec![]).is_err());
}

// Class 8: a path is passed as its bytes, never converted lossily.
#[cfg(unix)]
#[test]
fn non_utf8_paths_name_the_file_they_name() {
    use std::os::unix::ffi::OsStrExt;
    let dir = common::TempDir::new("hostile-path");
    // The file a lossy conversion would open instead.
    let lossy = dir.join("m\u{FFFD}.gguf");
    std::os::unix::fs::symlink(llama_testkit::default_model_path().unwrap(), &lossy).unwrap();
    let mut raw = dir.path().as_os_str().as_bytes().to_vec();
    raw.extend_from_slice(b"/m\xff.gguf");
    let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&raw));
    let r = Model::load(&path, ModelParams::default());
    assert!(matches!(r, Err(Error::ModelFile { .. })), "loaded another file: {:?}", r.map(|_| ()));
}

// Class 9: scratch files never collide with an input.
#[test]
fn quantize_never_writes_over_its_input() {
    let dir = common::TempDir::new("hostile-quant");
    let input = dir.join("model.partial");
    llama_testkit::write_tiny_llama(&input).unwrap();
    let before = std::fs::read(&input).unwrap();
    let out = dir.join("model.gguf");
    let p = llama_rs::QuantizeParams::new(llama_rs::FileType::Q8_0).threads(1);
    let _ = llama_rs::quantize(&input, &out, &p, |_| {});
    assert_eq!(std::fs::read(&input).unwrap(), before, "the input was modified");
    // Nothing else is left in the directory but input and (maybe) output.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(names.len() <= 2, "scratch files left: {names:?}");

    // State files: the same scheme.
    let mut ctx = common::ctx();
    let toks = common::model().vocab().tokenize(common::PROMPT, true, false).unwrap();
    common::prefill(&mut ctx, &toks);
    let state = dir.join("state.partial");
    std::fs::write(&state, b"keep me").unwrap();
    ctx.save_state_file(dir.join("state"), &toks).unwrap();
    assert_eq!(std::fs::read(&state).unwrap(), b"keep me");
}

// Class 6: asserts and crashes reachable through the context.
#[test]
fn context_operations_llama_cpp_would_crash_on_are_errors() {
    let m = common::model();
    let mut ctx = common::ctx();
    let toks = m.vocab().tokenize(common::PROMPT, true, false).unwrap();
    let mut batch = Batch::new(64, 1).unwrap();
    batch.add_sequence(&toks, 0, 0, true).unwrap();
    // Gemma 3 is decoder-only: llama_encode would dereference state it never built.
    assert!(!m.has_encoder());
    assert!(matches!(ctx.encode(&mut batch), Err(Error::InvalidParam { .. })));
    ctx.decode(&mut batch).unwrap();

    // A BF16 K cache cannot be shifted on the CPU (no BF16 rope kernel).
    let p = common::params().kv_types(llama_rs::KvType::Bf16, llama_rs::KvType::F16);
    let mut ctx = m.context(p).unwrap();
    ctx.decode(&mut batch).unwrap();
    assert!(!ctx.can_shift());
    assert!(ctx.seq_add(0, 2.., -1).is_err());
}

fn tiny(dir: &common::TempDir) -> std::path::PathBuf {
    let p = dir.join("tiny.gguf");
    llama_testkit::write_tiny_llama(&p).unwrap();
    p
}

// Classes 6, 9, 11: model files and overrides are untrusted.
#[test]
fn metadata_llama_cpp_asserts_on_is_refused_before_loading() {
    use llama_rs::KvOverride::{Float, Int, Str};
    let dir = common::TempDir::new("hostile-meta");
    let path = tiny(&dir);
    Model::load(&path, ModelParams::default()).expect("the tiny model itself loads");
    let cases: Vec<(&str, llama_rs::KvOverride)> = vec![
        ("llama.block_count", Int(-1)),
        ("llama.block_count", Int(0)),
        ("llama.block_count", Int(1_000_000)),
        ("llama.expert_count", Int(1000)),
        ("llama.expert_count", Int(4)),
        ("llama.rope.scaling.type", Str("bogus".into())),
        ("llama.attention.layer_norm_rms_epsilon", Float(f64::NAN)),
        ("llama.rope.dimension_count", Int(100_000)),
        ("llama.attention.head_count", Int(0)),
        ("llama.block_count", Str("two".into())),
        ("tokenizer.ggml.model", Str("none".into())),
        ("tokenizer.ggml.model", Str("bert".into())),
        ("tokenizer.ggml.model", Str("test".into())),
    ];
    for (k, v) in cases {
        let p = ModelParams::default().kv_override(k, v.clone());
        let r = within(20, k, {
            let path = path.clone();
            move || Model::load(&path, p).map(|_| ())
        });
        assert!(matches!(r, Err(Error::NotGguf { .. } | Error::InvalidParam { .. })), "{k} = {v:?}: {r:?}");
    }
    // A T5 vocabulary that must add a BOS it does not have (an out-of-range id is
    // ignored by llama.cpp, leaving T5's default: none).
    let p = ModelParams::default()
        .kv_override("tokenizer.ggml.model", Str("t5".into()))
        .kv_override("tokenizer.ggml.bos_token_id", Int(1_000_000))
        .kv_override("tokenizer.ggml.add_bos_token", llama_rs::KvOverride::Bool(true));
    assert!(Model::load(&path, p).is_err());
    // The same key twice: llama.cpp keeps the first (here 0 layers: an abort), so a merge
    // that kept the last would check another value than the loader reads (a fuzz find).
    let p = ModelParams::default().kv_override("llama.block_count", Int(0)).kv_override("llama.block_count", Int(1));
    let r = Model::load(&path, p).map(|_| ());
    assert!(matches!(&r, Err(Error::InvalidParam { reason: m, .. }) if m.contains("more than once")), "{r:?}");
}

#[cfg(unix)]
#[test]
fn files_that_are_not_whole_models_are_errors() {
    let dir = common::TempDir::new("hostile-files");
    let path = tiny(&dir);
    // A FIFO: opening it would block until a writer appears.
    let fifo = dir.join("fifo.gguf");
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fifo.as_os_str())).unwrap();
    // SAFETY: a valid C path; mkfifo creates a file and touches no memory of ours.
    assert_eq!(unsafe { libc_mkfifo(c.as_ptr(), 0o600) }, 0);
    let r = within(10, "fifo", move || Model::load(&fifo, ModelParams::default()).map(|_| ()));
    assert!(matches!(r, Err(Error::NotGguf { .. })), "{r:?}");
    // A file shorter than its tensor table: an error, not a SIGBUS when mapped.
    let short = dir.join("short.gguf");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&short, &bytes[..bytes.len() - 64]).unwrap();
    let r = Model::load(&short, ModelParams::default());
    assert!(matches!(&r, Err(Error::NotGguf { reason, .. }) if reason.contains("truncated")), "{:?}", r.map(|_| ()));
    // Two whole models are not the parts of one split model.
    let r = Model::load_splits(&[&path, &path], ModelParams::default());
    assert!(matches!(r, Err(Error::InvalidParam { .. })), "{:?}", r.map(|_| ()));
}

extern "C" {
    #[link_name = "mkfifo"]
    fn libc_mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
}

// Class 5: C++ exceptions never cross into Rust (the shim catches them).
#[test]
fn lazy_grammar_exceptions_are_errors() {
    let m = common::model();
    let bad_pattern = Grammar::lazy(r#"root ::= "x""#, vec!["[unclosed(".into()], vec![]);
    let r = within(20, "bad trigger pattern", move || {
        SamplerConfig { grammar: Some(bad_pattern), ..SamplerConfig::greedy() }.build(common::model()).err()
    });
    assert!(matches!(r, Some(Error::Grammar(_))), "{r:?}");

    // Accepting the trigger token feeds its text to a grammar that cannot take it.
    let trigger = m.vocab().tokenize(" Paris", false, false).unwrap()[0];
    let g = Grammar::lazy(r#"root ::= "x""#, vec![], vec![trigger]);
    let mut s = SamplerConfig { grammar: Some(g), ..SamplerConfig::greedy() }.build(m).unwrap();
    let _ = s.accept(trigger); // Ok or a typed error; an exception would abort the binary
}

// Class 2: a model file truncated (or rewritten in place, `cp new.gguf model.gguf`) while
// a process has it loaded. With a memory map the next read of a lost page is a SIGBUS,
// which no library can turn into an error; the default load mode reads the file into
// memory (when it takes at most half of the available memory), so the process goes on.
#[test]
fn a_model_file_truncated_after_loading_does_not_crash_the_default_load() {
    let dir = common::TempDir::new("hostile-truncated");
    let p = dir.join("model.gguf");
    std::fs::copy(llama_testkit::default_model_path().unwrap(), &p).unwrap();
    let m = Model::load(&p, ModelParams::default()).unwrap();
    std::fs::OpenOptions::new().write(true).open(&p).unwrap().set_len(1 << 20).unwrap();
    let mut ctx = m.context(common::params()).unwrap();
    let text = common::greedy_text(&mut ctx, common::PROMPT, 8);
    assert!(!text.is_empty());
    // Loading the truncated file now is an error, not a crash.
    assert!(Model::load(&p, ModelParams::default()).is_err());
}

// Class 1: a lazy grammar whose trigger hands it text it rejects. llama.cpp throws
// and leaves the grammar with no stacks; its next apply would abort. The sampler
// refuses every use until it is reset, and works again after.
#[test]
fn a_lazy_grammar_that_rejects_its_trigger_text_fails_until_reset() {
    let m = common::model();
    let v = m.vocab();
    let n = m.n_vocab() as usize;
    let logits: Vec<f32> = (0..n).map(|i| (i % 89) as f32 / 10.0).collect();
    let gbnf = r#"root ::= "{" [a-z]* "}""#;
    let sot = v.tokenize("<start_of_turn>", false, true).unwrap();
    assert_eq!(sot.len(), 1, "a special token");
    let cases: Vec<(Grammar, &str)> = vec![
        (Grammar::lazy(gbnf, vec![r"[\s\S]*?(now[\s\S]*)".into()], vec![]), "It is now"),
        (Grammar::lazy(gbnf, vec![r"^[\s\S]*?(is)".into()], vec![]), "It is now"),
        (Grammar::lazy(gbnf, vec![], vec![sot[0]]), "<start_of_turn>"),
        // The end-of-generation token in the trigger text: llama.cpp's accept aborts on
        // it (not an exception) where the grammar cannot end (found by the lazy_grammar
        // fuzz target).
        (Grammar::lazy(gbnf, vec!["^".into()], vec![]), "<eos>"),
        (Grammar::lazy(gbnf, vec![r"[\s\S]*?(x)".into()], vec![]), "x<eos>"),
    ];
    for (g, text) in cases {
        let mut s = SamplerConfig { grammar: Some(g.clone()), ..SamplerConfig::greedy() }.build(m).unwrap();
        for _ in 0..2 {
            let toks = v.tokenize(text, false, true).unwrap();
            let failed = toks.iter().map(|&t| s.accept(t)).find_map(|r| r.err());
            assert!(matches!(failed, Some(Error::Grammar(_))), "{g:?}: {failed:?}");
            // Every later use is an error, not an abort.
            assert!(matches!(s.accept(toks[0]), Err(Error::Grammar(_))));
            assert!(matches!(s.sample_logits(&logits), Err(Error::Grammar(_))));
            assert!(!s.grammar_allows(toks[0]));
            s.reset();
            assert!(s.grammar_allows(toks[0]), "usable again after reset");
            s.sample_logits(&logits).unwrap();
        }
    }
    // Through a session: the generation fails with the error.
    let g = Grammar::lazy(gbnf, vec![r"[\s\S]*?([\s\S])".into()], vec![]);
    let mut session = Session::new(common::ctx()).unwrap();
    let p = GenerateParams {
        max_tokens: Some(4),
        sampler: SamplerConfig { grammar: Some(g), ..SamplerConfig::greedy() },
        ..Default::default()
    };
    let r = session.generate("Hello", &p).and_then(|g| g.text());
    assert!(r.is_err() || r.as_ref().is_ok_and(|t| t.0.starts_with('{')), "{r:?}");
}

// Classes 3 and 4: trigger patterns that make a backtracking matcher run forever,
// recurse past the stack or explode are searched in linear time (the `regex` crate) or
// refused when built; llama.cpp's std::regex never sees the output.
#[test]
fn hostile_trigger_patterns_are_linear_or_refused() {
    let m = common::model();
    let v = m.vocab();
    let a = v.tokenize("a", false, false).unwrap()[0];
    let q = v.tokenize("q", false, false).unwrap()[0];
    let nested = |d: usize| format!("^({}[\\s\\S]{})*q$", "(".repeat(d), ")".repeat(d));
    let refused = [
        format!("{}x{}", "(".repeat(20_000), ")".repeat(20_000)),
        "x".repeat(llama_rs::MAX_TRIGGER_PATTERN + 1),
        "(?=a)b".into(),
        "(a)\\1".into(),
        "[unclosed".into(),
        nested(70),
    ];
    for p in refused {
        let g = Grammar::lazy(r#"root ::= "x""#, vec![p.clone()], vec![]);
        let r = SamplerConfig { grammar: Some(g), ..SamplerConfig::greedy() }.build(m);
        assert!(matches!(r, Err(Error::Grammar(_))), "{:.60}: {:?}", p, r.map(|_| ()));
    }
    for p in ["(a+)+b".to_string(), "(a|a)*b".into(), "(a*)*b".into(), "(a|aa)+$b".into(), nested(30), nested(50)] {
        let pat = p.clone();
        // On a 256 KiB stack: nothing here may recurse per character.
        let r = within(60, "hostile trigger", move || {
            let g = Grammar::lazy(r#"root ::= "x""#, vec![pat], vec![]);
            let mut s = SamplerConfig { grammar: Some(g), ..SamplerConfig::greedy() }.build(common::model()).unwrap();
            std::thread::scope(|sc| {
                std::thread::Builder::new()
                    .stack_size(256 << 10)
                    .spawn_scoped(sc, || {
                        for _ in 0..20_000 {
                            s.accept(a)?;
                        }
                        s.accept(q)
                    })
                    .unwrap()
                    .join()
                    .unwrap()
            })
        });
        // The nested patterns match at "q", and the grammar ("x") rejects the text.
        assert!(r.is_ok() || matches!(r, Err(Error::Grammar(_))), "{:.40}: {r:?}", p);
    }
}

// Class 4: the smallest contexts. llama.cpp rounds n_ctx up to 256; a generation past
// the end ends with `Length` in time (reported: 100 tokens at n_ctx 8 took 542 s; 1.8 s
// here, through `Session` and the engine).
#[test]
fn tiny_contexts_generate_in_time() {
    let p = GenerateParams {
        max_tokens: Some(100),
        ignore_eos: true,
        sampler: SamplerConfig::greedy(),
        ..Default::default()
    };
    for n_ctx in [1u32, 8, 16] {
        let sp = p.clone();
        let (n, _) = within(120, "tiny session", move || {
            let ctx = common::model().context(ContextParams::default().n_ctx(n_ctx).n_threads(2)).unwrap();
            let mut s = Session::new(ctx).unwrap();
            s.generate("Hi", &sp).and_then(|g| g.text()).map(|(t, f)| (t.len(), f)).unwrap()
        });
        assert!(n > 0);
        for slots in [1u32, 8] {
            let p = p.clone();
            let r = within(120, "tiny engine", move || {
                let e = llama_rs::Engine::new(
                    common::model(),
                    llama_rs::EngineParams { n_ctx, slots, n_threads: 2, ..Default::default() },
                )?;
                e.submit(llama_rs::Request::text("Hi", p))?.text()
            });
            assert!(r.is_ok() || matches!(r, Err(Error::InvalidParam { .. })), "{n_ctx}/{slots}: {r:?}");
        }
    }
}

// Class 4: a tool-call stream costs each piece its own length, not the length of what
// it holds (an unterminated call name fed 4 bytes at a time took 100 s for 0.7 MB).
#[test]
fn tool_call_streams_are_linear_in_their_input() {
    let shapes: [(&str, &str); 7] = [
        ("<tool_call>{\"name\": \"", "abcd"),
        ("<tool_call>{\"name\": \"", "{{{{"),
        ("[TOOL_CALLS]", "name"),
        ("[TOOL_CALLS][{\"name\": \"f\", \"arguments\": {}, \"x\": \"", "}}]]"),
        ("{\"name\": \"f\", \"parameters\": {\"a\": \"", "aaaa"),
        ("text", "    "),
        ("", "    "),
    ];
    for (head, piece) in shapes {
        let r = within(60, "tool-call stream", move || {
            let mut s = llama_rs::ToolCallStream::new();
            let mut n = s.push(head).len();
            for _ in 0..(2 << 20) / piece.len() {
                n += s.push(piece).len();
            }
            n + s.finish().len()
        });
        assert!(r > 0 || head.is_empty(), "{head:?}");
    }
}

// Class 6: speculation settings are checked, never clamped or silently turned off,
// in `Session` and the engine alike.
#[test]
fn speculation_settings_out_of_range_are_errors() {
    use llama_rs::{DraftKind, Speculation};
    let bad = [
        Speculation { drafter: DraftKind::Ngram { n_min: 0, n_max: 4 }, ..Default::default() },
        Speculation { drafter: DraftKind::Ngram { n_min: 2, n_max: 1000 }, ..Default::default() },
        Speculation { drafter: DraftKind::Ngram { n_min: 6, n_max: 2 }, ..Default::default() },
        Speculation { drafter: DraftKind::Ngram { n_min: usize::MAX, n_max: usize::MAX }, ..Default::default() },
        Speculation { drafter: DraftKind::NgramMap { n: 0, min_count: 1 }, ..Default::default() },
        Speculation { drafter: DraftKind::NgramMap { n: 1000, min_count: 1 }, ..Default::default() },
        Speculation { drafter: DraftKind::NgramMap { n: 2, min_count: 0 }, ..Default::default() },
        Speculation { min_acceptance: f32::NAN, ..Default::default() },
        Speculation { min_acceptance: f32::INFINITY, ..Default::default() },
        Speculation { min_acceptance: -0.5, ..Default::default() },
        Speculation { max_draft: 0, ..Default::default() },
        Speculation { max_draft: 65, ..Default::default() },
        Speculation { fixed_batch: Some(0), ..Default::default() },
    ];
    let m = common::model();
    let engine =
        llama_rs::Engine::new(m, llama_rs::EngineParams { n_ctx: 1024, slots: 2, ..Default::default() }).unwrap();
    let mut session = Session::new(common::ctx()).unwrap();
    for sp in bad {
        assert!(sp.check().is_err(), "{sp:?}");
        let p = GenerateParams { max_tokens: Some(2), speculation: Some(sp.clone()), ..Default::default() };
        let r = session.generate("Hello", &p).map(|_| ());
        assert!(matches!(r, Err(Error::InvalidParam { .. })), "session {sp:?}: {r:?}");
        let r = engine.submit(llama_rs::Request::text("Hello", p)).map(|_| ());
        assert!(matches!(r, Err(Error::InvalidParam { .. })), "engine {sp:?}: {r:?}");
    }
}

// Class 6: a draft model whose vocabulary has 100 more tokens than the target's passes
// llama.cpp's compatibility rule (within 128). Its drafts then hold tokens the target
// lacks: `Session` failed with `InvalidToken`, and in the engine the plain request decoded
// in the same batch failed too. One request's bad draft must break nothing.
#[test]
fn a_draft_with_a_larger_vocabulary_breaks_no_request() {
    use llama_rs::{DraftKind, DraftModel, Speculation};
    let dir = common::TempDir::new("hostile-draft-vocab");
    let (t, d) = (dir.join("target.gguf"), dir.join("draft.gguf"));
    llama_testkit::write_tiny_llama(&t).unwrap();
    llama_testkit::write_tiny_llama_with(&d, 100).unwrap();
    let target = Model::load(&t, ModelParams::default()).unwrap();
    let draft = Model::load(&d, ModelParams::default()).unwrap();
    assert_eq!(draft.n_vocab(), target.n_vocab() + 100);
    let cp = || ContextParams::default().n_ctx(256).n_threads(2);
    let spec = Speculation { drafter: DraftKind::Model, ..Default::default() };
    let p = |speculation| GenerateParams {
        max_tokens: Some(48),
        ignore_eos: true,
        sampler: SamplerConfig::greedy(),
        speculation,
        ..Default::default()
    };
    let mut s = Session::new(target.context(cp()).unwrap()).unwrap();
    s.set_draft_model(Some(DraftModel::new(&target, &draft, cp()).unwrap()));
    let mut g = s.generate("a b", &p(Some(spec.clone()))).unwrap();
    let n: usize = g.by_ref().map(|piece| piece.unwrap().tokens.len()).sum();
    assert_eq!(n, 48);
    assert!(g.spec_stats().target_decodes > 0);

    let e = llama_rs::Engine::with_draft_model(
        &target,
        llama_rs::EngineParams { n_ctx: 512, slots: 2, n_threads: 2, ..Default::default() },
        &draft,
    )
    .unwrap();
    let a = e.submit(llama_rs::Request::text("a b", p(Some(spec)))).unwrap();
    let b = e.submit(llama_rs::Request::text("b a", p(None))).unwrap();
    let (a, b) = (a.text().unwrap(), b.text().unwrap());
    assert_eq!((a.tokens.len(), b.tokens.len()), (48, 48));
}

// Class 6: the engine keeps `Session`'s contract: `max_tokens: Some(0)` generates
// nothing; a request cancelled while queued ends its stream with `Cancelled`.
#[test]
fn engine_limits_and_cancellation_keep_their_contract() {
    let m = common::model();
    let p = llama_rs::EngineParams { n_ctx: 2048, slots: 2, channel_capacity: 1, ..Default::default() };
    let engine = llama_rs::Engine::new(m, p).unwrap();
    let zero = GenerateParams { max_tokens: Some(0), sampler: SamplerConfig::greedy(), ..Default::default() };
    let c = engine.submit(llama_rs::Request::text("Hello", zero.clone())).unwrap().text().unwrap();
    assert_eq!((c.tokens.len(), c.finish_reason), (0, llama_rs::FinishReason::Length));
    let mut session = Session::new(common::ctx()).unwrap();
    assert_eq!(
        session.generate("Hello", &zero).unwrap().text().unwrap(),
        (String::new(), llama_rs::FinishReason::Length)
    );

    // A storm: 16 requests on 2 slots, 13 cancelled at once while most wait in the queue.
    let long = GenerateParams { max_tokens: Some(24), sampler: SamplerConfig::greedy(), ..Default::default() };
    let streams: Vec<_> =
        (0..16).map(|i| engine.submit(llama_rs::Request::text(format!("Story {i}:"), long.clone())).unwrap()).collect();
    for s in &streams[3..] {
        s.cancel();
    }
    for (i, s) in streams.into_iter().enumerate() {
        let c = within(120, "cancel storm", move || s.text()).unwrap_or_else(|e| panic!("request {i}: {e}"));
        if i >= 3 {
            assert_eq!(c.finish_reason, llama_rs::FinishReason::Cancelled, "request {i}");
        } else {
            assert_ne!(c.finish_reason, llama_rs::FinishReason::Cancelled, "request {i} was not cancelled");
        }
    }
}

// Class 11 and 6: sampling edge cases.
#[test]
fn sampling_edge_cases_are_typed_errors() {
    let m = common::model();
    let n = m.n_vocab() as usize;
    // An all -inf row allows no token: greedy says so like every other chain.
    let mut greedy = SamplerConfig::greedy().build(m).unwrap();
    assert!(matches!(greedy.sample_logits(&vec![f32::NEG_INFINITY; n]), Err(Error::GrammarRejectedAll)));
    let mut chain = SamplerConfig::default().build(m).unwrap();
    assert!(chain.sample_logits(&vec![f32::NEG_INFINITY; n]).is_err());

    // A custom stage that leaves no candidates before top-p (which asserts on none).
    struct Empty;
    impl llama_rs::CustomSampler for Empty {
        fn apply(&mut self, c: &mut llama_rs::Candidates<'_>) {
            c.truncate(0);
        }
    }
    let mut s = llama_rs::SamplerBuilder::new(m)
        .custom(Empty)
        .stage(llama_rs::Stage::TopP { p: 0.9, min_keep: 1 })
        .stage(llama_rs::Stage::Dist { seed: 1 })
        .build()
        .unwrap();
    let logits: Vec<f32> = (0..n).map(|i| (i % 97) as f32 / 10.0).collect();
    assert!(matches!(s.sample_logits(&logits), Err(Error::InvalidParam { .. })));

    // A position with no successor.
    let mut ctx = common::ctx();
    let mut b = Batch::new(1, 1).unwrap();
    b.add(Token(2), i32::MAX, &[0], true).unwrap();
    assert!(ctx.decode(&mut b).is_err());
}

// Class 6: pooled embeddings with a sequence count that does not divide the batch.
#[test]
fn pooled_embeddings_with_any_sequence_count() {
    let m = common::model();
    for n in [3u32, 5, 7] {
        let mut e = llama_rs::Embedder::new(m, llama_rs::EmbedParams { max_inputs: n, ..Default::default() }).unwrap();
        let v = e.embed(&["a", "hello world", "the cat", "x y z", "q"]).unwrap();
        assert_eq!(v.len(), 5);
    }
    let p = ContextParams::default().embeddings(true).pooling(llama_rs::Pooling::Mean).n_seq_max(3).n_ctx(2048);
    assert!(matches!(m.context(p), Err(Error::InvalidParam { .. })));
}

// Class 6: device top-k. llama.cpp checks every device chain on a probe tensor of
// 131,072 logits: a larger k asserts there whatever the sequences and micro-batches
// (the bound once written as n_vocab / n_seq_max was an example's, not llama.cpp's).
#[test]
fn device_top_k_bounds_hold_for_every_sequence() {
    let m = common::model();
    let n = m.n_vocab() as u32;
    let max = llama_rs::DEVICE_TOP_K_MAX.min(n);
    let toks = m.vocab().tokenize("The capital of France is", true, false).unwrap();
    for (n_seq, n_ubatch) in [(1u32, 512u32), (1, 3), (2, 512), (4, 3)] {
        let mut ctx = m.context(common::params().n_seq_max(n_seq).n_ubatch(n_ubatch)).unwrap();
        for k in [max + 1, n - 1, n, 0] {
            let r = ctx.set_device_sampler(0, Some(llama_rs::DeviceSampler::TopK(k)));
            assert!(matches!(r, Err(Error::InvalidParam { .. })), "k {k}, {n_seq} seqs, ubatch {n_ubatch}: {r:?}");
        }
        // The largest allowed k, on every sequence: attached, decoded, sampled.
        for seq in 0..n_seq as i32 {
            assert!(ctx.set_device_sampler(seq, Some(llama_rs::DeviceSampler::TopK(max))).unwrap());
        }
        let mut b = Batch::new(64, n_seq as usize).unwrap();
        for seq in 0..n_seq as i32 {
            b.add_sequence(&toks, 0, seq, true).unwrap();
        }
        ctx.decode(&mut b).unwrap();
        for seq in 0..n_seq as usize {
            let (ids, logits) = ctx.sampled_candidates((seq + 1) * toks.len() - 1).unwrap();
            assert_eq!((ids.len(), logits.len()), (max as usize, max as usize));
        }
    }
    // A sampler whose top-k is past the bound runs on the host instead.
    let s = SamplerConfig { top_k: n as i32, ..Default::default() }.build(m).unwrap();
    assert!(!matches!(s.device_step(), Some(llama_rs::DeviceSampler::TopK(k)) if k > max));
    // Through a session that asks for device sampling: the bound's k on the device, a
    // larger one on the host; both generate.
    for top_k in [max as i32, n as i32 - 1] {
        let mut session = Session::new(m.context(common::params()).unwrap()).unwrap();
        let p = GenerateParams {
            max_tokens: Some(4),
            device_sampling: llama_rs::DeviceSampling::On,
            sampler: SamplerConfig { top_k, top_p: 1.0, min_p: 0.0, seed: 3, ..Default::default() },
            ..Default::default()
        };
        let (text, _) = session.generate("The capital of France is", &p).unwrap().text().unwrap();
        assert!(!text.is_empty(), "top_k {top_k}");
    }
}

// Class 2: llama_encode on a decoder-only model with a KV cache builds its graph with
// no memory context (SIGSEGV), whatever the attention type and pooling.
#[test]
fn encode_needs_an_encoder_or_a_context_without_memory() {
    let m = common::model();
    let toks = m.vocab().tokenize(common::PROMPT, true, false).unwrap();
    use llama_rs::{AttentionType, Pooling};
    for emb in [false, true] {
        for attn in [None, Some(AttentionType::Causal), Some(AttentionType::NonCausal)] {
            for pooling in [None, Some(Pooling::None), Some(Pooling::Mean), Some(Pooling::Last)] {
                let mut p = common::params().embeddings(emb);
                if let Some(a) = attn {
                    p = p.attention(a);
                }
                if let Some(pl) = pooling {
                    p = p.pooling(pl);
                }
                let Ok(mut ctx) = m.context(p) else { continue };
                let mut b = Batch::new(64, 1).unwrap();
                b.add_sequence(&toks, 0, 0, true).unwrap();
                let r = ctx.encode(&mut b);
                assert!(matches!(r, Err(Error::InvalidParam { .. })), "{emb} {attn:?} {pooling:?}: {r:?}");
            }
        }
    }
}

// Classes 3 and 4: tokenization is bounded in time (size cap) and runs where the stack
// suffices (llama.cpp's std::regex pre-tokenizers recurse per character).
#[test]
fn tokenization_is_bounded_and_does_not_overflow_the_stack() {
    let m = common::model();
    let big = "word ".repeat((llama_rs::TOKENIZE_MAX_BYTES / 5) + 1);
    let r = m.vocab().tokenize(&big, false, false);
    assert!(matches!(r, Err(Error::Limit { .. })), "{:?}", r.map(|t| t.len()));

    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../vendor/llama.cpp/models/ggml-vocab-deepseek-coder.gguf");
    let coder = Model::load(&p, ModelParams::default().vocab_only(true)).expect("vendored deepseek-coder vocabulary");
    // On a 1 MiB thread (smaller than most callers'): 200,000 letters in one regex match.
    let text = "a".repeat(200_000);
    let n = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn_scoped(s, || coder.vocab().tokenize(&text, false, false).map(|t| t.len()))
            .unwrap()
            .join()
            .unwrap()
    });
    assert!(n.unwrap() > 0);
}

// Class 4: a lazy grammar's trigger search over a long untriggered output (std::regex
// recursion per character) does not overflow the caller's stack.
#[test]
fn long_untriggered_lazy_grammar_output_does_not_overflow_the_stack() {
    let m = common::model();
    let vocab = m.vocab();
    // The token with the longest piece, so the buffer grows fast.
    let mut best = (Token(0), 0usize);
    let mut buf = Vec::new();
    for t in 0..m.n_vocab() {
        if vocab.token_to_piece_bytes(Token(t), false, &mut buf).is_ok() && buf.len() > best.1 && !buf.contains(&b'N') {
            best = (Token(t), buf.len());
        }
    }
    let g = Grammar::lazy(r#"root ::= "x""#, vec![r"^[\s\S]*NEVER$".into()], vec![]);
    let mut s = SamplerConfig { grammar: Some(g), ..SamplerConfig::greedy() }.build(m).unwrap();
    let n = 24_000 / best.1 + 1;
    std::thread::scope(|sc| {
        std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn_scoped(sc, || {
                for _ in 0..n {
                    s.accept(best.0).unwrap();
                }
            })
            .unwrap()
            .join()
            .unwrap()
    });
}

// Class 11: DRY with its default window (-1) really penalizes (this llama.cpp clamps -1
// to 0, which turned DRY off).
#[test]
fn dry_penalizes_with_the_default_window() {
    let m = common::model();
    let n = m.n_vocab() as usize;
    let (a, b, c, d) = (Token(1000), Token(1001), Token(1002), Token(1003));
    let mut logits = vec![0.0f32; n];
    logits[c.0 as usize] = 5.0;
    logits[d.0 as usize] = 4.9;
    let pick = |dry: f32| {
        let cfg = SamplerConfig { temperature: 1.0, top_k: 1, dry_multiplier: dry, ..Default::default() };
        assert_eq!(cfg.dry_penalty_last_n, -1);
        let mut s = cfg.build(m).unwrap();
        for t in [a, b, c, a, b, c, a, b] {
            s.accept(t).unwrap();
        }
        s.sample_logits(&logits).unwrap()
    };
    assert_eq!(pick(0.0), c);
    assert_eq!(pick(0.8), d, "DRY did not penalize the repeated continuation");
}

// Class 6: an empty token string that llama.cpp would rename into another token's text.
#[test]
fn empty_token_strings_that_collide_are_refused() {
    let dir = common::TempDir::new("hostile-empty");
    let p = dir.join("vocab.gguf");
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "llama").kv_str("tokenizer.ggml.model", "gpt2").kv(
        "tokenizer.ggml.tokens",
        llama_rs::GgufValue::Array(vec![
            llama_rs::GgufValue::Str("".into()),
            llama_rs::GgufValue::Str("[EMPTY_0]".into()),
        ]),
    );
    w.write(&p).unwrap();
    let r = Model::load(&p, ModelParams::default().vocab_only(true));
    assert!(matches!(&r, Err(Error::NotGguf { reason, .. }) if reason.contains("EMPTY_0")), "{:?}", r.map(|_| ()));
}

// Every error has a kind a program can branch on (Python exceptions, HTTP statuses).
#[test]
fn errors_have_kinds() {
    use llama_rs::ErrorKind as K;
    let m = common::model();
    assert_eq!(Model::load("/no/such/model.gguf", ModelParams::default()).unwrap_err().kind(), K::NotFound);
    assert_eq!(m.vocab().token_to_piece(Token(-1), false).unwrap_err().kind(), K::OutOfRange);
    assert_eq!(
        m.vocab().tokenize(&"x".repeat(llama_rs::TOKENIZE_MAX_BYTES + 1), false, false).unwrap_err().kind(),
        K::LimitExceeded
    );
    assert_eq!(sampler_error(SamplerConfig { top_p: f32::NAN, ..Default::default() }).kind(), K::InvalidArgument);
    let dir = common::TempDir::new("hostile-kinds");
    let p = dir.join("bad.gguf");
    std::fs::write(&p, b"GGUF\x03\0\0\0garbage").unwrap();
    assert_eq!(Model::load(&p, ModelParams::default()).unwrap_err().kind(), K::Corrupt);
}

// Class: values llama.cpp reads as "use the default" or passes into its kernels
// unchecked (NaN RoPE/YaRN parameters gave NaN logits as Ok), sizes a dependency panics
// on, and paths that block. Each is refused up front with the name of what is wrong.
#[test]
fn non_numbers_unbounded_buffers_and_blocking_paths_are_errors() {
    let m = common::model();
    type Set = fn(&mut ContextParams, f32);
    let fields: [(&str, Set); 6] = [
        ("rope_freq_base", |p, v| p.rope_freq_base = v),
        ("rope_freq_scale", |p, v| p.rope_freq_scale = v),
        ("yarn_ext_factor", |p, v| p.yarn_ext_factor = v),
        ("yarn_attn_factor", |p, v| p.yarn_attn_factor = v),
        ("yarn_beta_fast", |p, v| p.yarn_beta_fast = v),
        ("yarn_beta_slow", |p, v| p.yarn_beta_slow = v),
    ];
    for (name, set) in fields {
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut p = common::params();
            set(&mut p, v);
            let e = m.context(p).err().unwrap_or_else(|| panic!("{name} = {v} accepted"));
            assert!(matches!(e, Error::InvalidParam { .. }) && e.to_string().contains(name), "{name} = {v}: {e}");
        }
    }
    // The frequencies have no "from the model" sign: negative is an error, 0 the default.
    for (name, set) in &fields[..2] {
        let mut p = common::params();
        set(&mut p, -5.0);
        assert!(matches!(m.context(p), Err(Error::InvalidParam { .. })), "{name} = -5 accepted");
        let mut p = common::params();
        set(&mut p, 0.0);
        m.context(p).unwrap();
    }
    // Negative YaRN values mean "from the model", as in llama.cpp.
    let mut p = common::params();
    p.yarn_beta_slow = -1.0;
    m.context(p).unwrap();

    for cap in [0, usize::MAX, llama_rs::MAX_CHANNEL_CAPACITY + 1] {
        let p = llama_rs::EngineParams { channel_capacity: cap, ..Default::default() };
        let r = llama_rs::Engine::new(m, p);
        assert!(
            matches!(r, Err(Error::InvalidParam { reason: ref s, .. }) if s.contains("channel_capacity")),
            "capacity {cap}"
        );
    }

    // A FIFO nobody writes: reading it would block forever.
    #[cfg(unix)]
    {
        let dir = common::TempDir::new("hostile-fifo");
        let fifo = dir.join("state.fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let r = within(10, "load_state_file(FIFO)", move || {
            let mut ctx = common::ctx();
            ctx.load_state_file(&fifo).map(|_| ()).map_err(|e| e.to_string())
        });
        assert!(r.as_ref().is_err_and(|e| e.contains("not a regular file")), "{r:?}");
        let mut ctx = common::ctx();
        assert!(ctx.load_state_file(dir.path()).is_err(), "a directory");
    }
}
