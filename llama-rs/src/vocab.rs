//! [`Vocab`]: tokenizer of a model, and [`PieceDecoder`] for streaming text.

use std::ffi::c_char;
use std::marker::PhantomData;
use std::ptr::NonNull;

use llama_sys as sys;

use crate::error::{Error, Result};
use crate::token::{as_raw, Token};

/// Attributes of a token (`llama_token_attr` bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenAttr(pub u32);

impl TokenAttr {
    /// The attribute is not known.
    pub const UNKNOWN: u32 = sys::LLAMA_TOKEN_ATTR_UNKNOWN;
    /// An unused slot in the vocabulary.
    pub const UNUSED: u32 = sys::LLAMA_TOKEN_ATTR_UNUSED;
    /// An ordinary text token.
    pub const NORMAL: u32 = sys::LLAMA_TOKEN_ATTR_NORMAL;
    /// A control token (BOS, EOS, turn markers); rendered only with `special`.
    pub const CONTROL: u32 = sys::LLAMA_TOKEN_ATTR_CONTROL;
    /// A token the model's author added (rendered as text).
    pub const USER_DEFINED: u32 = sys::LLAMA_TOKEN_ATTR_USER_DEFINED;
    /// A raw byte (`<0xNN>`).
    pub const BYTE: u32 = sys::LLAMA_TOKEN_ATTR_BYTE;
    /// Text that was normalized when the vocabulary was built.
    pub const NORMALIZED: u32 = sys::LLAMA_TOKEN_ATTR_NORMALIZED;
    /// Strips whitespace to its left when rendered.
    pub const LSTRIP: u32 = sys::LLAMA_TOKEN_ATTR_LSTRIP;
    /// Strips whitespace to its right when rendered.
    pub const RSTRIP: u32 = sys::LLAMA_TOKEN_ATTR_RSTRIP;
    /// Only matches a whole word.
    pub const SINGLE_WORD: u32 = sys::LLAMA_TOKEN_ATTR_SINGLE_WORD;

    /// Whether all bits of `flag` are set.
    pub fn has(self, flag: u32) -> bool {
        self.0 & flag == flag
    }
}

/// The tokenizer of a [`crate::Model`], borrowed from it.
///
/// ```
/// # let model = llama_rs::Model::load(llama_testkit::default_model_path()?, Default::default())?;
/// let vocab = model.vocab();
/// let tokens = vocab.tokenize("Hello world", true, false)?;
/// assert_eq!(vocab.detokenize(&tokens, true, false)?, "Hello world");
/// # Ok::<(), llama_rs::Error>(())
/// ```
#[derive(Clone, Copy)]
pub struct Vocab<'m> {
    ptr: NonNull<sys::llama_vocab>,
    /// Bytes a SentencePiece vocabulary has no token for (see `Model::load`); text
    /// containing them is refused, since llama.cpp's byte fallback would throw.
    missing_bytes: &'m [u8],
    _model: PhantomData<&'m ()>,
}

impl std::fmt::Debug for Vocab<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vocab").field("n_tokens", &self.n_tokens()).finish()
    }
}

fn opt(t: i32) -> Option<Token> {
    (t != sys::LLAMA_TOKEN_NULL).then_some(Token(t))
}

/// Texts up to this length are tokenized on the caller's thread: even at the deepest
/// recursion measured (about 500 bytes of stack per character) they need under 1 MiB.
const TOKENIZE_ON_CALLER_MAX: usize = 2048;
/// Stack reserved per byte of text for the tokenizer thread (2× the worst measured).
const TOKENIZE_STACK_PER_BYTE: usize = 1024;

/// The vocabulary handle, sent to the tokenizer thread.
#[derive(Clone, Copy)]
struct SendVocab(NonNull<sys::llama_vocab>);
// SAFETY: (contract) llama_tokenize only reads the vocabulary (each call builds its own
// tokenizer session), and the scoped thread that uses this handle ends before the
// borrow of the model that keeps the vocabulary alive does.
unsafe impl Send for SendVocab {}

fn tokenize_raw(vocab: SendVocab, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
    let len = i32::try_from(text.len()).map_err(|_| Error::Tokenize("text longer than 2 GiB".into()))?;
    // A good first guess: most tokens span >= 1 byte, plus room for BOS/EOS.
    let mut out: Vec<Token> = Vec::with_capacity(text.len() / 2 + 8);
    for _ in 0..2 {
        let cap = i32::try_from(out.capacity()).unwrap_or(i32::MAX);
        let mut threw = false;
        // SAFETY: `text` is valid for `len` bytes (no NUL terminator needed since the
        // length is passed); `out` has room for `cap` tokens; Token is repr(transparent).
        // The shim catches what llama.cpp's tokenizers throw.
        let n = unsafe {
            sys::llama_rs_tokenize(
                vocab.0.as_ptr(),
                text.as_ptr() as *const c_char,
                len,
                out.as_mut_ptr() as *mut i32,
                cap,
                add_special,
                parse_special,
                &mut threw,
            )
        };
        if threw {
            return Err(Error::Tokenize("llama.cpp's tokenizer failed on this text (see the llama.cpp log)".into()));
        }
        if n == i32::MIN {
            return Err(Error::Tokenize("token count overflows i32".into()));
        }
        if n >= 0 {
            // SAFETY: llama.cpp initialised the first `n` (<= cap) entries.
            unsafe { out.set_len(n as usize) };
            return Ok(out);
        }
        out.reserve_exact((-n) as usize);
    }
    Err(Error::Tokenize("token count changed between calls".into()))
}

/// Largest text [`Vocab::tokenize`] accepts: about 700,000 tokens of English, more than
/// any context this library runs; at most a few seconds of llama.cpp's tokenizer.
pub const TOKENIZE_MAX_BYTES: usize = 2 << 20;

impl<'m> Vocab<'m> {
    /// # Safety
    /// `ptr` must be a valid vocab that outlives `'m`.
    pub(crate) unsafe fn from_raw(ptr: NonNull<sys::llama_vocab>, missing_bytes: &'m [u8]) -> Self {
        Vocab { ptr, missing_bytes, _model: PhantomData }
    }

    fn raw(&self) -> *const sys::llama_vocab {
        self.ptr.as_ptr()
    }

    /// Raw pointer escape hatch; valid while the model lives.
    pub fn as_raw(&self) -> *const sys::llama_vocab {
        self.ptr.as_ptr()
    }

    /// llama.cpp's tokenizer type (`LLAMA_VOCAB_TYPE_SPM`, `_BPE`, ...).
    pub fn kind(&self) -> u32 {
        // SAFETY: const query on a valid vocab.
        unsafe { sys::llama_vocab_type(self.raw()) as u32 }
    }

    /// Number of tokens.
    pub fn n_tokens(&self) -> i32 {
        // SAFETY: const query on a valid vocab.
        unsafe { sys::llama_vocab_n_tokens(self.raw()) }
    }

    /// Returns an error unless `0 <= token < n_tokens`.
    pub fn check(&self, token: Token) -> Result<()> {
        let n = self.n_tokens();
        if token.0 < 0 || token.0 >= n {
            return Err(Error::InvalidToken { token: token.0, n_vocab: n });
        }
        Ok(())
    }

    /// Text → tokens. `add_special` adds BOS/EOS as the model wants; `parse_special`
    /// turns special-token text (e.g. `<start_of_turn>`) into those tokens.
    ///
    /// Texts over [`TOKENIZE_MAX_BYTES`] are refused (`Error::Limit`): llama.cpp's
    /// tokenizers take superlinear time (measured on Gemma 3: 1 MiB 1 s, 2 MiB 2.5 s,
    /// 4 MiB 20–30 s, 10 MiB over 10 minutes). [`Vocab::tokenize_unbounded`] takes any
    /// length for callers who accept that cost.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        if text.len() > TOKENIZE_MAX_BYTES {
            return Err(Error::Limit {
                what: "tokenize",
                detail: format!(
                    "text of {} bytes is over {TOKENIZE_MAX_BYTES} (llama.cpp's tokenizer time grows faster than \
                     the text; use tokenize_unbounded to accept that)",
                    text.len()
                ),
            });
        }
        self.tokenize_unbounded(text, add_special, parse_special)
    }

    /// [`Vocab::tokenize`] without the size bound.
    pub fn tokenize_unbounded(&self, text: &str, add_special: bool, parse_special: bool) -> Result<Vec<Token>> {
        if let Some(b) = text.bytes().find(|b| self.missing_bytes.contains(b)) {
            return Err(Error::Tokenize(format!(
                "the vocabulary has no token for byte 0x{b:02X}, which SentencePiece byte fallback may need"
            )));
        }
        let vocab = SendVocab(self.ptr);
        if text.len() <= TOKENIZE_ON_CALLER_MAX {
            return tokenize_raw(vocab, text, add_special, parse_special);
        }
        // Some pre-tokenizers run std::regex, which recurses once per character of a
        // match: a run of 200,000 letters overflowed an 8 MiB stack (deepseek-coder's
        // vocabulary; measured ~300-500 bytes of stack per character). Long texts are
        // tokenized on a thread whose stack has room for the worst case.
        let stack = (8 << 20) + text.len().saturating_mul(TOKENIZE_STACK_PER_BYTE);
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name("llama-rs-tokenize".into())
                .stack_size(stack)
                .spawn_scoped(scope, move || tokenize_raw(vocab, text, add_special, parse_special))
                .map_err(|e| Error::Limit {
                    what: "tokenize",
                    detail: format!("no thread with a {stack}-byte stack: {e}"),
                })?;
            worker.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// The raw bytes of one token's piece. A piece may hold part of a UTF-8 character;
    /// use [`PieceDecoder`] to assemble text. `special` renders control tokens.
    pub fn token_to_piece_bytes(&self, token: Token, special: bool, out: &mut Vec<u8>) -> Result<()> {
        self.check(token)?;
        out.clear();
        let mut cap = out.capacity().max(32);
        loop {
            out.reserve(cap);
            // SAFETY: token is in range (checked); `out` has room for `cap` bytes.
            let n = unsafe {
                sys::llama_token_to_piece(self.raw(), token.0, out.as_mut_ptr() as *mut c_char, cap as i32, 0, special)
            };
            if n >= 0 {
                // SAFETY: llama.cpp wrote `n` <= cap bytes.
                unsafe { out.set_len(n as usize) };
                return Ok(());
            }
            cap = (-n) as usize;
        }
    }

    /// One token's piece as text (lossy where it splits a UTF-8 character).
    pub fn token_to_piece(&self, token: Token, special: bool) -> Result<String> {
        let mut b = Vec::new();
        self.token_to_piece_bytes(token, special, &mut b)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// Tokens → text. `remove_special` drops BOS/EOS; `unparse_special` renders specials.
    pub fn detokenize(&self, tokens: &[Token], remove_special: bool, unparse_special: bool) -> Result<String> {
        for &t in tokens {
            self.check(t)?;
        }
        let n_tok = i32::try_from(tokens.len()).map_err(|_| Error::Tokenize("too many tokens".into()))?;
        let mut buf: Vec<u8> = Vec::with_capacity(tokens.len() * 4 + 16);
        loop {
            let cap = i32::try_from(buf.capacity()).unwrap_or(i32::MAX);
            // SAFETY: all tokens are in range; `buf` has room for `cap` bytes.
            let n = unsafe {
                sys::llama_detokenize(
                    self.raw(),
                    as_raw(tokens),
                    n_tok,
                    buf.as_mut_ptr() as *mut c_char,
                    cap,
                    remove_special,
                    unparse_special,
                )
            };
            if n >= 0 {
                // SAFETY: llama.cpp wrote `n` <= cap bytes.
                unsafe { buf.set_len(n as usize) };
                return Ok(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.reserve_exact((-n) as usize);
        }
    }

    /// The token's text as stored in the vocabulary.
    pub fn text(&self, token: Token) -> Result<String> {
        self.check(token)?;
        // SAFETY: token in range; returns a C string owned by the vocab.
        let p = unsafe { sys::llama_vocab_get_text(self.raw(), token.0) };
        // SAFETY: NULL or a NUL-terminated string valid for the vocab's lifetime.
        Ok(unsafe { crate::ffi::owned_string(p) })
    }

    /// The token's score.
    pub fn score(&self, token: Token) -> Result<f32> {
        self.check(token)?;
        // SAFETY: token in range.
        Ok(unsafe { sys::llama_vocab_get_score(self.raw(), token.0) })
    }

    /// The token's attributes.
    pub fn attr(&self, token: Token) -> Result<TokenAttr> {
        self.check(token)?;
        // SAFETY: token in range.
        Ok(TokenAttr(unsafe { sys::llama_vocab_get_attr(self.raw(), token.0) } as u32))
    }

    /// End of generation (EOS, EOT, ...). Out-of-range ids are not EOG.
    pub fn is_eog(&self, token: Token) -> bool {
        // SAFETY: token in range (checked first).
        self.check(token).is_ok() && unsafe { sys::llama_vocab_is_eog(self.raw(), token.0) }
    }

    /// Control token. Out-of-range ids are not control tokens.
    pub fn is_control(&self, token: Token) -> bool {
        // SAFETY: token in range (checked first).
        self.check(token).is_ok() && unsafe { sys::llama_vocab_is_control(self.raw(), token.0) }
    }

    // SAFETY: (all below) const queries on a valid vocab.
    /// Beginning of sequence, if the model has one.
    pub fn bos(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_bos(self.raw()) })
    }
    /// End of sequence, if the model has one.
    pub fn eos(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_eos(self.raw()) })
    }
    /// End of turn, if the model has one.
    pub fn eot(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_eot(self.raw()) })
    }
    /// Separator, if the model has one.
    pub fn sep(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_sep(self.raw()) })
    }
    /// Newline, if the model has one.
    pub fn nl(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_nl(self.raw()) })
    }
    /// Padding, if the model has one.
    pub fn pad(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_pad(self.raw()) })
    }
    /// Fill-in-the-middle: prefix marker, if the model has one.
    pub fn fim_pre(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_pre(self.raw()) })
    }
    /// Fill-in-the-middle: suffix marker, if the model has one.
    pub fn fim_suf(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_suf(self.raw()) })
    }
    /// Fill-in-the-middle: middle marker, if the model has one.
    pub fn fim_mid(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_mid(self.raw()) })
    }
    /// Fill-in-the-middle: padding, if the model has one.
    pub fn fim_pad(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_pad(self.raw()) })
    }
    /// Fill-in-the-middle: repository marker, if the model has one.
    pub fn fim_rep(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_rep(self.raw()) })
    }
    /// Fill-in-the-middle: file separator, if the model has one.
    pub fn fim_sep(&self) -> Option<Token> {
        // SAFETY: see above.
        opt(unsafe { sys::llama_vocab_fim_sep(self.raw()) })
    }
    /// Whether tokenization with `add_special` prepends BOS.
    pub fn add_bos(&self) -> bool {
        // SAFETY: see above.
        unsafe { sys::llama_vocab_get_add_bos(self.raw()) }
    }
    /// Whether tokenization with `add_special` appends EOS.
    pub fn add_eos(&self) -> bool {
        // SAFETY: see above.
        unsafe { sys::llama_vocab_get_add_eos(self.raw()) }
    }
    /// Whether the model's pairs of texts are joined with a separator (rerankers).
    pub fn add_sep(&self) -> bool {
        // SAFETY: see above.
        unsafe { sys::llama_vocab_get_add_sep(self.raw()) }
    }
}

/// Turns a stream of token pieces into text without ever splitting a UTF-8 character:
/// bytes of an incomplete character are held until the next piece completes it.
///
/// ```
/// let mut d = llama_rs::PieceDecoder::default();
/// let euro = "€".as_bytes(); // 3 bytes, as if split over two tokens
/// assert_eq!(d.push(&euro[..2]), "");
/// assert_eq!(d.push(&euro[2..]), "€");
/// assert_eq!(d.finish(), "");
/// ```
#[derive(Debug, Default, Clone)]
pub struct PieceDecoder {
    pending: Vec<u8>,
}

impl PieceDecoder {
    /// Adds bytes; returns the text that is now complete. Invalid sequences become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    // SAFETY-free: from_utf8 validated the prefix.
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap());
                    match e.error_len() {
                        // Incomplete character at the end: keep it for the next piece.
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left (an incomplete character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
