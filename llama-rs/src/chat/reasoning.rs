//! Thinking models' reasoning (`<think>…</think>`, DeepSeek-R1 / Qwen3 style) kept apart
//! from the answer, as llama-server's `--reasoning-format deepseek` does: the text inside
//! the block becomes `reasoning_content`, the rest `content` — piece by piece while
//! streaming, so a tag split across pieces never leaks into either.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen yet: the output may still open a block.
    Start,
    Thinking,
    /// After the block (or with none): the answer. `trim` drops the whitespace the model
    /// puts between the block and the answer.
    Answer {
        trim: bool,
    },
}

/// Splits generated text into reasoning and answer as it arrives.
///
/// ```
/// use llama_rs::ReasoningSplitter;
/// let mut s = ReasoningSplitter::new(false);
/// let mut reasoning = String::new();
/// let mut answer = String::new();
/// for piece in ["<th", "ink>Two plus", " two.</thi", "nk>\n\n4"] {
///     let (r, a) = s.push(piece);
///     reasoning += &r;
///     answer += &a;
/// }
/// let (r, a) = s.finish();
/// assert_eq!((reasoning + &r, answer + &a), ("Two plus two.".to_string(), "4".to_string()));
/// ```
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    state: State,
    held: String,
}

impl ReasoningSplitter {
    /// `started`: the prompt itself opened the block (a template whose generation prompt
    /// ends with `<think>`), so the output begins inside it.
    pub fn new(started: bool) -> ReasoningSplitter {
        ReasoningSplitter { state: if started { State::Thinking } else { State::Start }, held: String::new() }
    }

    /// Whether `prompt` (a rendered chat prompt) leaves the model inside a think block.
    pub fn prompt_opens_block(prompt: &str) -> bool {
        prompt.trim_end().ends_with(OPEN)
    }

    /// The next piece of output: (reasoning, answer) text that is now certain. Text that
    /// could be the start of a tag is held until the next piece decides it.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut reasoning, mut answer) = (String::new(), String::new());
        loop {
            match self.state {
                State::Start => {
                    let t = self.held.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking;
                    } else if OPEN.starts_with(t) {
                        return (reasoning, answer); // empty or a partial "<think>"
                    } else {
                        self.state = State::Answer { trim: false };
                    }
                }
                State::Thinking => match self.held.find(CLOSE) {
                    Some(end) => {
                        reasoning.push_str(&self.held[..end]);
                        self.held.drain(..end + CLOSE.len());
                        self.state = State::Answer { trim: true };
                    }
                    None => {
                        let keep = partial_suffix(&self.held, CLOSE);
                        let cut = self.held.len() - keep;
                        reasoning.push_str(&self.held[..cut]);
                        self.held.drain(..cut);
                        return (reasoning, answer);
                    }
                },
                State::Answer { trim } => {
                    let t = if trim { self.held.trim_start() } else { self.held.as_str() };
                    if trim && !t.is_empty() {
                        self.state = State::Answer { trim: false };
                    }
                    answer.push_str(t);
                    self.held.clear();
                    return (reasoning, answer);
                }
            }
        }
    }

    /// The end of the output: whatever was held back (an unfinished block is reasoning).
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.held);
        match self.state {
            State::Thinking => (rest, String::new()),
            State::Start => (String::new(), rest.trim_start().to_string()),
            State::Answer { trim } => (String::new(), if trim { rest.trim_start().to_string() } else { rest }),
        }
    }

    /// The whole output at once: (reasoning if there was a block, answer).
    pub fn split(text: &str, started: bool) -> (Option<String>, String) {
        let mut s = ReasoningSplitter::new(started);
        let (mut r, mut a) = s.push(text);
        let (r2, a2) = s.finish();
        r += &r2;
        a += &a2;
        let had_block = started || text.trim_start().starts_with(OPEN);
        (had_block.then(|| r.trim().to_string()), a)
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| s.len() >= n && s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::ReasoningSplitter;

    fn pieces(parts: &[&str], started: bool) -> (String, String) {
        let mut s = ReasoningSplitter::new(started);
        let (mut r, mut a) = (String::new(), String::new());
        for p in parts {
            let (x, y) = s.push(p);
            r += &x;
            a += &y;
        }
        let (x, y) = s.finish();
        (r + &x, a + &y)
    }

    #[test]
    fn every_split_point_gives_the_same_result() {
        let text = "  <think>\nLet me think: 2 < 3 and </thin is not a tag.\n</think>\n\nThe answer is <b>3</b>.";
        let want = pieces(&[text], false);
        assert_eq!(want.0, "\nLet me think: 2 < 3 and </thin is not a tag.\n");
        assert_eq!(want.1, "The answer is <b>3</b>.");
        for i in 1..text.len() {
            for j in i..text.len() {
                let got = pieces(&[&text[..i], &text[i..j], &text[j..]], false);
                assert_eq!(got, want, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn no_block_unfinished_block_and_a_block_the_prompt_opened() {
        assert_eq!(pieces(&["Hello", " <think>x</think>"], false), (String::new(), "Hello <think>x</think>".into()));
        assert_eq!(pieces(&["<think>still going"], false), ("still going".into(), String::new()));
        assert_eq!(pieces(&["plan", "</think>", "done"], true), ("plan".into(), "done".into()));
        assert_eq!(pieces(&["<", "b>bold"], false), (String::new(), "<b>bold".into()));
        assert_eq!(ReasoningSplitter::split("no reasoning", false), (None, "no reasoning".into()));
        assert_eq!(ReasoningSplitter::split("<think> a </think> b", false), (Some("a".into()), "b".into()));
        assert!(ReasoningSplitter::prompt_opens_block("<|im_start|>assistant\n<think>\n"));
    }
}
