//! Reading what happened: interface byte counters and ping results. The parsers are pure; the
//! lab's methods feed them the output of commands run inside a namespace.

use crate::LabError;

/// Byte counters of one interface (`/sys/class/net/IF/statistics/{rx,tx}_bytes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IfaceBytes {
    /// Bytes received.
    pub rx: u64,
    /// Bytes sent.
    pub tx: u64,
}

impl IfaceBytes {
    /// Parses two lines, rx then tx, as printed by `cat rx_bytes tx_bytes`.
    pub fn parse(text: &str) -> Result<IfaceBytes, LabError> {
        let mut nums = text.split_whitespace().map(str::parse::<u64>);
        match (nums.next(), nums.next(), nums.next()) {
            (Some(Ok(rx)), Some(Ok(tx)), None) => Ok(IfaceBytes { rx, tx }),
            _ => Err(LabError::parse("rx_bytes and tx_bytes", text)),
        }
    }

    /// Bytes counted since `earlier` (counters only grow while the interface exists).
    pub fn since(self, earlier: IfaceBytes) -> IfaceBytes {
        IfaceBytes {
            rx: self.rx.saturating_sub(earlier.rx),
            tx: self.tx.saturating_sub(earlier.tx),
        }
    }
}

/// The result of an iputils `ping` run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Replies received.
    pub received: u32,
    /// Round-trip time of each reply, in ms, in arrival order.
    pub rtts_ms: Vec<f64>,
}

impl PingStats {
    /// Parses iputils `ping` output (`… time=12.3 ms` lines and the
    /// `N packets transmitted, M received` summary).
    pub fn parse(text: &str) -> Result<PingStats, LabError> {
        let rtts_ms = text
            .lines()
            .filter_map(|l| l.split("time=").nth(1))
            .filter_map(|t| t.split_whitespace().next()?.parse().ok())
            .collect();
        let summary = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .ok_or_else(|| LabError::parse("ping summary", text))?;
        let mut fields = summary.split(',').map(|f| {
            f.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u32>().ok())
        });
        let (Some(Some(transmitted)), Some(Some(received))) = (fields.next(), fields.next()) else {
            return Err(LabError::parse("ping summary", summary));
        };
        Ok(PingStats {
            transmitted,
            received,
            rtts_ms,
        })
    }

    /// Median RTT in ms, `None` without replies.
    pub fn median_ms(&self) -> Option<f64> {
        let mut v = self.rtts_ms.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    /// Requests without a reply.
    pub fn lost(&self) -> u32 {
        self.transmitted.saturating_sub(self.received)
    }
}

/// Finds counter `name` of `group` in `/proc/net/netstat`-style text, where each group is a
/// header line (`MPTcpExt: MPCapableSYNRX …`) followed by a value line (`MPTcpExt: 3 …`).
pub fn netstat_counter(text: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    while let (Some(header), Some(values)) = (lines.next(), lines.next()) {
        let pos = header.split_whitespace().position(|h| h == name);
        if let Some(pos) = pos {
            return values.split_whitespace().nth(pos)?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netstat_counter_reads_named_column() {
        let text = "TcpExt: SyncookiesSent SyncookiesRecv\nTcpExt: 1 2\n\
                    MPTcpExt: MPCapableSYNRX MPCapableSYNTX\nMPTcpExt: 7 9\n";
        assert_eq!(netstat_counter(text, "MPTcpExt", "MPCapableSYNTX"), Some(9));
        assert_eq!(netstat_counter(text, "TcpExt", "SyncookiesSent"), Some(1));
        assert_eq!(netstat_counter(text, "MPTcpExt", "Nope"), None);
    }

    #[test]
    fn iface_bytes_parse_two_numbers() {
        let b = IfaceBytes::parse("1234\n5678\n").unwrap();
        assert_eq!(b, IfaceBytes { rx: 1234, tx: 5678 });
        assert_eq!(
            b.since(IfaceBytes { rx: 1000, tx: 8000 }),
            IfaceBytes { rx: 234, tx: 0 }
        );
        assert!(IfaceBytes::parse("12\n").is_err());
        assert!(IfaceBytes::parse("a\nb\n").is_err());
    }

    const PING: &str = "PING 10.200.0.1 (10.200.0.1) from 10.1.0.1 wan-a: 56(84) bytes of data.
64 bytes from 10.200.0.1: icmp_seq=1 ttl=64 time=40.9 ms
64 bytes from 10.200.0.1: icmp_seq=2 ttl=64 time=40.3 ms
64 bytes from 10.200.0.1: icmp_seq=4 ttl=64 time=41.0 ms

--- 10.200.0.1 ping statistics ---
4 packets transmitted, 3 received, 25% packet loss, time 3004ms
rtt min/avg/max/mdev = 40.3/40.7/41.0/0.3 ms
";

    #[test]
    fn ping_parse_reads_rtts_and_summary() {
        let p = PingStats::parse(PING).unwrap();
        assert_eq!(p.transmitted, 4);
        assert_eq!(p.received, 3);
        assert_eq!(p.lost(), 1);
        assert_eq!(p.rtts_ms, vec![40.9, 40.3, 41.0]);
        assert_eq!(p.median_ms(), Some(40.9));
    }

    #[test]
    fn ping_parse_all_lost_has_no_median() {
        let text = "--- x ping statistics ---\n3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2ms\n";
        let p = PingStats::parse(text).unwrap();
        assert_eq!((p.transmitted, p.received), (3, 0));
        assert_eq!(p.median_ms(), None);
        assert!(PingStats::parse("garbage").is_err());
    }
}
