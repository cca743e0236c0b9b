//! Bounds a GBNF grammar before llama.cpp sees it. llama.cpp's grammar code trusts its
//! input: it recurses once per nesting level (100,000 nested parentheses overflow the
//! stack), wraps `max - min` for `x{5,2}` and then generates rules until memory runs out,
//! turns a bound above 2000 into "unbounded" without a word, and explodes its parse
//! stacks on a bounded repetition of something that can match nothing
//! (`(("a"|"b"){0,40}){0,40}` runs for minutes). This module parses the grammar itself
//! — iteratively deep only up to [`MAX_DEPTH`] — and refuses those shapes with a message.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// Deepest nesting of parentheses.
pub const MAX_DEPTH: usize = 64;
/// Largest repetition count (llama.cpp's own `MAX_REPETITION_THRESHOLD`; above it
/// llama.cpp would silently make the repetition unbounded).
pub const MAX_REPETITION: u64 = 2000;
/// Most grammar symbols after expanding bounded repetitions (llama.cpp copies the
/// repeated item once per count).
pub const MAX_EXPANDED: u64 = 1_000_000;
/// Longest chain of rules each starting with the next (`a ::= b "x"`, `b ::= c`, ...):
/// llama.cpp's left-recursion check recurses once per link (200,000 links overflowed an
/// 8 MiB stack). Groups count as links (llama.cpp makes each a rule).
pub const MAX_LEFT_CHAIN: usize = 2000;

fn err(msg: String) -> Error {
    Error::Grammar(msg)
}

#[derive(Debug)]
enum Item {
    /// A literal (`nullable` when it is `""`), a character class, `.`, or a token.
    Atom {
        nullable: bool,
    },
    Ref(String),
    Group(Vec<Vec<Node>>),
}

#[derive(Debug)]
struct Node {
    item: Item,
    /// (min, max); `None` max = unbounded. (1, Some(1)) when there is no postfix.
    rep: (u64, Option<u64>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips blanks and comments; newlines too when `nested`.
    fn space(&mut self, nested: bool) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' | b'\r' => self.i += 1,
                b'\n' if nested => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn name(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// Skips past the closing `end` of a literal / class / token, honouring `\` escapes.
    fn skip_quoted(&mut self, end: u8) -> Result<usize> {
        let start = self.i;
        let mut n = 0;
        loop {
            match self.peek() {
                None => return Err(err(format!("unterminated {} at byte {start}", end as char))),
                Some(c) if c == end => {
                    self.i += 1;
                    return Ok(n);
                }
                Some(b'\\') => self.i += 2,
                Some(_) => self.i += 1,
            }
            n += 1;
        }
    }

    fn int(&mut self) -> Result<u64> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .ok_or_else(|| err(format!("expected a repetition count at byte {start}")))
    }

    fn alternates(&mut self, depth: usize) -> Result<Vec<Vec<Node>>> {
        let nested = depth > 0;
        let mut alts = vec![self.sequence(depth)?];
        while self.peek() == Some(b'|') {
            self.i += 1;
            self.space(true);
            alts.push(self.sequence(depth)?);
        }
        let _ = nested;
        Ok(alts)
    }

    fn sequence(&mut self, depth: usize) -> Result<Vec<Node>> {
        let nested = depth > 0;
        let mut seq: Vec<Node> = Vec::new();
        loop {
            self.space(nested);
            let item = match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    Item::Atom { nullable: self.skip_quoted(b'"')? == 0 }
                }
                Some(b'[') => {
                    self.i += 1;
                    self.skip_quoted(b']')?;
                    Item::Atom { nullable: false }
                }
                Some(b'.') => {
                    self.i += 1;
                    Item::Atom { nullable: false }
                }
                Some(b'!') | Some(b'<') => {
                    if self.peek() == Some(b'!') {
                        self.i += 1;
                    }
                    if self.peek() != Some(b'<') {
                        return Err(err(format!("expected a token after `!` at byte {}", self.i)));
                    }
                    self.i += 1;
                    self.skip_quoted(b'>')?;
                    Item::Atom { nullable: false }
                }
                Some(b'(') => {
                    if depth + 1 > MAX_DEPTH {
                        return Err(err(format!("parentheses nested deeper than {MAX_DEPTH}")));
                    }
                    self.i += 1;
                    self.space(true);
                    let inner = self.alternates(depth + 1)?;
                    self.space(true);
                    if self.peek() != Some(b')') {
                        return Err(err(format!("expected `)` at byte {}", self.i)));
                    }
                    self.i += 1;
                    Item::Group(inner)
                }
                Some(c) if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' => {
                    let save = self.i;
                    let name = self.name().unwrap_or_default();
                    // `name ::=` starts the next rule (only at top level, after a newline).
                    let mut look = Parser { s: self.s, i: self.i };
                    look.space(false);
                    if look.s[look.i..].starts_with(b"::=") {
                        self.i = save;
                        break;
                    }
                    Item::Ref(name)
                }
                _ => break,
            };
            self.space(nested);
            let rep = match self.peek() {
                Some(b'*') => (0, None),
                Some(b'+') => (1, None),
                Some(b'?') => (0, Some(1)),
                Some(b'{') => {
                    self.i += 1;
                    self.space(nested);
                    let min = self.int()?;
                    self.space(nested);
                    let max = match self.peek() {
                        Some(b'}') => Some(min),
                        Some(b',') => {
                            self.i += 1;
                            self.space(nested);
                            if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                                Some(self.int()?)
                            } else {
                                None
                            }
                        }
                        _ => return Err(err(format!("expected `,` or `}}` at byte {}", self.i))),
                    };
                    self.space(nested);
                    if self.peek() != Some(b'}') {
                        return Err(err(format!("expected `}}` at byte {}", self.i)));
                    }
                    if max.is_some_and(|m| m < min) {
                        return Err(err(format!(
                            "repetition {{{min},{}}}: the maximum is below the minimum",
                            max.unwrap_or(0)
                        )));
                    }
                    if min > MAX_REPETITION || max.is_some_and(|m| m > MAX_REPETITION) {
                        return Err(err(format!(
                            "repetition count above {MAX_REPETITION} (llama.cpp would make it unbounded); \
                             use `*` / `+` for unbounded repetition"
                        )));
                    }
                    (min, max)
                }
                _ => {
                    seq.push(Node { item, rep: (1, Some(1)) });
                    continue;
                }
            };
            self.i += 1;
            seq.push(Node { item, rep });
        }
        Ok(seq)
    }
}

/// Checks `gbnf` against the bounds above. Syntax errors the check does not need to
/// understand are left to llama.cpp's parser (which reports them as `Error::Grammar`).
pub fn check(gbnf: &str) -> Result<()> {
    let mut p = Parser { s: gbnf.as_bytes(), i: 0 };
    let mut rules: HashMap<String, Vec<Vec<Node>>> = HashMap::new();
    loop {
        p.space(true);
        if p.peek().is_none() {
            break;
        }
        let Some(name) = p.name() else {
            return Ok(()); // not a rule start: llama.cpp reports the syntax error
        };
        p.space(false);
        if !p.s[p.i..].starts_with(b"::=") {
            return Ok(());
        }
        p.i += 3;
        p.space(true);
        let alts = p.alternates(0)?;
        rules.entry(name).or_default().extend(alts);
        p.space(false);
        match p.peek() {
            None | Some(b'\n') => {}
            _ if p.s[p.i..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'-' || **c == b'_').count()
                > 0 => {}
            _ => return Ok(()), // stray character: llama.cpp's parser names it
        }
    }

    // Which rules can match the empty string (a fixpoint over the rule graph).
    let mut nullable: HashMap<&str, bool> = rules.keys().map(|k| (k.as_str(), false)).collect();
    loop {
        let mut changed = false;
        for (name, alts) in &rules {
            if !nullable[name.as_str()] && alts.iter().any(|s| seq_nullable(s, &nullable)) {
                nullable.insert(name.as_str(), true);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    check_left_chains(&rules, &nullable)?;
    let mut expanded = 0u64;
    for alts in rules.values() {
        for seq in alts {
            expanded = expanded.saturating_add(check_seq(seq, &nullable)?);
        }
    }
    if expanded > MAX_EXPANDED {
        return Err(err(format!(
            "the grammar expands to more than {MAX_EXPANDED} symbols (bounded repetitions multiply)"
        )));
    }
    Ok(())
}

/// The rules a sequence can start with (the refs before its first non-nullable item),
/// each with the groups entered to reach it.
fn leftmost<'a>(seq: &'a [Node], nullable: &HashMap<&str, bool>, groups: usize, out: &mut Vec<(&'a str, usize)>) {
    for n in seq {
        match &n.item {
            Item::Ref(r) => out.push((r.as_str(), groups)),
            Item::Group(alts) => {
                for a in alts {
                    leftmost(a, nullable, groups + 1, out);
                }
            }
            Item::Atom { .. } => {}
        }
        if !(n.rep.0 == 0 || item_nullable(&n.item, nullable)) {
            break;
        }
    }
}

/// Refuses left recursion and leftmost chains longer than [`MAX_LEFT_CHAIN`], walking
/// the rule graph with an explicit stack (longest path from each rule, memoized).
fn check_left_chains(rules: &HashMap<String, Vec<Vec<Node>>>, nullable: &HashMap<&str, bool>) -> Result<()> {
    let mut edges: HashMap<&str, Vec<(&str, usize)>> = HashMap::new();
    for (name, alts) in rules {
        let mut out = Vec::new();
        for a in alts {
            leftmost(a, nullable, 0, &mut out);
        }
        edges.insert(name.as_str(), out);
    }
    // `longest[r]`: links in the longest leftmost chain from r; absent: not done;
    // `None`: on the current path (reaching it again is left recursion).
    let mut longest: HashMap<&str, Option<usize>> = HashMap::new();
    for &start in edges.keys() {
        if longest.contains_key(start) {
            continue;
        }
        let mut stack: Vec<(&str, usize)> = vec![(start, 0)];
        longest.insert(start, None);
        while let Some(&mut (rule, ref mut next)) = stack.last_mut() {
            let out = &edges[rule];
            if let Some(&(child, _)) = out.get(*next) {
                *next += 1;
                if !edges.contains_key(child) {
                    continue; // undefined: llama.cpp reports it
                }
                match longest.get(child) {
                    Some(None) => {
                        return Err(err(format!("the grammar is left-recursive (rule {child} starts with itself)")))
                    }
                    Some(Some(_)) => {}
                    None => {
                        longest.insert(child, None);
                        stack.push((child, 0));
                    }
                }
                continue;
            }
            let depth = out
                .iter()
                .filter_map(|&(c, g)| longest.get(c).copied().flatten().map(|d| d + 1 + g))
                .max()
                .unwrap_or(0);
            if depth > MAX_LEFT_CHAIN {
                return Err(err(format!(
                    "rule {rule} starts a chain of more than {MAX_LEFT_CHAIN} rules, each starting with the next \
                     (llama.cpp's checks recurse once per link)"
                )));
            }
            longest.insert(rule, Some(depth));
            stack.pop();
        }
    }
    Ok(())
}

fn item_nullable(item: &Item, nullable: &HashMap<&str, bool>) -> bool {
    match item {
        Item::Atom { nullable } => *nullable,
        Item::Ref(r) => nullable.get(r.as_str()).copied().unwrap_or(false),
        Item::Group(alts) => alts.iter().any(|s| seq_nullable(s, nullable)),
    }
}

fn seq_nullable(seq: &[Node], nullable: &HashMap<&str, bool>) -> bool {
    seq.iter().all(|n| n.rep.0 == 0 || item_nullable(&n.item, nullable))
}

/// Refuses repetitions of nullable items; returns the expanded size of `seq`.
fn check_seq(seq: &[Node], nullable: &HashMap<&str, bool>) -> Result<u64> {
    let mut size = 0u64;
    for n in seq {
        let inner = match &n.item {
            Item::Group(alts) => {
                let mut s = 0u64;
                for a in alts {
                    s = s.saturating_add(check_seq(a, nullable)?);
                }
                s.max(1)
            }
            _ => 1,
        };
        let (min, max) = n.rep;
        let repeats = max.is_none_or(|m| m > 1);
        if repeats && item_nullable(&n.item, nullable) {
            return Err(err("a repeated item can match the empty string (e.g. `(x?){0,40}` or `(\"a\"|\"\")*`): \
                 llama.cpp's matcher explodes on it; make the item non-empty and let the repetition's \
                 minimum express optionality"
                .into()));
        }
        let copies = max.unwrap_or(min + 1).max(1);
        size = size.saturating_add(inner.saturating_mul(copies));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_grammars_pass() {
        for g in [
            "root ::= \"yes\" | \"no\"",
            "root ::= [a-z]+ (\",\" [a-z]+)*\n# comment\n",
            "root ::= item{1,5}\nitem ::= \"(\" [0-9]{1,3} \")\"",
            "root ::= \"\\\"\" char{0,100} \"\\\"\"\nchar ::= [^\"\\\\] | \"\\\\\" .",
            "root ::= (\n  \"a\"\n  | \"b\"\n)?",
            "root ::= <|im_start|> !<[42]> [^x]*",
            "root ::= a \"!\"\na ::= b? \"x\"\nb ::= \"y\"",
        ] {
            check(g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
        }
    }

    #[test]
    fn hostile_grammars_are_refused() {
        let deep = format!("root ::= {}\"x\"{}", "(".repeat(100_000), ")".repeat(100_000));
        for g in [
            "root ::= \"x\"{5,2}".to_string(),
            "root ::= \"x\"{0,1000000}".to_string(),
            "root ::= \"x\"{99999999999999999999999}".to_string(),
            "root ::= ((\"a\"|\"b\"){0,40}){0,40}".to_string(),
            "root ::= (\"a\"?)*".to_string(),
            "root ::= e{2,9}\ne ::= \"\" | \"x\"".to_string(),
            "root ::= (((\"ab\"){1,2000}){1,2000})".to_string(),
            deep,
            "root ::= a\na ::= b \"x\"\nb ::= c? root".to_string(),
            (0..5000).map(|k| format!("r{k} ::= r{}\n", k + 1)).collect::<String>() + "r5000 ::= \"x\"",
            "root ::= (((a)))\na ::= root".to_string(),
        ] {
            assert!(matches!(check(&g), Err(Error::Grammar(_))), "{:.60}", g);
        }
    }
}
