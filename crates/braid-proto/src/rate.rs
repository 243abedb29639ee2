//! Throughput from byte counters: the current rate of an interface and its last minutes, one
//! value per second.
//!
//! The caller reads an interface's byte counter (`/sys/class/net/IF/statistics/rx_bytes`) about
//! once a second, at any irregular interval, and hands it in with the time it was read:
//!
//! ```text
//!  (now, rx_bytes) ──► CounterRate::observe ──► rate_bps()   bits/s over the last second
//!                                         └─► history()    one value per whole second, oldest first
//! ```
//!
//! Sans-IO: nothing here reads a clock. Time is a [`Duration`] since an origin the caller picks
//! once (typically `start.elapsed()` of one `Instant`). Second `k` of the history is the interval
//! `[k s, k+1 s)` since that origin, so meters fed with the same origin have aligned histories.
//!
//! How the history is filled, honestly:
//! - Bytes between two samples are spread evenly over the time between them. A second in which
//!   no sample was taken (the caller was late) therefore shows the *average rate of the interval
//!   that spans it*: not 0, which would invent a stall, and not the previous rate, which would
//!   invent traffic. The area under the graph equals the bytes that really moved.
//! - A second only partly covered by samples (the very first one, or one cut by a reset) shows
//!   the rate over the covered part. A second with no coverage at all shows 0.
//! - A counter that goes down means the interface was reset (or a 32-bit counter wrapped): how
//!   many bytes moved is unknown, so that interval counts as uncovered (0), the current rate
//!   restarts at 0 and measuring restarts from the new counter. A rate is never negative.
//! - Time that goes backwards (a caller bug or a new origin) restarts measuring the same way;
//!   the history keeps its values and continues from the new time. Nothing panics.
//! - The second in progress is not in the history until a sample at or after its end closes it.

use std::collections::VecDeque;
use std::time::Duration;

/// Seconds of history kept by default: 5 minutes.
pub const DEFAULT_HISTORY_SECS: usize = 300;

/// The window of [`CounterRate::rate_bps`]. It starts at the sample whose age is closest to this,
/// so sampling every 100 ms gives exactly 1 s, and sampling every 1 s with a little jitter
/// (every 980 ms) gives the last interval rather than two of them.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Rate of one byte counter: current and per-second history.
#[derive(Debug, Clone)]
pub struct CounterRate {
    /// Samples since the last restart, oldest first: the newest one that is at least
    /// [`RATE_WINDOW`] old, and everything after it.
    samples: VecDeque<Sample>,
    /// Bits per second over the last second, as of the newest sample.
    rate_bps: f64,
    /// The second the newest sample falls in, still open.
    open: Option<Bin>,
    history: History,
    restarts: u64,
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    total: u64,
}

/// An open second: bits attributed to it so far and how much of it samples covered.
#[derive(Debug, Clone, Copy)]
struct Bin {
    second: u64,
    bits: f64,
    covered: Duration,
}

impl Bin {
    fn new(second: u64) -> Self {
        Bin {
            second,
            bits: 0.0,
            covered: Duration::ZERO,
        }
    }

    /// Bits per second over the covered part; 0 if nothing was covered.
    fn value(&self) -> f64 {
        if self.covered.is_zero() {
            0.0
        } else {
            self.bits / self.covered.as_secs_f64()
        }
    }
}

impl Default for CounterRate {
    fn default() -> Self {
        CounterRate::new()
    }
}

impl CounterRate {
    /// A meter with [`DEFAULT_HISTORY_SECS`] of history.
    pub fn new() -> Self {
        CounterRate::with_history(DEFAULT_HISTORY_SECS)
    }

    /// A meter keeping `secs` seconds of history (at least 1).
    pub fn with_history(secs: usize) -> Self {
        CounterRate {
            samples: VecDeque::new(),
            rate_bps: 0.0,
            open: None,
            history: History::new(secs),
            restarts: 0,
        }
    }

    /// Feeds the counter `total` (bytes, monotonically increasing unless the interface was
    /// reset) read at `now`.
    pub fn observe(&mut self, now: Duration, total: u64) {
        let Some(last) = self.samples.back().copied() else {
            self.start(now, total);
            return;
        };
        if now < last.at || total < last.total {
            self.restart(last.at, now, total);
            return;
        }
        let bits = (total - last.total) as f64 * 8.0;
        if now == last.at {
            // Same instant, more bytes: they belong to the second in progress.
            if let Some(open) = &mut self.open {
                open.bits += bits;
            }
        } else {
            let bps = bits / (now - last.at).as_secs_f64();
            self.fill(last.at, now, Some(bps));
        }
        self.samples.push_back(Sample { at: now, total });
        self.prune();
        self.rate_bps = self.window_rate();
    }

    /// Bits per second over the last second (over the last interval if samples are further
    /// apart), as of the newest sample. 0 before the second sample and right after a restart.
    pub fn rate_bps(&self) -> f64 {
        self.rate_bps
    }

    /// The newest counter value seen.
    pub fn total(&self) -> Option<u64> {
        self.samples.back().map(|s| s.total)
    }

    /// How often measuring restarted because the counter went down or time went backwards.
    pub fn restarts(&self) -> u64 {
        self.restarts
    }

    /// One value per whole second (bits per second), oldest first.
    pub fn history(&self) -> &History {
        &self.history
    }

    fn start(&mut self, now: Duration, total: u64) {
        self.samples.clear();
        self.samples.push_back(Sample { at: now, total });
        self.open = Some(Bin::new(now.as_secs()));
        self.rate_bps = 0.0;
    }

    /// Counter reset or time went backwards: the bytes of `from..now` are unknown.
    fn restart(&mut self, from: Duration, now: Duration, total: u64) {
        self.restarts += 1;
        if now >= from {
            // Close the seconds up to `now` without coverage; the open bin continues.
            self.fill(from, now, None);
            self.samples.clear();
            self.samples.push_back(Sample { at: now, total });
            self.rate_bps = 0.0;
        } else {
            // Time went backwards: the open second is dropped, the history kept as it is.
            self.start(now, total);
        }
    }

    /// Attributes `bps` (None: unknown) to every moment of `from..to` and closes the seconds
    /// that ends. `from` lies in the open second.
    fn fill(&mut self, from: Duration, to: Duration, bps: Option<f64>) {
        let mut open = self.open.unwrap_or_else(|| Bin::new(from.as_secs()));
        let add = |bin: &mut Bin, span: Duration| {
            if let Some(bps) = bps {
                bin.bits += bps * span.as_secs_f64();
                bin.covered += span;
            }
        };
        let last_second = to.as_secs();
        if open.second == last_second {
            add(&mut open, to - from);
            self.open = Some(open);
            return;
        }
        let first_end = secs(open.second + 1);
        add(&mut open, first_end.saturating_sub(from));
        self.history.push(open.value());
        // Whole seconds strictly between; more than the history holds would be evicted anyway.
        let whole = last_second - open.second - 1;
        let whole = whole.min(self.history.capacity() as u64);
        for _ in 0..whole {
            self.history.push(bps.unwrap_or(0.0));
        }
        let mut next = Bin::new(last_second);
        add(&mut next, to - secs(last_second));
        self.open = Some(next);
    }

    /// Drops samples older than the newest one that is at least [`RATE_WINDOW`] old.
    fn prune(&mut self) {
        let Some(newest) = self.samples.back().map(|s| s.at) else {
            return;
        };
        while self
            .samples
            .get(1)
            .is_some_and(|s| newest - s.at >= RATE_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    fn window_rate(&self) -> f64 {
        let (Some(oldest), Some(newest)) = (self.samples.front(), self.samples.back()) else {
            return 0.0;
        };
        let off_window = |s: &Sample| (newest.at - s.at).abs_diff(RATE_WINDOW);
        let base = match self.samples.get(1) {
            Some(next) if next.at < newest.at && off_window(next) < off_window(oldest) => next,
            _ => oldest,
        };
        let span = newest.at - base.at;
        if span.is_zero() {
            return 0.0;
        }
        newest.total.saturating_sub(base.total) as f64 * 8.0 / span.as_secs_f64()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The last N per-second values, oldest first. Full, it forgets the oldest on each push.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    values: VecDeque<f64>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        History::new(DEFAULT_HISTORY_SECS)
    }
}

impl History {
    /// An empty history of `capacity` values (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        History {
            values: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends the newest value, forgetting the oldest when full.
    pub fn push(&mut self, value: f64) {
        if self.values.len() == self.capacity {
            self.values.pop_front();
        }
        self.values.push_back(value);
    }

    /// Values held (at most [`History::capacity`]).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// No value yet.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// How many values it keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The newest value.
    pub fn latest(&self) -> Option<f64> {
        self.values.back().copied()
    }

    /// Oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = f64> + ExactSizeIterator + '_ {
        self.values.iter().copied()
    }

    /// Oldest first, as the status document's `history_*_bps` wants it.
    pub fn to_vec(&self) -> Vec<f64> {
        self.values.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1_000_000;
    /// 1 MB/s in bits per second.
    const MBPS8: f64 = 8_000_000.0;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    fn assert_all(values: &[f64], expected: f64) {
        assert!(
            values.iter().all(|v| close(*v, expected)),
            "expected all {expected}, got {values:?}"
        );
    }

    /// Feeds a constant `bytes_per_sec` at the given sample times (ms).
    fn steady(
        meter: &mut CounterRate,
        times_ms: impl IntoIterator<Item = u64>,
        bytes_per_sec: u64,
    ) {
        for t in times_ms {
            meter.observe(ms(t), t * bytes_per_sec / 1000);
        }
    }

    #[test]
    fn new_meter_no_samples_reports_zero_and_empty_history() {
        let m = CounterRate::new();
        assert_eq!(m.rate_bps(), 0.0);
        assert!(m.history().is_empty());
        assert_eq!(m.history().capacity(), DEFAULT_HISTORY_SECS);
        assert_eq!(m.total(), None);
    }

    #[test]
    fn steady_sampled_every_second_reports_rate_and_one_value_per_second() {
        let mut m = CounterRate::new();
        steady(&mut m, (0..=10).map(|s| s * 1000), MB);
        assert!(close(m.rate_bps(), MBPS8), "{}", m.rate_bps());
        assert_eq!(m.history().len(), 10);
        assert_all(&m.history().to_vec(), MBPS8);
        assert_eq!(m.total(), Some(10 * MB));
    }

    #[test]
    fn steady_sampled_every_100ms_reports_rate_over_one_second() {
        let mut m = CounterRate::new();
        steady(&mut m, (0..=50).map(|i| i * 100), 2 * MB);
        assert!(close(m.rate_bps(), 2.0 * MBPS8));
        assert_eq!(m.history().len(), 5);
        assert_all(&m.history().to_vec(), 2.0 * MBPS8);
    }

    #[test]
    fn steady_sampled_with_jitter_keeps_a_one_second_window() {
        // Samples every 980 ms: the window must be the last interval, not two of them.
        let mut m = CounterRate::new();
        let mut total = 0;
        for i in 0..10u64 {
            m.observe(ms(i * 980), total);
            total += MB;
        }
        // The last interval (980 ms) carried 1 MB; two intervals would give the same rate, so
        // make the last one different.
        m.observe(ms(10 * 980), total - MB + 3 * MB);
        let expected = 3.0 * MBPS8 / 0.98;
        assert!(close(m.rate_bps(), expected), "{}", m.rate_bps());
    }

    #[test]
    fn idle_then_burst_shows_burst_in_its_second_only() {
        let mut m = CounterRate::new();
        for s in 0..=5 {
            m.observe(ms(s * 1000), 0);
        }
        assert_eq!(m.rate_bps(), 0.0);
        m.observe(ms(6000), 10 * MB);
        assert!(close(m.rate_bps(), 10.0 * MBPS8));
        m.observe(ms(7000), 10 * MB);
        m.observe(ms(8000), 10 * MB);
        assert_eq!(m.rate_bps(), 0.0);
        let h = m.history().to_vec();
        assert_eq!(h.len(), 8);
        assert_all(&h[..5], 0.0);
        assert!(close(h[5], 10.0 * MBPS8), "{h:?}");
        assert_all(&h[6..], 0.0);
    }

    #[test]
    fn burst_within_fast_samples_falls_out_of_rate_after_one_second() {
        let mut m = CounterRate::new();
        let mut total = 0;
        for i in 0..=30u64 {
            if i == 10 {
                total += 5 * MB; // 5 MB between 900 ms and 1000 ms
            }
            m.observe(ms(i * 100), total);
            if i == 10 {
                assert!(close(m.rate_bps(), 5.0 * MBPS8), "{}", m.rate_bps());
            }
        }
        assert_eq!(m.rate_bps(), 0.0);
        let h = m.history().to_vec();
        assert!(close(h[0], 5.0 * MBPS8), "{h:?}");
        assert_all(&h[1..], 0.0);
    }

    #[test]
    fn gap_in_sampling_fills_skipped_seconds_with_the_average_rate() {
        let mut m = CounterRate::new();
        m.observe(ms(0), 0);
        m.observe(ms(1000), MB);
        m.observe(ms(2000), 2 * MB);
        // Nothing for 3 s, then 6 MB more: 2 MB/s on average over the gap.
        m.observe(ms(5000), 8 * MB);
        assert!(close(m.rate_bps(), 2.0 * MBPS8));
        let h = m.history().to_vec();
        assert_eq!(h.len(), 5);
        assert_all(&h[..2], MBPS8);
        assert_all(&h[2..], 2.0 * MBPS8);
        // The area under the graph is the bytes that moved.
        let bytes: f64 = h.iter().sum::<f64>() / 8.0;
        assert!(close(bytes, 8.0 * MB as f64));
    }

    #[test]
    fn gap_longer_than_history_fills_it_without_looping_over_the_gap() {
        let mut m = CounterRate::with_history(10);
        m.observe(ms(0), 0);
        let year = 365 * 24 * 3600;
        m.observe(Duration::from_secs(year), year * MB);
        assert_eq!(m.history().len(), 10);
        assert_all(&m.history().to_vec(), MBPS8);
        assert!(close(m.rate_bps(), MBPS8));
    }

    #[test]
    fn counter_reset_restarts_without_a_negative_rate() {
        let mut m = CounterRate::new();
        steady(&mut m, (0..=3).map(|s| s * 1000), MB);
        // The interface was reset: the counter starts again from a small value.
        m.observe(ms(4000), 100);
        assert_eq!(m.rate_bps(), 0.0);
        assert_eq!(m.restarts(), 1);
        assert_eq!(m.total(), Some(100));
        m.observe(ms(5000), 100 + 3 * MB);
        assert!(close(m.rate_bps(), 3.0 * MBPS8));
        let h = m.history().to_vec();
        assert_eq!(h.len(), 5);
        assert_all(&h[..3], MBPS8);
        assert_eq!(
            h[3], 0.0,
            "unknown bytes during the reset count as 0: {h:?}"
        );
        assert!(close(h[4], 3.0 * MBPS8));
        assert!(h.iter().all(|v| *v >= 0.0));
    }

    #[test]
    fn counter_reset_mid_second_shows_rate_of_the_covered_part() {
        let mut m = CounterRate::new();
        m.observe(ms(0), 0);
        m.observe(ms(500), MB / 2); // 1 MB/s for the first half
        m.observe(ms(700), 0); // reset: 500..700 unknown
        m.observe(ms(1000), 3 * MB / 10); // 1 MB/s again for 300 ms
        let h = m.history().to_vec();
        assert_eq!(h.len(), 1);
        assert!(close(h[0], MBPS8), "{h:?}");
    }

    #[test]
    fn counter_reset_at_the_same_instant_keeps_the_open_second() {
        let mut m = CounterRate::new();
        m.observe(ms(0), 0);
        m.observe(ms(500), MB / 2);
        m.observe(ms(500), 10);
        m.observe(ms(1000), 10 + MB / 2);
        assert!(close(m.history().latest().unwrap(), MBPS8));
        assert_eq!(m.restarts(), 1);
    }

    #[test]
    fn irregular_sampling_at_constant_rate_reports_that_rate() {
        let times = [
            0, 130, 300, 1700, 2200, 2210, 3000, 4900, 5000, 5001, 6500, 7990, 8000, 9100, 10_000,
        ];
        let mut m = CounterRate::new();
        steady(&mut m, times, 4 * MB);
        assert!(close(m.rate_bps(), 4.0 * MBPS8), "{}", m.rate_bps());
        assert_eq!(m.history().len(), 10);
        // Byte counts are rounded to whole bytes at each sample; allow for that.
        for v in m.history().iter() {
            assert!((v - 4.0 * MBPS8).abs() < 100.0, "{:?}", m.history());
        }
    }

    #[test]
    fn first_sample_mid_second_shows_rate_of_the_covered_part() {
        let mut m = CounterRate::new();
        m.observe(ms(500), 0);
        m.observe(ms(1500), MB);
        let h = m.history().to_vec();
        assert_eq!(h.len(), 1);
        assert!(close(h[0], MBPS8), "{h:?}");
    }

    #[test]
    fn same_instant_samples_add_bytes_to_the_open_second() {
        let mut m = CounterRate::new();
        m.observe(ms(0), 0);
        m.observe(ms(400), MB / 2);
        m.observe(ms(400), MB);
        m.observe(ms(1000), MB);
        let h = m.history().to_vec();
        // 1 MB over the 1 s covered.
        assert!(close(h[0], MBPS8), "{h:?}");
    }

    #[test]
    fn history_full_keeps_last_n_oldest_first() {
        let mut m = CounterRate::with_history(5);
        let mut total = 0;
        m.observe(ms(0), 0);
        for s in 1..=10u64 {
            total += s * MB; // second s-1 carries s MB
            m.observe(ms(s * 1000), total);
        }
        let h = m.history().to_vec();
        assert_eq!(h.len(), 5);
        let expected: Vec<f64> = (6..=10).map(|s| s as f64 * MBPS8).collect();
        for (v, e) in h.iter().zip(&expected) {
            assert!(close(*v, *e), "{h:?}");
        }
        assert!(close(m.history().latest().unwrap(), 10.0 * MBPS8));
    }

    #[test]
    fn history_default_holds_five_minutes() {
        let mut m = CounterRate::new();
        steady(&mut m, (0..=400).map(|s| s * 1000), MB);
        assert_eq!(m.history().len(), 300);
        assert_eq!(m.history().iter().len(), 300);
    }

    #[test]
    fn history_capacity_zero_is_one() {
        let mut h = History::new(0);
        h.push(1.0);
        h.push(2.0);
        assert_eq!(h.to_vec(), vec![2.0]);
    }

    #[test]
    fn time_backwards_restarts_without_panic() {
        let mut m = CounterRate::new();
        steady(&mut m, (0..=5).map(|s| s * 1000), MB);
        m.observe(ms(2000), 6 * MB);
        assert_eq!(m.rate_bps(), 0.0);
        assert_eq!(m.restarts(), 1);
        let before = m.history().len();
        m.observe(ms(3000), 7 * MB);
        assert!(close(m.rate_bps(), MBPS8));
        assert_eq!(m.history().len(), before + 1);
    }

    #[test]
    fn arbitrary_inputs_never_panic_nor_go_negative() {
        // A small LCG: deterministic, no dependency.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            x >> 33
        };
        let mut m = CounterRate::with_history(30);
        let (mut t, mut total) = (0u64, 0u64);
        for _ in 0..20_000 {
            match next() % 10 {
                0 => t = t.saturating_sub(next() % 5_000),
                1 => total = next() % 1000,
                2 => t += next() % 100_000,
                _ => t += next() % 1500,
            }
            total = total.saturating_add(next() % 10_000_000);
            m.observe(ms(t), total);
            let r = m.rate_bps();
            assert!(r.is_finite() && r >= 0.0, "{r}");
        }
        assert_eq!(m.history().len(), 30);
        assert!(m.history().iter().all(|v| v.is_finite() && v >= 0.0));
    }
}
