//! Arbitrary bytes as an encoded image or audio file (stb_image, miniaudio behind mtmd's
//! helper) or as raw RGB, read with a synthetic Gemma 3 projector for the tiny model.
//! Must be refused with a typed error, or decode to a medium that tokenizes and encodes.
#![no_main]
mod common;

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use llama_rs::{ChunkKind, Media, Projector, ProjectorParams};

fn projector() -> &'static Mutex<Projector> {
    static P: OnceLock<Mutex<Projector>> = OnceLock::new();
    P.get_or_init(|| {
        let path = common::scratch("mmproj.gguf");
        let shape = llama_testkit::Gemma3Projector::small(common::tiny().n_embd_inp() as u64);
        llama_testkit::write_gemma3_mmproj(&path, &shape, 1).expect("write projector");
        let p = ProjectorParams::default().n_threads(1).warmup(false);
        Mutex::new(Projector::load(&path, common::tiny(), p).expect("load projector"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let mut proj = projector().lock().unwrap();
    let media = if which & 1 == 0 {
        proj.media(bytes)
    } else {
        // Raw RGB: the first 4 bytes give a small size, the rest the pixels.
        let (w, h) = (bytes.first().map_or(0, |&b| b as u32 % 40), bytes.get(1).map_or(0, |&b| b as u32 % 40));
        Media::image_rgb(w, h, bytes.get(2..).unwrap_or_default())
    };
    let Ok(m) = media else { return };
    let Ok(prompt) = proj.tokenize("look: <__media__> ok", &[&m], true) else { return };
    for (i, c) in prompt.chunks().iter().enumerate() {
        if c.kind != ChunkKind::Text {
            let e = proj.encode(&prompt, i).expect("a decoded medium encodes");
            assert!(e.iter().all(|v| v.is_finite()));
        }
    }
});
