//! Log lines about a peer, at most one per source per interval (`braid_proto::logsafe`), so a
//! scanner or a flood cannot fill the log: the line that does get through says how many were
//! held back.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use braid_proto::logsafe::{Held, LogLimiter};
use tokio::time::Instant;

use crate::admission::Source;

/// Lines across all sources per interval.
const BUDGET: u32 = 20;
/// Sources remembered at once.
const MAX_SOURCES: usize = 4096;

/// A per-source limiter on the daemon's clock.
#[derive(Debug)]
pub struct PerSourceLog {
    limiter: Mutex<LogLimiter<Source>>,
    epoch: Instant,
}

impl PerSourceLog {
    /// One line per source per `every`, and at most 20 per `every` in all.
    pub fn new(every: Duration) -> PerSourceLog {
        PerSourceLog {
            limiter: Mutex::new(LogLimiter::new(every, BUDGET, MAX_SOURCES)),
            epoch: Instant::now(),
        }
    }

    /// Whether a line about `ip` may be written now, and what was held back before it (its
    /// `Display` is the suffix to append).
    pub fn allow(&self, ip: IpAddr) -> Option<Held> {
        let now = self.epoch.elapsed();
        self.limiter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(&Source::of(ip), now)
    }
}
