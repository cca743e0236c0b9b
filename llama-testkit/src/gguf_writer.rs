//! [`GgufWriter`]: writes GGUF v3 files (metadata + tensors, streamed) in pure Rust, for
//! synthetic models, crafted hostile files and fuzz corpora.

use std::io::Write;
use std::path::Path;

use llama_rs::{Error, GgufValue, Result};

const ALIGN: usize = 32;

fn type_id(v: &GgufValue) -> u32 {
    match v {
        GgufValue::U8(_) => 0,
        GgufValue::I8(_) => 1,
        GgufValue::U16(_) => 2,
        GgufValue::I16(_) => 3,
        GgufValue::U32(_) => 4,
        GgufValue::I32(_) => 5,
        GgufValue::F32(_) => 6,
        GgufValue::Bool(_) => 7,
        GgufValue::Str(_) => 8,
        GgufValue::Array(_) => 9,
        GgufValue::U64(_) => 10,
        GgufValue::I64(_) => 11,
        GgufValue::F64(_) => 12,
    }
}

/// Writes bytes `offset..offset + chunk.len()` of a generated tensor into `chunk`.
type FillFn = Box<dyn Fn(usize, &mut [u8])>;

enum TensorData {
    Bytes(Vec<u8>),
    /// Filled chunk by chunk at write time (for tensors too big to hold in memory).
    Gen(usize, FillFn),
}

struct Tensor {
    name: String,
    /// ggml order: ne[0] is the contiguous dimension.
    ne: Vec<u64>,
    ggml_type: u32,
    data: TensorData,
}

impl Tensor {
    fn len(&self) -> usize {
        match &self.data {
            TensorData::Bytes(b) => b.len(),
            TensorData::Gen(n, _) => *n,
        }
    }
}

/// Builds a GGUF v3 file with metadata and f32 tensors.
///
/// ```
/// let dir = std::env::temp_dir().join("gguf-writer-doc");
/// std::fs::create_dir_all(&dir).unwrap();
/// let mut w = llama_testkit::GgufWriter::new();
/// w.kv_str("general.architecture", "llama").kv_u32("llama.block_count", 2);
/// w.tensor_f32("t.weight", &[4, 2], vec![0.5; 8])?;
/// w.write(dir.join("tiny.gguf"))?;
/// assert_eq!(&std::fs::read(dir.join("tiny.gguf")).unwrap()[..4], b"GGUF");
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Default)]
pub struct GgufWriter {
    kv: Vec<(String, GgufValue)>,
    tensors: Vec<Tensor>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets any metadata value (replacing an earlier one with the same key).
    pub fn kv(&mut self, k: &str, v: GgufValue) -> &mut Self {
        self.kv.retain(|(key, _)| key != k);
        self.kv.push((k.into(), v));
        self
    }
    pub fn kv_str(&mut self, k: &str, v: &str) -> &mut Self {
        self.kv(k, GgufValue::Str(v.into()))
    }
    pub fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.kv(k, GgufValue::U32(v))
    }
    pub fn kv_i32(&mut self, k: &str, v: i32) -> &mut Self {
        self.kv(k, GgufValue::I32(v))
    }
    pub fn kv_f32(&mut self, k: &str, v: f32) -> &mut Self {
        self.kv(k, GgufValue::F32(v))
    }
    pub fn kv_bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.kv(k, GgufValue::Bool(v))
    }

    /// Adds an f32 tensor with dimensions `ne` in ggml order (`ne[0]` contiguous).
    pub fn tensor_f32(&mut self, name: &str, ne: &[u64], data: Vec<f32>) -> Result<&mut Self> {
        // A shape whose element count wraps (e.g. [2^32, 2^32]) must not pass as 0 values.
        let n = ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d));
        if ne.is_empty() || ne.len() > 4 || n != Some(data.len() as u64) {
            return Err(Error::invalid("", format!("tensor {name}: shape {ne:?} does not hold {} values", data.len())));
        }
        let bytes = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push(Tensor { name: name.into(), ne: ne.to_vec(), ggml_type: 0, data: TensorData::Bytes(bytes) });
        Ok(self)
    }

    /// Adds a tensor of any ggml type whose `n_bytes` bytes are produced at write time by
    /// `fill(offset, chunk)`; the caller vouches that the size matches type and shape.
    pub fn tensor_gen(
        &mut self,
        name: &str,
        ne: &[u64],
        ggml_type: u32,
        n_bytes: usize,
        fill: impl Fn(usize, &mut [u8]) + 'static,
    ) -> Result<&mut Self> {
        if ne.is_empty() || ne.len() > 4 || ne.iter().try_fold(1u64, |a, &d| a.checked_mul(d)).is_none() {
            return Err(Error::invalid("", format!("tensor {name}: shape {ne:?}")));
        }
        self.tensors.push(Tensor {
            name: name.into(),
            ne: ne.to_vec(),
            ggml_type,
            data: TensorData::Gen(n_bytes, Box::new(fill)),
        });
        Ok(self)
    }

    /// Writes the file, streaming tensor data (to a scratch file beside it, then renamed).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let (tmp, file) = scratch_beside(path)?;
        let io = |e: std::io::Error| Error::Io { path: path.into(), source: e };
        let r = (|| -> std::io::Result<()> {
            let mut f = std::io::BufWriter::with_capacity(1 << 22, file);
            let mut b: Vec<u8> = Vec::new();
            b.extend_from_slice(b"GGUF");
            b.extend_from_slice(&3u32.to_le_bytes());
            b.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            b.extend_from_slice(&(self.kv.len() as u64).to_le_bytes());
            for (k, v) in &self.kv {
                put_str(&mut b, k);
                b.extend_from_slice(&type_id(v).to_le_bytes());
                put_value(&mut b, v);
            }
            let mut offset = 0usize;
            for t in &self.tensors {
                put_str(&mut b, &t.name);
                b.extend_from_slice(&(t.ne.len() as u32).to_le_bytes());
                for d in &t.ne {
                    b.extend_from_slice(&d.to_le_bytes());
                }
                b.extend_from_slice(&t.ggml_type.to_le_bytes());
                b.extend_from_slice(&(offset as u64).to_le_bytes());
                offset += t.len().next_multiple_of(ALIGN);
            }
            b.resize(b.len().next_multiple_of(ALIGN), 0);
            f.write_all(&b)?;
            let mut chunk = vec![0u8; 1 << 22];
            for t in &self.tensors {
                match &t.data {
                    TensorData::Bytes(d) => f.write_all(d)?,
                    TensorData::Gen(n, fill) => {
                        let mut done = 0;
                        while done < *n {
                            let m = (*n - done).min(chunk.len());
                            fill(done, &mut chunk[..m]);
                            f.write_all(&chunk[..m])?;
                            done += m;
                        }
                    }
                }
                let pad = t.len().next_multiple_of(ALIGN) - t.len();
                f.write_all(&[0u8; ALIGN][..pad])?;
            }
            f.flush()?;
            drop(f);
            std::fs::rename(&tmp, path)
        })();
        r.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => b.push(*x),
        GgufValue::I8(x) => b.push(*x as u8),
        GgufValue::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Bool(x) => b.push(*x as u8),
        GgufValue::Str(s) => put_str(b, s),
        GgufValue::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
        GgufValue::Array(a) => {
            let et = a.first().map_or(4, type_id);
            b.extend_from_slice(&et.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(b, x);
            }
        }
    }
}

/// A new scratch file in `path`'s directory, named after it, the process and a counter:
/// never an existing file (`create_new`), so never one a reader has mapped.
fn scratch_beside(path: &Path) -> Result<(std::path::PathBuf, std::fs::File)> {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_file_name(format!(".{name}.{}-{n}.partial", std::process::id()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    Ok((tmp, file))
}
