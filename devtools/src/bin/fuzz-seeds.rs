//! Writes the seed corpora of the fuzz targets (`fuzz/`): valid inputs the fuzzer
//! mutates from — the tiny model file, saved states, grammars and schemas, texts.
//!
//!     cargo run --release -p llama-devtools --bin fuzz-seeds -- fuzz/corpus

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use llama_rs::{Batch, ContextParams, GgufValue, Model, ModelParams, Token};
use llama_testkit::GgufWriter;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let d = dir.join(target);
    fs::create_dir_all(&d)?;
    fs::write(d.join(name), bytes)?;
    Ok(())
}

fn with_flag(flag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![flag];
    v.extend_from_slice(body);
    v
}

fn main() -> anyhow::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));

    // model_load: the tiny model, and a file with every metadata type and two tensors.
    let tiny = std::env::temp_dir().join(format!("fuzz-seeds-{}.gguf", std::process::id()));
    llama_testkit::write_tiny_llama(&tiny)?;
    put(&out, "model_load", "tiny-llama.gguf", &fs::read(&tiny)?)?;
    let kinds = std::env::temp_dir().join(format!("fuzz-seeds-kinds-{}.gguf", std::process::id()));
    let mut w = GgufWriter::new();
    w.kv("u8", GgufValue::U8(1)).kv("i8", GgufValue::I8(-1)).kv("u16", GgufValue::U16(2)).kv("i16", GgufValue::I16(-2));
    w.kv_u32("u32", 3).kv_i32("i32", -3).kv_f32("f32", 0.5).kv_bool("bool", true).kv_str("str", "text");
    w.kv("u64", GgufValue::U64(4)).kv("i64", GgufValue::I64(-4)).kv("f64", GgufValue::F64(0.25));
    w.kv("arr", GgufValue::Array(vec![GgufValue::Str("a".into()), GgufValue::Str("b".into())]));
    w.tensor_f32("a", &[4], vec![1.0; 4])?.tensor_f32("b", &[2, 2], vec![0.0; 4])?;
    w.write(&kinds)?;
    put(&out, "model_load", "kinds.gguf", &fs::read(&kinds)?)?;
    fs::remove_file(&kinds).ok();

    // media_bytes: llama.cpp's test image and audio, a tiny PNG, and raw RGB.
    let mtmd = Path::new("vendor/llama.cpp/tools/mtmd");
    put(&out, "media_bytes", "test-1.jpeg", &with_flag(0, &fs::read(mtmd.join("test-1.jpeg"))?))?;
    let mp3 = fs::read(mtmd.join("test-2.mp3"))?;
    put(&out, "media_bytes", "test-2-head.mp3", &with_flag(0, &mp3[..mp3.len().min(16384)]))?;
    let png: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0\x90wS\xde\0\0\0\x0cIDATx\x9cc\xf8\xcf\xc0\0\0\x03\x01\x01\0\xc9\xfe\x92\xef\0\0\0\0IEND\xaeB`\x82";
    put(&out, "media_bytes", "1x1.png", &with_flag(0, png))?;
    let mut rgb = vec![4u8, 4];
    rgb.extend((0..48).map(|i| (i * 5) as u8));
    put(&out, "media_bytes", "rgb-4x4", &with_flag(1, &rgb))?;

    // state_load: whole and per-sequence states of the tiny model after a short prompt.
    let model = Model::load(&tiny, ModelParams::default())?;
    let mut ctx =
        model.context(ContextParams::default().n_ctx(64).n_batch(16).n_ubatch(16).n_seq_max(3).n_threads(1))?;
    let prompt: Vec<Token> = (3..9).map(Token).collect();
    let mut b = Batch::new(16, 1)?;
    b.add_sequence(&prompt, 0, 0, true)?;
    ctx.decode(&mut b)?;
    put(&out, "state_load", "whole", &with_flag(0, &ctx.save_state(&prompt)?))?;
    put(&out, "state_load", "seq0", &with_flag(1, &ctx.save_seq_state(0, &prompt)?))?;
    fs::remove_file(&tiny).ok();

    // grammar: the vendored GBNF grammars and a few JSON Schemas.
    let src = llama_rs_src()?;
    for e in fs::read_dir(src.join("grammars"))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "gbnf") {
            put(&out, "grammar", &p.file_name().unwrap().to_string_lossy(), &with_flag(0, &fs::read(&p)?))?;
        }
    }
    for (i, s) in [
        r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":0}},"required":["name"]}"#,
        r#"{"type":"array","items":{"enum":["a","b",1,null]},"minItems":1,"maxItems":3}"#,
        r##"{"$defs":{"n":{"type":"object","properties":{"next":{"$ref":"#/$defs/n"}}}},"$ref":"#/$defs/n"}"##,
        r#"{"anyOf":[{"type":"number"},{"type":"boolean"},{"const":"x"}]}"#,
    ]
    .iter()
    .enumerate()
    {
        put(&out, "grammar", &format!("schema{i}"), &with_flag(1, s.as_bytes()))?;
    }

    // tokenize: texts with each flag combination.
    for (i, t) in [
        "Hello world! The capital of France is Paris.",
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
        "Ünïcödé 日本語 🦀 \t\n\r  fn main() { println!(\"{}\", 1 + 2); }",
        "<bos><eos><pad><unk><mask>[multimodal]",
    ]
    .iter()
    .enumerate()
    {
        for flag in [0u8, 3, 15, 0x7f] {
            put(&out, "tokenize", &format!("t{i}-{flag}"), &with_flag(flag, t.as_bytes()))?;
        }
    }
    // chat_template: real template shapes.
    for (i, t) in [
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}<start_of_turn>user\n{{ m.content }}<end_of_turn>\n{% else %}<start_of_turn>model\n{{ m.content }}<end_of_turn>\n{% endif %}{% endfor %}",
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{{ m | tojson(indent=2) }}{% endfor %}{{ ns.n }}{{ strftime_now('%Y-%m-%d') }}",
        "{% macro r(n) %}{% if n > 0 %}{{ r(n - 1) }}{% endif %}x{% endmacro %}{{ r(5) }}{% for i in range(10) %}{{ i }}{% endfor %}",
    ]
    .iter()
    .enumerate()
    {
        put(&out, "chat_template", &format!("tmpl{i}"), t.as_bytes())?;
    }
    // model_params: a few structured inputs are just bytes for `arbitrary`.
    for (i, b) in [&[0u8; 32][..], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20], &[255; 40]]
        .iter()
        .enumerate()
    {
        put(&out, "model_params", &format!("p{i}"), b)?;
    }
    // tool_calls: a piece-length byte, then an answer in each format (and broken ones).
    for (i, t) in [
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
        "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": [1, \"]\"]}}, {\"name\": \"b\", \"arguments\": {}}]",
        "[TOOL_CALLS]f[ARGS]{\"x\": \"[ARGS]\"}[TOOL_CALLS]g[ARGS]{}",
        "<|python_tag|>{\"name\": \"a\", \"parameters\": {\"q\": \"x;y\"}}; {\"name\": \"b\", \"parameters\": {}}",
        "<tool_call>{\"name\": \"",
        "{ not json } <tool_call>{\"name\": broken</tool_call> trailing",
    ]
    .iter()
    .enumerate()
    {
        put(&out, "tool_calls", &format!("answer{i}"), &with_flag(i as u8, t.as_bytes()))?;
    }
    // lazy_grammar: pattern \0 grammar \0 trigger token bytes then accepted token bytes.
    for (i, (p, g)) in [
        (r"[\s\S]*?(a[\s\S]*)", r#"root ::= "a" [a-z]*"#),
        (r"^\s*(\{)", r#"root ::= "{" [a-z]* "}""#),
        (r"(a+)+b", r#"root ::= "x""#),
        ("", r#"root ::= "b" [a-z]*"#),
    ]
    .iter()
    .enumerate()
    {
        let mut seed = format!("{p}\0{g}\0").into_bytes();
        seed.extend([4u8, 5, 3, 4, 5, 6, 7, 3, 3, 8]);
        put(&out, "lazy_grammar", &format!("lazy{i}"), &seed)?;
    }
    // Its first finding: `^` fires at once and replays an end-of-generation token.
    put(&out, "lazy_grammar", "finding-eog-replay", b"^\0\0\0\0\x02\0\xf7\xff\x01\x12\0\0\0\xb2\xd9\x02\x08")?;
    println!("seeds written under {}", out.display());
    Ok(())
}

/// The vendored llama.cpp tree (for its grammars).
fn llama_rs_src() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("LLAMA_CPP_SRC").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("vendor/llama.cpp"));
    p.join("grammars")
        .is_dir()
        .then_some(p)
        .context("vendored llama.cpp tree not found (python3 vendor/fetch.py source, or set LLAMA_CPP_SRC)")
}
