//! Stop strings: text that could still become one is held back; the first full match
//! ends the output (not included).

/// Holds back text that could still become a stop string; finds the first full match.
#[derive(Debug, Default)]
pub(crate) struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

impl StopMatcher {
    pub(crate) fn new(stops: &[String]) -> Self {
        StopMatcher { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), held: String::new() }
    }

    /// Returns the text safe to emit, and the stop string found (the earliest match).
    pub(crate) fn push(&mut self, text: &str) -> (String, Option<String>) {
        if self.stops.is_empty() {
            return (text.to_string(), None);
        }
        self.held.push_str(text);
        if let Some((pos, s)) = self.stops.iter().filter_map(|s| Some((self.held.find(s.as_str())?, s))).min() {
            let out = self.held[..pos].to_string();
            self.held.clear();
            return (out, Some(s.clone()));
        }
        // The longest suffix of `held` that is a proper prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for k in (1..s.len()).rev() {
                if k <= keep {
                    break;
                }
                if s.is_char_boundary(k) && self.held.ends_with(&s[..k]) {
                    keep = k;
                    break;
                }
            }
        }
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, None)
    }

    pub(crate) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(stops: &[&str], pieces: &[&str]) -> (String, bool, String) {
        let mut m = StopMatcher::new(&stops.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let mut out = String::new();
        for p in pieces {
            let (e, stopped) = m.push(p);
            out += &e;
            if stopped.is_some() {
                return (out, true, m.flush());
            }
        }
        (out, false, m.flush())
    }

    #[test]
    fn stop_strings_spanning_pieces_are_cut_exactly() {
        assert_eq!(feed(&["</s>"], &["Hello <", "/", "s> more"]), ("Hello ".into(), true, "".into()));
        assert_eq!(feed(&["\n\n"], &["a\n", "b\n", "\nc"]), ("a\nb".into(), true, "".into()));
        // A partial match that does not complete is released.
        assert_eq!(feed(&["STOP"], &["ST", "OP"]), ("".into(), true, "".into()));
        assert_eq!(feed(&["STOP"], &["ST", "ART"]), ("START".into(), false, "".into()));
        // The earliest of several stops wins; multibyte stops stay whole.
        assert_eq!(feed(&["bb", "a"], &["xxbba"]), ("xx".into(), true, "".into()));
        assert_eq!(feed(&["€!"], &["5 €", "!"]), ("5 ".into(), true, "".into()));
        assert_eq!(feed(&["€!"], &["5 €"]), ("5 ".into(), false, "€".into()));
        assert_eq!(feed(&[], &["a", "b"]), ("ab".into(), false, "".into()));
        // Which stop string matched.
        let mut m = StopMatcher::new(&["END".to_string(), "\n\n".to_string()]);
        assert_eq!(m.push("a\n"), ("a".into(), None));
        assert_eq!(m.push("\nEND"), ("".into(), Some("\n\n".into())));
    }
}
