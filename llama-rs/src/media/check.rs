//! What mtmd would otherwise find out by aborting or by allocating without bound: the
//! projector file's structure and shapes, and media sizes before they are decoded.

use std::collections::HashMap;
use std::path::Path;

use crate::gguf::{read_layout, TensorInfo};
use crate::model::check::check_extent;
use crate::{Error, GgufValue, Model, Result};

/// Most pixels an image may have (64 Mpx: 8192 × 8192). stb_image allocates 3 bytes per
/// pixel before any projector resizes it.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 26;
/// Longest image side in pixels.
pub const MAX_IMAGE_SIDE: u64 = 16384;
/// Most audio samples (an hour at 16 kHz).
pub const MAX_AUDIO_SAMPLES: usize = 16_000 * 3600;
/// Largest encoded medium accepted.
pub const MAX_MEDIA_BYTES: usize = 256 << 20;

pub(crate) fn image_size(w: u64, h: u64) -> Result<()> {
    if w == 0 || h == 0 || w > MAX_IMAGE_SIDE || h > MAX_IMAGE_SIDE || w * h > MAX_IMAGE_PIXELS {
        return Err(Error::Media(format!(
            "a {w}×{h} image: sides must be 1..={MAX_IMAGE_SIDE} pixels and the area at most {MAX_IMAGE_PIXELS}"
        )));
    }
    Ok(())
}

/// The audio containers mtmd's decoder (miniaudio) recognizes, by their magic bytes, as
/// mtmd's `is_audio_file` tells them.
fn is_audio(b: &[u8]) -> bool {
    b.len() >= 12 && &b[..4] == b"RIFF" && &b[8..12] == b"WAVE"
        || b.starts_with(b"ID3")
        || b.starts_with(b"fLaC")
        || b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0
}

/// Checks encoded media bytes; returns what they are ("image" or "audio clip").
pub(crate) fn media_bytes(bytes: &[u8], vision: bool, audio: bool) -> Result<&'static str> {
    if bytes.is_empty() || bytes.len() > MAX_MEDIA_BYTES {
        return Err(Error::Media(format!("a medium must be 1..={MAX_MEDIA_BYTES} bytes, got {}", bytes.len())));
    }
    if let Ok(size) = imagesize::blob_size(bytes) {
        if !vision {
            return Err(Error::Unsupported("this projector does not read images".into()));
        }
        image_size(size.width as u64, size.height as u64)?;
        return Ok("image");
    }
    if is_audio(bytes) {
        if !audio {
            return Err(Error::Unsupported("this projector does not read audio".into()));
        }
        return Ok("audio clip");
    }
    Err(Error::Media(
        "not an image (JPEG, PNG, BMP, GIF, ...) or audio (WAV, MP3, FLAC) whose size can be read from its header"
            .into(),
    ))
}

fn u(m: &HashMap<&str, &GgufValue>, k: &str) -> Option<u64> {
    match m.get(k)? {
        GgufValue::U32(v) => Some(*v as u64),
        GgufValue::I32(v) => u64::try_from(*v).ok(),
        GgufValue::U64(v) => Some(*v),
        _ => None,
    }
}

/// A projector file: a whole GGUF whose metadata names a projector, and, for the vision
/// transformer most projector types share (the graph llama.cpp builds asserts on shapes
/// rather than checking them), tensors whose shapes agree with the metadata.
pub(crate) fn projector_file(path: &Path, model: &Model) -> Result<()> {
    let layout = read_layout(path, true)?;
    check_extent(&layout, path)?;
    let m: HashMap<&str, &GgufValue> = layout.meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let bad = |why: String| Error::ProjectorLoad { path: path.into(), reason: why };
    if !matches!(m.get("general.architecture"), Some(GgufValue::Str(a)) if a == "clip") {
        return Err(bad(
            "not a multimodal projector (general.architecture is not \"clip\"); pass the mmproj file".into()
        ));
    }
    let has = |k: &str| matches!(m.get(k), Some(GgufValue::Bool(true)));
    if !has("clip.has_vision_encoder") && !has("clip.has_audio_encoder") {
        return Err(bad("it has neither a vision nor an audio encoder".into()));
    }
    let t: HashMap<&str, &TensorInfo> = layout.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    if has("clip.has_vision_encoder") {
        vision_shapes(&m, &t).map_err(bad)?;
    }
    if let Some(GgufValue::Str(p)) = m.get("clip.projector_type") {
        if p == "gemma3" {
            let d = u(&m, "clip.vision.embedding_length").unwrap_or(0);
            let want = model.n_embd_inp() as u64;
            let shape = |n: &str| t.get(n).map(|t| t.ne.clone());
            if shape("mm.input_projection.weight") != Some(vec![want, d]) {
                return Err(Error::Unsupported(format!(
                    "{}: its projection is {:?}, not [{want}, {d}]: it was made for another text model (n_embd {want} here)",
                    path.display(),
                    shape("mm.input_projection.weight")
                )));
            }
            if shape("mm.soft_emb_norm.weight") != Some(vec![d]) {
                return Err(bad(format!("mm.soft_emb_norm.weight must be [{d}]")));
            }
        }
    }
    Ok(())
}

/// The ViT trunk: patch embedding, positions, and per layer the attention and FFN
/// matrices, against `embedding_length`, `feed_forward_length`, `patch_size` and
/// `image_size`. Tensors a type does not have are skipped; present ones must fit.
fn vision_shapes(m: &HashMap<&str, &GgufValue>, t: &HashMap<&str, &TensorInfo>) -> Result<(), String> {
    let need = |k: &str| u(m, k).ok_or_else(|| format!("{k} is missing or not an integer"));
    let d = need("clip.vision.embedding_length")?;
    let n_layer = need("clip.vision.block_count")?;
    let n_head = need("clip.vision.attention.head_count")?;
    let patch = need("clip.vision.patch_size")?;
    let image = need("clip.vision.image_size")?;
    let n_ff = u(m, "clip.vision.feed_forward_length").unwrap_or(0);
    if d == 0 || n_head == 0 || d % n_head != 0 || patch == 0 || n_layer > 1024 || d > 1 << 16 || image > 1 << 16 {
        return Err(format!(
            "vision dimensions out of range (embedding {d}, heads {n_head}, patch {patch}, image {image}, layers {n_layer})"
        ));
    }
    let check = |name: &str, want: &[u64]| -> Result<(), String> {
        match t.get(name) {
            Some(ti) if ti.ne != want => Err(format!("tensor {name} is {:?}, the metadata gives {want:?}", ti.ne)),
            _ => Ok(()),
        }
    };
    if let Some(p) = t.get("v.patch_embd.weight") {
        if p.ne.len() != 4 || p.ne[3] != d || p.ne[0] == 0 || p.ne[1] == 0 {
            return Err(format!("tensor v.patch_embd.weight is {:?}, want [kw, kh, 3, {d}]", p.ne));
        }
    }
    check("v.patch_embd.bias", &[d])?;
    for il in 0..n_layer {
        for n in ["attn_q", "attn_k", "attn_v"] {
            // Grouped-query projectors have narrower K/V: only the input side is fixed.
            if let Some(ti) = t.get(format!("v.blk.{il}.{n}.weight").as_str()) {
                if ti.ne.first() != Some(&d) || ti.ne.len() != 2 {
                    return Err(format!("tensor v.blk.{il}.{n}.weight is {:?}, want [{d}, _]", ti.ne));
                }
            }
        }
        check(&format!("v.blk.{il}.attn_out.weight"), &[d, d])?;
        for n in ["ln1", "ln2"] {
            check(&format!("v.blk.{il}.{n}.weight"), &[d])?;
            check(&format!("v.blk.{il}.{n}.bias"), &[d])?;
        }
        if n_ff > 0 {
            // Old LLaVA conversions swap up and down; either orientation is read.
            for n in ["ffn_up", "ffn_down"] {
                let name = format!("v.blk.{il}.{n}.weight");
                if let Some(ti) = t.get(name.as_str()) {
                    if ti.ne != [d, n_ff] && ti.ne != [n_ff, d] {
                        return Err(format!("tensor {name} is {:?}, want [{d}, {n_ff}] or [{n_ff}, {d}]", ti.ne));
                    }
                }
            }
        }
    }
    Ok(())
}
