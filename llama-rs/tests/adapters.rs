//! Control vectors, LoRA adapter errors, quantization (and a second real model from it).
use common::*;
use llama_rs::{ControlVector, Error, FileType, LoraAdapter, Model, ModelParams, QuantizeParams, Token};
use llama_testkit::fixtures as common;

fn prompt() -> Vec<Token> {
    model().vocab().tokenize(PROMPT, true, false).unwrap()
}

#[test]
fn control_vector_changes_logits_and_clears() {
    let p = prompt();
    let base = prefill(&mut ctx(), &p);
    let m = model();
    let mut cv = ControlVector::new(m.n_embd(), m.n_layer() as usize);
    // Zero vector: no effect.
    let mut c = ctx();
    c.set_control_vector(&cv).unwrap();
    // An extra (zero) add in the graph may change kernel fusion on GPUs.
    assert!(max_diff(&prefill(&mut c, &p), &base) < 1e-3);
    // A strong direction on a few layers: different logits.
    for il in 5..10 {
        cv.layer_mut(il).unwrap().iter_mut().enumerate().for_each(|(i, v)| *v = if i % 2 == 0 { 4.0 } else { -4.0 });
    }
    c.clear_memory(true);
    c.set_control_vector(&cv).unwrap();
    let steered = prefill(&mut c, &p);
    assert_ne!(steered, base);
    // Cleared: back to the base logits, bit for bit.
    c.clear_memory(true);
    c.clear_control_vector();
    assert!(max_diff(&prefill(&mut c, &p), &base) < 1e-3);
    // Bad vectors are errors.
    let bad = [
        ControlVector { n_embd: 10, ..cv.clone() },
        ControlVector { data: vec![0.0; 3], ..cv.clone() },
        ControlVector { data: vec![0.0; m.n_embd() * 40], ..cv.clone() },
        ControlVector { layer_start: 0, ..cv.clone() },
        ControlVector { layer_end: 99, ..cv.clone() },
        ControlVector { data: vec![f32::NAN; m.n_embd()], ..cv.clone() },
    ];
    for b in bad {
        assert!(matches!(c.set_control_vector(&b), Err(Error::Adapter(_))));
    }
}

#[test]
fn lora_loading_rejects_non_adapters() {
    let path = llama_testkit::default_model_path().unwrap();
    // A model file is not an adapter; missing files and vocab-only models are errors.
    assert!(matches!(LoraAdapter::load(model(), &path), Err(Error::Adapter(_))));
    assert!(matches!(LoraAdapter::load(model(), "/no/such/lora.gguf"), Err(Error::ModelFile { .. })));
    let vocab_only = Model::load(&path, ModelParams::default().vocab_only(true)).unwrap();
    assert!(matches!(LoraAdapter::load(&vocab_only, &path), Err(Error::VocabOnly)));
    // Applying none is always fine.
    ctx().set_loras(&[]).unwrap();
}

#[test]
fn quantize_to_q8_0_gives_a_working_second_model() {
    let src = llama_testkit::default_model_path().unwrap();
    let dir = common::TempDir::new("quant");
    let out = dir.join("gemma-q8_0.gguf");
    // Re-quantizing a quantized model needs the explicit opt-in.
    let r = llama_rs::quantize(&src, &out, &QuantizeParams::new(FileType::Q8_0).threads(2), |_| {});
    assert!(matches!(r, Err(Error::Backend { op: "llama_model_quantize", code: Some(_) })), "{r:?}");
    assert!(!out.exists() && !out.with_extension("partial").exists(), "nothing half-written left");

    let mut seen = 0u64;
    llama_rs::quantize(&src, &out, &QuantizeParams::new(FileType::Q8_0).allow_requantize(true).threads(2), |b| {
        seen = seen.max(b)
    })
    .unwrap();
    let q8 = Model::load(&out, ModelParams::default()).unwrap();
    assert!(q8.description().contains("Q8_0"), "{}", q8.description());
    assert!(q8.size() > model().size());
    assert!(seen > 0, "progress reported bytes written");
    // Same architecture, so the same greedy start.
    let mut c = q8.context(params()).unwrap();
    let p = prompt();
    let l = prefill(&mut c, &p);
    assert_eq!(llama_rs::argmax(&l), llama_rs::argmax(&prefill(&mut ctx(), &p)));
    // A state saved with one model does not load into the other.
    let state = c.save_state(&p).unwrap();
    let r = ctx().load_state(&state);
    assert!(matches!(r, Err(Error::InvalidState(ref m)) if m.contains("another model")), "{r:?}");
    assert!(matches!(
        llama_rs::quantize("/no/such.gguf", &out, &QuantizeParams::new(FileType::Q4_0), |_| {}),
        Err(Error::ModelFile { .. })
    ));
}

/// A real LoRA adapter (random low-rank deltas on a few FFN projections), written with
/// `GgufWriter`: scale 0 changes nothing, scale 1 changes the logits, removal restores.
#[test]
fn lora_apply_scale_and_remove() {
    let m = model();
    let n_embd = m.n_embd() as u64;
    let n_ff: u64 = m.meta("gemma3.feed_forward_length").unwrap().parse().unwrap();
    let rank = 8u64;
    let mut w = llama_testkit::GgufWriter::new();
    w.kv_str("general.architecture", "gemma3")
        .kv_str("general.type", "adapter")
        .kv_str("adapter.type", "lora")
        .kv_f32("adapter.lora.alpha", rank as f32);
    let mut seed = 12345u32;
    let mut rnd = |n: u64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    };
    for il in 0..4 {
        // lora_a: [n_in, r], lora_b: [r, n_out] (ggml order) for ffn_up (n_embd -> n_ff).
        w.tensor_f32(&format!("blk.{il}.ffn_up.weight.lora_a"), &[n_embd, rank], rnd(n_embd * rank)).unwrap();
        w.tensor_f32(&format!("blk.{il}.ffn_up.weight.lora_b"), &[rank, n_ff], rnd(rank * n_ff)).unwrap();
    }
    let dir = common::TempDir::new("lora");
    let path = dir.join("lora.gguf");
    w.write(&path).unwrap();

    let lora = LoraAdapter::load(m, &path).unwrap();
    assert_eq!(lora.meta("adapter.type").as_deref(), Some("lora"));
    let p = prompt();
    let mut c = ctx();
    let base = prefill(&mut c, &p);
    c.clear_memory(true);
    c.set_loras(&[(lora.clone(), 0.0)]).unwrap();
    let zero = prefill(&mut c, &p);
    let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff(&zero, &base) < 1e-3, "scale 0 changed logits by {}", diff(&zero, &base));
    c.clear_memory(true);
    c.set_loras(&[(lora.clone(), 1.0)]).unwrap();
    let applied = prefill(&mut c, &p);
    assert!(diff(&applied, &base) > 0.1, "LoRA had no effect");
    drop(lora); // the context keeps it alive while applied
    c.clear_memory(true);
    assert_eq!(prefill(&mut c, &p), applied);
    c.clear_memory(true);
    c.set_loras(&[]).unwrap();
    assert_eq!(prefill(&mut c, &p), base);

    // Wrong shapes or a wrong architecture are refused.
    let mut bad = llama_testkit::GgufWriter::new();
    bad.kv_str("general.architecture", "gemma3")
        .kv_str("general.type", "adapter")
        .kv_str("adapter.type", "lora")
        .kv_f32("adapter.lora.alpha", 1.0);
    bad.tensor_f32("blk.0.ffn_up.weight.lora_a", &[3, 2], vec![0.0; 6]).unwrap();
    bad.tensor_f32("blk.0.ffn_up.weight.lora_b", &[2, 5], vec![0.0; 10]).unwrap();
    bad.write(dir.join("bad.gguf")).unwrap();
    assert!(matches!(LoraAdapter::load(m, dir.join("bad.gguf")), Err(Error::Adapter(_))));
}
