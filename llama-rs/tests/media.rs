//! Images in through llama.cpp's mtmd, on Gemma 3 270M with a synthetic Gemma 3 projector
//! (random weights: no small vision model can be downloaded here). Ours is compared with
//! llama.cpp's own `llama-mtmd-cli`, built from the same tree, on the same files.

use std::path::{Path, PathBuf};
use std::process::Command;

use llama_rs::{
    argmax, Batch, ChunkKind, ContextParams, ErrorKind, FlashAttn, Media, MediaKind, Projector, ProjectorParams, Token,
};
use llama_testkit::fixtures::{model, TempDir};
use llama_testkit::{write_gemma3_mmproj, Gemma3Projector};

fn vendor_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vendor/llama.cpp/tools/mtmd").join(name)
}

fn projector(dir: &TempDir) -> (PathBuf, Projector) {
    let path = dir.join("mmproj.gguf");
    write_gemma3_mmproj(&path, &Gemma3Projector::small(model().n_embd_inp() as u64), 7).unwrap();
    let p = Projector::load(&path, model(), ProjectorParams::default().n_threads(2)).unwrap();
    (path, p)
}

fn params() -> ContextParams {
    ContextParams::default().n_ctx(1024).n_batch(512).n_ubatch(512).n_threads(2).flash_attn(FlashAttn::Off)
}

const PROMPT: &str =
    "<start_of_turn>user\nWhat is in this picture? <__media__> Describe it.<end_of_turn>\n<start_of_turn>model\n";

/// Greedy tokens after `prompt` with `image`.
fn ours(proj: &mut Projector, image: &Media, n: usize) -> Vec<Token> {
    let mut ctx = model().context(params()).unwrap();
    let prompt = proj.tokenize(PROMPT, &[image], true).unwrap();
    let start = proj.eval(&mut ctx, &prompt, 0, true).unwrap();
    let mut out = Vec::new();
    let mut batch = Batch::new(1, 1).unwrap();
    for pos in start..start + n as i32 {
        let t = argmax(ctx.logits_last().unwrap());
        if model().vocab().is_eog(t) {
            break;
        }
        out.push(t);
        batch.clear();
        batch.add(t, pos, &[0], true).unwrap();
        ctx.decode(&mut batch).unwrap();
    }
    out
}

#[test]
fn a_prompt_with_an_image_splits_into_text_image_text() {
    let dir = TempDir::new("media-chunks");
    let (_, proj) = projector(&dir);
    assert!(proj.supports_vision() && !proj.supports_audio());
    assert_eq!(proj.marker(), "<__media__>");
    let image = proj.media(&std::fs::read(vendor_file("test-1.jpeg")).unwrap()).unwrap();
    assert!(matches!(image.kind(), MediaKind::Image { width, height } if width > 100 && height > 100));
    assert_eq!(image.id().len(), 64, "SHA-256 hex, as llama.cpp's");
    let prompt = proj.tokenize(PROMPT, &[&image], true).unwrap();
    let kinds: Vec<ChunkKind> = prompt.chunks().iter().map(|c| c.kind).collect();
    assert_eq!(kinds, [ChunkKind::Text, ChunkKind::Image, ChunkKind::Text]);
    let img = &prompt.chunks()[1];
    assert_eq!(img.n_tokens as u64, Gemma3Projector::small(640).n_image_tokens());
    assert_eq!(img.id, image.id());
    // Gemma 3 wraps the image in <start_of_image> ... <end_of_image> text tokens.
    let vocab = model().vocab();
    let before = vocab.detokenize(&prompt.chunks()[0].tokens, false, false).unwrap();
    assert!(before.ends_with("<start_of_image>"), "{before:?}");
    let after = vocab.detokenize(&prompt.chunks()[2].tokens, false, false).unwrap();
    assert!(after.starts_with("<end_of_image>"), "{after:?}");
    assert_eq!(prompt.n_pos(), prompt.n_tokens());
}

#[test]
fn the_image_changes_the_answer_and_the_same_image_gives_the_same_answer() {
    let dir = TempDir::new("media-answer");
    let (_, mut proj) = projector(&dir);
    let a = proj.media(&std::fs::read(vendor_file("test-1.jpeg")).unwrap()).unwrap();
    let red = Media::image_rgb(64, 64, &[200u8, 10, 10].repeat(64 * 64)).unwrap();
    let x = ours(&mut proj, &a, 12);
    let y = ours(&mut proj, &a, 12);
    assert_eq!(x, y, "same image, same greedy answer");
    // The encoder's output differs per image, and so do the embeddings decoded.
    let pa = proj.tokenize(PROMPT, &[&a], true).unwrap();
    let pr = proj.tokenize(PROMPT, &[&red], true).unwrap();
    let ea = proj.encode(&pa, 1).unwrap();
    let er = proj.encode(&pr, 1).unwrap();
    assert_eq!(ea.len(), 16 * model().n_embd_inp());
    assert!(ea.iter().all(|v| v.is_finite()));
    assert!(llama_testkit::fixtures::max_diff(&ea, &er) > 1e-3, "two images encoded alike");
    assert_eq!(ea, proj.encode(&pa, 1).unwrap(), "encoding is deterministic");
}

/// `llama-mtmd-cli` from the same tree (scripts/llama-tools.sh builds it; scripts/test.sh
/// sets LLAMA_TOOLS_DIR). Without it the comparison is skipped, loudly, unless
/// LLAMA_RS_REQUIRE_TOOLS=1 (CI), where it fails.
fn mtmd_cli() -> Option<PathBuf> {
    let dir = std::env::var_os("LLAMA_TOOLS_DIR").map(PathBuf::from);
    let bin = dir.map(|d| d.join("llama-mtmd-cli")).filter(|p| p.is_file());
    if bin.is_none() {
        assert!(
            std::env::var("LLAMA_RS_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "LLAMA_TOOLS_DIR has no llama-mtmd-cli (run scripts/llama-tools.sh)"
        );
        eprintln!("SKIPPED: set LLAMA_TOOLS_DIR to scripts/llama-tools.sh's output to compare with llama-mtmd-cli");
    }
    bin
}

#[test]
fn greedy_answer_equals_llama_mtmd_cli() {
    let Some(cli) = mtmd_cli() else { return };
    let dir = TempDir::new("media-cli");
    let (mmproj, mut proj) = projector(&dir);
    let jpeg = vendor_file("test-1.jpeg");
    let image = proj.media(&std::fs::read(&jpeg).unwrap()).unwrap();
    let n = 24;
    let tokens = ours(&mut proj, &image, n);
    let text = model().vocab().detokenize(&tokens, false, false).unwrap();
    // The template renders the message as given, so both sides decode the same prompt.
    let out = Command::new(&cli)
        .args(["-m".as_ref(), model().path().as_os_str()])
        .args(["--mmproj".as_ref(), mmproj.as_os_str()])
        .args(["--image".as_ref(), jpeg.as_os_str()])
        .args(["-p", PROMPT, "-n", &n.to_string(), "--temp", "0", "-t", "2", "-c", "1024", "-b", "512", "-ub", "512"])
        .args(["-fa", "off", "--jinja", "--chat-template", "{% for m in messages %}{{ m.content }}{% endfor %}"])
        .args(["--no-warmup", "--seed", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "llama-mtmd-cli failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("ours and llama-mtmd-cli: {text:?}");
    assert!(tokens.len() >= 8, "too short an answer to compare: {text:?}");
    assert_eq!(stdout.trim(), text.trim(), "ours (left) and llama-mtmd-cli (right) differ");
}

#[test]
fn hostile_media_and_projectors_are_errors() {
    let dir = TempDir::new("media-hostile");
    let (mmproj, proj) = projector(&dir);
    let jpeg = std::fs::read(vendor_file("test-1.jpeg")).unwrap();
    // A JPEG cut after its scans began decodes with the rest grey (stb_image, as in
    // llama.cpp); one cut inside its header, empty or unknown bytes are errors.
    assert!(proj.media(&jpeg[..jpeg.len() / 3]).is_ok());
    for bytes in [&jpeg[..20], b"", b"hello, not an image".as_slice(), &[0u8; 4096]] {
        let e = proj.media(bytes).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    }
    // A PNG header claiming 100000×100000 pixels: refused before decoding.
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let e = proj.media(&png).unwrap_err();
    assert!(e.to_string().contains("100000×100000"), "{e}");
    // Raw images: zero or oversized sides, wrong byte counts.
    for (w, h, n) in [(0, 4, 0), (4, 0, 0), (100_000, 100_000, 3), (4, 4, 47)] {
        assert!(Media::image_rgb(w, h, &vec![0; n]).is_err());
    }
    assert!(Media::audio_pcm(&[]).is_err() && Media::audio_pcm(&[f32::NAN]).is_err());
    // Audio to a vision-only projector.
    let pcm = Media::audio_pcm(&[0.0; 1600]).unwrap();
    assert_eq!(proj.tokenize("a <__media__>", &[&pcm], true).unwrap_err().kind(), ErrorKind::Unsupported);
    // More media than markers, and fewer.
    let img = Media::image_rgb(8, 8, &[9; 192]).unwrap();
    assert!(proj.tokenize("no marker", &[&img], true).is_err());
    assert!(proj.tokenize("<__media__> <__media__>", &[&img], true).is_err());
    // A tiny 1×1 image and a long thin one still encode (resized to the square input).
    let mut p = Projector::load(&mmproj, model(), ProjectorParams::default().n_threads(2)).unwrap();
    for (w, h) in [(1u32, 1u32), (2000, 1)] {
        let m = Media::image_rgb(w, h, &vec![128; (w * h * 3) as usize]).unwrap();
        let prompt = p.tokenize("<__media__>", &[&m], true).unwrap();
        let i = prompt.chunks().iter().position(|c| c.kind == ChunkKind::Image).unwrap();
        assert!(p.encode(&prompt, i).unwrap().iter().all(|v| v.is_finite()));
    }

    // Projectors: the text model, a projector for another width, a truncated one, shapes
    // that disagree with the metadata.
    let load = |path: &Path| Projector::load(path, model(), ProjectorParams::default().n_threads(2).warmup(false));
    assert_eq!(load(model().path()).unwrap_err().kind(), ErrorKind::Corrupt);
    let other = dir.join("other.gguf");
    write_gemma3_mmproj(&other, &Gemma3Projector::small(512), 1).unwrap();
    assert_eq!(load(&other).unwrap_err().kind(), ErrorKind::Unsupported);
    let bytes = std::fs::read(&mmproj).unwrap();
    let cut = dir.join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    assert!(load(&cut).is_err());
    let bad = dir.join("bad.gguf");
    write_gemma3_mmproj(&bad, &Gemma3Projector { n_ff: 96, ..Gemma3Projector::small(640) }, 1).unwrap();
    // n_ff in the metadata is 96 and so are the tensors: consistent, loads.
    assert!(load(&bad).is_ok());
    assert!(load(Path::new("/nonexistent/mmproj.gguf")).is_err());

    // A context of another model, a context too small for the image, a bad sequence.
    let mut proj = p;
    let img = Media::image_rgb(8, 8, &[9; 192]).unwrap();
    let prompt = proj.tokenize(PROMPT, &[&img], true).unwrap();
    let tiny = dir.join("tiny.gguf");
    llama_testkit::write_tiny_llama(&tiny).unwrap();
    let other_model = llama_rs::Model::load(&tiny, Default::default()).unwrap();
    let mut octx = other_model.context(ContextParams::default().n_ctx(128)).unwrap();
    assert!(proj.eval(&mut octx, &prompt, 0, true).is_err());
    let mut small = model().context(params().n_ubatch(8)).unwrap();
    let e = proj.eval(&mut small, &prompt, 0, true).unwrap_err();
    assert!(e.to_string().contains("n_ubatch"), "{e}");
    assert_eq!(small.seq_pos_max(0), None, "nothing decoded before the refusal");
    let long = proj.tokenize(&format!("{}<__media__>", "word ".repeat(300)), &[&img], true).unwrap();
    let mut ctx = model().context(params().n_ctx(256)).unwrap();
    assert_eq!(proj.eval(&mut ctx, &long, 0, true).unwrap_err().kind(), ErrorKind::ContextFull);
    let mut ctx = model().context(params()).unwrap();
    assert!(proj.eval(&mut ctx, &prompt, 5, true).is_err());
    // And the context still works afterwards.
    let end = proj.eval(&mut ctx, &prompt, 0, true).unwrap();
    assert_eq!(end as usize, prompt.n_pos());
    assert!(ctx.logits_last().unwrap().iter().all(|v| v.is_finite()));
}

fn media_prompt(image: &std::sync::Arc<Media>, question: &str) -> llama_rs::Prompt {
    let text = format!("<start_of_turn>user\n<__media__> {question}<end_of_turn>\n<start_of_turn>model\n");
    llama_rs::Prompt::Media { text, media: vec![image.clone()] }
}

fn greedy(n: usize) -> llama_rs::GenerateParams {
    llama_rs::GenerateParams { max_tokens: Some(n), sampler: llama_rs::SamplerConfig::greedy(), ..Default::default() }
}

#[test]
fn a_session_answers_about_an_image_and_reuses_it_for_a_second_question() {
    let dir = TempDir::new("media-session");
    let (mmproj, _) = projector(&dir);
    let load = || Projector::load(&mmproj, model(), ProjectorParams::default().n_threads(2)).unwrap();
    let image = std::sync::Arc::new(load().media(&std::fs::read(vendor_file("test-1.jpeg")).unwrap()).unwrap());

    // Cold answers: a fresh session per question.
    let cold = |q: &str| {
        let mut s = llama_rs::Session::new(model().context(params()).unwrap()).unwrap();
        s.set_projector(Some(load())).unwrap();
        s.generate(media_prompt(&image, q), &greedy(10)).unwrap().text().unwrap().0
    };
    let (a1, a2) = (cold("Describe it."), cold("What colour is it?"));

    // One session, two questions about the same image: the second keeps the image's
    // cells (only the new question is decoded) and answers as a cold run does.
    let mut s = llama_rs::Session::new(model().context(params()).unwrap()).unwrap();
    assert!(s.generate(media_prompt(&image, "x"), &greedy(1)).is_err_and(|e| e.kind() == ErrorKind::Unsupported));
    s.set_projector(Some(load())).unwrap();
    assert_eq!(s.generate(media_prompt(&image, "Describe it."), &greedy(10)).unwrap().text().unwrap().0, a1);
    let before = s.context().perf().prompt_tokens;
    let w2 = s.generate(media_prompt(&image, "What colour is it?"), &greedy(10)).unwrap().text().unwrap().0;
    let decoded = s.context().perf().prompt_tokens - before;
    assert!(decoded < 12, "the second question decoded {decoded} prompt entries: the image was not reused");
    assert_eq!(w2, a2, "reusing the image's cells changed the answer");

    // Another image with the same question is not served from the first one's cells.
    let red = std::sync::Arc::new(Media::image_rgb(64, 64, &[200u8, 10, 10].repeat(64 * 64)).unwrap());
    let before = s.context().perf().prompt_tokens;
    s.generate(media_prompt(&red, "What colour is it?"), &greedy(2)).unwrap().text().unwrap();
    assert!(s.context().perf().prompt_tokens - before >= 16, "a different image must be decoded");
    assert_eq!(s.tokens().iter().filter(|t| t.0 < 0).count(), 16, "16 image positions, as placeholders");
}

#[test]
fn the_engine_answers_image_requests_as_a_session_does_and_caches_the_image() {
    let dir = TempDir::new("media-engine");
    let (mmproj, _) = projector(&dir);
    let image = std::sync::Arc::new(
        Projector::load(&mmproj, model(), ProjectorParams::default().n_threads(2))
            .unwrap()
            .media(&std::fs::read(vendor_file("test-1.jpeg")).unwrap())
            .unwrap(),
    );
    let mut s = llama_rs::Session::new(model().context(params()).unwrap()).unwrap();
    s.set_projector(Some(Projector::load(&mmproj, model(), ProjectorParams::default().n_threads(2)).unwrap())).unwrap();
    let want = s.generate(media_prompt(&image, "Describe it."), &greedy(10)).unwrap().text().unwrap().0;

    let ep = llama_rs::EngineParams {
        n_ctx: 2048,
        slots: 2,
        n_threads: 2,
        flash_attn: FlashAttn::Off,
        mmproj: Some(mmproj.clone()),
        ..Default::default()
    };
    let engine = llama_rs::Engine::new(model(), ep).unwrap();
    let h = engine.handle();
    assert_eq!(h.media_support(), (true, false));
    let out = h.submit(llama_rs::Request { prompt: media_prompt(&image, "Describe it."), params: greedy(10) }).unwrap();
    let out = out.text().unwrap();
    assert_eq!(out.text, want, "engine and session differ");
    // The same image again: its cells come from the prefix cache.
    let again = h.submit(llama_rs::Request { prompt: media_prompt(&image, "What colour is it?"), params: greedy(4) });
    let again = again.unwrap().text().unwrap();
    assert!(again.usage.cached_tokens >= 16 + 3, "cached {} tokens", again.usage.cached_tokens);
    // Text-only requests still run beside it, and bad media requests fail at submit.
    assert!(h.submit(llama_rs::Request::text("Hello", greedy(2))).unwrap().text().is_ok());
    let two_markers = llama_rs::Prompt::Media { text: "<__media__><__media__> hi".into(), media: vec![image.clone()] };
    assert!(h.submit(llama_rs::Request { prompt: two_markers, params: greedy(2) }).is_err());
    // An engine without a projector refuses media.
    let plain =
        llama_rs::Engine::new(model(), llama_rs::EngineParams { n_ctx: 512, slots: 1, ..Default::default() }).unwrap();
    let e = plain.handle().submit(llama_rs::Request { prompt: media_prompt(&image, "x"), params: greedy(2) });
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Unsupported);
}
