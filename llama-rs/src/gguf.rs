//! GGUF files in pure Rust: [`read_gguf_metadata`] reads the metadata, and the checks
//! that run before llama.cpp opens a file (header, tensor table against the file size).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// An unsigned 8-bit integer (GGUF type 0).
    U8(u8),
    /// A signed 8-bit integer (GGUF type 1).
    I8(i8),
    /// An unsigned 16-bit integer (GGUF type 2).
    U16(u16),
    /// A signed 16-bit integer (GGUF type 3).
    I16(i16),
    /// An unsigned 32-bit integer (GGUF type 4).
    U32(u32),
    /// A signed 32-bit integer (GGUF type 5).
    I32(i32),
    /// A 32-bit float (GGUF type 6).
    F32(f32),
    /// A boolean (GGUF type 7).
    Bool(bool),
    /// A string (GGUF type 8; invalid UTF-8 is replaced when read).
    Str(String),
    /// An unsigned 64-bit integer (GGUF type 10).
    U64(u64),
    /// A signed 64-bit integer (GGUF type 11).
    I64(i64),
    /// A 64-bit float (GGUF type 12).
    F64(f64),
    /// An array of values of one type (GGUF type 9).
    Array(Vec<GgufValue>),
}

/// Reads the metadata (key/value section) of a GGUF file.
///
/// ```
/// let meta = llama_rs::read_gguf_metadata(llama_testkit::default_model_path()?)?;
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
    check_gguf_header(path)?;
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

/// Checks what llama.cpp would otherwise find out the hard way: the file exists, is
/// readable, and starts with a GGUF header of a version llama.cpp reads.
pub(crate) fn check_gguf_header(path: &Path) -> Result<()> {
    // stat before open: opening a FIFO for reading blocks until a writer appears.
    let meta = std::fs::metadata(path).map_err(|e| Error::ModelFile { path: path.into(), source: e })?;
    if meta.is_dir() {
        return Err(Error::NotGguf { path: path.into(), reason: "is a directory".into() });
    }
    if !meta.is_file() {
        return Err(Error::NotGguf {
            path: path.into(),
            reason: "not a regular file (a FIFO, socket or device)".into(),
        });
    }
    let mut f = std::fs::File::open(path).map_err(|e| Error::ModelFile { path: path.into(), source: e })?;
    let mut head = [0u8; 24];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(Error::ModelFile { path: path.into(), source: e }),
        }
    }
    if n < 4 || &head[..4] != b"GGUF" {
        return Err(Error::NotGguf { path: path.into(), reason: "wrong magic (expected \"GGUF\")".into() });
    }
    if n < head.len() {
        return Err(Error::NotGguf { path: path.into(), reason: format!("truncated header ({n} bytes)") });
    }
    let version = u32::from_le_bytes(head[4..8].try_into().unwrap());
    if !(2..=3).contains(&version) {
        return Err(Error::NotGguf { path: path.into(), reason: format!("unsupported GGUF version {version}") });
    }
    Ok(())
}
