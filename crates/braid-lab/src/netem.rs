//! Constant-delay link emulator on an NFQUEUE, in process.
//!
//! This kernel has no `sch_netem` and no nftables `queue`, so delay is done in user space:
//! an iptables rule `-j NFQUEUE --queue-num Q` hands each arriving packet to this emulator,
//! which holds the packet's verdict for a fixed delay and then accepts it.
//!
//! ```text
//!   kernel PREROUTING ──NFQUEUE Q──▶ recv (metadata only) ──▶ VecDeque<(deadline, packet id)>
//!                                                                   │ head due?
//!   kernel continues  ◀── one NFQNL_MSG_VERDICT_BATCH "accept ≤ id" ◀┘
//! ```
//!
//! A constant delay keeps FIFO order, so one batch verdict releases every packet that is due.
//! The thread sleeps in `poll` until the next deadline or the next packet (no busy spinning) and
//! wakes at least every 50 ms to check its stop flag, so it can never block forever.
//!
//! `nfq::Queue` does not expose its socket. To poll it and send batch verdicts without `unsafe`,
//! the emulator finds the socket's descriptor in `/proc/self/fd` and duplicates it with
//! `pidfd_getfd(2)`. Where that is not allowed (seccomp) it falls back to nfq's per-packet
//! verdicts and short sleeps, which adds up to ~2 ms of jitter; a warning says so.
//!
//! Loss is not done here: the lab drops packets with nftables `numgen random` before they are
//! queued.

use std::collections::{HashSet, VecDeque};
use std::fs;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{send, SendFlags};
use rustix::process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags};

use crate::ns::enter_netns;

/// Default kernel queue length per NFQUEUE (packets held at once). At 2.4 Gbit/s and 5 ms per
/// direction about 1,000 full-size packets are in flight.
pub const DEFAULT_MAX_QUEUE_LEN: u32 = 16_384;
/// Longest sleep; bounds how long stopping takes.
const IDLE_TICK: Duration = Duration::from_millis(50);
/// Packets received per wake-up before due verdicts are sent again.
const RECV_BATCH: usize = 1024;
/// Sleep steps of the fallback mode (no pollable descriptor).
const FALLBACK_BUSY_TICK: Duration = Duration::from_micros(200);
const FALLBACK_IDLE_TICK: Duration = Duration::from_millis(2);

/// What one emulator instance does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayConfig {
    /// NFQUEUE number to bind (per network namespace).
    pub queue_num: u16,
    /// How long each packet is held (one direction: half the RTT).
    pub delay: Duration,
    /// Kernel queue length; beyond it packets pass undelayed (fail-open) rather than drop.
    pub max_queue_len: u32,
    /// Use poll and batch verdicts when possible (the default). `false` forces the
    /// per-packet fallback, for testing it.
    pub prefer_batch: bool,
}

impl DelayConfig {
    /// Queue `queue_num`, constant `delay`, default queue length.
    pub fn new(queue_num: u16, delay: Duration) -> Self {
        DelayConfig {
            queue_num,
            delay,
            max_queue_len: DEFAULT_MAX_QUEUE_LEN,
            prefer_batch: true,
        }
    }
}

/// Why the emulator could not start or stopped early.
#[derive(Debug, thiserror::Error)]
pub enum NetemError {
    /// `setns` into the lab namespace failed (namespace gone, or not root).
    #[error("entering network namespace {path}: {source}")]
    Setns {
        /// The namespace file.
        path: PathBuf,
        /// errno from open/setns.
        #[source]
        source: io::Error,
    },
    /// The netlink socket could not be opened.
    #[error("opening the NFQUEUE netlink socket: {0}; this needs CAP_NET_ADMIN and CONFIG_NETFILTER_NETLINK_QUEUE")]
    Open(#[source] io::Error),
    /// Binding or configuring the queue failed.
    #[error("configuring NFQUEUE {queue_num} ({step}): {source}; is another program bound to this queue number in this namespace?")]
    Config {
        /// The queue.
        queue_num: u16,
        /// Which configuration call failed.
        step: &'static str,
        /// errno from the kernel.
        #[source]
        source: io::Error,
    },
    /// Polling or sending verdicts failed while running.
    #[error("NFQUEUE {queue_num}: {what}: {source}")]
    Io {
        /// The queue.
        queue_num: u16,
        /// What failed.
        what: &'static str,
        /// errno.
        #[source]
        source: io::Error,
    },
    /// The emulator thread could not be started or panicked.
    #[error("emulator thread for NFQUEUE {queue_num}: {what}")]
    Thread {
        /// The queue.
        queue_num: u16,
        /// What happened.
        what: String,
    },
}

/// Totals of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetemStats {
    /// Packets accepted after their delay.
    pub packets: u64,
    /// Verdict messages sent (batch mode: far fewer than packets under load).
    pub verdict_messages: u64,
    /// Most packets held at once.
    pub max_held: usize,
    /// Receive errors that were skipped (error replies from the kernel).
    pub recv_errors: u64,
    /// Whether batch verdicts and poll were available (false = fallback mode).
    pub batch_mode: bool,
}

/// An opened, bound queue in the current thread's network namespace.
pub struct Emulator {
    queue: nfq::Queue,
    config: DelayConfig,
    /// Duplicate of the queue's netlink socket, for poll and batch verdicts.
    fd: Option<OwnedFd>,
    packets: Arc<AtomicU64>,
}

/// A packet waiting for its verdict.
enum Held {
    /// Batch mode: only the id is kept, the message buffer is reused at once.
    Id(u32),
    /// Fallback mode: nfq needs the message to send its verdict.
    Msg(nfq::Message),
}

/// Serialises "open a socket, then find its descriptor" across emulator threads.
static OPEN_LOCK: Mutex<()> = Mutex::new(());

impl Emulator {
    /// Opens and binds `config.queue_num` in the calling thread's network namespace.
    pub fn open(config: DelayConfig) -> Result<Emulator, NetemError> {
        let q = config.queue_num;
        let cfg = |step| {
            move |source| NetemError::Config {
                queue_num: q,
                step,
                source,
            }
        };
        let (mut queue, fd) = {
            let _guard = OPEN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let before = socket_fds().into_iter().map(|(_, ino)| ino).collect();
            let queue = nfq::Queue::open().map_err(NetemError::Open)?;
            let fd = if config.prefer_batch {
                duplicate_new_nfnetlink_fd(&before)
            } else {
                None
            };
            (queue, fd)
        };
        queue.bind(q).map_err(cfg("bind"))?;
        // Metadata only: the emulator never looks at payloads.
        queue.set_copy_range(q, 0).map_err(cfg("copy range"))?;
        queue
            .set_queue_max_len(q, config.max_queue_len)
            .map_err(cfg("queue max len"))?;
        queue.set_fail_open(q, true).map_err(cfg("fail open"))?;
        // Take GSO super-packets whole instead of having the kernel segment them for us.
        queue.set_recv_gso(q, true).map_err(cfg("recv gso"))?;
        queue.set_nonblocking(true);
        if fd.is_none() && config.prefer_batch {
            tracing::warn!(
                queue = q,
                "netem: could not duplicate the nfqueue socket (pidfd_getfd); using per-packet \
                 verdicts and sleeps, delay jitter up to 2 ms"
            );
        }
        Ok(Emulator {
            queue,
            config,
            fd,
            packets: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Whether poll and batch verdicts are in use.
    pub fn batch_mode(&self) -> bool {
        self.fd.is_some()
    }

    /// A live counter of accepted packets.
    pub fn packet_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.packets)
    }

    /// Delays packets until `stop` is set (checked at least every 50 ms). On stop, every held
    /// packet is accepted at once.
    pub fn run(mut self, stop: &AtomicBool) -> Result<NetemStats, NetemError> {
        let mut held: VecDeque<(Instant, Held)> = VecDeque::new();
        let mut stats = NetemStats {
            batch_mode: self.batch_mode(),
            ..NetemStats::default()
        };
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let now = Instant::now();
            self.release(&mut held, (!stopping).then_some(now), &mut stats)?;
            if stopping {
                return Ok(stats);
            }
            let wait = held
                .front()
                .map_or(IDLE_TICK, |(due, _)| due.saturating_duration_since(now))
                .min(IDLE_TICK);
            self.wait(wait, held.is_empty())?;
            self.receive(&mut held, &mut stats);
            stats.max_held = stats.max_held.max(held.len());
        }
    }

    /// Sleeps until the socket is readable or `wait` has passed.
    fn wait(&self, wait: Duration, idle: bool) -> Result<(), NetemError> {
        let Some(fd) = &self.fd else {
            let tick = if idle {
                FALLBACK_IDLE_TICK
            } else {
                FALLBACK_BUSY_TICK
            };
            thread::sleep(wait.min(tick));
            return Ok(());
        };
        if wait.is_zero() {
            return Ok(());
        }
        let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
            tv_sec: 0,
            tv_nsec: 50_000_000,
        });
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
            Err(e) => Err(NetemError::Io {
                queue_num: self.config.queue_num,
                what: "poll",
                source: e.into(),
            }),
        }
    }

    /// Takes every packet waiting in the socket (up to a batch) and stamps its deadline.
    fn receive(&mut self, held: &mut VecDeque<(Instant, Held)>, stats: &mut NetemStats) {
        for _ in 0..RECV_BATCH {
            match self.queue.recv() {
                Ok(msg) => {
                    let due = Instant::now() + self.config.delay;
                    let entry = if self.fd.is_some() {
                        Held::Id(msg.get_packet_id())
                    } else {
                        Held::Msg(msg)
                    };
                    held.push_back((due, entry));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // An error reply (e.g. to a verdict) or a truncated read: log and go on,
                    // the packets concerned are accepted by fail-open or dropped by the kernel.
                    stats.recv_errors += 1;
                    // ENOENT answers a verdict for packets the kernel already dropped, which
                    // happens whenever the uplink goes down: expected, not worth a warning.
                    if e.raw_os_error() == Some(libc::ENOENT) {
                        tracing::debug!(
                            queue = self.config.queue_num,
                            "netem: verdict for a packet the kernel dropped"
                        );
                    } else if stats.recv_errors <= 5 {
                        tracing::warn!(queue = self.config.queue_num, error = %e, "netem: recv");
                    }
                    return;
                }
            }
        }
    }

    /// Accepts every held packet due at `now` (all of them when `now` is `None`).
    fn release(
        &mut self,
        held: &mut VecDeque<(Instant, Held)>,
        now: Option<Instant>,
        stats: &mut NetemStats,
    ) -> Result<(), NetemError> {
        let due = match now {
            Some(now) => held.iter().take_while(|(d, _)| *d <= now).count(),
            None => held.len(),
        };
        if due == 0 {
            return Ok(());
        }
        let q = self.config.queue_num;
        let io_err = |what| {
            move |source| NetemError::Io {
                queue_num: q,
                what,
                source,
            }
        };
        if let Some(fd) = &self.fd {
            let Some((_, Held::Id(last))) = held.get(due - 1) else {
                unreachable!("batch mode holds ids only");
            };
            let msg = batch_accept_message(q, *last);
            send(fd, &msg, SendFlags::empty())
                .map_err(io::Error::from)
                .map_err(io_err("sending batch verdict"))?;
            held.drain(..due);
            stats.verdict_messages += 1;
        } else {
            for (_, entry) in held.drain(..due) {
                if let Held::Msg(msg) = entry {
                    self.queue.verdict(msg).map_err(io_err("sending verdict"))?;
                    stats.verdict_messages += 1;
                }
            }
        }
        stats.packets += due as u64;
        self.packets.fetch_add(due as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Opens `config.queue_num` in the current thread's namespace and delays packets until `stop`.
/// This is the whole emulator for a standalone `braid lab netem`.
pub fn run(config: DelayConfig, stop: &AtomicBool) -> Result<NetemStats, NetemError> {
    Emulator::open(config)?.run(stop)
}

/// A running emulator thread. Dropping it stops the thread too.
pub struct NetemHandle {
    queue_num: u16,
    stop: Arc<AtomicBool>,
    packets: Arc<AtomicU64>,
    batch_mode: bool,
    thread: Option<JoinHandle<Result<NetemStats, NetemError>>>,
}

impl std::fmt::Debug for NetemHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetemHandle")
            .field("queue_num", &self.queue_num)
            .field("packets", &self.packets())
            .field("batch_mode", &self.batch_mode)
            .finish()
    }
}

impl NetemHandle {
    /// Packets accepted so far.
    pub fn packets(&self) -> u64 {
        self.packets.load(Ordering::Relaxed)
    }

    /// Whether poll and batch verdicts are in use.
    pub fn batch_mode(&self) -> bool {
        self.batch_mode
    }

    /// Stops the thread (within ~50 ms) and returns its totals or its error.
    pub fn stop(mut self) -> Result<NetemStats, NetemError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<NetemStats, NetemError> {
        self.stop.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.take() else {
            return Ok(NetemStats::default());
        };
        thread.join().unwrap_or_else(|_| {
            Err(NetemError::Thread {
                queue_num: self.queue_num,
                what: "panicked".into(),
            })
        })
    }
}

impl Drop for NetemHandle {
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_join() {
            tracing::error!(error = %e, "netem stopped with an error");
        }
    }
}

/// Starts an emulator on its own thread inside the namespace mounted at `netns` and returns
/// once the queue is bound (so an NFQUEUE rule added afterwards never meets an unbound queue).
pub fn spawn_in_netns(netns: &Path, config: DelayConfig) -> Result<NetemHandle, NetemError> {
    let queue_num = config.queue_num;
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = netns.to_path_buf();
    let thread_stop = Arc::clone(&stop);
    let thread = thread::Builder::new()
        .name(format!("netem-q{queue_num}"))
        .spawn(move || {
            let opened = enter_netns(&path)
                .map_err(|source| NetemError::Setns { path, source })
                .and_then(|()| Emulator::open(config));
            let emulator = match opened {
                Ok(emulator) => emulator,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(NetemStats::default());
                }
            };
            let _ = ready_tx.send(Ok((emulator.packet_counter(), emulator.batch_mode())));
            let result = emulator.run(&thread_stop);
            if let Err(e) = &result {
                tracing::error!(error = %e, "netem stopped; packets on this queue are now dropped");
            }
            result
        })
        .map_err(|e| NetemError::Thread {
            queue_num,
            what: format!("spawn: {e}"),
        })?;
    let mut handle = NetemHandle {
        queue_num,
        stop,
        packets: Arc::new(AtomicU64::new(0)),
        batch_mode: false,
        thread: Some(thread),
    };
    match ready_rx.recv() {
        Ok(Ok((packets, batch_mode))) => {
            handle.packets = packets;
            handle.batch_mode = batch_mode;
            Ok(handle)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(handle.stop_and_join().err().unwrap_or(NetemError::Thread {
            queue_num,
            what: "exited before binding its queue".into(),
        })),
    }
}

/// `NFQNL_MSG_VERDICT_BATCH` accepting every packet of `queue_num` with id ≤ `id`.
fn batch_accept_message(queue_num: u16, id: u32) -> [u8; 32] {
    const LEN: u32 = 32; // nlmsghdr 16 + nfgenmsg 4 + nlattr 4 + nfqnl_msg_verdict_hdr 8
    let msg_type = ((libc::NFNL_SUBSYS_QUEUE as u16) << 8) | libc::NFQNL_MSG_VERDICT_BATCH as u16;
    let mut b = [0u8; 32];
    b[0..4].copy_from_slice(&LEN.to_ne_bytes());
    b[4..6].copy_from_slice(&msg_type.to_ne_bytes());
    b[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    // seq (8..12) and portid (12..16) stay 0: no ack is requested.
    b[16] = libc::AF_UNSPEC as u8;
    b[17] = libc::NFNETLINK_V0 as u8;
    b[18..20].copy_from_slice(&queue_num.to_be_bytes());
    b[20..22].copy_from_slice(&12u16.to_ne_bytes());
    b[22..24].copy_from_slice(&(libc::NFQA_VERDICT_HDR as u16).to_ne_bytes());
    b[24..28].copy_from_slice(&(libc::NF_ACCEPT as u32).to_be_bytes());
    b[28..32].copy_from_slice(&id.to_be_bytes());
    b
}

/// Duplicates the one NETLINK_NETFILTER socket of this thread's namespace that was not among
/// `before` (socket inodes), or `None` when that is not possible.
fn duplicate_new_nfnetlink_fd(before: &HashSet<u64>) -> Option<OwnedFd> {
    let nfnetlink = match nfnetlink_inodes() {
        Ok(set) => set,
        Err(e) => {
            tracing::debug!(error = %e, "netem: reading /proc/thread-self/net/netlink");
            return None;
        }
    };
    let candidates: Vec<RawFd> = socket_fds()
        .into_iter()
        .filter(|(_, ino)| !before.contains(ino) && nfnetlink.contains(ino))
        .map(|(fd, _)| fd)
        .collect();
    let [fd] = candidates[..] else {
        tracing::debug!(?candidates, "netem: nfqueue socket not identified");
        return None;
    };
    let dup = pidfd_open(getpid(), PidfdFlags::empty())
        .and_then(|pidfd| pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()));
    match dup {
        Ok(dup) => Some(dup),
        Err(e) => {
            tracing::debug!(error = %e, "netem: pidfd_getfd");
            None
        }
    }
}

/// (descriptor, socket inode) for every socket this process has open.
fn socket_fds() -> Vec<(RawFd, u64)> {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
        let target = fs::read_link(entry.path()).ok()?;
        let ino = parse_socket_link(target.to_str()?)?;
        Some((fd, ino))
    })
    .collect()
}

/// `socket:[12345]` → 12345.
fn parse_socket_link(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Inodes of NETLINK_NETFILTER sockets in the calling thread's network namespace.
fn nfnetlink_inodes() -> io::Result<HashSet<u64>> {
    let text = fs::read_to_string("/proc/thread-self/net/netlink")?;
    Ok(parse_netlink_table(&text, libc::NETLINK_NETFILTER))
}

/// Parses `/proc/net/netlink` (`sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`).
fn parse_netlink_table(text: &str, protocol: i32) -> HashSet<u64> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let eth: i32 = cols.get(1)?.parse().ok()?;
            (eth == protocol).then(|| cols.get(9)?.parse().ok())?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_accept_message_has_kernel_layout() {
        let m = batch_accept_message(0x0102, 0xAABBCCDD);
        assert_eq!(u32::from_ne_bytes(m[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0303);
        assert_eq!(u16::from_ne_bytes(m[6..8].try_into().unwrap()), 1);
        assert_eq!(&m[16..20], &[0, 0, 0x01, 0x02]);
        assert_eq!(u16::from_ne_bytes(m[20..22].try_into().unwrap()), 12);
        assert_eq!(u16::from_ne_bytes(m[22..24].try_into().unwrap()), 2);
        assert_eq!(&m[24..32], &[0, 0, 0, 1, 0xAA, 0xBB, 0xCC, 0xDD]);
    }

    #[test]
    fn parse_netlink_table_picks_protocol_inodes() {
        let text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
            ffff8880a1b2c000 0   4242       00000000 0        0        0     2        0        111\n\
            ffff8880a1b2c800 12  -4100      00000000 0        0        0     2        0        222\n";
        assert_eq!(parse_netlink_table(text, 12), HashSet::from([222]));
        assert_eq!(parse_netlink_table(text, 0), HashSet::from([111]));
    }

    #[test]
    fn parse_socket_link_reads_inode() {
        assert_eq!(parse_socket_link("socket:[98765]"), Some(98765));
        assert_eq!(parse_socket_link("pipe:[1]"), None);
        assert_eq!(parse_socket_link("/dev/null"), None);
    }
}
