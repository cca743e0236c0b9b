//! Arbitrary sequences of batch, decode, KV-cache, output, device-sampler and state
//! operations on the tiny model. Every call must return Ok or a typed error.
#![no_main]
mod common;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use llama_rs::{Batch, DeviceSampler, Token};

#[derive(Debug, Arbitrary)]
enum Op {
    Add { token: i16, pos: i8, seqs: Vec<i8>, output: bool },
    AddRun { seq: i8, len: u8 },
    Decode,
    ClearBatch,
    SetOutput { i: u8, output: bool },
    SeqRm { seq: Option<i8>, p0: i8, p1: i8 },
    SeqCp { src: i8, dst: i8, p0: i8, p1: i8 },
    SeqKeep(i8),
    SeqAdd { seq: i8, p0: i8, p1: i8, delta: i8 },
    SeqDiv { seq: i8, p0: i8, p1: i8, d: i8 },
    ClearMemory,
    Logits(u8),
    Embeddings(u8),
    Device { seq: i8, top_k: Option<u16> },
    Sampled(u8),
    SaveLoad { seq: Option<i8> },
}

fuzz_target!(|ops: Vec<Op>| {
    let mut ctx = common::tiny().context(common::tiny_params()).unwrap();
    let mut batch = Batch::new(16, 2).unwrap();
    for op in ops.into_iter().take(64) {
        match op {
            Op::Add { token, pos, seqs, output } => {
                let seqs: Vec<i32> = seqs.into_iter().take(4).map(i32::from).collect();
                let _ = batch.add(Token(token.into()), pos.into(), &seqs, output);
            }
            Op::AddRun { seq, len } => {
                let start = ctx.seq_pos_max(seq.into()).map_or(0, |p| p + 1);
                let toks: Vec<Token> = (0..len % 20).map(|i| Token(3 + i as i32)).collect();
                let _ = batch.add_sequence(&toks, start, seq.into(), true);
            }
            Op::Decode => {
                let _ = ctx.decode(&mut batch);
            }
            Op::ClearBatch => batch.clear(),
            Op::SetOutput { i, output } => {
                let _ = batch.set_output(i.into(), output);
            }
            Op::SeqRm { seq, p0, p1 } => {
                let _ = ctx.seq_rm(seq.map(i32::from), i32::from(p0)..i32::from(p1));
            }
            Op::SeqCp { src, dst, p0, p1 } => {
                let _ = ctx.seq_cp(src.into(), dst.into(), i32::from(p0)..i32::from(p1));
            }
            Op::SeqKeep(s) => {
                let _ = ctx.seq_keep(s.into());
            }
            Op::SeqAdd { seq, p0, p1, delta } => {
                let _ = ctx.seq_add(seq.into(), i32::from(p0)..i32::from(p1), delta.into());
            }
            Op::SeqDiv { seq, p0, p1, d } => {
                let _ = ctx.seq_div(seq.into(), i32::from(p0)..i32::from(p1), d.into());
            }
            Op::ClearMemory => ctx.clear_memory(false),
            Op::Logits(i) => {
                let _ = ctx.logits(i.into());
                let _ = ctx.logits_last();
            }
            Op::Embeddings(i) => {
                let _ = ctx.embeddings(i.into());
            }
            Op::Device { seq, top_k } => {
                let step = top_k.map(|k| DeviceSampler::TopK(k.into()));
                let _ = ctx.set_device_sampler(seq.into(), Some(step.unwrap_or(DeviceSampler::Greedy)));
            }
            Op::Sampled(i) => {
                let _ = ctx.sampled_token(i.into());
                let _ = ctx.sampled_candidates(i.into());
            }
            Op::SaveLoad { seq } => match seq {
                None => {
                    if let Ok(s) = ctx.save_state(&[]) {
                        ctx.load_state(&s).unwrap();
                    }
                }
                Some(s) => {
                    if let Ok(st) = ctx.save_seq_state(s.into(), &[]) {
                        ctx.load_seq_state(s.into(), &st).unwrap();
                    }
                }
            },
        }
    }
});
