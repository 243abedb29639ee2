//! Log lines that a peer cannot forge or flood.
//!
//! Two things a peer controls end up in braid's log: strings (a destination name from a SOCKS5
//! client or an SS2022 request) and how often a message is written (every rejected probe). A
//! name containing `\n` would start a forged log line, and an unauthenticated scanner would fill
//! the disk one INFO line per connection. So:
//!
//! - [`escaped`] shows a peer's string with control and invisible characters escaped (Rust's
//!   `escape_debug`) and cut to [`MAX_SHOWN`] characters;
//! - [`LogLimiter`] lets one line per key (typically the peer's address) through per interval, and
//!   a bounded number across all keys, and tells the next line how many were held back.
//!
//! Time goes in as a `Duration` since any fixed start, as elsewhere in this crate.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// Characters of a peer's string shown in a log line; the rest is counted, not shown.
pub const MAX_SHOWN: usize = 256;

/// A peer's string, safe to put in a log line: see [`escaped`].
#[derive(Debug, Clone, Copy)]
pub struct Escaped<'a>(&'a str);

/// Wraps an untrusted string for logging: control characters (`\n`, `\r`, ESC…), Unicode format
/// characters (bidi overrides) and backslashes are escaped, so the line reads as one line and
/// says exactly which bytes arrived; more than [`MAX_SHOWN`] characters are cut with a count.
pub fn escaped(s: &str) -> Escaped<'_> {
    Escaped(s)
}

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_SHOWN) {
            // Quotes are left alone: they cannot break a line.
            if c == '"' || c == '\'' {
                write!(f, "{c}")?;
            } else {
                write!(f, "{}", c.escape_debug())?;
            }
        }
        let rest = chars.count();
        if rest > 0 {
            write!(f, "…(+{rest} characters)")?;
        }
        Ok(())
    }
}

/// Lines held back by a [`LogLimiter`] since the last one it let through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Lines of this key.
    pub this_key: u64,
    /// Lines of other keys that exceeded the budget across all keys.
    pub others: u64,
}

impl fmt::Display for Held {
    /// Empty when nothing was held back; else ` (N more lines about this source held back …)`,
    /// to append to a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.this_key, self.others) {
            (0, 0) => Ok(()),
            (n, 0) => write!(f, " ({n} more lines about this source held back)"),
            (0, m) => write!(f, " ({m} lines from other sources held back)"),
            (n, m) => write!(
                f,
                " ({n} more lines about this source, and {m} about others, held back)"
            ),
        }
    }
}

#[derive(Debug)]
struct Entry {
    last: Duration,
    held: u64,
}

/// Rate-limits log lines per key and overall.
///
/// A key may log once per `every`; across all keys at most `budget` lines go through per
/// `every` (so a scan from thousands of addresses writes `budget` lines, not thousands). At most
/// `max_keys` keys are remembered; a key that does not fit counts against the overall budget only.
#[derive(Debug)]
pub struct LogLimiter<K> {
    every: Duration,
    budget: u32,
    max_keys: usize,
    keys: HashMap<K, Entry>,
    window_start: Option<Duration>,
    in_window: u32,
    held_overall: u64,
}

impl<K: Hash + Eq + Clone> LogLimiter<K> {
    /// One line per key per `every`, `budget` lines per `every` in all, `max_keys` remembered.
    pub fn new(every: Duration, budget: u32, max_keys: usize) -> Self {
        LogLimiter {
            every,
            budget,
            max_keys,
            keys: HashMap::new(),
            window_start: None,
            in_window: 0,
            held_overall: 0,
        }
    }

    /// Whether a line for `key` may be written at `now`; if so, what was held back before it.
    pub fn allow(&mut self, key: &K, now: Duration) -> Option<Held> {
        if self
            .window_start
            .is_none_or(|s| now.saturating_sub(s) >= self.every)
        {
            self.window_start = Some(now);
            self.in_window = 0;
        }
        let every = self.every;
        let due = |e: &Entry| now.saturating_sub(e.last) >= every;
        if let Some(e) = self.keys.get_mut(key) {
            if !due(e) {
                e.held += 1;
                return None;
            }
        }
        if self.in_window >= self.budget {
            self.held_overall += 1;
            if let Some(e) = self.keys.get_mut(key) {
                // Counted once, overall; the key's next line will say so.
                e.last = now;
            }
            return None;
        }
        self.in_window += 1;
        let others = std::mem::take(&mut self.held_overall);
        let this_key = match self.keys.get_mut(key) {
            Some(e) => {
                e.last = now;
                std::mem::take(&mut e.held)
            }
            None => {
                if self.keys.len() >= self.max_keys {
                    self.keys.retain(|_, e| !due(e));
                }
                if self.keys.len() < self.max_keys {
                    self.keys.insert(key.clone(), Entry { last: now, held: 0 });
                }
                0
            }
        };
        Some(Held { this_key, others })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn escaped_newline_cannot_start_a_line() {
        let shown = escaped("evil.example\n2026-01-01T00:00:00Z INFO forged").to_string();
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("\\n2026"), "{shown}");
        assert_eq!(escaped("a\\nb").to_string(), "a\\\\nb");
        assert_eq!(escaped("\r\u{1b}[31m").to_string(), "\\r\\u{1b}[31m");
        assert_eq!(escaped("bidi\u{202e}txt").to_string(), "bidi\\u{202e}txt");
        assert_eq!(
            escaped("plain-name.example").to_string(),
            "plain-name.example"
        );
    }

    #[test]
    fn escaped_long_string_is_cut_with_a_count() {
        let long = "x".repeat(MAX_SHOWN + 10);
        let shown = escaped(&long).to_string();
        assert!(shown.ends_with("…(+10 characters)"), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_SHOWN);
    }

    #[test]
    fn limiter_one_line_per_key_per_interval_then_the_count() {
        let mut l = LogLimiter::new(s(60), 100, 1000);
        assert_eq!(l.allow(&"a", s(0)), Some(Held::default()));
        for t in 1..=5 {
            assert_eq!(l.allow(&"a", s(t)), None);
        }
        assert_eq!(l.allow(&"b", s(6)), Some(Held::default()));
        let held = l.allow(&"a", s(60)).unwrap();
        assert_eq!(held.this_key, 5);
        assert_eq!(
            held.to_string(),
            " (5 more lines about this source held back)"
        );
    }

    #[test]
    fn limiter_many_keys_share_one_budget() {
        let mut l = LogLimiter::new(s(10), 3, 1000);
        let logged = (0..1000u32).filter(|k| l.allow(k, s(1)).is_some()).count();
        assert_eq!(logged, 3);
        let held = l.allow(&5000, s(11)).unwrap();
        assert_eq!(held.others, 997);
    }

    #[test]
    fn limiter_remembers_a_bounded_number_of_keys() {
        let mut l = LogLimiter::new(s(10), u32::MAX, 4);
        for k in 0..100u32 {
            l.allow(&k, s(0));
        }
        assert!(l.keys.len() <= 4);
        // Old entries make room once their interval is over.
        assert!(l.allow(&500, s(20)).is_some());
        assert!(l.keys.contains_key(&500));
    }
}
