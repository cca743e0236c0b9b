//! [`GgufWriter`] writes GGUF files (metadata + tensors, streamed) and
//! [`read_gguf_metadata`] reads their metadata, in pure Rust — for LoRA adapters,
//! synthetic models for benchmarks, and test corpora.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

const ALIGN: usize = 32;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    fn type_id(&self) -> u32 {
        match self {
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
/// let mut w = llama_rs::GgufWriter::new();
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
            return Err(Error::InvalidParam(format!(
                "tensor {name}: shape {ne:?} does not hold {} values",
                data.len()
            )));
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
            return Err(Error::InvalidParam(format!("tensor {name}: shape {ne:?}")));
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
        let (tmp, file) = crate::tempfile::create_beside(path)?;
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
                b.extend_from_slice(&v.type_id().to_le_bytes());
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

/// Reads the metadata (key/value section) of a GGUF file.
///
/// ```
/// let meta = llama_rs::read_gguf_metadata(llama_rs::default_model_path()?)?;
/// let arch = meta.iter().find(|(k, _)| k == "general.architecture").map(|(_, v)| v.clone());
/// assert_eq!(arch, Some(llama_rs::GgufValue::Str("gemma3".into())));
/// # Ok::<(), llama_rs::Error>(())
/// ```
pub fn read_gguf_metadata(path: impl AsRef<Path>) -> Result<Vec<(String, GgufValue)>> {
    Ok(read_layout(path.as_ref(), false)?.meta)
}

/// One tensor's entry in a GGUF tensor table.
#[derive(Debug, Clone)]
pub(crate) struct TensorInfo {
    pub name: String,
    pub ne: Vec<u64>,
    pub ggml_type: u32,
    /// Offset within the data section.
    pub offset: u64,
}

/// A GGUF file's metadata, tensor table and where its data section starts.
#[derive(Debug)]
pub(crate) struct GgufLayout {
    pub meta: Vec<(String, GgufValue)>,
    pub tensors: Vec<TensorInfo>,
    pub data_start: u64,
    pub file_len: u64,
}

/// Reads the metadata and, with `tensors`, the tensor table (for the size check).
pub(crate) fn read_layout(path: &Path, tensors: bool) -> Result<GgufLayout> {
    crate::model::check_gguf_header(path)?;
    let f = std::fs::File::open(path).map_err(|e| Error::Io { path: path.into(), source: e })?;
    let file_len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut r = Reader { r: std::io::BufReader::new(f), path, pos: 0 };
    r.bytes(8)?; // magic + version (checked above)
    let n_tensors = r.u64()?;
    let n_kv = r.u64()?;
    let mut meta = Vec::new();
    for _ in 0..n_kv {
        let k = r.string()?;
        let ty = r.u32()?;
        meta.push((k, r.value(ty, 0)?));
    }
    let mut infos = Vec::new();
    let mut data_start = 0;
    if tensors {
        if n_tensors > 1 << 20 {
            return Err(r.bad("tensor count out of range"));
        }
        for _ in 0..n_tensors {
            let name = r.string()?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > 4 {
                return Err(r.bad(&format!("tensor {name}: {n_dims} dimensions")));
            }
            let ne = (0..n_dims).map(|_| r.u64()).collect::<Result<Vec<_>>>()?;
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            infos.push(TensorInfo { name, ne, ggml_type, offset });
        }
        let align = match meta.iter().find(|(k, _)| k == "general.alignment") {
            Some((_, GgufValue::U32(a))) if a.is_power_of_two() => *a as u64,
            Some(_) => return Err(r.bad("general.alignment must be a power of two (u32)")),
            None => 32,
        };
        data_start = r.pos.next_multiple_of(align);
    }
    Ok(GgufLayout { meta, tensors: infos, data_start, file_len })
}

struct Reader<'p, R> {
    r: R,
    path: &'p Path,
    /// Bytes consumed so far.
    pos: u64,
}

impl<R: std::io::Read> Reader<'_, R> {
    fn bytes(&mut self, n: usize) -> Result<Vec<u8>> {
        if n > 1 << 30 {
            return Err(self.bad("length out of range"));
        }
        let mut b = vec![0u8; n];
        self.r.read_exact(&mut b).map_err(|_| self.bad("truncated metadata"))?;
        self.pos += n as u64;
        Ok(b)
    }
    fn bad(&self, why: &str) -> Error {
        Error::NotGguf { path: self.path.into(), reason: why.into() }
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(8)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()? as usize;
        String::from_utf8(self.bytes(n)?).map_err(|_| self.bad("string is not UTF-8"))
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<GgufValue> {
        let b = |s: &mut Self, n| s.bytes(n);
        Ok(match ty {
            0 => GgufValue::U8(b(self, 1)?[0]),
            1 => GgufValue::I8(b(self, 1)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(b(self, 2)?.try_into().unwrap())),
            3 => GgufValue::I16(i16::from_le_bytes(b(self, 2)?.try_into().unwrap())),
            4 => GgufValue::U32(self.u32()?),
            5 => GgufValue::I32(self.u32()? as i32),
            6 => GgufValue::F32(f32::from_bits(self.u32()?)),
            7 => GgufValue::Bool(b(self, 1)?[0] != 0),
            8 => GgufValue::Str(self.string()?),
            9 if depth == 0 => {
                let et = self.u32()?;
                let n = self.u64()? as usize;
                if n > 1 << 24 {
                    return Err(self.bad("array too long"));
                }
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(et, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            _ => return Err(self.bad(&format!("unknown value type {ty}"))),
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
            let et = a.first().map_or(4, GgufValue::type_id);
            b.extend_from_slice(&et.to_le_bytes());
            b.extend_from_slice(&(a.len() as u64).to_le_bytes());
            for x in a {
                put_value(b, x);
            }
        }
    }
}
