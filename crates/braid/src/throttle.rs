//! At most one log line per interval about something that can happen thousands of times a
//! second (bad datagrams from the internet, a full session table), with the count of the ones
//! left unsaid.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets an event through at most once per `every`.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Mutex<Option<Instant>>,
    held: AtomicU64,
}

impl Throttle {
    /// A throttle that lets one event through per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: Mutex::new(None),
            held: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be told, `n` being how many were held back since the last
    /// one told; `None` when it is to be held back.
    pub fn ready(&self) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return None;
        };
        if last.is_some_and(|l| now.duration_since(l) < self.every) {
            self.held.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.held.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_interval_with_the_count_held_back() {
        let t = Throttle::new(Duration::from_secs(3600));
        assert_eq!(t.ready(), Some(0));
        assert_eq!(t.ready(), None);
        assert_eq!(t.ready(), None);
        let t0 = Throttle::new(Duration::ZERO);
        assert_eq!(t0.ready(), Some(0));
        assert_eq!(t0.ready(), Some(0));
    }
}
