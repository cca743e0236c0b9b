//! The default model's tokenizer (Gemma 3, 262k SentencePiece vocabulary) on arbitrary
//! text, and detokenization of arbitrary token ids (in and out of range).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use llama_rs::{Model, ModelParams, PieceDecoder, Token};

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        let path = llama_testkit::default_model_path().expect("default model (python3 vendor/fetch.py model)");
        Model::load(path, ModelParams::default().vocab_only(true)).expect("load vocabulary")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let vocab = model().vocab();
    let text = String::from_utf8_lossy(rest);
    if let Ok(tokens) = vocab.tokenize(&text, flags & 1 != 0, flags & 2 != 0) {
        // Tokens from the tokenizer always detokenize.
        vocab.detokenize(&tokens, flags & 4 != 0, flags & 8 != 0).unwrap();
    }
    // The same bytes as token ids, most of them out of range.
    let ids: Vec<Token> =
        rest.chunks_exact(4).map(|c| Token(i32::from_le_bytes([c[0], c[1], c[2], c[3]]) >> (flags & 15))).collect();
    let _ = vocab.detokenize(&ids, flags & 16 != 0, flags & 32 != 0);
    let mut decoder = PieceDecoder::default();
    let mut buf = Vec::new();
    for &t in &ids {
        if vocab.token_to_piece_bytes(t, flags & 64 != 0, &mut buf).is_ok() {
            decoder.push(&buf);
        }
        let _ = vocab.attr(t);
        let _ = vocab.text(t);
    }
    decoder.finish();
});
