//! [`Token`], [`SeqId`], [`Pos`]: the small ids everything else passes around.

/// A token id. `repr(transparent)` over llama.cpp's `llama_token` (i32), so slices of
/// tokens pass to C without copying. Validity (`< n_vocab`) is checked where used.
///
/// ```
/// let t = llama_rs::Token(2);
/// assert_eq!(t.0, 2);
/// assert_eq!(t.to_string(), "2");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, serde::Serialize, serde::Deserialize)]
#[repr(transparent)]
pub struct Token(pub i32);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<i32> for Token {
    fn from(v: i32) -> Self {
        Token(v)
    }
}

/// A sequence id (`0..n_seq_max`).
pub type SeqId = i32;
/// A position within a sequence.
pub type Pos = i32;

pub(crate) fn as_raw(tokens: &[Token]) -> *const i32 {
    // `Token` is repr(transparent) over i32.
    tokens.as_ptr() as *const i32
}
