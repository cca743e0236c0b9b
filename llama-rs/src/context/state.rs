//! Saving and restoring a context's state (KV cache + outputs), whole or per sequence.
//!
//! llama.cpp's own state bytes carry no model identity, so a state from another model
//! could be fed back and misread. We wrap them in a small header (magic, format version,
//! model fingerprint, kind, token list, payload length) and check it before llama.cpp
//! sees a byte.

use std::path::Path;

use llama_sys as sys;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::Model;
use crate::token::{SeqId, Token};

const MAGIC: &[u8; 4] = b"LRSS";
const VERSION: u32 = 1;
const KIND_FULL: u8 = 0;
const KIND_SEQ: u8 = 1;

fn fingerprint(model: &Model) -> [u64; 5] {
    let arch = model.architecture();
    // FNV-1a over the architecture name: stable across runs and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in arch.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    [
        h,
        model.n_vocab() as u64,
        ((model.n_embd() as u64) << 32) | model.n_layer() as u64,
        model.n_params(),
        model.size(),
    ]
}

fn encode(model: &Model, kind: u8, tokens: &[Token], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + tokens.len() * 4 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.push(kind);
    for f in fingerprint(model) {
        out.extend_from_slice(&f.to_le_bytes());
    }
    out.extend_from_slice(&(tokens.len() as u64).to_le_bytes());
    for t in tokens {
        out.extend_from_slice(&t.0.to_le_bytes());
    }
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::InvalidState("truncated".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

fn decode<'a>(model: &Model, kind: u8, bytes: &'a [u8]) -> Result<(Vec<Token>, &'a [u8])> {
    let mut r = Reader(bytes);
    if r.take(4)? != MAGIC {
        return Err(Error::InvalidState("not a llama-rs state (wrong magic)".into()));
    }
    let version = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
    if version != VERSION {
        return Err(Error::InvalidState(format!("state format version {version}, expected {VERSION}")));
    }
    let k = r.take(1)?[0];
    if k != kind {
        let name = |k| if k == KIND_FULL { "whole-context" } else { "sequence" };
        return Err(Error::InvalidState(format!("this is a {} state, expected a {} state", name(k), name(kind))));
    }
    for (i, want) in fingerprint(model).into_iter().enumerate() {
        if r.u64()? != want {
            let what =
                ["architecture", "vocabulary size", "n_embd/n_layer", "parameter count", "weight size (quantization)"]
                    [i];
            return Err(Error::InvalidState(format!("saved from another model ({what} differs)")));
        }
    }
    let n_tok = r.u64()? as usize;
    if n_tok > r.0.len() / 4 {
        return Err(Error::InvalidState("truncated (token list)".into()));
    }
    let n_vocab = model.n_vocab();
    let mut tokens = Vec::with_capacity(n_tok);
    for c in r.take(n_tok * 4)?.chunks_exact(4) {
        let t = i32::from_le_bytes(c.try_into().unwrap());
        if t < 0 || t >= n_vocab {
            return Err(Error::InvalidState(format!("token {t} out of range")));
        }
        tokens.push(Token(t));
    }
    let n = r.u64()? as usize;
    let payload = r.take(n)?;
    if !r.0.is_empty() {
        return Err(Error::InvalidState(format!("{} trailing bytes", r.0.len())));
    }
    if payload.is_empty() {
        return Err(Error::InvalidState("empty payload".into()));
    }
    Ok((tokens, payload))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    // Write beside the target and rename, so a crash never leaves half a state file.
    let (tmp, mut f) = crate::tempfile::create_beside(path)?;
    if let Err(e) = std::io::Write::write_all(&mut f, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Io { path: path.into(), source: e });
    }
    drop(f);
    crate::tempfile::persist(&tmp, path)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    let io = |source| Error::Io { path: path.into(), source };
    // stat before open, as for models: opening a FIFO for reading blocks until a writer
    // appears (forever, for a state file nobody writes).
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file (a directory, FIFO, socket or device)",
        )));
    }
    std::fs::read(path).map_err(io)
}

impl Context {
    /// What a saved KV state of this context depends on, hashed: the model file's
    /// contents, llama.cpp's version and our state format, the KV element types, flash
    /// attention (it changes V's layout), RoPE/YaRN settings, the SWA cache mode, the
    /// attention type, and the LoRA adapters (file contents and scales) and control vector
    /// applied now. Equal keys mean a saved state means the same here ([`DiskCache`]
    /// entries are filed under it).
    ///
    /// [`DiskCache`]: crate::DiskCache
    pub fn state_key(&self) -> u64 {
        let p = self.params();
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(crate::LLAMA_CPP_COMMIT.as_bytes());
        h.update(&VERSION.to_le_bytes());
        for f in fingerprint(self.model()) {
            h.update(&f.to_le_bytes());
        }
        h.update(&self.model().content_id().to_le_bytes());
        let settings = format!(
            "{:?} {:?} {:?} {:?} {:?} {} {} {} {} {} {} {} {}",
            p.type_k,
            p.type_v,
            p.flash_attn,
            p.rope_scaling,
            p.attention,
            p.rope_freq_base,
            p.rope_freq_scale,
            p.yarn_ext_factor,
            p.yarn_attn_factor,
            p.yarn_beta_fast,
            p.yarn_beta_slow,
            p.yarn_orig_ctx,
            p.swa_full,
        );
        h.update(settings.as_bytes());
        for (a, scale) in &self.applied_loras {
            h.update(&a.content_id().to_le_bytes());
            h.update(&scale.to_le_bytes());
        }
        h.update(&self.applied_cvec.to_le_bytes());
        h.digest()
    }

    /// The whole state (KV cache of all sequences, last outputs) plus the tokens it
    /// covers, as bytes.
    ///
    /// ```
    /// # use llama_rs::*;
    /// # let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// # let mut ctx = model.context(Default::default())?;
    /// # let prompt = model.vocab().tokenize("Hello", true, false)?;
    /// # let mut b = Batch::new(8, 1)?;
    /// # b.add_sequence(&prompt, 0, 0, true)?;
    /// # ctx.decode(&mut b)?;
    /// let bytes = ctx.save_state(&prompt)?;           // after decoding `prompt`
    /// let mut fresh = model.context(Default::default())?;
    /// let tokens = fresh.load_state(&bytes)?;          // same KV cache, same next logits
    /// assert_eq!(tokens, prompt);
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn save_state(&mut self, tokens: &[Token]) -> Result<Vec<u8>> {
        // SAFETY: valid context.
        let size = unsafe { sys::llama_state_get_size(self.as_ptr()) };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has `size` writable bytes, the size llama.cpp just reported.
        let n = unsafe { sys::llama_state_get_data(self.as_ptr(), buf.as_mut_ptr(), size) };
        buf.truncate(n);
        Ok(encode(self.model(), KIND_FULL, tokens, &buf))
    }

    /// Restores a state made by [`save_state`](Self::save_state) with the same model;
    /// returns its tokens. Checks format, model identity and length before llama.cpp
    /// reads anything.
    pub fn load_state(&mut self, bytes: &[u8]) -> Result<Vec<Token>> {
        let (tokens, payload) = decode(self.model(), KIND_FULL, bytes)?;
        // llama.cpp's payload starts with the architecture name (u32 length + bytes) and
        // allocates that length before it bounds-checks it (llama_io_read_i::read_string):
        // a corrupted length asks for up to 4 GiB. It must equal ours anyway.
        let arch = self.model().architecture();
        let mut r = Reader(payload);
        let len = u32::from_le_bytes(r.take(4)?.try_into().unwrap()) as usize;
        if len != arch.len() || r.take(len)? != arch.as_bytes() {
            return Err(Error::InvalidState(format!("payload is not a {arch} state")));
        }
        self.forget_outputs();
        // SAFETY: `payload` is readable for its length; llama.cpp bounds-checks its reads
        // against `size` and reports failure as 0.
        let n = unsafe { sys::llama_state_set_data(self.as_ptr(), payload.as_ptr(), payload.len()) };
        if n == 0 {
            return Err(Error::StateRejected);
        }
        Ok(tokens)
    }

    /// [`save_state`](Self::save_state) into a file (written atomically).
    pub fn save_state_file(&mut self, path: impl AsRef<Path>, tokens: &[Token]) -> Result<()> {
        let bytes = self.save_state(tokens)?;
        write_file(path.as_ref(), &bytes)
    }

    /// [`load_state`](Self::load_state) from a file.
    pub fn load_state_file(&mut self, path: impl AsRef<Path>) -> Result<Vec<Token>> {
        let bytes = read_file(path.as_ref())?;
        self.load_state(&bytes)
    }

    /// The state of one sequence plus its tokens, as bytes.
    pub fn save_seq_state(&mut self, seq: SeqId, tokens: &[Token]) -> Result<Vec<u8>> {
        self.check_seq(seq)?;
        // SAFETY: valid context and sequence id.
        let size = unsafe { sys::llama_state_seq_get_size(self.as_ptr(), seq) };
        let mut buf = vec![0u8; size];
        // SAFETY: `buf` has `size` writable bytes.
        let n = unsafe { sys::llama_state_seq_get_data(self.as_ptr(), buf.as_mut_ptr(), size, seq) };
        buf.truncate(n);
        Ok(encode(self.model(), KIND_SEQ, tokens, &buf))
    }

    /// Restores a sequence state into sequence `dest` (which should be empty).
    pub fn load_seq_state(&mut self, dest: SeqId, bytes: &[u8]) -> Result<Vec<Token>> {
        self.check_seq(dest)?;
        let (tokens, payload) = decode(self.model(), KIND_SEQ, bytes)?;
        self.forget_outputs();
        // SAFETY: valid context and id; llama.cpp bounds-checks reads against the size.
        let n = unsafe { sys::llama_state_seq_set_data(self.as_ptr(), payload.as_ptr(), payload.len(), dest) };
        if n == 0 {
            return Err(Error::StateRejected);
        }
        Ok(tokens)
    }

    /// [`save_seq_state`](Self::save_seq_state) into a file.
    pub fn save_seq_state_file(&mut self, path: impl AsRef<Path>, seq: SeqId, tokens: &[Token]) -> Result<()> {
        let bytes = self.save_seq_state(seq, tokens)?;
        write_file(path.as_ref(), &bytes)
    }

    /// [`load_seq_state`](Self::load_seq_state) from a file.
    pub fn load_seq_state_file(&mut self, path: impl AsRef<Path>, dest: SeqId) -> Result<Vec<Token>> {
        let bytes = read_file(path.as_ref())?;
        self.load_seq_state(dest, &bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_rejects_short_input() {
        let mut r = Reader(&[1, 2, 3]);
        assert!(r.u64().is_err());
        assert!(r.take(3).is_ok());
    }
}
