//! Arbitrary bytes as a saved state (whole context and one sequence), on the tiny model.
//! Must be refused with a typed error or restore something the context can continue from.
#![no_main]
mod common;

use libfuzzer_sys::fuzz_target;
use llama_rs::{Batch, Token};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let mut ctx = common::tiny().context(common::tiny_params()).unwrap();
    let restored =
        if which & 1 == 0 { ctx.load_state(bytes) } else { ctx.load_seq_state((which >> 1) as i32 % 4, bytes) };
    if restored.is_ok() {
        // Whatever was restored, continuing must not abort.
        let next = ctx.seq_pos_max(0).map_or(0, |p| p + 1);
        let mut b = Batch::new(1, 1).unwrap();
        b.add(Token(4), next, &[0], true).unwrap();
        if ctx.decode(&mut b).is_ok() {
            ctx.logits(0).unwrap();
        }
    }
});
