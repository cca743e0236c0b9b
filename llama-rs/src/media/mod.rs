//! Images and audio in: llama.cpp's multimodal library (mtmd) behind one owner type per
//! handle. A [`Projector`] (an `mmproj` file, loaded for one text model) turns [`Media`]
//! (decoded images or audio) and a prompt with media markers into a [`MediaPrompt`]: text
//! chunks and media chunks, which [`Projector::eval`] encodes and decodes into a
//! [`Context`] through the same checked decode path as text.
//!
//! ```no_run
//! use llama_rs::{Model, Projector, ProjectorParams};
//! let model = Model::load("gemma-3-4b-it.gguf", Default::default())?;
//! let mut proj = Projector::load("mmproj-gemma-3-4b.gguf", &model, ProjectorParams::default())?;
//! let image = proj.media(&std::fs::read("cat.jpg")?)?;
//! let mut ctx = model.context(Default::default())?;
//! let text = format!("What is in this picture? {}", proj.marker());
//! let prompt = proj.tokenize(&text, &[&image], true)?;
//! let n_past = proj.eval(&mut ctx, &prompt, 0, true)?;
//! let logits = ctx.logits_last()?;
//! # let _ = (n_past, logits);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod check;

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use llama_sys as sys;

use crate::error::{backend_error, check_arg};
use crate::{Batch, Context, Error, Model, Pos, Result, SeqId, Token};

pub use check::{MAX_AUDIO_SAMPLES, MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE, MAX_MEDIA_BYTES};

/// How a projector is loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectorParams {
    /// Run the encoder on the GPU when the build has one (llama-server's
    /// `--mmproj-offload`, on by default).
    pub use_gpu: bool,
    /// CPU threads for the encoder.
    pub n_threads: i32,
    /// Encode a blank image once at load, so the first request does not pay for graph
    /// allocation.
    pub warmup: bool,
    /// Bounds on the tokens one image becomes (0: the file's defaults), for projectors
    /// with dynamic resolution.
    pub image_min_tokens: i32,
    /// See `image_min_tokens`.
    pub image_max_tokens: i32,
}

impl Default for ProjectorParams {
    fn default() -> Self {
        let n_threads = std::thread::available_parallelism().map_or(4, |n| n.get().min(16) as i32);
        Self { use_gpu: true, n_threads, warmup: true, image_min_tokens: 0, image_max_tokens: 0 }
    }
}

impl ProjectorParams {
    setters! { use_gpu: bool, n_threads: i32, warmup: bool, image_min_tokens: i32, image_max_tokens: i32 }
}

/// A loaded multimodal projector (`mtmd_context`) for one text model: the vision and/or
/// audio encoder that turns media into embeddings of the model's width.
pub struct Projector {
    ptr: NonNull<sys::mtmd_context>,
    model: Model,
    path: PathBuf,
    content_id: u64,
    marker: String,
}

// SAFETY: (contract) an mtmd_context is not tied to the thread that created it; calls on
// it must not overlap. Encoding takes `&mut self`, and `Projector` is not `Sync`, so the
// `&self` queries and tokenizing cannot race with it. The text model it was loaded for
// is kept alive by the `Model` clone.
unsafe impl Send for Projector {}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("path", &self.path)
            .field("vision", &self.supports_vision())
            .field("audio", &self.supports_audio())
            .finish()
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { sys::mtmd_free(self.ptr.as_ptr()) }
    }
}

impl Projector {
    /// Loads `path` for `model`. The file is checked first (a GGUF projector of a known
    /// layout whose tensor shapes agree with each other); llama.cpp then refuses one
    /// made for another model (a different embedding size).
    pub fn load(path: impl AsRef<Path>, model: &Model, params: ProjectorParams) -> Result<Projector> {
        let path = path.as_ref();
        crate::backend::init();
        check::projector_file(path, model)?;
        check_arg(params.n_threads > 0, || format!("n_threads must be positive, got {}", params.n_threads))?;
        check_arg(params.image_min_tokens >= 0 && params.image_max_tokens >= 0, || {
            "image_min_tokens and image_max_tokens must not be negative".into()
        })?;
        let cpath = crate::ffi::path_cstring(path)?;
        // SAFETY: plain struct of defaults.
        let mut raw = unsafe { sys::mtmd_context_params_default() };
        raw.use_gpu = params.use_gpu;
        raw.n_threads = params.n_threads;
        raw.warmup = params.warmup;
        raw.print_timings = false;
        if params.image_min_tokens > 0 {
            raw.image_min_tokens = params.image_min_tokens;
        }
        if params.image_max_tokens > 0 {
            raw.image_max_tokens = params.image_max_tokens;
        }
        let ptr = {
            let _g = model.lock();
            // SAFETY: valid path string and loaded model; mtmd catches its own exceptions
            // (a file it refuses gives NULL).
            unsafe { sys::mtmd_init_from_file(cpath.as_ptr(), model.as_ptr(), raw) }
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| Error::ProjectorLoad {
            path: path.into(),
            reason: "llama.cpp's mtmd refused it (made for another text model, an unsupported projector type, \
                     or out of memory; the llama.cpp log says which)"
                .into(),
        })?;
        // SAFETY: valid context; the marker is a static or context-owned C string.
        let marker = unsafe { CStr::from_ptr(sys::mtmd_get_marker(ptr.as_ptr())) }.to_string_lossy().into_owned();
        Ok(Projector {
            ptr,
            model: model.clone(),
            path: path.into(),
            content_id: crate::model::file_identity(path),
            marker,
        })
    }

    /// The `mmproj` file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The text model it was loaded for.
    pub fn model(&self) -> &Model {
        &self.model
    }
    /// A hash of the file's contents (for cache keys).
    pub fn content_id(&self) -> u64 {
        self.content_id
    }
    /// The text that marks where a medium goes in a prompt (`<__media__>`).
    pub fn marker(&self) -> &str {
        &self.marker
    }
    /// Whether it reads images.
    pub fn supports_vision(&self) -> bool {
        // SAFETY: const query on a valid context.
        unsafe { sys::mtmd_support_vision(self.ptr.as_ptr()) }
    }
    /// Whether it reads audio.
    pub fn supports_audio(&self) -> bool {
        // SAFETY: const query on a valid context.
        unsafe { sys::mtmd_support_audio(self.ptr.as_ptr()) }
    }
    /// The sample rate audio is resampled to, when it reads audio.
    pub fn audio_sample_rate(&self) -> Option<u32> {
        // SAFETY: const query on a valid context.
        let r = unsafe { sys::mtmd_get_audio_sample_rate(self.ptr.as_ptr()) };
        u32::try_from(r).ok().filter(|&r| r > 0)
    }
    /// Whether media positions are M-RoPE (Qwen2-VL family).
    pub fn uses_mrope(&self) -> bool {
        // SAFETY: const query on a valid context.
        unsafe { sys::mtmd_decode_use_mrope(self.ptr.as_ptr()) }
    }

    /// Decodes an encoded image (JPEG, PNG, BMP, GIF, TGA, PSD, HDR, PNM: what llama.cpp's
    /// stb_image reads) or audio file (WAV, MP3, FLAC). Its dimensions are read from the
    /// header and bounded before any pixel is decoded. The medium's id is the SHA-256 of
    /// the bytes, as llama.cpp's.
    pub fn media(&self, bytes: &[u8]) -> Result<Media> {
        let kind = check::media_bytes(bytes, self.supports_vision(), self.audio_sample_rate().is_some())?;
        // SAFETY: valid context; `bytes` is read for the call only. The dimensions were
        // bounded above, so stb_image allocates at most MAX_IMAGE_PIXELS × 3 bytes.
        let w = unsafe {
            sys::mtmd_helper_bitmap_init_from_buf(
                self.ptr.as_ptr(),
                bytes.as_ptr(),
                bytes.len(),
                false,
                sys::mtmd_helper_init_opt_default(),
            )
        };
        if !w.video_ctx.is_null() {
            // SAFETY: owned by us; video is compiled out, so this is defensive.
            unsafe { sys::mtmd_helper_video_free(w.video_ctx) };
        }
        let ptr = NonNull::new(w.bitmap).ok_or_else(|| {
            Error::Media(format!("could not decode the {kind} (corrupt, truncated, or a variant the decoder lacks)"))
        })?;
        Media::adopt(ptr)
    }

    /// Splits `text` at its media markers into text and media chunks, tokenizing the text
    /// (`add_special`: the model's BOS where it uses one; special tokens are parsed). One
    /// marker per medium, in order.
    pub fn tokenize(&self, text: &str, media: &[&Media], add_special: bool) -> Result<MediaPrompt> {
        let n_markers = text.matches(self.marker.as_str()).count();
        check_arg(n_markers == media.len(), || {
            format!("the prompt has {n_markers} media markers ({}) for {} media", self.marker, media.len())
        })?;
        for m in media {
            let ok = if m.is_audio() { self.supports_audio() } else { self.supports_vision() };
            if !ok {
                return Err(Error::Unsupported(format!(
                    "this projector does not read {}",
                    if m.is_audio() { "audio" } else { "images" }
                )));
            }
        }
        let ctext = crate::ffi::c_string(text, "prompt")?;
        let input =
            sys::mtmd_input_text { text: ctext.as_ptr(), text_len: text.len(), add_special, parse_special: true };
        let bitmaps: Vec<*const sys::mtmd_bitmap> = media.iter().map(|m| m.ptr.as_ptr() as *const _).collect();
        // SAFETY: no arguments; NULL only when out of memory.
        let chunks = NonNull::new(unsafe { sys::mtmd_input_chunks_init() })
            .ok_or(Error::Backend { op: "mtmd_input_chunks_init", code: None })?;
        let prompt = MediaPrompt { ptr: chunks, chunks: Vec::new() };
        // SAFETY: valid context, text and bitmaps (borrowed for the call); the output
        // list is ours. Marker count and modalities were checked above.
        let code = unsafe {
            sys::mtmd_tokenize(self.ptr.as_ptr(), prompt.ptr.as_ptr(), &input, bitmaps.as_ptr(), bitmaps.len())
        };
        match code {
            0 => {}
            1 => return Err(Error::invalid("", "the number of media does not match the prompt's markers".into())),
            2 => return Err(Error::Media("llama.cpp could not preprocess a medium".into())),
            c => return Err(backend_error("mtmd_tokenize", Some(c))),
        }
        prompt.described()
    }

    /// The embeddings of media chunk `index` of `prompt` (`n_tokens × n_embd` floats, row
    /// by row), as the encoder computes them.
    pub fn encode(&mut self, prompt: &MediaPrompt, index: usize) -> Result<Vec<f32>> {
        let chunk = prompt.chunk(index)?;
        check_arg(chunk.kind != ChunkKind::Text, || format!("chunk {index} is text, not a medium"))?;
        let raw = prompt.raw_chunk(index);
        // SAFETY: valid context and a chunk of a prompt this projector tokenized.
        let code = unsafe { sys::mtmd_encode_chunk(self.ptr.as_ptr(), raw) };
        if code != 0 {
            return Err(backend_error("mtmd_encode_chunk", Some(code)));
        }
        let n = chunk.n_tokens * self.model.n_embd_inp();
        // SAFETY: after a successful encode the context holds n_tokens × n_embd_inp floats,
        // valid until the next encode (copied out here, under `&mut self`).
        let embd = unsafe { sys::mtmd_get_output_embd(self.ptr.as_ptr()) };
        if embd.is_null() {
            return Err(Error::Backend { op: "mtmd_get_output_embd", code: None });
        }
        // SAFETY: see above.
        Ok(unsafe { std::slice::from_raw_parts(embd, n) }.to_vec())
    }

    /// Decodes `prompt` into `ctx` at the end of sequence `seq`: text chunks as token
    /// batches, media chunks encoded and decoded as embedding batches (with non-causal
    /// attention where the model wants it), split by the context's `n_batch` as
    /// llama.cpp's helper does. With `logits_last`, the last entry has logits. Returns the
    /// position after the prompt.
    pub fn eval(&mut self, ctx: &mut Context, prompt: &MediaPrompt, seq: SeqId, logits_last: bool) -> Result<Pos> {
        self.check_decodable(ctx, prompt)?;
        ctx.check_seq(seq)?;
        let start = ctx.seq_pos_max(seq).map_or(0, |p| p + 1);
        let n_pos = prompt.n_pos();
        if start as usize + n_pos > ctx.n_ctx_seq() as usize {
            return Err(Error::PromptTooLong { n_prompt: start as usize + n_pos, n_ctx: ctx.n_ctx_seq() as usize });
        }
        let n_batch = ctx.n_batch() as usize;
        let mut pos = start;
        let last = prompt.chunks.len().saturating_sub(1);
        for (i, c) in prompt.chunks.iter().enumerate() {
            let want_logits = logits_last && i == last;
            if c.kind == ChunkKind::Text {
                let mut batch = Batch::new(n_batch.min(c.tokens.len()).max(1), 1)?;
                for (j, piece) in c.tokens.chunks(n_batch).enumerate() {
                    batch.clear();
                    let end = j * n_batch + piece.len() == c.tokens.len();
                    batch.add_sequence(piece, pos, seq, want_logits && end)?;
                    ctx.decode(&mut batch)?;
                    pos += piece.len() as Pos;
                }
            } else {
                pos = self.decode_media(ctx, prompt, i, pos, seq, want_logits)?.0;
            }
        }
        Ok(pos)
    }

    /// Checks what [`eval`](Self::eval) checks before decoding anything, for a caller
    /// that decodes the chunks itself (`Session`, the engine): same model, no M-RoPE,
    /// each medium within one micro-batch.
    pub(crate) fn check_decodable(&self, ctx: &Context, prompt: &MediaPrompt) -> Result<()> {
        check_arg(std::ptr::eq(ctx.model().as_ptr(), self.model.as_ptr()), || {
            "the context runs another model than the one this projector was loaded for".into()
        })?;
        self.check_chunks(prompt, ctx.n_batch() as usize, ctx.n_ubatch() as usize)
    }

    /// No M-RoPE, and each medium that attends to itself non-causally fits one
    /// micro-batch.
    pub(crate) fn check_chunks(&self, prompt: &MediaPrompt, n_batch: usize, n_ubatch: usize) -> Result<()> {
        if self.uses_mrope() {
            return Err(Error::Unsupported(
                "projectors with M-RoPE positions (the Qwen2-VL family) are not supported yet".into(),
            ));
        }
        for (i, c) in prompt.chunks.iter().enumerate() {
            if c.kind != ChunkKind::Text && self.non_causal(prompt, i) && c.n_tokens > n_ubatch.min(n_batch) {
                return Err(Error::BatchMismatch(format!(
                    "a {} of {} tokens needs n_batch and n_ubatch >= {} (they are {n_batch} and {n_ubatch})",
                    c.kind, c.n_tokens, c.n_tokens
                )));
            }
        }
        Ok(())
    }

    /// Encodes media chunk `index` and decodes its embeddings into `seq` at `pos`, in
    /// `n_batch` pieces (non-causally where the model wants it). Returns the position
    /// after it and the batch index of the last row (its output, with `logits`).
    pub(crate) fn decode_media(
        &mut self,
        ctx: &mut Context,
        prompt: &MediaPrompt,
        index: usize,
        pos: Pos,
        seq: SeqId,
        logits: bool,
    ) -> Result<(Pos, usize)> {
        let n_tokens = prompt.chunk(index)?.n_tokens;
        let embd = self.encode(prompt, index)?;
        let n_embd = self.model.n_embd_inp();
        let n_batch = ctx.n_batch() as usize;
        let non_causal = self.non_causal(prompt, index);
        let mut batch = Batch::new_embd(n_batch.min(n_tokens).max(1), n_embd, 1)?;
        let was_causal = ctx.causal_attn();
        ctx.set_causal_attn(was_causal && !non_causal);
        let mut pos = pos;
        let mut last = 0;
        let r = (|| {
            for (j, rows) in embd.chunks(n_batch * n_embd).enumerate() {
                batch.clear();
                let n = rows.len() / n_embd;
                for (k, row) in rows.chunks(n_embd).enumerate() {
                    let end = j * n_batch + k + 1 == n_tokens;
                    batch.add_embd(row, pos + k as Pos, &[seq], logits && end)?;
                }
                ctx.decode(&mut batch)?;
                pos += n as Pos;
                last = n - 1;
            }
            Ok(())
        })();
        ctx.set_causal_attn(was_causal);
        r.map(|()| (pos, last))
    }

    /// The prompt as one token list for prefix caches: text tokens as they are, each
    /// medium as `n_pos` placeholder ids (negative: never a real token) derived from its
    /// content id and this projector, so the same image under the same projector matches
    /// and any other does not.
    ///
    /// The ids a [`Session`](crate::Session) holds in `tokens()` for such a prompt.
    pub fn prompt_tokens(&self, prompt: &MediaPrompt) -> Vec<Token> {
        let mut out = Vec::with_capacity(prompt.n_pos());
        for c in &prompt.chunks {
            if c.kind == ChunkKind::Text {
                out.extend_from_slice(&c.tokens);
            } else {
                let h = xxhash_rust::xxh3::xxh3_64_with_seed(c.id.as_bytes(), self.content_id);
                out.extend((0..c.n_pos as u64).map(|i| placeholder(h.wrapping_add(i))));
            }
        }
        out
    }

    fn non_causal(&self, prompt: &MediaPrompt, index: usize) -> bool {
        // SAFETY: valid context and a chunk of `prompt`.
        unsafe { sys::mtmd_decode_use_non_causal(self.ptr.as_ptr(), prompt.raw_chunk(index)) }
    }
}

/// A placeholder id for a medium's position: negative, so never a real token.
fn placeholder(h: u64) -> Token {
    Token(i32::MIN | (h as i32 & 0x3fff_ffff))
}

/// The longest prefix of at most `keep` positions that does not end inside a medium.
pub(crate) fn whole_media_prefix(prompt: &MediaPrompt, keep: usize) -> usize {
    let mut off = 0;
    for c in &prompt.chunks {
        if off + c.n_pos > keep {
            return if c.kind == ChunkKind::Text { keep } else { off };
        }
        off += c.n_pos;
    }
    keep
}

/// The index of the medium that starts at position `at`, if one does.
pub(crate) fn chunk_at(prompt: &MediaPrompt, at: usize) -> Option<usize> {
    let mut off = 0;
    for (i, c) in prompt.chunks.iter().enumerate() {
        if off == at && c.kind != ChunkKind::Text {
            return Some(i);
        }
        off += c.n_pos;
    }
    None
}

/// Whether `t` stands for a medium's position in a flattened prompt.
pub(crate) fn is_placeholder(t: Token) -> bool {
    t.0 < 0
}

/// What a [`Media`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// An RGB image.
    Image {
        /// Pixels across.
        width: u32,
        /// Pixels down.
        height: u32,
    },
    /// Mono PCM audio at the projector's sample rate.
    Audio {
        /// Samples.
        samples: usize,
    },
}

impl std::fmt::Display for MediaKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MediaKind::Image { width, height } => write!(f, "{width}×{height} image"),
            MediaKind::Audio { samples } => write!(f, "audio of {samples} samples"),
        }
    }
}

/// A decoded image or audio clip (`mtmd_bitmap`) with a content id.
///
/// ```
/// let red = [255u8, 0, 0].repeat(4 * 4);
/// let m = llama_rs::Media::image_rgb(4, 4, &red)?;
/// assert_eq!(m.kind(), llama_rs::MediaKind::Image { width: 4, height: 4 });
/// assert_eq!(m.id().len(), 16);
/// assert!(llama_rs::Media::image_rgb(0, 4, &[]).is_err());
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub struct Media {
    ptr: NonNull<sys::mtmd_bitmap>,
    kind: MediaKind,
    id: String,
}

// SAFETY: (contract) a bitmap is plain owned memory: nothing mutates it after creation
// (ids are set before it is shared), and mtmd only reads it.
unsafe impl Send for Media {}
// SAFETY: as above: every method reads.
unsafe impl Sync for Media {}

impl Drop for Media {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { sys::mtmd_bitmap_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for Media {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Media").field("kind", &self.kind).field("id", &self.id).finish()
    }
}

impl PartialEq for Media {
    /// Media are equal when their contents are (same kind, same content id).
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.id == other.id
    }
}

impl Media {
    /// An image from raw RGB bytes (`width × height × 3`, row by row). Its id is a hash
    /// of the size and pixels.
    pub fn image_rgb(width: u32, height: u32, rgb: &[u8]) -> Result<Media> {
        check::image_size(width as u64, height as u64)?;
        let n = width as usize * height as usize * 3;
        check_arg(rgb.len() == n, || format!("{width}×{height} RGB needs {n} bytes, got {}", rgb.len()))?;
        // SAFETY: `rgb` holds width × height × 3 bytes (checked), copied by mtmd.
        let ptr = NonNull::new(unsafe { sys::mtmd_bitmap_init(width, height, rgb.as_ptr()) })
            .ok_or(Error::Backend { op: "mtmd_bitmap_init", code: None })?;
        let id = format!("{:016x}", xxhash_rust::xxh3::xxh3_64_with_seed(rgb, (width as u64) << 32 | height as u64));
        Self::with_id(ptr, id)
    }

    /// Audio from mono PCM samples in [-1, 1] at the projector's sample rate
    /// ([`Projector::audio_sample_rate`]).
    pub fn audio_pcm(samples: &[f32]) -> Result<Media> {
        check_arg(!samples.is_empty() && samples.len() <= MAX_AUDIO_SAMPLES, || {
            format!("audio must have 1..={MAX_AUDIO_SAMPLES} samples, got {}", samples.len())
        })?;
        check_arg(samples.iter().all(|s| s.is_finite()), || "audio samples must be finite".into())?;
        // SAFETY: `samples` is valid for its length, copied by mtmd.
        let ptr = NonNull::new(unsafe { sys::mtmd_bitmap_init_from_audio(samples.len(), samples.as_ptr()) })
            .ok_or(Error::Backend { op: "mtmd_bitmap_init_from_audio", code: None })?;
        let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        Self::with_id(ptr, format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)))
    }

    fn with_id(ptr: NonNull<sys::mtmd_bitmap>, id: String) -> Result<Media> {
        let c = crate::ffi::c_string(&id, "media id")?;
        // SAFETY: valid bitmap, not yet shared; mtmd copies the string.
        unsafe { sys::mtmd_bitmap_set_id(ptr.as_ptr(), c.as_ptr()) };
        Media::adopt(ptr)
    }

    /// Takes ownership of a bitmap mtmd made, reading its kind and id.
    fn adopt(ptr: NonNull<sys::mtmd_bitmap>) -> Result<Media> {
        let p = ptr.as_ptr();
        // SAFETY: valid bitmap (owned from here: dropped with the `Media` on any error).
        let (audio, nx, ny, n_bytes, id) = unsafe {
            let id = sys::mtmd_bitmap_get_id(p);
            let id = if id.is_null() { String::new() } else { CStr::from_ptr(id).to_string_lossy().into_owned() };
            (
                sys::mtmd_bitmap_is_audio(p),
                sys::mtmd_bitmap_get_nx(p),
                sys::mtmd_bitmap_get_ny(p),
                sys::mtmd_bitmap_get_n_bytes(p),
                id,
            )
        };
        let kind = if audio {
            MediaKind::Audio { samples: n_bytes / std::mem::size_of::<f32>() }
        } else {
            MediaKind::Image { width: nx, height: ny }
        };
        let m = Media { ptr, kind, id };
        if let MediaKind::Audio { samples } = kind {
            check_arg(samples > 0 && samples <= MAX_AUDIO_SAMPLES, || {
                format!("decoded audio has {samples} samples (allowed: 1..={MAX_AUDIO_SAMPLES})")
            })?;
        }
        Ok(m)
    }

    /// Image or audio, and its size.
    pub fn kind(&self) -> MediaKind {
        self.kind
    }
    /// Whether it is audio.
    pub fn is_audio(&self) -> bool {
        matches!(self.kind, MediaKind::Audio { .. })
    }
    /// The content id: the SHA-256 of the encoded bytes ([`Projector::media`]) or a hash
    /// of the raw data. Prompt caches key media by it.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// What a [`MediaPrompt`] chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// Text tokens.
    Text,
    /// An image's embeddings.
    Image,
    /// An audio clip's embeddings.
    Audio,
}

impl std::fmt::Display for ChunkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkKind::Text => "text",
            ChunkKind::Image => "image",
            ChunkKind::Audio => "audio clip",
        })
    }
}

/// One chunk of a [`MediaPrompt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Text or a medium.
    pub kind: ChunkKind,
    /// Entries it decodes as (tokens, or embedding rows).
    pub n_tokens: usize,
    /// Positions it takes (equal to `n_tokens` except with M-RoPE).
    pub n_pos: usize,
    /// The text tokens (empty for media).
    pub tokens: Vec<Token>,
    /// The medium's content id (empty for text).
    pub id: String,
}

/// A prompt split into text and media chunks (`mtmd_input_chunks`), from
/// [`Projector::tokenize`].
pub struct MediaPrompt {
    ptr: NonNull<sys::mtmd_input_chunks>,
    chunks: Vec<Chunk>,
}

// SAFETY: (contract) plain owned data; mtmd only reads it after tokenizing.
unsafe impl Send for MediaPrompt {}
// SAFETY: as above: every method reads.
unsafe impl Sync for MediaPrompt {}

impl Drop for MediaPrompt {
    fn drop(&mut self) {
        // SAFETY: owned pointer, freed once.
        unsafe { sys::mtmd_input_chunks_free(self.ptr.as_ptr()) }
    }
}

impl std::fmt::Debug for MediaPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.chunks.iter().map(|c| (c.kind, c.n_tokens))).finish()
    }
}

impl MediaPrompt {
    fn described(mut self) -> Result<MediaPrompt> {
        let p = self.ptr.as_ptr();
        // SAFETY: valid list, read only.
        let n = unsafe { sys::mtmd_input_chunks_size(p) };
        for i in 0..n {
            // SAFETY: i < size; the chunk and the arrays it hands out live as long as the list.
            let c = unsafe {
                let c = sys::mtmd_input_chunks_get(p, i);
                let kind = match sys::mtmd_input_chunk_get_type(c) {
                    sys::MTMD_INPUT_CHUNK_TYPE_TEXT => ChunkKind::Text,
                    sys::MTMD_INPUT_CHUNK_TYPE_IMAGE => ChunkKind::Image,
                    sys::MTMD_INPUT_CHUNK_TYPE_AUDIO => ChunkKind::Audio,
                    t => return Err(Error::Unsupported(format!("mtmd chunk type {t}"))),
                };
                let mut tokens = Vec::new();
                if kind == ChunkKind::Text {
                    let mut len = 0usize;
                    let t = sys::mtmd_input_chunk_get_tokens_text(c, &mut len);
                    if !t.is_null() {
                        tokens = std::slice::from_raw_parts(t, len).iter().map(|&t| Token(t)).collect();
                    }
                }
                let id = sys::mtmd_input_chunk_get_id(c);
                Chunk {
                    kind,
                    n_tokens: sys::mtmd_input_chunk_get_n_tokens(c),
                    n_pos: sys::mtmd_input_chunk_get_n_pos(c).max(0) as usize,
                    tokens,
                    id: if id.is_null() { String::new() } else { CStr::from_ptr(id).to_string_lossy().into_owned() },
                }
            };
            self.chunks.push(c);
        }
        Ok(self)
    }

    /// The chunks, in order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }
    /// Entries to decode (text tokens plus media embedding rows).
    pub fn n_tokens(&self) -> usize {
        self.chunks.iter().map(|c| c.n_tokens).sum()
    }
    /// Positions the prompt takes in a sequence.
    pub fn n_pos(&self) -> usize {
        self.chunks.iter().map(|c| c.n_pos).sum()
    }

    fn chunk(&self, index: usize) -> Result<&Chunk> {
        self.chunks
            .get(index)
            .ok_or_else(|| Error::invalid("", format!("no chunk {index} (the prompt has {})", self.chunks.len())))
    }

    fn raw_chunk(&self, index: usize) -> *const sys::mtmd_input_chunk {
        // SAFETY: callers pass an index < chunks.len() == the list's size.
        unsafe { sys::mtmd_input_chunks_get(self.ptr.as_ptr(), index) }
    }
}
