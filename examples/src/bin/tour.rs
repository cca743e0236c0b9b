//! A walk through the core API: model → context → batch → decode → greedy sample →
//! state save/restore → KV cache edits. Each step prints what it shows.
//!
//!     cargo run --release -p llama-examples --bin tour

use llama_rs::{Batch, ContextParams, Device, ModelParams, Token};

fn main() -> anyhow::Result<()> {
    // 1. Devices and the model.
    for d in Device::all() {
        println!("device {}: {} — {} ({:?})", d.index, d.name, d.description, d.kind);
    }
    let path = llama_testkit::default_model_path()?;
    let model = llama_examples::load_with_progress(&path, ModelParams::default())?;
    println!(
        "model: {} ({} layers, n_embd {}, vocab {})",
        model.description(),
        model.n_layer(),
        model.n_embd(),
        model.n_vocab()
    );

    // 2. A context with two sequences sharing one KV buffer.
    let mut ctx = model.context(ContextParams::default().n_ctx(1024).n_seq_max(2).kv_unified(true))?;
    let vocab = model.vocab();
    let prompt = vocab.tokenize("The capital of France is", true, false)?;
    println!("prompt tokens: {:?}", prompt);

    // 3. Batch → decode; logits only for the last prompt token.
    let mut batch = Batch::new(512, 2)?;
    batch.add_sequence(&prompt, 0, 0, true)?;
    ctx.decode(&mut batch)?;

    // 4. Greedy sampling for a few tokens.
    let mut generated: Vec<Token> = Vec::new();
    for pos in prompt.len() as i32..prompt.len() as i32 + 8 {
        let next = llama_rs::argmax(ctx.logits_last()?);
        generated.push(next);
        batch.clear();
        batch.add(next, pos, &[0], true)?;
        ctx.decode(&mut batch)?;
    }
    println!("greedy: {:?}", vocab.detokenize(&generated, false, false)?);

    // 5. State: save, restore into a fresh context, continue identically.
    let mut all = prompt.clone();
    all.extend(&generated);
    let state = ctx.save_state(&all)?;
    let mut fresh = model.context(ContextParams::default().n_ctx(1024).n_seq_max(2).kv_unified(true))?;
    let restored = fresh.load_state(&state)?;
    println!("state: {} bytes, {} tokens restored", state.len(), restored.len());

    // 6. KV edits: fork sequence 0 into 1, then drop the generated tail of sequence 1.
    ctx.seq_cp(0, 1, ..)?;
    ctx.seq_rm(Some(1), prompt.len() as i32..)?;
    println!("seq 0 ends at {:?}, seq 1 ends at {:?}", ctx.seq_pos_max(0), ctx.seq_pos_max(1));
    let perf = ctx.perf();
    println!(
        "perf: {} prompt tokens in {:.1} ms, {} generated in {:.1} ms",
        perf.prompt_tokens, perf.prompt_ms, perf.eval_tokens, perf.eval_ms
    );
    Ok(())
}
