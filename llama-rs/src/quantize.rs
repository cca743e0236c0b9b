//! Quantizing a GGUF model to another type.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use llama_sys as sys;
use serde::{Deserialize, Serialize};

use crate::backend;
use crate::error::{backend_error, Result};
use crate::ffi::path_cstring;
use crate::gguf::check_gguf_header;

/// Target types that need no importance matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(non_camel_case_types)]
pub enum FileType {
    /// 32-bit floats (no quantization).
    F32,
    /// 16-bit IEEE floats.
    F16,
    /// bfloat16.
    BF16,
    /// 4.5 bits per weight, one scale per 32 weights.
    Q4_0,
    /// 5 bits per weight, scale and minimum per 32 weights.
    Q4_1,
    /// 5.5 bits per weight, one scale per 32 weights.
    Q5_0,
    /// 6 bits per weight, scale and minimum per 32 weights.
    Q5_1,
    /// 8.5 bits per weight: close to lossless.
    Q8_0,
    /// K-quant, about 2.6 bits per weight (smallest, lowest quality).
    Q2_K,
    /// K-quant, about 3.4 bits per weight, small mix.
    Q3_K_S,
    /// K-quant, about 3.9 bits per weight, medium mix.
    Q3_K_M,
    /// K-quant, about 4.3 bits per weight, large mix.
    Q3_K_L,
    /// K-quant, about 4.6 bits per weight, small mix.
    Q4_K_S,
    /// K-quant, about 4.9 bits per weight, medium mix (a common default).
    Q4_K_M,
    /// K-quant, about 5.5 bits per weight, small mix.
    Q5_K_S,
    /// K-quant, about 5.7 bits per weight, medium mix.
    Q5_K_M,
    /// K-quant, about 6.6 bits per weight.
    Q6_K,
    /// Non-linear 4.5 bits per weight (blocks of 32).
    IQ4_NL,
    /// Non-linear 4.25 bits per weight (super-blocks of 256).
    IQ4_XS,
}

impl FileType {
    fn raw(self) -> sys::llama_ftype {
        use FileType::*;
        match self {
            F32 => sys::LLAMA_FTYPE_ALL_F32,
            F16 => sys::LLAMA_FTYPE_MOSTLY_F16,
            BF16 => sys::LLAMA_FTYPE_MOSTLY_BF16,
            Q4_0 => sys::LLAMA_FTYPE_MOSTLY_Q4_0,
            Q4_1 => sys::LLAMA_FTYPE_MOSTLY_Q4_1,
            Q5_0 => sys::LLAMA_FTYPE_MOSTLY_Q5_0,
            Q5_1 => sys::LLAMA_FTYPE_MOSTLY_Q5_1,
            Q8_0 => sys::LLAMA_FTYPE_MOSTLY_Q8_0,
            Q2_K => sys::LLAMA_FTYPE_MOSTLY_Q2_K,
            Q3_K_S => sys::LLAMA_FTYPE_MOSTLY_Q3_K_S,
            Q3_K_M => sys::LLAMA_FTYPE_MOSTLY_Q3_K_M,
            Q3_K_L => sys::LLAMA_FTYPE_MOSTLY_Q3_K_L,
            Q4_K_S => sys::LLAMA_FTYPE_MOSTLY_Q4_K_S,
            Q4_K_M => sys::LLAMA_FTYPE_MOSTLY_Q4_K_M,
            Q5_K_S => sys::LLAMA_FTYPE_MOSTLY_Q5_K_S,
            Q5_K_M => sys::LLAMA_FTYPE_MOSTLY_Q5_K_M,
            Q6_K => sys::LLAMA_FTYPE_MOSTLY_Q6_K,
            IQ4_NL => sys::LLAMA_FTYPE_MOSTLY_IQ4_NL,
            IQ4_XS => sys::LLAMA_FTYPE_MOSTLY_IQ4_XS,
        }
    }
}

/// Options of [`quantize`].
///
/// ```
/// use llama_rs::{quantize, FileType, QuantizeParams};
/// let out = std::env::temp_dir().join("doc-q8_0.gguf");
/// let params = QuantizeParams::new(FileType::Q8_0).allow_requantize(true);
/// quantize(llama_testkit::default_model_path()?, &out, &params, |bytes| eprint!("\r{} MiB", bytes >> 20))?;
/// assert!(llama_rs::Model::load(&out, Default::default())?.description().contains("Q8_0"));
/// # std::fs::remove_file(&out).unwrap();
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizeParams {
    /// The target type.
    pub ftype: FileType,
    /// 0 = all cores.
    pub threads: u32,
    /// Allow re-quantizing already quantized tensors (quality loss).
    pub allow_requantize: bool,
    /// Quantize the output (lm head) tensor too, instead of keeping it at higher precision.
    pub quantize_output_tensor: bool,
    /// Quantize every tensor to `ftype` (no per-tensor mix).
    pub pure: bool,
    /// Keep the input's shard layout.
    pub keep_split: bool,
}

impl QuantizeParams {
    /// Parameters for `ftype` with llama.cpp's defaults (all cores, output tensor quantized).
    pub fn new(ftype: FileType) -> Self {
        QuantizeParams {
            ftype,
            threads: 0,
            allow_requantize: false,
            quantize_output_tensor: true,
            pure: false,
            keep_split: false,
        }
    }

    setters! { allow_requantize: bool, threads: u32, pure: bool }
}

/// Quantizes `input` into `output`. `progress` is called about 10 times a second with
/// the bytes written so far. The output appears only when complete: it is written to
/// a scratch file beside it (a new, unique name: never the input) and renamed.
pub fn quantize(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    params: &QuantizeParams,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let (input, output) = (input.as_ref(), output.as_ref());
    backend::init();
    check_gguf_header(input)?;
    let (partial, _) = crate::tempfile::create_beside(output)?;
    let c_in = path_cstring(input)?;
    let c_out = path_cstring(&partial)?;
    // SAFETY: returns a plain struct by value; no preconditions.
    let mut raw = unsafe { sys::llama_model_quantize_default_params() };
    raw.ftype = params.ftype.raw();
    raw.nthread = params.threads.min(1024) as i32;
    raw.allow_requantize = params.allow_requantize;
    raw.quantize_output_tensor = params.quantize_output_tensor;
    raw.pure_ = params.pure;
    raw.keep_split = params.keep_split;

    let raw = NullPtrParams(raw);
    let done = Arc::new(AtomicBool::new(false));
    let rc = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            let raw = &raw;
            // SAFETY: valid C paths and params for the duration of the call; llama.cpp
            // reports every failure as a non-zero return (exceptions are caught inside).
            let rc = unsafe { sys::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &raw.0) };
            done.store(true, Ordering::Release);
            rc
        });
        while !done.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(m) = std::fs::metadata(&partial) {
                progress(m.len());
            }
        }
        worker.join().unwrap_or(u32::MAX)
    });
    if rc != 0 {
        let _ = std::fs::remove_file(&partial);
        return Err(backend_error("llama_model_quantize", Some(rc as i32)));
    }
    crate::tempfile::persist(&partial, output)
}

/// Quantize params whose pointer fields are all NULL (imatrix, overrides, pruning).
struct NullPtrParams(sys::llama_model_quantize_params);

// SAFETY: (contract) every pointer inside is NULL (we never set them), so sending or
// sharing the struct shares no memory; the rest is plain data.
unsafe impl Send for NullPtrParams {}
// SAFETY: as above.
unsafe impl Sync for NullPtrParams {}
