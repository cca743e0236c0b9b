//! [`ContextParams`] and the enums it is made of.

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::error::{check_finite, Error, Result};

/// Flash attention: let llama.cpp decide, or force it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum FlashAttn {
    #[default]
    /// llama.cpp enables it where the backend supports it.
    Auto,
    /// Always on (an error where unsupported).
    On,
    /// Always off.
    Off,
}

/// The element types llama.cpp accepts for the K and V caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum KvType {
    /// 32-bit floats.
    F32,
    #[default]
    /// 16-bit floats (llama.cpp's default).
    F16,
    /// bfloat16 (cannot be shifted on the CPU backend: no context shift / `seq_add`).
    Bf16,
    /// 8-bit blocks: half the memory of F16, near-lossless.
    Q8_0,
    /// 4-bit blocks.
    Q4_0,
    /// 4-bit blocks with a minimum.
    Q4_1,
    /// Non-linear 4-bit blocks.
    Iq4Nl,
    /// 5-bit blocks.
    Q5_0,
    /// 5-bit blocks with a minimum.
    Q5_1,
}

impl KvType {
    pub(crate) fn raw(self) -> sys::ggml_type {
        match self {
            KvType::F32 => sys::GGML_TYPE_F32,
            KvType::F16 => sys::GGML_TYPE_F16,
            KvType::Bf16 => sys::GGML_TYPE_BF16,
            KvType::Q8_0 => sys::GGML_TYPE_Q8_0,
            KvType::Q4_0 => sys::GGML_TYPE_Q4_0,
            KvType::Q4_1 => sys::GGML_TYPE_Q4_1,
            KvType::Iq4Nl => sys::GGML_TYPE_IQ4_NL,
            KvType::Q5_0 => sys::GGML_TYPE_Q5_0,
            KvType::Q5_1 => sys::GGML_TYPE_Q5_1,
        }
    }
    /// Block-quantized types (need flash attention when used for V).
    pub fn is_quantized(self) -> bool {
        !matches!(self, KvType::F32 | KvType::F16 | KvType::Bf16)
    }
    /// Every type, in llama.cpp's order of `--cache-type-k` choices.
    pub const ALL: [KvType; 9] = [
        KvType::F32,
        KvType::F16,
        KvType::Bf16,
        KvType::Q8_0,
        KvType::Q4_0,
        KvType::Q4_1,
        KvType::Iq4Nl,
        KvType::Q5_0,
        KvType::Q5_1,
    ];
    /// llama.cpp's name (`f16`, `q8_0`, ...), as its tools print and parse it.
    ///
    /// ```
    /// use llama_rs::KvType;
    /// assert_eq!(KvType::Q8_0.name(), "q8_0");
    /// assert_eq!("Q8_0".parse::<KvType>().unwrap(), KvType::Q8_0);
    /// assert!("q3_k".parse::<KvType>().is_err());
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Bf16 => "bf16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
            KvType::Q4_1 => "q4_1",
            KvType::Iq4Nl => "iq4_nl",
            KvType::Q5_0 => "q5_0",
            KvType::Q5_1 => "q5_1",
        }
    }
}

impl std::str::FromStr for KvType {
    type Err = crate::Error;
    /// A name as llama.cpp's tools take it (case-insensitive).
    fn from_str(s: &str) -> crate::Result<KvType> {
        KvType::ALL.into_iter().find(|t| t.name().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            let names: Vec<&str> = KvType::ALL.iter().map(|t| t.name()).collect();
            crate::Error::invalid("", format!("{s:?} is not a KV cache type ({})", names.join(", ")))
        })
    }
}

/// How per-token embeddings are pooled per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Pooling {
    /// The model's default.
    #[default]
    Unspecified,
    /// One embedding per token.
    None,
    /// The mean over the sequence's tokens.
    Mean,
    /// The first token's embedding (BERT's CLS).
    Cls,
    /// The last token's embedding.
    Last,
    /// Reranking head.
    Rank,
}

/// Attention type for embedding contexts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum AttentionType {
    #[default]
    /// The model's default.
    Unspecified,
    /// Causal (generation).
    Causal,
    /// Bidirectional (embedding models).
    NonCausal,
}

/// RoPE scaling override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum RopeScaling {
    #[default]
    /// The model's default.
    Unspecified,
    /// No RoPE scaling.
    None,
    /// Linear (position interpolation).
    Linear,
    /// YaRN.
    Yarn,
    /// LongRoPE (Phi-3 style).
    LongRope,
}

/// Everything `llama_context_params` offers, as plain data with builder methods.
/// Zero / `None` means "llama.cpp's default" where noted.
///
/// ```
/// use llama_rs::{ContextParams, FlashAttn, KvType};
/// let p = ContextParams::default()
///     .n_ctx(4096)
///     .n_batch(512)
///     .n_seq_max(4)
///     .flash_attn(FlashAttn::On)
///     .kv_types(KvType::Q8_0, KvType::Q8_0);
/// assert_eq!(p.n_ctx, 4096);
/// let json = serde_json::to_string(&p).unwrap();
/// assert!(json.contains("\"Q8_0\""));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContextParams {
    /// Context length (0 = the model's training length).
    pub n_ctx: u32,
    /// Most tokens one `decode` call accepts.
    pub n_batch: u32,
    /// Physical micro-batch size (must be <= n_batch).
    pub n_ubatch: u32,
    /// Number of distinct sequences.
    pub n_seq_max: u32,
    /// Outputs of one sequence a device sampler handles per decode (llama.cpp's default:
    /// 1). Speculative decoding on a GPU keeps its device sampler for verifications when
    /// this is at least `max_draft + 1` (only token ids then come back per drafted
    /// position instead of full rows of logits; docs/SPECULATIVE.md).
    pub n_outputs_max_per_seq: u32,
    /// Threads for generation (0 = all physical cores as llama.cpp picks).
    pub n_threads: u32,
    /// Threads for prompt processing (0 = same as llama.cpp's default).
    pub n_threads_batch: u32,
    /// Flash attention.
    pub flash_attn: FlashAttn,
    /// Element type of the K cache.
    pub type_k: KvType,
    /// Element type of the V cache (quantized V needs flash attention).
    pub type_v: KvType,
    /// Keep the KV cache and attention on the GPU (llama.cpp's default: true).
    pub offload_kqv: bool,
    /// Let the scheduler move host-resident weights' ops to the GPU (default: true).
    pub op_offload: bool,
    /// Full-size SWA cache (needed to roll back / reuse prefixes beyond the window).
    pub swa_full: bool,
    /// One KV buffer shared by all sequences.
    pub kv_unified: bool,
    /// Compute embeddings (and pool them per `pooling`). Pooled embedding contexts with
    /// several sequences always use a unified KV cache (see `Context::new`).
    pub embeddings: bool,
    /// How embeddings are pooled (with `embeddings`).
    pub pooling: Pooling,
    /// Causal or bidirectional attention (embedding models).
    pub attention: AttentionType,
    /// RoPE scaling type override.
    pub rope_scaling: RopeScaling,
    /// 0 = from model.
    pub rope_freq_base: f32,
    /// 0 = from model.
    pub rope_freq_scale: f32,
    /// Negative = from model.
    pub yarn_ext_factor: f32,
    /// YaRN attention magnitude factor (negative = from model).
    pub yarn_attn_factor: f32,
    /// YaRN low correction dimension (negative = from model).
    pub yarn_beta_fast: f32,
    /// YaRN high correction dimension (negative = from model).
    pub yarn_beta_slow: f32,
    /// YaRN original context size (0 = from model).
    pub yarn_orig_ctx: u32,
    /// Skip perf counters.
    pub no_perf: bool,
}

impl Default for ContextParams {
    fn default() -> Self {
        // SAFETY: returns a plain struct by value; no preconditions.
        let d = unsafe { sys::llama_context_default_params() };
        ContextParams {
            n_ctx: 4096,
            n_batch: d.n_batch,
            n_ubatch: d.n_ubatch,
            n_seq_max: 1,
            n_outputs_max_per_seq: d.n_outputs_max_per_seq.max(1),
            n_threads: 0,
            n_threads_batch: 0,
            flash_attn: FlashAttn::Auto,
            type_k: KvType::F16,
            type_v: KvType::F16,
            offload_kqv: d.offload_kqv,
            op_offload: d.op_offload,
            // As llama.cpp's tools (llama-server, llama-cli) default: a sliding-window
            // cache only as large as the window needs, not n_ctx (Gemma 3 at 4k context:
            // ~38 MiB less). Set it for prefix reuse beyond the window.
            swa_full: false,
            kv_unified: d.kv_unified,
            embeddings: false,
            pooling: Pooling::Unspecified,
            attention: AttentionType::Unspecified,
            rope_scaling: RopeScaling::Unspecified,
            rope_freq_base: d.rope_freq_base,
            rope_freq_scale: d.rope_freq_scale,
            yarn_ext_factor: d.yarn_ext_factor,
            yarn_attn_factor: d.yarn_attn_factor,
            yarn_beta_fast: d.yarn_beta_fast,
            yarn_beta_slow: d.yarn_beta_slow,
            yarn_orig_ctx: d.yarn_orig_ctx,
            no_perf: false,
        }
    }
}

impl ContextParams {
    setters! {
        n_ctx: u32, n_batch: u32, n_ubatch: u32, n_seq_max: u32, n_outputs_max_per_seq: u32, n_threads: u32,
        n_threads_batch: u32, flash_attn: FlashAttn, offload_kqv: bool, op_offload: bool,
        swa_full: bool, kv_unified: bool, embeddings: bool, pooling: Pooling,
        attention: AttentionType, rope_scaling: RopeScaling, rope_freq_base: f32,
        rope_freq_scale: f32, yarn_ext_factor: f32, yarn_attn_factor: f32,
        yarn_beta_fast: f32, yarn_beta_slow: f32, yarn_orig_ctx: u32, no_perf: bool,
    }

    /// K and V cache element types.
    pub fn kv_types(mut self, k: KvType, v: KvType) -> Self {
        self.type_k = k;
        self.type_v = v;
        self
    }

    /// Checks the combinations llama.cpp would reject or abort on.
    pub(super) fn validate(&self) -> Result<()> {
        let bad = |name: &str, m: String| Err(Error::invalid(name, m));
        if self.n_batch == 0 || self.n_ubatch == 0 {
            return bad("n_batch", "n_batch and n_ubatch must be > 0".into());
        }
        if self.n_ubatch > self.n_batch {
            return bad("n_ubatch", format!("n_ubatch ({}) must be <= n_batch ({})", self.n_ubatch, self.n_batch));
        }
        // SAFETY: a pure query.
        let max_seq = unsafe { sys::llama_max_parallel_sequences() } as u32;
        if self.n_seq_max == 0 || self.n_seq_max > max_seq {
            return bad("n_seq_max", format!("n_seq_max must be in 1..={max_seq}, got {}", self.n_seq_max));
        }
        if self.n_outputs_max_per_seq == 0 || self.n_outputs_max_per_seq > self.n_batch {
            return bad(
                "n_outputs_max_per_seq",
                format!(
                    "n_outputs_max_per_seq must be in 1..=n_batch ({}), got {}",
                    self.n_batch, self.n_outputs_max_per_seq
                ),
            );
        }
        if self.n_seq_max > self.n_batch {
            // llama.cpp reserves one output row per sequence inside an n_batch-row
            // buffer and asserts (llama-context.cpp output_reserve) when it cannot.
            return bad("n_seq_max", format!("n_seq_max ({}) must be <= n_batch ({})", self.n_seq_max, self.n_batch));
        }
        if self.type_v.is_quantized() && self.flash_attn == FlashAttn::Off {
            return bad(
                "type_v",
                format!("quantized V cache ({:?}) requires flash attention (Auto or On)", self.type_v),
            );
        }
        // ggml's thread pool holds at most GGML_MAX_N_THREADS; creating more threads
        // than the system allows throws inside ggml (an exception across the C API).
        let max = sys::GGML_MAX_N_THREADS;
        if self.n_threads > max || self.n_threads_batch > max {
            return bad(
                "n_threads",
                format!(
                    "n_threads ({}) and n_threads_batch ({}) must be <= {max} (0 = all cores)",
                    self.n_threads, self.n_threads_batch
                ),
            );
        }
        // RoPE/YaRN: llama.cpp reads a negative YaRN value (and a zero frequency) as
        // "from the model" and takes NaN through its `>= 0` tests as that too, or into the
        // rope kernels (NaN logits returned as Ok). Every value must be a number; the
        // frequencies, which have no "from model" sign, must not be negative.
        check_finite("rope_freq_base", self.rope_freq_base)?;
        check_finite("rope_freq_scale", self.rope_freq_scale)?;
        check_finite("yarn_ext_factor", self.yarn_ext_factor)?;
        check_finite("yarn_attn_factor", self.yarn_attn_factor)?;
        check_finite("yarn_beta_fast", self.yarn_beta_fast)?;
        check_finite("yarn_beta_slow", self.yarn_beta_slow)?;
        if self.rope_freq_base < 0.0 || self.rope_freq_scale < 0.0 {
            return bad(
                "rope_freq_base",
                format!(
                    "rope_freq_base ({}) and rope_freq_scale ({}) must be >= 0 (0 = from the model)",
                    self.rope_freq_base, self.rope_freq_scale
                ),
            );
        }
        if self.n_ctx != 0 && self.n_ctx < self.n_seq_max {
            return bad("n_ctx", format!("n_ctx ({}) leaves no room for {} sequences", self.n_ctx, self.n_seq_max));
        }
        Ok(())
    }

    pub(super) fn to_raw(&self) -> sys::llama_context_params {
        // SAFETY: returns a plain struct by value; no preconditions.
        let mut r = unsafe { sys::llama_context_default_params() };
        r.n_ctx = self.n_ctx;
        r.n_batch = self.n_batch;
        r.n_ubatch = self.n_ubatch;
        r.n_seq_max = self.n_seq_max;
        r.n_outputs_max_per_seq = self.n_outputs_max_per_seq;
        let threads = default_threads();
        r.n_threads = if self.n_threads == 0 { threads } else { self.n_threads as i32 };
        r.n_threads_batch = if self.n_threads_batch == 0 { r.n_threads } else { self.n_threads_batch as i32 };
        r.flash_attn_type = match self.flash_attn {
            FlashAttn::Auto => sys::LLAMA_FLASH_ATTN_TYPE_AUTO,
            FlashAttn::On => sys::LLAMA_FLASH_ATTN_TYPE_ENABLED,
            FlashAttn::Off => sys::LLAMA_FLASH_ATTN_TYPE_DISABLED,
        };
        r.type_k = self.type_k.raw();
        r.type_v = self.type_v.raw();
        r.offload_kqv = self.offload_kqv;
        r.op_offload = self.op_offload;
        r.swa_full = self.swa_full;
        r.kv_unified = self.kv_unified;
        r.embeddings = self.embeddings;
        r.pooling_type = match self.pooling {
            Pooling::Unspecified => sys::LLAMA_POOLING_TYPE_UNSPECIFIED,
            Pooling::None => sys::LLAMA_POOLING_TYPE_NONE,
            Pooling::Mean => sys::LLAMA_POOLING_TYPE_MEAN,
            Pooling::Cls => sys::LLAMA_POOLING_TYPE_CLS,
            Pooling::Last => sys::LLAMA_POOLING_TYPE_LAST,
            Pooling::Rank => sys::LLAMA_POOLING_TYPE_RANK,
        };
        r.attention_type = match self.attention {
            AttentionType::Unspecified => sys::LLAMA_ATTENTION_TYPE_UNSPECIFIED,
            AttentionType::Causal => sys::LLAMA_ATTENTION_TYPE_CAUSAL,
            AttentionType::NonCausal => sys::LLAMA_ATTENTION_TYPE_NON_CAUSAL,
        };
        r.rope_scaling_type = match self.rope_scaling {
            RopeScaling::Unspecified => sys::LLAMA_ROPE_SCALING_TYPE_UNSPECIFIED,
            RopeScaling::None => sys::LLAMA_ROPE_SCALING_TYPE_NONE,
            RopeScaling::Linear => sys::LLAMA_ROPE_SCALING_TYPE_LINEAR,
            RopeScaling::Yarn => sys::LLAMA_ROPE_SCALING_TYPE_YARN,
            RopeScaling::LongRope => sys::LLAMA_ROPE_SCALING_TYPE_LONGROPE,
        };
        r.rope_freq_base = self.rope_freq_base;
        r.rope_freq_scale = self.rope_freq_scale;
        r.yarn_ext_factor = self.yarn_ext_factor;
        r.yarn_attn_factor = self.yarn_attn_factor;
        r.yarn_beta_fast = self.yarn_beta_fast;
        r.yarn_beta_slow = self.yarn_beta_slow;
        r.yarn_orig_ctx = self.yarn_orig_ctx;
        r.no_perf = self.no_perf;
        r
    }
}

/// Physical cores, as llama.cpp's tools pick by default (at most 4 on hosts where
/// more threads stop helping generation is left to the caller).
fn default_threads() -> i32 {
    std::thread::available_parallelism().map(|n| n.get() as i32).unwrap_or(4)
}
