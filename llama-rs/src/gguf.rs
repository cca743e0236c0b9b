//! [`GgufWriter`]: writes GGUF files (metadata + f32 tensors) in pure Rust — for LoRA
//! adapters, synthetic models for benchmarks, and test corpora.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

const ALIGN: usize = 32;

enum Value {
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    StrArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
}

struct Tensor {
    name: String,
    /// ggml order: ne[0] is the contiguous dimension.
    ne: Vec<u64>,
    data: Vec<f32>,
}

/// Builds a GGUF v3 file with metadata and f32 tensors.
///
/// ```
/// let dir = std::env::temp_dir().join("gguf-writer-doc");
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut w = llama_rs::GgufWriter::new();
/// w.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2);
/// w.tensor_f32("t.weight", &[4, 2], vec![0.5; 8])?;
/// w.write(dir.join("tiny.gguf"))?;
/// assert_eq!(&std::fs::read(dir.join("tiny.gguf")).unwrap()[..4], b"GGUF");
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Default)]
pub struct GgufWriter {
    kv: Vec<(String, Value)>,
    tensors: Vec<Tensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.kv.push((k.into(), Value::Str(v.into())));
        self
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.kv.push((k.into(), Value::U32(v)));
        self
    }
    pub fn kv_i32(&mut self, k: &str, v: i32) -> &mut Self {
        self.kv.push((k.into(), Value::I32(v)));
        self
    }
    pub fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
        self.kv.push((k.into(), Value::F32(v)));
        self
    }
    pub fn kv_bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.kv.push((k.into(), Value::Bool(v)));
        self
    }
    pub fn kv_str_array(&mut self, k: &str, v: Vec<String>) -> &mut Self {
        self.kv.push((k.into(), Value::StrArray(v)));
        self
    }
    pub fn kv_i32_array(&mut self, k: &str, v: Vec<i32>) -> &mut Self {
        self.kv.push((k.into(), Value::I32Array(v)));
        self
    }
    pub fn kv_f32_array(&mut self, k: &str, v: Vec<f32>) -> &mut Self {
        self.kv.push((k.into(), Value::F32Array(v)));
        self
    }

    /// Adds an f32 tensor with dimensions `ne` in ggml order (`ne[0]` contiguous).
    pub fn tensor_f32(&mut self, name: &str, ne: &[u64], data: Vec<f32>) -> Result<&mut Self> {
        let n: u64 = ne.iter().product();
        if ne.is_empty() || ne.len() > 4 || n != data.len() as u64 {
            return Err(Error::InvalidParam(format!("tensor {name}: shape {ne:?} does not hold {} values", data.len())));
        }
        self.tensors.push(Tensor { name: name.into(), ne: ne.to_vec(), data });
        Ok(self)
    }

    /// Writes the file (to `<path>.partial`, then renamed).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut b, k);
            put_value(&mut b, v);
        }
        let mut offset = 0usize;
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&0u32.to_le_bytes()); // GGML_TYPE_F32
            b.extend_from_slice(&(offset as u64).to_le_bytes());
            offset += (t.data.len() * 4).next_multiple_of(ALIGN);
        }
        b.resize(b.len().next_multiple_of(ALIGN), 0);
        for t in &self.tensors {
            for v in &t.data {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.resize(b.len().next_multiple_of(ALIGN), 0);
        }
        let tmp = path.with_extension("partial");
        std::fs::File::create(&tmp)
            .and_then(|mut f| f.write_all(&b))
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| Error::Io { path: path.into(), source: e })
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

// GGUF value type ids.
const T_I32: u32 = 5;
const T_U32: u32 = 4;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARR: u32 = 9;

fn put_value(b: &mut Vec<u8>, v: &Value) {
    let mut ty = |t: u32| b.extend_from_slice(&t.to_le_bytes());
    match v {
        Value::U32(x) => {
            ty(T_U32);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::I32(x) => {
            ty(T_I32);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::F32(x) => {
            ty(T_F32);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::Bool(x) => {
            ty(T_BOOL);
            b.push(*x as u8);
        }
        Value::Str(s) => {
            ty(T_STR);
            put_str(b, s);
        }
        Value::StrArray(a) => {
            ty(T_ARR);
            b.extend_from_slice(&T_STR.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for s in a {
                put_str(b, s);
            }
        }
        Value::I32Array(a) => {
            ty(T_ARR);
            b.extend_from_slice(&T_I32.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
        Value::F32Array(a) => {
            ty(T_ARR);
            b.extend_from_slice(&T_F32.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                b.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
}
