//! Relay connections that lost the subflow of an uplink that is up.
//!
//! A connection bonds because the kernel joins a subflow from every uplink's endpoint to it.
//! When one of those joins closes while its uplink stays up (reset by either kernel, refused
//! over the relay's subflow limit, killed by a middlebox), the in-kernel path manager never
//! joins that endpoint to the connection again: it marks an endpoint used once per connection
//! and re-creates subflows only when an endpoint is added. Such a connection carries on over
//! the other uplinks, without the lost uplink's share, for as long as it lives; nothing fails
//! and nothing says why a download runs below the sum of the links. Seen on 6.18 in the lab: a
//! download's fresh 5g join reset from the gateway's side about 60 ms after it was established,
//! in a few runs in a hundred with many labs running at once.
//!
//! braid cannot add the subflow back (only a userspace path manager creates subflows on
//! request, and the gateway's namespace is the host's), and withdrawing and adding the endpoint
//! again would close that uplink's subflows on every other connection. So it says so: a
//! connection is counted, and logged once per uplink, when it has had no established subflow
//! from an uplink that is up for [`GRACE`] on end. A subflow that comes back (the uplink's
//! endpoint was added again after a flap) clears it.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long a connection may lack the subflow of an uplink that is up before it counts as lost.
/// A join takes one round trip of that uplink, and an uplink that comes back up gets its
/// endpoint added again within a sweep or two; three seconds clears both on any real link.
pub const GRACE: Duration = Duration::from_secs(3);

/// How often a log line per uplink may say that connections lost its subflow: a relay that
/// refuses every join makes each connection count, and the line's news is the first.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// What one look at a live connection found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The connection's id in the gateway's registry.
    pub id: u64,
    /// The uplinks that are up and have no established subflow in it.
    pub missing: Vec<String>,
}

/// A connection found without an uplink's subflow past the grace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The connection's id in the gateway's registry.
    pub id: u64,
    /// The uplink whose subflow it lacks.
    pub uplink: String,
}

/// Missing subflows and since when, across looks.
#[derive(Debug, Default)]
pub struct LostJoins {
    /// (connection, uplink) → when it was first seen missing, and whether it was reported.
    since: HashMap<(u64, String), (Duration, bool)>,
    /// Per uplink: losses not logged yet, and when its last line was written.
    unlogged: BTreeMap<String, (u64, Option<Duration>)>,
}

impl LostJoins {
    /// Takes one look at every live MPTCP connection at `now` and returns what is newly lost:
    /// each (connection, uplink) once while it stays missing. Connections not in `seen` are
    /// forgotten (they ended), and so is a subflow seen again.
    pub fn review(&mut self, now: Duration, seen: &[Seen]) -> Vec<Lost> {
        let mut next = HashMap::with_capacity(self.since.len());
        let mut out = Vec::new();
        for s in seen {
            for uplink in &s.missing {
                let key = (s.id, uplink.clone());
                let (since, mut reported) = self.since.get(&key).copied().unwrap_or((now, false));
                if !reported && now.saturating_sub(since) >= GRACE {
                    reported = true;
                    out.push(Lost {
                        id: s.id,
                        uplink: uplink.clone(),
                    });
                }
                next.insert(key, (since, reported));
            }
        }
        self.since = next;
        for l in &out {
            self.unlogged.entry(l.uplink.clone()).or_default().0 += 1;
        }
        out
    }

    /// The uplinks due a log line at `now` and how many losses each line reports: every loss
    /// is in one line, and an uplink gets at most one line per [`LOG_EVERY`].
    pub fn to_log(&mut self, now: Duration) -> Vec<(String, u64)> {
        let mut due = Vec::new();
        for (uplink, (n, last)) in self.unlogged.iter_mut() {
            if *n > 0 && last.is_none_or(|t| now.saturating_sub(t) >= LOG_EVERY) {
                due.push((uplink.clone(), std::mem::take(n)));
                *last = Some(now);
            }
        }
        due
    }

    /// Connections lacking at least one uplink's subflow past the grace now.
    pub fn connections_now(&self) -> u64 {
        let mut ids: Vec<u64> = (self.since.iter())
            .filter(|(_, (_, r))| *r)
            .map(|((id, _), _)| *id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn look(id: u64, missing: &[&str]) -> Seen {
        Seen {
            id,
            missing: missing.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn lost(id: u64, uplink: &str) -> Lost {
        Lost {
            id,
            uplink: uplink.into(),
        }
    }

    #[test]
    fn a_subflow_missing_past_the_grace_is_reported_once() {
        let mut j = LostJoins::default();
        assert!(j
            .review(ms(0), &[look(1, &["5g"]), look(2, &[])])
            .is_empty());
        assert!(j.review(GRACE - ms(1), &[look(1, &["5g"])]).is_empty());
        assert_eq!(j.connections_now(), 0);
        assert_eq!(j.review(GRACE, &[look(1, &["5g"])]), vec![lost(1, "5g")]);
        assert_eq!(j.connections_now(), 1);
        // Still missing: counted, not reported again.
        assert!(j.review(GRACE * 10, &[look(1, &["5g"])]).is_empty());
        assert_eq!(j.connections_now(), 1);
    }

    #[test]
    fn log_lines_come_at_most_once_a_minute_per_uplink_and_lose_no_count() {
        let mut j = LostJoins::default();
        j.review(ms(0), &[look(1, &["5g"]), look(2, &["dsl"])]);
        j.review(GRACE, &[look(1, &["5g"]), look(2, &["dsl"])]);
        assert_eq!(
            j.to_log(GRACE),
            vec![("5g".to_string(), 1), ("dsl".to_string(), 1)]
        );
        assert!(j.to_log(GRACE).is_empty());
        // Two more on 5g within the minute: held, then in one line.
        let t = GRACE + ms(1000);
        j.review(t, &[look(1, &["5g"]), look(3, &["5g"]), look(4, &["5g"])]);
        j.review(
            t + GRACE,
            &[look(1, &["5g"]), look(3, &["5g"]), look(4, &["5g"])],
        );
        assert!(j.to_log(t + GRACE).is_empty());
        assert!(j.to_log(GRACE + LOG_EVERY - ms(1)).is_empty());
        assert_eq!(j.to_log(GRACE + LOG_EVERY), vec![("5g".to_string(), 2)]);
        assert!(j.to_log(GRACE * 100).is_empty());
    }

    #[test]
    fn a_join_in_time_is_never_reported_and_a_later_loss_gets_a_fresh_grace() {
        let mut j = LostJoins::default();
        // A fresh connection waits one round trip for its join.
        j.review(ms(0), &[look(1, &["5g"])]);
        assert!(j.review(ms(200), &[look(1, &[])]).is_empty());
        assert!(j.review(ms(4000), &[look(1, &["5g"])]).is_empty());
        assert!(j
            .review(ms(4000) + GRACE - ms(1), &[look(1, &["5g"])])
            .is_empty());
        assert_eq!(
            j.review(ms(4000) + GRACE, &[look(1, &["5g"])]),
            vec![lost(1, "5g")]
        );
        // The subflow comes back (its endpoint added again after a flap): no longer counted,
        // and a second loss is reported again.
        assert!(j.review(ms(9000), &[look(1, &[])]).is_empty());
        assert_eq!(j.connections_now(), 0);
        j.review(ms(10_000), &[look(1, &["5g"])]);
        assert_eq!(
            j.review(ms(10_000) + GRACE, &[look(1, &["5g"])]),
            vec![lost(1, "5g")]
        );
    }

    #[test]
    fn each_uplink_counts_on_its_own_and_ended_connections_are_forgotten() {
        let mut j = LostJoins::default();
        j.review(ms(0), &[look(1, &["5g"]), look(2, &["5g"])]);
        j.review(ms(1000), &[look(1, &["5g", "dsl"]), look(2, &["5g"])]);
        let first = j.review(GRACE, &[look(1, &["5g", "dsl"]), look(2, &["5g"])]);
        assert_eq!(first, vec![lost(1, "5g"), lost(2, "5g")]);
        assert_eq!(
            j.review(ms(1000) + GRACE, &[look(1, &["5g", "dsl"])]),
            vec![lost(1, "dsl")]
        );
        // Connection 2 ended: gone from the counts.
        assert_eq!(j.connections_now(), 1);
    }
}
