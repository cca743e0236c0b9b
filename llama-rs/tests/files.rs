//! Files from outside: malformed models must give errors, and every tokenizer test
//! vector shipped in the vendored llama.cpp tree must match.
use llama_testkit::fixtures as common;
use std::io::{Read, Write};
use std::path::PathBuf;

use llama_rs::{Error, GgufValue, Model, ModelParams, Token};

fn llama_cpp_tree() -> PathBuf {
    match std::env::var_os("LLAMA_CPP_SRC") {
        Some(p) => p.into(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp"),
    }
}

fn load(p: &std::path::Path) -> Result<Model, Error> {
    Model::load(p, ModelParams::default())
}

#[test]
fn malformed_model_files_are_errors() {
    let dir = common::TempDir::new("files-malformed");
    let scratch = |name: &str| dir.join(name);
    // Missing file, a directory.
    assert!(matches!(load("/no/such/model.gguf".as_ref()), Err(Error::ModelFile { .. })));
    assert!(matches!(load(&std::env::temp_dir()), Err(Error::NotGguf { .. }) | Err(Error::ModelFile { .. })));
    // Empty, random bytes, wrong magic, unsupported version.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("random", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("magic", b"GGML\x03\0\0\0".iter().copied().chain(std::iter::repeat_n(0, 64)).collect()),
        ("version", b"GGUF\x09\0\0\0".iter().copied().chain(std::iter::repeat_n(0, 64)).collect()),
        ("huge-counts", b"GGUF\x03\0\0\0".iter().copied().chain([0xff; 16]).collect()),
    ];
    for (name, bytes) in cases {
        let p = scratch(name);
        std::fs::write(&p, &bytes).unwrap();
        let r = load(&p);
        assert!(matches!(r, Err(Error::NotGguf { .. }) | Err(Error::ModelLoad { .. })), "{name}: {r:?}");
    }
    // The real model truncated at many offsets (header, KV metadata, tensor infos, data).
    let real = llama_testkit::default_model_path().unwrap();
    let size = std::fs::metadata(&real).unwrap().len() as usize;
    let mut head = vec![0u8; 4 << 20];
    std::fs::File::open(&real).unwrap().read_exact(&mut head).unwrap();
    for cut in [4usize, 8, 16, 23, 24, 100, 1000, 10_000, 100_000, 1 << 20, 4 << 20] {
        let p = scratch(&format!("trunc-{cut}"));
        std::fs::write(&p, &head[..cut]).unwrap();
        let r = load(&p);
        assert!(matches!(r, Err(Error::NotGguf { .. }) | Err(Error::ModelLoad { .. })), "cut {cut}: {r:?}");
        std::fs::remove_file(&p).unwrap();
    }
    // Missing only the last byte of tensor data.
    let p = scratch("trunc-last");
    {
        let mut src = std::fs::File::open(&real).unwrap();
        let mut dst = std::fs::File::create(&p).unwrap();
        std::io::copy(&mut (&mut src).take(size as u64 - 1), &mut dst).unwrap();
        dst.flush().unwrap();
    }
    let r = load(&p);
    // Found before llama.cpp maps it (a short mapped file would be a SIGBUS there).
    assert!(
        matches!(&r, Err(Error::NotGguf { reason, .. }) if reason.contains("truncated")),
        "last byte missing: {r:?}"
    );
    std::fs::remove_file(&p).unwrap();
    // Split loading: an empty list, or a bad part.
    assert!(matches!(Model::load_splits::<&str>(&[], ModelParams::default()), Err(Error::InvalidParam { .. })));
    assert!(matches!(
        Model::load_splits(&[real.as_path(), "/no/such/part.gguf".as_ref()], ModelParams::default()),
        Err(Error::ModelFile { .. })
    ));
}

#[test]
fn tokenizer_conformance_with_llama_cpp_vectors() {
    let models = llama_cpp_tree().join("models");
    let mut checked = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&models).expect("vendored llama.cpp models/").flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("ggml-vocab-") && name.ends_with(".gguf")) {
            continue;
        }
        let inp = models.join(format!("{name}.inp"));
        let out = models.join(format!("{name}.out"));
        if !inp.exists() || !out.exists() {
            continue;
        }
        let model = Model::load(e.path(), ModelParams::default().vocab_only(true))
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let raw = std::fs::read_to_string(&inp).unwrap();
        let sep = "\n__ggml_vocab_test__\n";
        let mut inputs: Vec<&str> = Vec::new();
        let mut rest = raw.as_str();
        while !rest.is_empty() {
            match rest.find(sep) {
                Some(i) => {
                    inputs.push(&rest[..i]);
                    rest = &rest[i + sep.len()..];
                }
                None => {
                    inputs.push(rest);
                    break;
                }
            }
        }
        let expected: Vec<Vec<Token>> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(|l| l.split_whitespace().map(|t| Token(t.parse().unwrap())).collect())
            .collect();
        assert_eq!(inputs.len(), expected.len(), "{name}: test count");
        let vocab = model.vocab();
        for (text, want) in inputs.iter().zip(&expected) {
            let got = vocab.tokenize(text, false, false).unwrap();
            assert_eq!(&got, want, "{name}: tokenizing {text:?}");
        }
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} vocab files with vectors found under {}", models.display());
    eprintln!("{checked} vocabularies conform");
}

#[test]
fn split_models_load_from_the_first_part_or_an_explicit_list() {
    let dir = common::TempDir::new("files-split");
    let scratch = |name: &str| dir.join(name);
    let vocab = llama_cpp_tree().join("models/ggml-vocab-qwen2.gguf");
    let shape = llama_testkit::SyntheticShape::named("tiny").unwrap();
    let single = scratch("tiny.gguf");
    llama_testkit::write_synthetic_qwen2(shape, &vocab, &single, 7, 1).unwrap();
    let parts = llama_testkit::write_synthetic_qwen2(shape, &vocab, &scratch("tiny-split.gguf"), 7, 3).unwrap();
    assert_eq!(parts.len(), 3);
    assert!(parts[0].to_string_lossy().ends_with("tiny-split-00001-of-00003.gguf"));
    let logits = |m: &Model| {
        let mut c = m.context(llama_rs::ContextParams::default().n_ctx(256)).unwrap();
        let mut b = llama_rs::Batch::new(8, 1).unwrap();
        b.add_sequence(&[Token(100), Token(200), Token(300)], 0, 0, true).unwrap();
        c.decode(&mut b).unwrap();
        c.logits_last().unwrap().to_vec()
    };
    let want = logits(&Model::load(&single, ModelParams::default()).unwrap());
    assert!(want.iter().all(|x| x.is_finite()));
    // The first part finds the others by name; an explicit list works too.
    assert_eq!(logits(&Model::load(&parts[0], ModelParams::default()).unwrap()), want);
    assert_eq!(logits(&Model::load_splits(&parts, ModelParams::default()).unwrap()), want);
    // Loading from a later part, or with a part missing, is an error.
    assert!(matches!(Model::load(&parts[1], ModelParams::default()), Err(Error::ModelLoad { .. })));
    // An incomplete list is refused by its split metadata before llama.cpp sees it.
    assert!(matches!(Model::load_splits(&parts[..2], ModelParams::default()), Err(Error::InvalidParam { .. })));
    std::fs::remove_file(&parts[2]).unwrap();
    assert!(matches!(Model::load(&parts[0], ModelParams::default()), Err(Error::ModelLoad { .. })));
}

/// Inputs the fuzz targets (fuzz/) found aborting llama.cpp, rebuilt here as files.
#[test]
fn fuzz_findings_are_typed_errors() {
    let dir = common::TempDir::new("fuzz-findings");
    let tiny = dir.join("tiny.gguf");
    llama_testkit::write_tiny_llama(&tiny).unwrap();
    assert!(Model::load(&tiny, ModelParams::default()).is_ok());

    // model_load: a vocabulary that repeats a token string
    // (llama-vocab.cpp: GGML_ASSERT(id_to_token.size() == token_to_id.size())).
    let mut w = llama_testkit::GgufWriter::new();
    for (k, v) in llama_rs::read_gguf_metadata(&tiny).unwrap() {
        let v = match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::Array(mut t)) => {
                t[260] = t[259].clone();
                GgufValue::Array(t)
            }
            (_, v) => v,
        };
        w.kv(&k, v);
    }
    let dup = dir.join("duplicate-token.gguf");
    w.write(&dup).unwrap();
    for params in [ModelParams::default(), ModelParams::default().vocab_only(true)] {
        match Model::load(&dup, params) {
            Err(Error::NotGguf { reason, .. }) => assert!(reason.contains("repeats"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    // model_load: a SentencePiece vocabulary without a token for byte 0xF0: byte
    // fallback for U+1F980 threw std::out_of_range through llama_tokenize.
    let mut w = llama_testkit::GgufWriter::new();
    for (k, v) in llama_rs::read_gguf_metadata(&tiny).unwrap() {
        let v = match (k.as_str(), v) {
            ("tokenizer.ggml.tokens", GgufValue::Array(mut t)) => {
                t[3 + 0xF0] = GgufValue::Str("<renamed>".into());
                GgufValue::Array(t)
            }
            (_, v) => v,
        };
        w.kv(&k, v);
    }
    let holey = dir.join("missing-byte.gguf");
    w.write(&holey).unwrap();
    let model = Model::load(&holey, ModelParams::default().vocab_only(true)).unwrap();
    assert!(matches!(model.vocab().tokenize("ab \u{1F980}", true, false), Err(Error::Tokenize(_))));
    assert!(model.vocab().tokenize("ab ba", true, false).unwrap().len() > 2);
}

/// The device greedy step splits the logits into rows of a divisor of n_vocab (151,936 =
/// 128 × 1187 for Qwen2's vocabulary, unlike the default model's power of two); it must
/// pick the host's token, as must llama.cpp's device top-1.
#[test]
fn device_sampling_on_an_odd_sized_vocabulary_matches_the_host() {
    let dir = common::TempDir::new("files-device");
    let scratch = |name: &str| dir.join(name);
    use llama_rs::{DeviceSampler, DeviceSampling, GenerateParams, SamplerConfig, Session};
    let vocab = llama_cpp_tree().join("models/ggml-vocab-qwen2.gguf");
    let path = scratch("tiny-device.gguf");
    llama_testkit::write_synthetic_qwen2(llama_testkit::SyntheticShape::named("tiny").unwrap(), &vocab, &path, 11, 1)
        .unwrap();
    let model = Model::load(&path, ModelParams::default()).unwrap();
    assert_eq!(model.n_vocab(), 151_936);
    let gen = |device_sampling| {
        let mut s = Session::new(model.context(llama_rs::ContextParams::default().n_ctx(256)).unwrap()).unwrap();
        let p = GenerateParams {
            max_tokens: Some(24),
            ignore_eos: true,
            sampler: SamplerConfig::greedy(),
            device_sampling,
            ..Default::default()
        };
        let tokens: Vec<Token> =
            s.generate(vec![Token(100), Token(200)], &p).unwrap().flat_map(|p| p.unwrap().tokens).collect();
        (tokens, s.context().device_sampler(0))
    };
    let (host, at) = gen(DeviceSampling::Off);
    assert_eq!(at, None);
    let (device, at) = gen(DeviceSampling::On);
    assert_eq!(at, Some(DeviceSampler::Greedy));
    assert_eq!(device, host);
    // Raw: the split argmax and llama.cpp's top-1 against the host's argmax, per token.
    for step in [DeviceSampler::Greedy, DeviceSampler::TopK(1)] {
        let mut on = model.context(llama_rs::ContextParams::default().n_ctx(256)).unwrap();
        let mut off = model.context(llama_rs::ContextParams::default().n_ctx(256)).unwrap();
        assert!(on.set_device_sampler(0, Some(step)).unwrap());
        let mut b = llama_rs::Batch::new(1, 1).unwrap();
        for (i, t) in [5, 77, 1000, 151_935, 42].into_iter().enumerate() {
            let mut picks = vec![];
            for c in [&mut on, &mut off] {
                b.clear();
                b.add(Token(t), i as i32, &[0], true).unwrap();
                c.decode(&mut b).unwrap();
            }
            picks.push(match step {
                DeviceSampler::Greedy => on.sampled_token(0).unwrap(),
                DeviceSampler::TopK(_) => on.sampled_candidates(0).unwrap().0[0],
            });
            let logits = off.logits(0).unwrap();
            assert!(logits.iter().all(|x| x.is_finite()));
            picks.push(llama_rs::argmax(logits));
            assert_eq!(picks[0], picks[1], "{step:?} at token {i}");
        }
    }
}
