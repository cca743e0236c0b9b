//! Sampling inside the compute graph ([`DeviceSampler`]).

use std::ptr::NonNull;

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use super::{Context, Output};
use crate::error::{backend_error, Error, Result};
use crate::ffi::RawSampler;
use crate::token::{SeqId, Token};

/// A sampling step that runs inside the compute graph, on the device that holds the
/// output layer, so that only a token id or `k` candidates come back to the host
/// instead of the whole logits row (1 MiB per token for a 262k vocabulary, copied from
/// GPU memory). Attach one with [`Context::set_device_sampler`]; a [`Sampler`](crate::Sampler) whose
/// chain starts with the same step finishes on the host ([`Sampler::device_step`](crate::Sampler::device_step)).
///
/// ```
/// use llama_rs::{DeviceSampler, SamplerConfig};
/// let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let greedy = SamplerConfig::greedy().build(&model)?;
/// assert_eq!(greedy.device_step(), Some(DeviceSampler::Greedy));
/// let default = SamplerConfig::default().build(&model)?; // top-k 40 first
/// assert_eq!(default.device_step(), Some(DeviceSampler::TopK(40)));
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceSampler {
    /// Argmax: the token id comes back.
    Greedy,
    /// The `k` largest logits and their token ids come back (unordered).
    TopK(u32),
}

/// Largest `k` of a [`DeviceSampler::TopK`]: llama.cpp checks every device chain on a
/// probe tensor of this many logits (`llama_sampler_backend_support`).
pub const DEVICE_TOP_K_MAX: u32 = 128 * 1024;

impl DeviceSampler {
    /// A fresh llama.cpp chain for this step (a chain can be attached only once).
    pub(crate) fn chain(self, n_vocab: i32) -> Result<RawSampler> {
        let chain = RawSampler::chain()?;
        // SAFETY: plain-value constructors returning new owned samplers (k checked by
        // the caller to be in 1..=n_vocab).
        let stage = unsafe {
            match self {
                // A two-stage argmax (see the shim): llama.cpp's single argmax over a
                // large vocabulary runs in one thread block on GPUs.
                DeviceSampler::Greedy => sys::llama_rs_sampler_init_split_greedy(n_vocab),
                DeviceSampler::TopK(k) => {
                    debug_assert!(k >= 1 && k as i64 <= n_vocab as i64);
                    sys::llama_sampler_init_top_k(k as i32)
                }
            }
        };
        let stage =
            NonNull::new(stage).ok_or_else(|| backend_error("llama_sampler_init_top_k / split_greedy", None))?;
        // SAFETY: both valid; the chain takes ownership of `stage`.
        unsafe { sys::llama_sampler_chain_add(chain.0.as_ptr(), stage.as_ptr()) };
        Ok(chain)
    }
}

impl Context {
    /// Runs `step` inside the compute graph for every output of sequence `seq` from the
    /// next decode on (`None` detaches it). Returns `false` when llama.cpp cannot run it
    /// on the backend (unsupported op, tensor split mode): nothing is attached then and
    /// outputs keep their logits. Outputs of such a sequence have no host logits; read
    /// them with [`Sampler::sample`](crate::Sampler::sample), [`Context::sampled_token`] or
    /// [`Context::sampled_candidates`].
    ///
    /// ```
    /// use llama_rs::{Batch, DeviceSampler};
    /// let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
    /// let mut ctx = model.context(Default::default())?;
    /// assert!(ctx.set_device_sampler(0, Some(DeviceSampler::Greedy))?);
    /// let mut batch = Batch::new(512, 1)?;
    /// batch.add_sequence(&model.vocab().tokenize("The capital of France is", true, false)?, 0, 0, true)?;
    /// ctx.decode(&mut batch)?;
    /// let next = ctx.sampled_token(batch.len() - 1)?;
    /// assert!(ctx.logits(batch.len() - 1).is_err()); // never copied off the device
    /// # let _ = next;
    /// # Ok::<(), llama_rs::Error>(())
    /// ```
    pub fn set_device_sampler(&mut self, seq: SeqId, step: Option<DeviceSampler>) -> Result<bool> {
        self.check_seq(seq)?;
        if step.is_some() && self.params.embeddings {
            return Err(Error::invalid("", "device samplers need a context without embeddings".into()));
        }
        if let Some(DeviceSampler::TopK(k)) = step {
            // llama.cpp checks a device chain by building it over a probe tensor of
            // 131,072 logits (`llama_sampler_backend_support`): a larger k asserts
            // `a->ne[0] >= k` in `ggml_top_k` there, whatever the vocabulary or the
            // sequence count. The graph's own rows hold n_vocab logits.
            let max = (self.n_vocab as i64).min(DEVICE_TOP_K_MAX as i64).max(1);
            if k == 0 || k as i64 > max {
                return Err(Error::invalid(
                    "",
                    format!("device top-k needs 1 <= k <= min(n_vocab, {DEVICE_TOP_K_MAX}) ({max}), got {k}"),
                ));
            }
        }
        if self.device_samplers.iter().any(|(s, ..)| *s == seq) {
            // SAFETY: valid context; NULL detaches. Done before the old chain is freed.
            unsafe { sys::llama_set_sampler(self.ptr.as_ptr(), seq, std::ptr::null_mut()) };
            self.device_samplers.retain(|(s, ..)| *s != seq);
        }
        self.outputs.clear(); // earlier outputs' device results may be re-laid out
        let Some(step) = step else { return Ok(true) };
        let chain = step.chain(self.n_vocab)?;
        // SAFETY: valid context and chain; the chain is kept alive in `device_samplers`
        // until it is detached or the context is freed.
        let on = unsafe { sys::llama_set_sampler(self.ptr.as_ptr(), seq, chain.0.as_ptr()) };
        if on {
            self.device_samplers.push((seq, step, chain));
        }
        Ok(on)
    }

    /// The device sampler attached to `seq`, if any.
    pub fn device_sampler(&self, seq: SeqId) -> Option<DeviceSampler> {
        self.device_samplers.iter().find(|(s, ..)| *s == seq).map(|(_, d, _)| *d)
    }

    /// Which device sampler produced the result of batch entry `index` (`None`: it has
    /// host logits). Errors if the entry produced no output.
    pub fn device_sampled(&self, index: usize) -> Result<Option<DeviceSampler>> {
        self.sync()?;
        match self.outputs.get(index) {
            Some(Output::Host) => Ok(None),
            Some(Output::Device(d)) => Ok(Some(*d)),
            _ => Err(Error::NoOutput { index }),
        }
    }

    /// The token a [`DeviceSampler::Greedy`] chose for batch entry `index`.
    pub fn sampled_token(&self, index: usize) -> Result<Token> {
        if self.device_sampled(index)? != Some(DeviceSampler::Greedy) {
            return Err(Error::DeviceSampled { index, reason: "no device sampler chose a token for it" });
        }
        // SAFETY: `index` is an output of the last decode and its sequence has a sampler.
        let t = unsafe { sys::llama_get_sampled_token_ith(self.ptr.as_ptr(), index as i32) };
        if t < 0 || t >= self.n_vocab {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned no sampled token" });
        }
        Ok(Token(t))
    }

    /// The candidates a [`DeviceSampler::TopK`] kept for batch entry `index`: token ids and
    /// their logits (same length, unordered). Borrowed until the next `&mut self` call.
    pub fn sampled_candidates(&self, index: usize) -> Result<(&[Token], &[f32])> {
        if !matches!(self.device_sampled(index)?, Some(DeviceSampler::TopK(_))) {
            return Err(Error::DeviceSampled { index, reason: "no device top-k ran for it" });
        }
        let ctx = self.ptr.as_ptr();
        // SAFETY: `index` is an output of the last decode whose sequence has a top-k
        // sampler; the getters return NULL (not abort) on anything unexpected.
        let (ids, n_ids, logits, n_logits) = unsafe {
            (
                sys::llama_get_sampled_candidates_ith(ctx, index as i32),
                sys::llama_get_sampled_candidates_count_ith(ctx, index as i32),
                sys::llama_get_sampled_logits_ith(ctx, index as i32),
                sys::llama_get_sampled_logits_count_ith(ctx, index as i32),
            )
        };
        if ids.is_null() || logits.is_null() || n_ids != n_logits || n_ids == 0 {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned no sampled candidates" });
        }
        // SAFETY: llama.cpp owns `n` ids and `n` logits for this row until the next
        // decode (which needs `&mut self`); `Token` is `repr(transparent)` over i32.
        let (ids, logits) = unsafe {
            (
                std::slice::from_raw_parts(ids as *const Token, n_ids as usize),
                std::slice::from_raw_parts(logits as *const f32, n_logits as usize),
            )
        };
        if ids.iter().any(|t| t.0 < 0 || t.0 >= self.n_vocab) {
            return Err(Error::DeviceSampled { index, reason: "llama.cpp returned out-of-range candidates" });
        }
        Ok((ids, logits))
    }
}
