//! Control vectors, LoRA adapter errors, quantization (and a second real model from it).
mod common;
use common::*;
use llama_rs::{ControlVector, Error, FileType, LoraAdapter, Model, ModelParams, QuantizeParams, Token};

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
    assert_eq!(prefill(&mut c, &p), base);
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
    assert_eq!(prefill(&mut c, &p), base);
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
    let path = llama_rs::default_model_path().unwrap();
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
    let src = llama_rs::default_model_path().unwrap();
    let dir = std::env::temp_dir().join(format!("llama-rs-quant-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("gemma-q8_0.gguf");
    // Re-quantizing a quantized model needs the explicit opt-in.
    let r = llama_rs::quantize(&src, &out, &QuantizeParams::new(FileType::Q8_0).threads(2), |_| {});
    assert!(matches!(r, Err(Error::Quantize { .. })), "{r:?}");
    assert!(!out.exists() && !out.with_extension("partial").exists(), "nothing half-written left");

    let mut seen = 0u64;
    llama_rs::quantize(&src, &out, &QuantizeParams::new(FileType::Q8_0).allow_requantize(true).threads(2), |b| seen = seen.max(b))
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
    assert!(matches!(llama_rs::quantize("/no/such.gguf", &out, &QuantizeParams::new(FileType::Q4_0), |_| {}), Err(Error::ModelFile { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}
