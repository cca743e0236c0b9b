//! Synthetic multimodal projectors (`mmproj` GGUFs) for llama.cpp's mtmd: the layout of a
//! real projector type with random weights, small enough to encode an image in
//! milliseconds. No small vision model can be downloaded here; these let the tests run
//! mtmd's real preprocessing, vision graph and projection, and compare ours with
//! llama.cpp's `llama-mtmd-cli` on the same files.

use std::path::Path;

use llama_rs::{GgufValue, Result};

use crate::GgufWriter;

/// Dimensions of a synthetic Gemma 3 projector (SigLIP-style ViT, average pooling, RMS
/// norm and a projection into the text model's embedding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gemma3Projector {
    /// The text model's input embedding size (640 for Gemma 3 270M).
    pub n_embd_text: u64,
    /// Square input image side in pixels (images are resized to it).
    pub image_size: u64,
    pub patch_size: u64,
    /// Pooling kernel: `(image_size / patch_size / n_merge)^2` tokens per image.
    pub n_merge: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub n_head: u64,
    pub n_layer: u64,
}

impl Gemma3Projector {
    /// A projector for a text model of embedding size `n_embd_text`: 64×64 images in 8×8
    /// patches pooled 2×2 into 16 tokens, a 2-layer ViT of width 64.
    pub fn small(n_embd_text: u64) -> Self {
        Self { n_embd_text, image_size: 64, patch_size: 8, n_merge: 2, n_embd: 64, n_ff: 128, n_head: 4, n_layer: 2 }
    }

    /// Tokens one image becomes.
    pub fn n_image_tokens(&self) -> u64 {
        let side = self.image_size / self.patch_size / self.n_merge;
        side * side
    }
}

/// Writes a Gemma 3 projector (`clip.projector_type = gemma3`) with random f32 weights,
/// fixed by `seed`.
///
/// ```
/// let path = std::env::temp_dir().join(format!("mmproj-doc-{}.gguf", std::process::id()));
/// let p = llama_testkit::Gemma3Projector::small(640);
/// llama_testkit::write_gemma3_mmproj(&path, &p, 1)?;
/// let meta = llama_rs::read_gguf_metadata(&path)?;
/// assert!(meta.iter().any(|(k, _)| k == "clip.projector_type"));
/// assert_eq!(p.n_image_tokens(), 16);
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn write_gemma3_mmproj(out: &Path, p: &Gemma3Projector, seed: u64) -> Result<()> {
    let (d, ff) = (p.n_embd, p.n_ff);
    let n_patches = (p.image_size / p.patch_size).pow(2);
    let floats = |v: &[f32]| GgufValue::Array(v.iter().map(|x| GgufValue::F32(*x)).collect());
    let mut w = GgufWriter::new();
    w.kv_str("general.architecture", "clip")
        .kv_str("general.name", "synthetic-gemma3-mmproj")
        .kv_str("clip.projector_type", "gemma3")
        .kv_bool("clip.has_vision_encoder", true)
        .kv_bool("clip.has_audio_encoder", false)
        .kv_bool("clip.use_gelu", true)
        .kv_u32("clip.vision.embedding_length", d as u32)
        .kv_u32("clip.vision.feed_forward_length", ff as u32)
        .kv_u32("clip.vision.block_count", p.n_layer as u32)
        .kv_u32("clip.vision.projection_dim", p.n_embd_text as u32)
        .kv_u32("clip.vision.attention.head_count", p.n_head as u32)
        .kv_f32("clip.vision.attention.layer_norm_epsilon", 1e-6)
        .kv_u32("clip.vision.image_size", p.image_size as u32)
        .kv_u32("clip.vision.patch_size", p.patch_size as u32)
        .kv_u32("clip.vision.projector.scale_factor", p.n_merge as u32)
        .kv("clip.vision.image_mean", floats(&[0.5, 0.5, 0.5]))
        .kv("clip.vision.image_std", floats(&[0.5, 0.5, 0.5]));
    let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    // Uniform in ±scale/√fan_in: activations stay of order one through the layers.
    let mut random = |n: u64, fan_in: u64| -> Vec<f32> {
        let scale = 1.7 / (fan_in as f32).sqrt();
        (0..n)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                ((rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    };
    let ones = |n: u64| vec![1.0f32; n as usize];
    let zeros = |n: u64| vec![0.0f32; n as usize];
    let ps = p.patch_size;
    // Conv2d kernel in ggml order: [kw, kh, in_channels, out_channels].
    w.tensor_f32("v.patch_embd.weight", &[ps, ps, 3, d], random(ps * ps * 3 * d, ps * ps * 3))?
        .tensor_f32("v.patch_embd.bias", &[d], random(d, 1))?
        .tensor_f32("v.position_embd.weight", &[d, n_patches], random(d * n_patches, 4))?;
    for il in 0..p.n_layer {
        let t = |n: &str| format!("v.blk.{il}.{n}");
        for n in ["attn_q", "attn_k", "attn_v", "attn_out"] {
            w.tensor_f32(&t(&format!("{n}.weight")), &[d, d], random(d * d, d))?.tensor_f32(
                &t(&format!("{n}.bias")),
                &[d],
                zeros(d),
            )?;
        }
        w.tensor_f32(&t("ln1.weight"), &[d], ones(d))?
            .tensor_f32(&t("ln1.bias"), &[d], zeros(d))?
            .tensor_f32(&t("ln2.weight"), &[d], ones(d))?
            .tensor_f32(&t("ln2.bias"), &[d], zeros(d))?
            .tensor_f32(&t("ffn_up.weight"), &[d, ff], random(d * ff, d))?
            .tensor_f32(&t("ffn_up.bias"), &[ff], zeros(ff))?
            .tensor_f32(&t("ffn_down.weight"), &[ff, d], random(ff * d, ff))?
            .tensor_f32(&t("ffn_down.bias"), &[d], zeros(d))?;
    }
    w.tensor_f32("v.post_ln.weight", &[d], ones(d))?
        .tensor_f32("v.post_ln.bias", &[d], zeros(d))?
        .tensor_f32("mm.soft_emb_norm.weight", &[d], ones(d))?
        // Transposed by the graph: [n_embd_text, d] here.
        .tensor_f32("mm.input_projection.weight", &[p.n_embd_text, d], random(p.n_embd_text * d, d))?;
    w.write(out)
}
