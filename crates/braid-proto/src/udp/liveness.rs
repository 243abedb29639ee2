//! How long a UDP session lives, as Linux conntrack decides it: a flow without a reply, or one
//! younger than two seconds (a DNS query and its answer), times out soon; a flow that has been
//! talking both ways for longer (a call, a QUIC connection, a game) is a stream and lives longer.
//! Every packet either way pushes the deadline.

use std::time::Duration;

/// A flow that saw a reply becomes a stream once it is still active this long after it began
/// (conntrack's rule).
pub const STREAM_AFTER: Duration = Duration::from_secs(2);

/// The two timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle time before a session that is not a stream ends (conntrack: 30 s).
    pub unreplied: Duration,
    /// Idle time before a stream ends (conntrack: 120 s).
    pub stream: Duration,
}

/// One session's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    created: Duration,
    last: Duration,
    replied: bool,
    stream: bool,
}

impl Liveness {
    /// A session that began at `now` (with its first outbound packet).
    pub fn new(now: Duration) -> Liveness {
        Liveness {
            created: now,
            last: now,
            replied: false,
            stream: false,
        }
    }

    /// A packet from the session's initiator at `now`.
    pub fn on_outbound(&mut self, now: Duration) {
        self.touch(now);
    }

    /// A reply at `now`.
    pub fn on_reply(&mut self, now: Duration) {
        self.replied = true;
        self.touch(now);
    }

    fn touch(&mut self, now: Duration) {
        self.last = self.last.max(now);
        if self.replied && now.saturating_sub(self.created) >= STREAM_AFTER {
            self.stream = true;
        }
    }

    /// When the last packet either way was seen.
    pub fn last_activity(&self) -> Duration {
        self.last
    }

    /// Whether a reply was ever seen.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// Whether the session counts as a stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// When the session ends if nothing more happens.
    pub fn expires_at(&self, t: &Timeouts) -> Duration {
        self.last + if self.stream { t.stream } else { t.unreplied }
    }

    /// Whether the session has ended by `now`.
    pub fn expired(&self, t: &Timeouts, now: Duration) -> bool {
        now >= self.expires_at(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        unreplied: Duration::from_secs(30),
        stream: Duration::from_secs(180),
    };

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn unreplied_session_ends_after_the_short_timeout() {
        let mut l = Liveness::new(s(10.0));
        l.on_outbound(s(15.0));
        assert_eq!(l.expires_at(&T), s(45.0));
        assert!(!l.expired(&T, s(44.9)));
        assert!(l.expired(&T, s(45.0)));
    }

    #[test]
    fn query_and_answer_stays_short_but_a_conversation_becomes_a_stream() {
        let mut dns = Liveness::new(s(0.0));
        dns.on_reply(s(0.05));
        assert!(dns.replied() && !dns.is_stream());
        assert_eq!(dns.expires_at(&T), s(30.05));

        let mut call = Liveness::new(s(0.0));
        call.on_reply(s(0.05));
        call.on_outbound(s(2.5));
        assert!(call.is_stream());
        assert_eq!(call.expires_at(&T), s(182.5));
    }

    #[test]
    fn old_timestamps_never_move_the_deadline_back() {
        let mut l = Liveness::new(s(5.0));
        l.on_outbound(s(9.0));
        l.on_outbound(s(7.0));
        assert_eq!(l.expires_at(&T), s(39.0));
    }
}
