//! One entry file of the disk cache: a fixed header, the token list, a sequence state.
//!
//! ```text
//!  0  magic "LRKV"         4  format version (u32)
//!  8  key (u64)           16  token count (u64)
//! 24  exact (u64)         32  micro-batch size of `exact` (u64)
//! 40  payload bytes (u64) 48  xxh3-64 of every other byte of the file
//! 56  tokens (i32 each), then the payload (`Context::save_seq_state` bytes)
//! ```
//! All little-endian. The checksum covers the header too, so a flipped bit anywhere is
//! found before llama.cpp reads the payload.

use std::io::Read;

use xxhash_rust::xxh3::Xxh3;

use crate::error::{Error, Result};
use crate::token::Token;

const MAGIC: &[u8; 4] = b"LRKV";
const VERSION: u32 = 1;
pub(super) const HEADER: usize = 56;
/// More tokens than any context holds: a larger count is a damaged header.
const MAX_TOKENS: u64 = 1 << 24;

/// What an entry's header says.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    pub(super) key: u64,
    pub(super) n_tokens: usize,
    pub(super) exact: usize,
    pub(super) ubatch: usize,
    pub(super) payload: usize,
    checksum: u64,
}

impl Header {
    /// Bytes of the whole entry.
    pub(super) fn file_len(&self) -> u64 {
        (HEADER + self.n_tokens * 4 + self.payload) as u64
    }
}

fn bad(what: &str) -> Error {
    Error::InvalidState(format!("disk cache entry: {what}"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes an entry (header, tokens, payload) into one buffer.
pub(super) fn encode(key: u64, tokens: &[Token], exact: usize, ubatch: usize, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + tokens.len() * 4 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for v in [key, tokens.len() as u64, exact as u64, ubatch as u64, payload.len() as u64, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for t in tokens {
        out.extend_from_slice(&t.0.to_le_bytes());
    }
    out.extend_from_slice(payload);
    let sum = checksum(&out);
    out[48..56].copy_from_slice(&sum.to_le_bytes());
    out
}

fn checksum(entry: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&entry[..48]);
    h.update(&entry[56..]);
    h.digest()
}

/// Parses a header; `Err` for anything that is not a current entry.
pub(super) fn header(b: &[u8; HEADER]) -> Result<Header> {
    if &b[..4] != MAGIC {
        return Err(bad("wrong magic"));
    }
    let version = u32::from_le_bytes(b[4..8].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(&format!("format version {version}, expected {VERSION}")));
    }
    let n_tokens = u64_at(b, 16);
    let payload = u64_at(b, 40);
    if n_tokens == 0 || n_tokens > MAX_TOKENS || payload == 0 || payload > (1 << 40) {
        return Err(bad("impossible lengths"));
    }
    let exact = u64_at(b, 24);
    if exact > n_tokens {
        return Err(bad("exact prefix longer than the entry"));
    }
    Ok(Header {
        key: u64_at(b, 8),
        n_tokens: n_tokens as usize,
        exact: exact as usize,
        ubatch: u64_at(b, 32) as usize,
        payload: payload as usize,
        checksum: u64_at(b, 48),
    })
}

/// Reads the header and token list from the start of an entry file.
pub(super) fn read_tokens(f: &mut impl Read) -> Result<(Header, Vec<Token>)> {
    let io = |e: std::io::Error| bad(&format!("unreadable ({e})"));
    let mut b = [0u8; HEADER];
    f.read_exact(&mut b).map_err(io)?;
    let h = header(&b)?;
    let mut raw = vec![0u8; h.n_tokens * 4];
    f.read_exact(&mut raw).map_err(io)?;
    let tokens = raw.chunks_exact(4).map(|c| Token(i32::from_le_bytes(c.try_into().expect("4 bytes")))).collect();
    Ok((h, tokens))
}

/// Checks a whole entry read into memory; returns its header, tokens and payload.
#[cfg(test)]
fn decode(entry: &[u8]) -> Result<(Header, Vec<Token>, &[u8])> {
    decode_summed(entry, if entry.len() >= HEADER { checksum(entry) } else { 0 })
}

/// Reads a whole entry file, hashing each chunk while it is still in cache (one pass
/// over the bytes instead of two); then [`decode_summed`] checks it.
pub(super) fn read_summed(f: &mut impl Read, len: u64) -> std::io::Result<(Vec<u8>, u64)> {
    const CHUNK: u64 = 8 << 20;
    let mut bytes = Vec::with_capacity(len as usize);
    let mut h = Xxh3::new();
    loop {
        let start = bytes.len();
        let n = f.by_ref().take(CHUNK).read_to_end(&mut bytes)?;
        if n == 0 {
            break;
        }
        // The checksum skips its own field (bytes 48..56).
        let chunk = &bytes[start..];
        let (a, b) = (48usize.saturating_sub(start).min(chunk.len()), 56usize.saturating_sub(start).min(chunk.len()));
        h.update(&chunk[..a]);
        h.update(&chunk[b..]);
    }
    Ok((bytes, h.digest()))
}

/// [`decode`] with the checksum already computed.
pub(super) fn decode_summed(entry: &[u8], sum: u64) -> Result<(Header, Vec<Token>, &[u8])> {
    if entry.len() < HEADER {
        return Err(bad("truncated header"));
    }
    let h = header(entry[..HEADER].try_into().expect("HEADER bytes"))?;
    if entry.len() as u64 != h.file_len() {
        return Err(bad(&format!("{} bytes, the header says {}", entry.len(), h.file_len())));
    }
    if sum != h.checksum {
        return Err(bad("checksum mismatch"));
    }
    let split = HEADER + h.n_tokens * 4;
    let tokens = entry[HEADER..split]
        .chunks_exact(4)
        .map(|c| Token(i32::from_le_bytes(c.try_into().expect("4 bytes"))))
        .collect();
    Ok((h, tokens, &entry[split..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flipped_byte_is_found() {
        let tokens = [Token(1), Token(7), Token(42)];
        let e = encode(99, &tokens, 2, 512, b"payload");
        let (h, t, p) = decode(&e).unwrap();
        assert_eq!((h.key, h.exact, h.ubatch, t.as_slice(), p), (99, 2, 512, &tokens[..], &b"payload"[..]));
        for i in 0..e.len() {
            let mut bad = e.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
        for n in 0..e.len() {
            assert!(decode(&e[..n]).is_err(), "truncation to {n} bytes went unnoticed");
        }
        // Hashing while reading gives the same sum, whatever the chunk boundaries.
        let (read, sum) = read_summed(&mut &e[..], e.len() as u64).unwrap();
        assert_eq!((read.as_slice(), sum), (e.as_slice(), checksum(&e)));
    }
}
