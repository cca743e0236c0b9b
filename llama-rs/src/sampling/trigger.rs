//! Lazy grammar triggers: the patterns that switch a lazy grammar on are searched here,
//! with the `regex` crate, not by llama.cpp. llama.cpp runs std::regex over all output
//! since the last reset on every token: a backtracking matcher (`(a+)+b` never returns)
//! that recurses once per character and per group (a long output, or nested groups,
//! overflows the stack), with no bound on the pattern's size. `regex` runs in time linear
//! in the text, without recursion, and refuses patterns past its size and nesting limits.
//! llama.cpp's grammar only sees the output from the trigger on (see `Sampler::accept`).

use regex::bytes::{Regex, RegexBuilder};

use crate::error::{Error, Result};
use crate::token::Token;

/// Longest trigger pattern, in bytes.
pub const MAX_TRIGGER_PATTERN: usize = 4096;
/// Deepest nesting of groups and repetitions in a trigger pattern.
const NEST_LIMIT: u32 = 64;
/// Largest compiled size of one pattern.
const SIZE_LIMIT: usize = 1 << 20;

/// The trigger patterns of one lazy grammar and the output searched so far.
#[derive(Debug)]
pub(crate) struct Triggers {
    patterns: Vec<Regex>,
    /// Output since the last reset (token pieces with special tokens rendered, as
    /// llama.cpp's grammar reads them).
    buffer: Vec<u8>,
    /// Each accepted token and where its piece starts in `buffer`.
    starts: Vec<(Token, usize)>,
    fired: bool,
}

/// Where the grammar starts after a trigger: the tokens from the one the match starts
/// in, and how many bytes of the first one's piece come before the match.
pub(crate) struct Replay {
    pub(crate) tokens: Vec<Token>,
    pub(crate) skip: usize,
}

impl Triggers {
    /// Compiles `patterns` (none: `Ok(None)`). The syntax is the `regex` crate's over
    /// bytes, with ASCII classes (`\s`, `\d`, `\w`), as std::regex reads them: what
    /// ECMAScript has and it lacks (look-around, backreferences) is an error, as are
    /// patterns past the size and nesting limits.
    pub(crate) fn new(patterns: &[String]) -> Result<Option<Triggers>> {
        if patterns.is_empty() {
            return Ok(None);
        }
        let compiled = patterns.iter().map(|p| compile(p)).collect::<Result<Vec<_>>>()?;
        Ok(Some(Triggers { patterns: compiled, buffer: Vec::new(), starts: Vec::new(), fired: false }))
    }

    /// Whether no pattern has matched since the last reset.
    pub(crate) fn awaiting(&self) -> bool {
        !self.fired
    }

    /// The grammar was switched on another way (a trigger token): stop searching.
    pub(crate) fn fire(&mut self) {
        self.fired = true;
        self.buffer = Vec::new();
        self.starts = Vec::new();
    }

    /// Back to the start of an output.
    pub(crate) fn reset(&mut self) {
        self.fired = false;
        self.buffer.clear();
        self.starts.clear();
    }

    /// Adds an accepted token's piece; when a pattern matches, the tokens the grammar
    /// starts with (llama.cpp's rule: from the first non-empty capture group, else from
    /// the match, to the end of the output).
    pub(crate) fn push(&mut self, token: Token, piece: &[u8]) -> Option<Replay> {
        self.starts.push((token, self.buffer.len()));
        self.buffer.extend_from_slice(piece);
        let start = self.patterns.iter().find_map(|re| {
            let caps = re.captures(&self.buffer)?;
            let group = caps.iter().skip(1).flatten().find(|m| !m.is_empty());
            Some(group.unwrap_or_else(|| caps.get(0).expect("group 0 is the match")).start())
        })?;
        // The last token whose piece starts at or before `start` (pieces may be empty).
        let first = self.starts.partition_point(|&(_, s)| s <= start).saturating_sub(1);
        let skip = start - self.starts[first].1;
        let tokens = self.starts[first..].iter().map(|&(t, _)| t).collect();
        self.fire();
        Some(Replay { tokens, skip })
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    if pattern.len() > MAX_TRIGGER_PATTERN {
        return Err(Error::Grammar(format!(
            "trigger pattern of {} bytes; at most {MAX_TRIGGER_PATTERN}",
            pattern.len()
        )));
    }
    RegexBuilder::new(pattern)
        .unicode(false)
        .nest_limit(NEST_LIMIT)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .build()
        .map_err(|e| {
            Error::Grammar(format!(
                "trigger pattern {:.80?}: {e} (patterns use the `regex` crate's syntax with ASCII classes; \
                 look-around and backreferences are not supported)",
                pattern
            ))
        })
}

/// The pattern that makes llama.cpp's lazy grammar start `skip` bytes into the piece of
/// the first token it is given: a full match of that piece alone, from a group at `skip`
/// (so std::regex only ever runs over one token's piece).
pub(crate) fn skip_pattern(skip: usize) -> String {
    format!(r"^[\s\S]{{{skip}}}([\s\S]+)$")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire(patterns: &[&str], pieces: &[&str]) -> Option<(usize, usize, usize)> {
        let mut t = Triggers::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>()).unwrap().unwrap();
        for (i, p) in pieces.iter().enumerate() {
            if let Some(r) = t.push(Token(i as i32), p.as_bytes()) {
                return Some((i, r.tokens[0].0 as usize, r.skip));
            }
        }
        None
    }

    #[test]
    fn triggers_start_where_llama_cpp_would() {
        // (fired at piece, first replayed piece, bytes skipped in it)
        assert_eq!(fire(&[r"[\s\S]*?(<tool_call>)[\s\S]*"], &["Hi", " <tool", "_call>", "{"]), Some((2, 1, 1)));
        assert_eq!(fire(&[r"^\s*(\{)"], &["  ", "{\"a\""]), Some((1, 1, 0)));
        assert_eq!(fire(&[r"^x$"], &["x", "y"]), Some((0, 0, 0)));
        // No non-empty group: from the match's start.
        assert_eq!(fire(&[r"ab()"], &["xa", "b"]), Some((1, 0, 1)));
        assert_eq!(fire(&[r"^NEVER$"], &["a", "b", "NEVER", "x"]), None);
        // A character split across pieces is found as bytes.
        let mut t = Triggers::new(&["(é)".into()]).unwrap().unwrap();
        assert!(t.push(Token(0), b"a\xc3").is_none());
        let r = t.push(Token(1), b"\xa9!").unwrap();
        assert_eq!((r.tokens, r.skip), (vec![Token(0), Token(1)], 1));
    }

    #[test]
    fn backtracking_blowups_and_deep_nesting_are_linear_or_refused() {
        let pieces = vec!["a"; 5000];
        let t = std::time::Instant::now();
        assert_eq!(fire(&["(a+)+b"], &pieces), None);
        assert!(t.elapsed().as_secs() < 30);
        let deep = format!("{}q{}", "(".repeat(20_000), ")".repeat(20_000));
        assert!(Triggers::new(&[deep]).is_err());
        assert!(Triggers::new(&["x".repeat(MAX_TRIGGER_PATTERN + 1)]).is_err());
        assert!(Triggers::new(&[r"(?=a)b".into()]).is_err(), "look-ahead");
        assert!(Triggers::new(&[r"(a)\1".into()]).is_err(), "backreference");
    }
}
