//! N-gram drafters: candidates from the sequence itself (prompt lookup). Useful where the
//! output repeats the input (rewriting code, editing a document, continuing a list).

use std::collections::HashMap;

use super::Drafter;
use crate::error::{check_arg, Result};
use crate::token::Token;

/// Longest n-gram the drafters index (longer keys only cost memory: repeats that long
/// are found by shorter ones too).
pub const MAX_NGRAM: usize = 16;

/// Longest match: the longest suffix of the history (`n_max` down to `n_min` tokens) that
/// occurred before; drafts the tokens that followed its most recent earlier occurrence.
/// Memory: a map from each n-gram's hash to its last end position, for `n_min..=n_max`
/// (one entry per distinct n-gram and length, bounded by `max_entries`).
#[derive(Debug, Clone)]
pub struct NgramDrafter {
    n_min: usize,
    n_max: usize,
    /// (n, hash of the n tokens ending just before `pos`) → `pos`.
    index: HashMap<(usize, u64), usize>,
    /// How much of the history is indexed.
    indexed: usize,
    max_entries: usize,
}

impl NgramDrafter {
    /// Matches of `n_min..=n_max` tokens; other lengths than 1 ≤ n_min ≤ n_max ≤ 16 are
    /// an error.
    pub fn new(n_min: usize, n_max: usize) -> Result<NgramDrafter> {
        check_arg((1..=MAX_NGRAM).contains(&n_min) && (n_min..=MAX_NGRAM).contains(&n_max), || {
            format!("n-gram lengths need 1 <= n_min <= n_max <= {MAX_NGRAM}, got n_min {n_min}, n_max {n_max}")
        })?;
        Ok(NgramDrafter { n_min, n_max, index: HashMap::new(), indexed: 0, max_entries: 1 << 20 })
    }

    fn hash(tokens: &[Token]) -> u64 {
        // FNV-1a over the ids: cheap, and collisions only cost a wrong draft (verified).
        tokens.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, t| (h ^ t.0 as u32 as u64).wrapping_mul(0x0100_0000_01b3))
    }

    /// Indexes every n-gram that ends before the last `n_max` tokens... up to `upto`.
    fn index_upto(&mut self, history: &[Token], upto: usize) {
        if history.len() < self.indexed {
            // The history was rewound (a new prompt): start over.
            self.index.clear();
            self.indexed = 0;
        }
        while self.indexed < upto {
            let pos = self.indexed + 1; // n-grams ending at `pos - 1`, followed by `pos`
            self.indexed = pos;
            if pos >= history.len() {
                break;
            }
            for n in self.n_min..=self.n_max {
                if n > pos {
                    break;
                }
                if self.index.len() >= self.max_entries {
                    return;
                }
                self.index.insert((n, Self::hash(&history[pos - n..pos])), pos);
            }
        }
    }
}

impl Drafter for NgramDrafter {
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>> {
        Ok(self.longest_match(history, max))
    }
}

impl NgramDrafter {
    fn longest_match(&mut self, history: &[Token], max: usize) -> Vec<Token> {
        let len = history.len();
        if max == 0 || len < self.n_min + 1 {
            return Vec::new();
        }
        // Index everything except the current suffix's own occurrence.
        self.index_upto(history, len - 1);
        for n in (self.n_min..=self.n_max.min(len - 1)).rev() {
            let key = (n, Self::hash(&history[len - n..]));
            if let Some(&pos) = self.index.get(&key) {
                if pos < len && history[pos - n..pos] == history[len - n..] {
                    return history[pos..len.min(pos + max)].to_vec();
                }
            }
        }
        Vec::new()
    }
}

/// Frequency map: for each n-gram of the history, counts of the token that followed it;
/// drafts by following the most frequent continuation, token by token. Better than the
/// longest match where the same context is followed by different tokens.
#[derive(Debug, Clone)]
pub struct NgramMapDrafter {
    n: usize,
    /// hash of n tokens → (next token → count).
    map: HashMap<u64, HashMap<Token, u32>>,
    indexed: usize,
    max_entries: usize,
    /// A continuation must have been seen at least this often.
    min_count: u32,
}

impl NgramMapDrafter {
    /// Keys of `n` tokens (1..=16); a continuation is drafted once seen `min_count`
    /// (at least 1) times. Other values are an error.
    pub fn new(n: usize, min_count: u32) -> Result<NgramMapDrafter> {
        check_arg((1..=MAX_NGRAM).contains(&n), || {
            format!("n-gram map key length must be in 1..={MAX_NGRAM}, got {n}")
        })?;
        check_arg(min_count >= 1, || "n-gram map min_count must be at least 1".to_string())?;
        Ok(NgramMapDrafter { n, map: HashMap::new(), indexed: 0, max_entries: 1 << 20, min_count })
    }
}

impl Drafter for NgramMapDrafter {
    fn draft(&mut self, history: &[Token], max: usize) -> Result<Vec<Token>> {
        let n = self.n;
        if history.len() < self.indexed {
            self.map.clear();
            self.indexed = 0;
        }
        // Index continuations: n-gram ending at i-1 → history[i].
        let start = self.indexed.max(n);
        for i in start..history.len() {
            if self.map.len() >= self.max_entries {
                break;
            }
            let h = NgramDrafter::hash(&history[i - n..i]);
            *self.map.entry(h).or_default().entry(history[i]).or_insert(0) += 1;
        }
        self.indexed = history.len().max(self.indexed);
        let mut out = Vec::new();
        let mut tail: Vec<Token> = history[history.len().saturating_sub(n)..].to_vec();
        while out.len() < max && tail.len() == n {
            let Some(next) = self.map.get(&NgramDrafter::hash(&tail)) else { break };
            let Some((&t, &c)) = next.iter().max_by_key(|(t, c)| (**c, std::cmp::Reverse(t.0))) else { break };
            if c < self.min_count {
                break;
            }
            out.push(t);
            tail.remove(0);
            tail.push(t);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[i32]) -> Vec<Token> {
        v.iter().map(|&t| Token(t)).collect()
    }

    #[test]
    fn longest_match_drafts_what_followed_before() {
        let mut d = NgramDrafter::new(2, 4).unwrap();
        let h = toks(&[1, 2, 3, 4, 5, 9, 1, 2, 3]);
        assert_eq!(d.draft(&h, 3).unwrap(), toks(&[4, 5, 9]));
        assert_eq!(d.draft(&h, 1).unwrap(), toks(&[4]));
        // No earlier occurrence: nothing.
        assert!(d.draft(&toks(&[7, 8]), 3).unwrap().is_empty());
        // Grows incrementally.
        let mut h2 = h.clone();
        h2.push(Token(4));
        assert_eq!(d.draft(&h2, 2).unwrap(), toks(&[5, 9]));
    }

    #[test]
    fn frequency_map_follows_the_most_common_continuation() {
        let mut d = NgramMapDrafter::new(1, 2).unwrap();
        let h = toks(&[1, 2, 1, 3, 1, 2, 1]);
        // After 1: 2 (twice), 3 (once); after 2: 1 (twice).
        assert_eq!(d.draft(&h, 3).unwrap(), toks(&[2, 1, 2]));
    }
}
