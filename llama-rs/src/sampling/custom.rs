//! Samplers written in Rust inside llama.cpp's chain: [`CustomSampler`] and the
//! `extern "C"` trampolines that call it (panics are caught and resumed after C returns).

use std::any::Any;
use std::ffi::c_char;

use llama_sys as sys;

use crate::backend::guard;
use crate::token::Token;
/// Candidate tokens handed to a [`CustomSampler`]: a view of llama.cpp's
/// `llama_token_data_array`.
pub struct Candidates<'a> {
    raw: &'a mut sys::llama_token_data_array,
}

impl Candidates<'_> {
    fn data(&self) -> &[sys::llama_token_data] {
        if self.raw.size == 0 || self.raw.data.is_null() {
            return &[];
        }
        // SAFETY: llama.cpp passes `size` valid entries at `data` for this call.
        unsafe { std::slice::from_raw_parts(self.raw.data, self.raw.size) }
    }
    fn data_mut(&mut self) -> &mut [sys::llama_token_data] {
        if self.raw.size == 0 || self.raw.data.is_null() {
            return &mut [];
        }
        // SAFETY: as above, and we hold the only reference for this call.
        unsafe { std::slice::from_raw_parts_mut(self.raw.data, self.raw.size) }
    }
    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.raw.size
    }
    /// Whether no candidates are left.
    pub fn is_empty(&self) -> bool {
        self.raw.size == 0
    }
    /// Token id of candidate `i`.
    pub fn token(&self, i: usize) -> Token {
        Token(self.data()[i].id)
    }
    /// Logit of candidate `i`.
    pub fn logit(&self, i: usize) -> f32 {
        self.data()[i].logit
    }
    /// Changes the logit of candidate `i` (marks the array unsorted).
    pub fn set_logit(&mut self, i: usize, logit: f32) {
        self.data_mut()[i].logit = logit;
        self.raw.sorted = false;
    }
    /// Iterates `(token, logit)`.
    pub fn iter(&self) -> impl Iterator<Item = (Token, f32)> + '_ {
        self.data().iter().map(|d| (Token(d.id), d.logit))
    }
    /// Keeps only the first `n` candidates.
    pub fn truncate(&mut self, n: usize) {
        self.raw.size = self.raw.size.min(n);
    }
    /// Selects candidate `i` as the sampled token (for samplers that choose).
    pub fn select(&mut self, i: usize) {
        if i < self.raw.size {
            self.raw.selected = i as i64;
        }
    }
}

/// A logits processor / sampler written in Rust, placed in the chain with
/// [`SamplerBuilder::custom`](super::SamplerBuilder::custom). Panics are caught at the C boundary and resumed in the
/// caller of `Sampler::sample` once llama.cpp has returned.
///
/// ```
/// use llama_rs::{Candidates, CustomSampler, Token};
/// /// Forbids one token.
/// struct Ban(Token);
/// impl CustomSampler for Ban {
///     fn apply(&mut self, c: &mut Candidates<'_>) {
///         for i in 0..c.len() {
///             if c.token(i) == self.0 { c.set_logit(i, f32::NEG_INFINITY); }
///         }
///     }
/// }
/// ```
pub trait CustomSampler: Send {
    /// Changes the candidates' logits, or removes candidates. Leaving none is an error of this sample call, not an abort.
    fn apply(&mut self, candidates: &mut Candidates<'_>);
    /// Called with each token the chain accepts (for stateful samplers, e.g. penalties).
    fn accept(&mut self, _token: Token) {}
    /// Called when the sampler is reset (a new generation starts).
    fn reset(&mut self) {}
}

pub(super) struct CustomState {
    pub(super) inner: Box<dyn CustomSampler>,
    pub(super) panic: Option<Box<dyn Any + Send>>,
    /// The sampler left no candidates: later stages assert `cur_p->size > 0`, so the
    /// size was restored and the sample call returns an error.
    pub(super) emptied: bool,
}

unsafe extern "C" fn custom_name(_: *const sys::llama_sampler) -> *const c_char {
    c"rust-custom".as_ptr()
}

unsafe extern "C" fn custom_apply(smpl: *mut sys::llama_sampler, cur_p: *mut sys::llama_token_data_array) {
    // SAFETY: `ctx` is the Box<CustomState> leaked in `SamplerBuilder::custom`, alive until
    // `custom_free`; llama.cpp calls samplers from one thread at a time (the Sampler is
    // not Sync); `cur_p` is valid for this call.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    // SAFETY: llama.cpp passes a valid candidate array, exclusively ours for this call.
    let raw = unsafe { &mut *cur_p };
    let inner = &mut st.inner;
    let size = raw.size;
    guard(&mut st.panic, (), || inner.apply(&mut Candidates { raw: &mut *raw }));
    if raw.size == 0 && size > 0 {
        raw.size = size;
        st.emptied = true;
    }
}

unsafe extern "C" fn custom_accept(smpl: *mut sys::llama_sampler, token: i32) {
    // SAFETY: as in `custom_apply`.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    let inner = &mut st.inner;
    guard(&mut st.panic, (), || inner.accept(Token(token)));
}

unsafe extern "C" fn custom_reset(smpl: *mut sys::llama_sampler) {
    // SAFETY: as in `custom_apply`.
    let st = unsafe { &mut *((*smpl).ctx as *mut CustomState) };
    let inner = &mut st.inner;
    guard(&mut st.panic, (), || inner.reset());
}

unsafe extern "C" fn custom_free(smpl: *mut sys::llama_sampler) {
    // SAFETY: called once by llama_sampler_free; reclaims the Box leaked at creation.
    // Dropping user code may panic: never let that unwind into C.
    let st = unsafe { Box::from_raw((*smpl).ctx as *mut CustomState) };
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(st)));
}

pub(super) static CUSTOM_IFACE: sys::llama_sampler_i = sys::llama_sampler_i {
    name: Some(custom_name),
    accept: Some(custom_accept),
    apply: Some(custom_apply),
    reset: Some(custom_reset),
    clone: None,
    free: Some(custom_free),
    backend_init: None,
    backend_accept: None,
    backend_apply: None,
    backend_set_input: None,
    backend_reset: None,
    copy_state: None,
};
