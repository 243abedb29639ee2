//! The kernel's TCP memory accounting: the global counter, its limits, and what the open
//! sockets could legitimately hold.
//!
//! Every TCP (and MPTCP) socket charges the pages its buffers use to one global counter
//! (`tcp_memory_allocated`, the `mem` field of the `TCP:` line of `/proc/net/sockstat`). Past the
//! second value of `net.ipv4.tcp_mem` the kernel is "under pressure" and shrinks buffers; past the
//! third it refuses memory to every TCP socket on the host ("TCP: out of memory -- consider tuning
//! tcp_mem"), so new connections fail. The counter is global (not per network namespace), and
//! `net.ipv4.tcp_mem` is only visible in the initial namespace.
//!
//! A kernel accounting fault can make the counter run away while real memory use stays flat
//! (Linux 6.18 with MPTCP and segmentation offloads was seen to add 5 million pages in 8 s with
//! one socket open). That is told apart from real load by comparing the counter with the most
//! the open sockets could hold: every TCP socket (`alloc` in sockstat) can hold at most
//! `tcp_rmem[2] + tcp_wmem[2]` bytes, and an MPTCP connection adds one such buffer pair on top of
//! its subflows, hence [`SOCKET_BOUND_FACTOR`].

use crate::sysctl::Procfs;

/// Buffer pairs counted per TCP socket for the bound: one for the socket, one for an MPTCP
/// connection socket that may sit above it.
pub const SOCKET_BOUND_FACTOR: u64 = 2;

/// A counter below this many pages (256 MiB with 4 KiB pages) is never called a runaway: with
/// only a few sockets open the bound is small and ordinary slack would look suspicious.
pub const RUNAWAY_FLOOR_PAGES: u64 = 65_536;

/// `net.ipv4.tcp_mem`: three thresholds in pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpMemLimits {
    /// Below this the kernel does not regulate memory at all.
    pub min: u64,
    /// Above this the kernel is under pressure and shrinks buffers.
    pub pressure: u64,
    /// Above this no TCP socket gets memory: new connections fail.
    pub max: u64,
}

/// What the kernel says about TCP memory. Every field is optional because each comes from a
/// different file, and some are not visible everywhere (containers, network namespaces).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpMemReading {
    /// `mem` of the `TCP:` line of `/proc/net/sockstat`: pages charged to TCP, host-wide.
    pub pages: Option<u64>,
    /// `alloc` of the same line: TCP sockets allocated, host-wide.
    pub sockets: Option<u64>,
    /// `net.ipv4.tcp_mem` (only readable in the initial network namespace).
    pub limits: Option<TcpMemLimits>,
    /// `tcp_rmem[2] + tcp_wmem[2]` in bytes: the most one socket's buffers may hold.
    pub socket_max_bytes: Option<u64>,
    /// The `press` column of the `TCP` row of `/proc/net/protocols`: the kernel's own
    /// memory-pressure flag.
    pub kernel_pressure: Option<bool>,
    /// Bytes per page.
    pub page_size: u64,
}

/// Where the counter stands against `net.ipv4.tcp_mem`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpMemLevel {
    /// Below the pressure threshold.
    Ok,
    /// At or above the pressure threshold (or the kernel says it is under pressure).
    Pressure,
    /// Above the maximum: every TCP socket on the host is refused memory.
    Exhausted,
    /// The counter could not be read.
    Unknown,
}

impl TcpMemReading {
    /// Where the counter stands. Without `tcp_mem` (a network namespace) only the kernel's own
    /// pressure flag can say more than `Ok`.
    pub fn level(&self) -> TcpMemLevel {
        let Some(pages) = self.pages else {
            return TcpMemLevel::Unknown;
        };
        match self.limits {
            Some(l) if pages > l.max => TcpMemLevel::Exhausted,
            Some(l) if pages >= l.pressure => TcpMemLevel::Pressure,
            _ if self.kernel_pressure == Some(true) => TcpMemLevel::Pressure,
            _ => TcpMemLevel::Ok,
        }
    }

    /// The most the allocated TCP sockets could hold, in pages: sockets × [`SOCKET_BOUND_FACTOR`]
    /// × (`tcp_rmem[2]` + `tcp_wmem[2]`).
    pub fn socket_bound_pages(&self) -> Option<u64> {
        let per_socket = self.socket_max_bytes?.div_ceil(self.page_size.max(1));
        Some(
            self.sockets?
                .max(1)
                .saturating_mul(SOCKET_BOUND_FACTOR)
                .saturating_mul(per_socket),
        )
    }

    /// True when the counter is above both [`RUNAWAY_FLOOR_PAGES`] and what the open sockets
    /// could hold: the kernel's accounting ran away, this is not real load.
    pub fn runaway(&self) -> bool {
        match (self.pages, self.socket_bound_pages()) {
            (Some(p), Some(bound)) => p > RUNAWAY_FLOOR_PAGES && p > bound,
            _ => false,
        }
    }
}

/// Reads the counter, the limits and the per-socket bound. Like `grep TCP: /proc/net/sockstat`,
/// `sysctl net.ipv4.tcp_mem net.ipv4.tcp_rmem net.ipv4.tcp_wmem` and the `TCP` row of
/// `/proc/net/protocols`.
pub fn read(procfs: &Procfs) -> TcpMemReading {
    let sockstat = procfs
        .file("net/sockstat")
        .ok()
        .and_then(|t| parse_sockstat(&t));
    let triple = |key: &str| procfs.sysctl(key).ok().and_then(|v| parse_triple(&v));
    let limits =
        triple("net.ipv4.tcp_mem").map(|[min, pressure, max]| TcpMemLimits { min, pressure, max });
    let socket_max_bytes = match (triple("net.ipv4.tcp_rmem"), triple("net.ipv4.tcp_wmem")) {
        (Some(r), Some(w)) => Some(r[2].saturating_add(w[2])),
        _ => None,
    };
    TcpMemReading {
        pages: sockstat.map(|(pages, _)| pages),
        sockets: sockstat.map(|(_, sockets)| sockets),
        limits,
        socket_max_bytes,
        kernel_pressure: procfs
            .file("net/protocols")
            .ok()
            .and_then(|t| parse_protocols_pressure(&t)),
        page_size: page_size(),
    }
}

fn page_size() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .unwrap_or(4096)
}

/// `(mem, alloc)` from the `TCP:` line of `/proc/net/sockstat`
/// (`TCP: inuse 1 orphan 0 tw 0 alloc 31 mem 482`).
pub fn parse_sockstat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let field = |name: &str| {
        words
            .chunks(2)
            .find(|kv| kv.first() == Some(&name))
            .and_then(|kv| kv.get(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("mem")?, field("alloc")?))
}

/// Three whitespace-separated numbers, as in `net.ipv4.tcp_mem`.
pub fn parse_triple(text: &str) -> Option<[u64; 3]> {
    let mut it = text.split_whitespace().map(|w| w.parse::<u64>().ok());
    let v = [it.next()??, it.next()??, it.next()??];
    it.next().is_none().then_some(v)
}

/// The `press` column (`yes`, `no` or `NI`) of the `TCP` row of `/proc/net/protocols`.
pub fn parse_protocols_pressure(text: &str) -> Option<bool> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let col = header.iter().position(|h| *h == "press")?;
    let row = lines.find(|l| l.split_whitespace().next() == Some("TCP"))?;
    match row.split_whitespace().nth(col)? {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOCKSTAT: &str =
        "sockets: used 18\nTCP: inuse 1 orphan 4 tw 1 alloc 31 mem 482\nUDP: inuse 0 mem 0\n";
    const PROTOCOLS: &str = "protocol  size sockets  memory press maxhdr  slab module     cl co\nMPTCP     1936      0     482   no       0   yes  kernel      y  y\nTCP       2304      1     482   yes    192   yes  kernel      y  y\n";

    fn reading(pages: u64, sockets: u64) -> TcpMemReading {
        TcpMemReading {
            pages: Some(pages),
            sockets: Some(sockets),
            limits: Some(TcpMemLimits {
                min: 287_898,
                pressure: 383_866,
                max: 575_796,
            }),
            // tcp_rmem[2] 6 MiB + tcp_wmem[2] 4 MiB: 2,560 pages per socket.
            socket_max_bytes: Some(10 << 20),
            kernel_pressure: Some(false),
            page_size: 4096,
        }
    }

    #[test]
    fn sockstat_tcp_line_gives_mem_and_alloc() {
        assert_eq!(parse_sockstat(SOCKSTAT), Some((482, 31)));
        assert_eq!(parse_sockstat("UDP: inuse 0 mem 0\n"), None);
    }

    #[test]
    fn triple_needs_exactly_three_numbers() {
        assert_eq!(
            parse_triple("287898\t383866\t575796\n"),
            Some([287_898, 383_866, 575_796])
        );
        assert_eq!(parse_triple("1 2"), None);
        assert_eq!(parse_triple("1 2 3 4"), None);
        assert_eq!(parse_triple("1 x 3"), None);
    }

    #[test]
    fn protocols_press_column_of_the_tcp_row() {
        assert_eq!(parse_protocols_pressure(PROTOCOLS), Some(true));
        let no = PROTOCOLS.replace("482   yes", "482   no");
        assert_eq!(parse_protocols_pressure(&no), Some(false));
        assert_eq!(parse_protocols_pressure("protocol size\n"), None);
    }

    #[test]
    fn level_follows_tcp_mem_thresholds() {
        assert_eq!(reading(482, 31).level(), TcpMemLevel::Ok);
        assert_eq!(reading(383_866, 31).level(), TcpMemLevel::Pressure);
        assert_eq!(reading(575_797, 31).level(), TcpMemLevel::Exhausted);
        let unknown = TcpMemReading {
            pages: None,
            ..reading(0, 0)
        };
        assert_eq!(unknown.level(), TcpMemLevel::Unknown);
    }

    #[test]
    fn level_without_tcp_mem_uses_the_kernel_pressure_flag() {
        let mut r = reading(100, 3);
        r.limits = None;
        assert_eq!(r.level(), TcpMemLevel::Ok);
        r.kernel_pressure = Some(true);
        assert_eq!(r.level(), TcpMemLevel::Pressure);
    }

    #[test]
    fn counter_far_above_what_sockets_hold_is_a_runaway() {
        // The lab's fault: 5.8 million pages with a handful of sockets.
        let r = reading(5_800_000, 31);
        assert_eq!(r.socket_bound_pages(), Some(31 * 2 * 2560));
        assert!(r.runaway());
        // Real load: many sockets, each with full buffers.
        assert!(!reading(500_000, 2_000).runaway());
        // Small numbers are never a runaway, however few the sockets.
        assert!(!reading(60_000, 1).runaway());
    }
}
