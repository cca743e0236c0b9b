//! A thinking budget: at most N tokens inside a `<think>` block, then the block is closed
//! by forcing its end tag, so a thinking model answers instead of running out of tokens
//! mid-thought (llama-server's `--reasoning-budget`; ours takes any N, per request too).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Model;
use crate::token::Token;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";
/// What is forced when the budget is spent: the thought may stop mid-sentence, so the tag
/// goes on a line of its own, and the answer starts after a blank line (Qwen3's and
/// DeepSeek-R1's layout).
const FORCED: &str = "\n</think>\n\n";

/// How many tokens a generation may think (inside `<think>…</think>`).
///
/// ```
/// use llama_rs::{GenerateParams, ReasoningBudget};
/// // The chat template's generation prompt ended with "<think>": the output starts inside.
/// let p = GenerateParams { reasoning_budget: Some(ReasoningBudget { tokens: 256, started: true }), ..Default::default() };
/// # let _ = p;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasoningBudget {
    /// Most tokens inside the block; then `"\n</think>\n\n"` is generated. 0 closes a block
    /// as soon as it opens.
    pub tokens: usize,
    /// The prompt opened the block (see
    /// [`ReasoningSplitter::prompt_opens_block`](crate::ReasoningSplitter::prompt_opens_block)).
    pub started: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Only whitespace so far: a block may still open.
    Start,
    Thinking {
        n: usize,
    },
    Done,
}

/// The budget's state over one generation: fed each token's text, it says which tokens
/// must come next.
#[derive(Debug)]
pub(crate) struct BudgetState {
    budget: usize,
    state: State,
    /// Recent text, to find a tag split over tokens.
    tail: String,
    forced: VecDeque<Token>,
    close: Vec<Token>,
}

impl BudgetState {
    pub(crate) fn new(model: &Model, b: &ReasoningBudget) -> Result<BudgetState> {
        let close = model.vocab().tokenize(FORCED, false, true)?;
        let state = if b.started { State::Thinking { n: 0 } } else { State::Start };
        let mut s = BudgetState { budget: b.tokens, state, tail: String::new(), forced: VecDeque::new(), close };
        s.check();
        Ok(s)
    }

    /// The token that must come next, if the budget forces one.
    pub(crate) fn forced(&mut self) -> Option<Token> {
        self.forced.pop_front()
    }

    /// Whether the block may still be open (token texts are still needed).
    pub(crate) fn watching(&self) -> bool {
        self.state != State::Done
    }

    /// Records the text of the token just generated.
    pub(crate) fn push(&mut self, text: &str) {
        match self.state {
            State::Done => return,
            State::Start => {
                self.tail.push_str(text);
                let t = self.tail.trim_start();
                if let Some(rest) = t.strip_prefix(OPEN) {
                    self.tail = rest.to_string();
                    self.state = State::Thinking { n: 0 };
                } else if !OPEN.starts_with(t) {
                    self.state = State::Done; // the answer began without a block
                }
            }
            State::Thinking { n } => {
                self.tail.push_str(text);
                if self.tail.contains(CLOSE) {
                    self.state = State::Done;
                    return;
                }
                let cut = self.tail.char_indices().rev().nth(CLOSE.len()).map_or(0, |(i, _)| i);
                self.tail.drain(..cut);
                self.state = State::Thinking { n: n + 1 };
            }
        }
        self.check();
    }

    fn check(&mut self) {
        if let State::Thinking { n } = self.state {
            if n >= self.budget {
                self.forced.extend(&self.close);
                self.state = State::Done;
            }
        }
    }
}
