//! LoRA adapters and control vectors.

use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

use llama_sys as sys;

use crate::context::Context;
use crate::error::{backend_error, Error, Result};
use crate::ffi::{path_cstring, read_string};
use crate::gguf::check_gguf_header;
use crate::model::Model;

struct LoraInner {
    ptr: NonNull<sys::llama_adapter_lora>,
    model: Model,
    /// `file_identity` of the adapter file (keys of saved KV state).
    content_id: u64,
}

// SAFETY: (contract) an adapter's tensors are read-only after loading; llama.cpp only
// reads them while computing with a context that has it applied. It is freed once,
// under the model's lock (adapter init/free update the model's adapter registry).
unsafe impl Send for LoraInner {}
// SAFETY: see above; `&LoraInner` exposes only const metadata queries.
unsafe impl Sync for LoraInner {}

impl Drop for LoraInner {
    fn drop(&mut self) {
        let _g = self.model.lock();
        // SAFETY: freed once; every context that applied it holds a clone of the Arc, so
        // no context still uses it.
        unsafe { sys::llama_adapter_lora_free(self.ptr.as_ptr()) }
    }
}

/// A LoRA adapter loaded for one model. Cheap to clone; contexts that apply it keep a
/// clone, so it stays alive while in use.
///
/// ```
/// # use llama_rs::*;
/// let model = Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// // A tiny adapter written on the spot (real ones come from convert_lora_to_gguf.py).
/// let path = std::env::temp_dir().join("doc-lora.gguf");
/// let mut w = llama_testkit::GgufWriter::new();
/// w.kv_str("general.architecture", "gemma3").kv_str("general.type", "adapter")
///  .kv_str("adapter.type", "lora").kv_f32("adapter.lora.alpha", 1.0);
/// w.tensor_f32("blk.0.ffn_up.weight.lora_a", &[640, 1], vec![0.01; 640])?;
/// w.tensor_f32("blk.0.ffn_up.weight.lora_b", &[1, 2048], vec![0.01; 2048])?;
/// w.write(&path)?;
/// let lora = LoraAdapter::load(&model, &path)?;
/// let mut ctx = model.context(Default::default())?;
/// ctx.set_loras(&[(lora.clone(), 0.8)])?;   // apply with scale 0.8
/// ctx.set_loras(&[])?;                      // remove again
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Clone)]
pub struct LoraAdapter {
    inner: Arc<LoraInner>,
}

impl std::fmt::Debug for LoraAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoraAdapter").field("ptr", &self.inner.ptr).finish()
    }
}

impl LoraAdapter {
    /// What identifies the adapter file's contents.
    pub(crate) fn content_id(&self) -> u64 {
        self.inner.content_id
    }

    /// Loads a LoRA GGUF made for `model`'s architecture and shapes.
    pub fn load(model: &Model, path: impl AsRef<Path>) -> Result<LoraAdapter> {
        let path = path.as_ref();
        if model.is_vocab_only() {
            return Err(Error::VocabOnly);
        }
        check_gguf_header(path)?;
        let c = path_cstring(path)?;
        let ptr = {
            let _g = model.lock();
            // SAFETY: valid model and C path; llama.cpp validates the file and returns
            // NULL on any mismatch.
            unsafe { sys::llama_adapter_lora_init(model.as_mut_ptr(), c.as_ptr()) }
        };
        let ptr = NonNull::new(ptr).ok_or_else(|| {
            Error::Adapter(format!("{} is not a LoRA adapter for this model (see the llama.cpp log)", path.display()))
        })?;
        let content_id = crate::model::file_identity(path);
        Ok(LoraAdapter { inner: Arc::new(LoraInner { ptr, model: model.clone(), content_id }) })
    }

    /// One metadata value of the adapter.
    pub fn meta(&self, key: &str) -> Option<String> {
        let k = std::ffi::CString::new(key).ok()?;
        // SAFETY: valid adapter and C string; writes at most `len` bytes.
        read_string(|b, l| unsafe { sys::llama_adapter_meta_val_str(self.inner.ptr.as_ptr(), k.as_ptr(), b, l) })
    }
}

/// A control vector: one `n_embd` direction per layer, added to the residual stream.
///
/// ```
/// let cv = llama_rs::ControlVector::new(640, 18);
/// assert_eq!(cv.data.len(), 640 * 17); // layer 0 has none
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ControlVector {
    /// Embedding width of the model it was made for.
    pub n_embd: usize,
    /// `n_embd` floats for each layer from 1 up (layer 0 is never steered).
    pub data: Vec<f32>,
    /// First and last layer (inclusive) the vector applies to.
    pub layer_start: i32,
    /// Last layer the vector applies to (inclusive).
    pub layer_end: i32,
}

impl ControlVector {
    /// An all-zero vector for a model with `n_embd` and `n_layer`, applying to all layers.
    pub fn new(n_embd: usize, n_layer: usize) -> ControlVector {
        ControlVector {
            n_embd,
            data: vec![0.0; n_embd * n_layer.saturating_sub(1)],
            layer_start: 1,
            layer_end: n_layer as i32 - 1,
        }
    }

    /// The direction for layer `il` (>= 1).
    pub fn layer_mut(&mut self, il: usize) -> Option<&mut [f32]> {
        let off = self.n_embd.checked_mul(il.checked_sub(1)?)?;
        self.data.get_mut(off..off + self.n_embd)
    }
}

impl Context {
    /// Applies LoRA adapters with scales, replacing any applied before; `&[]` removes all.
    pub fn set_loras(&mut self, adapters: &[(LoraAdapter, f32)]) -> Result<()> {
        for (a, s) in adapters {
            if a.inner.model.as_ptr() != self.model().as_ptr() {
                return Err(Error::Adapter("adapter was loaded for another model".into()));
            }
            if !s.is_finite() {
                return Err(Error::Adapter(format!("scale {s} is not finite")));
            }
        }
        let mut ptrs: Vec<*mut sys::llama_adapter_lora> = adapters.iter().map(|(a, _)| a.inner.ptr.as_ptr()).collect();
        let mut scales: Vec<f32> = adapters.iter().map(|(_, s)| *s).collect();
        // SAFETY: valid context; adapters belong to its model and are kept alive below
        // for as long as they are applied.
        let rc =
            unsafe { sys::llama_set_adapters_lora(self.as_ptr(), ptrs.as_mut_ptr(), ptrs.len(), scales.as_mut_ptr()) };
        if rc != 0 {
            return Err(backend_error("llama_set_adapters_lora", Some(rc)));
        }
        self.applied_loras = adapters.iter().map(|(a, s)| (a.clone(), *s)).collect();
        Ok(())
    }

    /// Applies a control vector (replacing the previous one).
    pub fn set_control_vector(&mut self, cv: &ControlVector) -> Result<()> {
        let n_embd = self.model().n_embd();
        let n_layer = self.model().n_layer() as i32;
        if cv.n_embd != n_embd {
            return Err(Error::Adapter(format!("control vector n_embd {} != model n_embd {n_embd}", cv.n_embd)));
        }
        if cv.data.len() % n_embd != 0 || cv.data.len() > n_embd * (n_layer.max(1) as usize - 1) {
            return Err(Error::Adapter(format!(
                "control vector has {} floats; expected a multiple of {n_embd}, at most {} layers",
                cv.data.len(),
                n_layer - 1
            )));
        }
        if cv.layer_start < 1 || cv.layer_end < cv.layer_start || cv.layer_end >= n_layer {
            return Err(Error::Adapter(format!(
                "layer range {}..={} outside 1..={}",
                cv.layer_start,
                cv.layer_end,
                n_layer - 1
            )));
        }
        if cv.data.iter().any(|v| !v.is_finite()) {
            return Err(Error::Adapter("control vector has non-finite values".into()));
        }
        // SAFETY: data is readable for len floats; n_embd matches the model (checked).
        let rc = unsafe {
            sys::llama_set_adapter_cvec(
                self.as_ptr(),
                cv.data.as_ptr(),
                cv.data.len(),
                n_embd as i32,
                cv.layer_start,
                cv.layer_end,
            )
        };
        if rc != 0 {
            return Err(backend_error("llama_set_adapter_cvec", Some(rc)));
        }
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        h.update(&[cv.layer_start, cv.layer_end].map(i32::to_le_bytes).concat());
        for v in &cv.data {
            h.update(&v.to_le_bytes());
        }
        self.applied_cvec = h.digest();
        Ok(())
    }

    /// Removes the control vector.
    pub fn clear_control_vector(&mut self) {
        // SAFETY: NULL data clears the vector; no other precondition.
        unsafe { sys::llama_set_adapter_cvec(self.as_ptr(), std::ptr::null(), 0, 0, 0, 0) };
        self.applied_cvec = 0;
    }
}
