//! The relay's MPTCP path manager: keeps a connection on its first subflow while the transfer
//! is short, and lets it bond once it is bulk (the rule and why: `braid_proto::subflow_priority`).
//!
//! ```text
//!   kernel ──events──► PathManager task ──SET_FLAGS / SUBFLOW_DESTROY──► kernel
//!                          ▲
//!   relay_to ──"bulk"──────┘ (a connection moved bond_after bytes)
//! ```
//!
//! Per-connection flags need the kernel's *userspace* path manager, so the relay switches its
//! network namespace's `net.mptcp.path_manager` to `userspace` while it runs (connections
//! accepted before keep the in-kernel one) and puts the old value back when it stops. A
//! relay killed before that leaves the old value in `server-<port>.path_manager` in its
//! `state_dir`, and the next start restores it at its own stop. With the userspace path
//! manager the kernel accepts a join only while a process listens to its events, and applies
//! no limit of its own: this task listens, and closes joins over `max_joins` (server.toml). Not
//! over the namespace's `ip mptcp limits`: a fresh namespace allows 2 joins, which a gateway
//! with four uplinks, or with three and one that flaps (its old subflow lingers until the relay
//! sees it close), runs out of, and a connection that lost a join never gets it back.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use braid_proto::subflow_priority::{Action, Counts, Policy, SubflowId, SubflowPriority};
use braid_sys::mptcp::events::{PmEvent, PmEventKind, PmEvents};
use braid_sys::mptcp::pm::MptcpPm;
use braid_sys::mptcp::subflow::Subflow;
use braid_sys::sysctl::Procfs;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::relay::BulkWatch;
use crate::shutdown::Shutdown;
use crate::status::model::PathManagerStatus;

/// Bulk signals queued for the task; a full queue drops one (that connection keeps its joins
/// as backups, which still carry it if its first subflow fails).
const QUEUE: usize = 1024;

/// What the relay's connections use: the bytes that make a connection bulk and where to say so.
#[derive(Clone, Debug)]
pub struct Handle {
    bond_after: u64,
    max_joins: usize,
    tx: mpsc::Sender<u32>,
    stats: Arc<Mutex<Stats>>,
}

/// What status reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// The rule's counters.
    pub counts: Counts,
    /// Connections followed now.
    pub connections: usize,
    /// Times the kernel dropped events.
    pub overruns: u64,
}

impl Handle {
    /// A watch that tells the path manager when the connection on `stream` is bulk; `None` for
    /// a connection that is not MPTCP.
    pub fn watch<S: AsFd>(&self, stream: &S) -> Option<BulkWatch> {
        let token = braid_sys::mptcp::info::mptcp_info(stream).ok()?.token;
        let handle = self.clone();
        Some(BulkWatch::new(self.bond_after, move || handle.bulk(token)))
    }

    /// Lets every subflow of the connection on `stream` carry data from now on: for streams
    /// that are not a relayed request and answer (control streams with their speed tests, UDP
    /// over TCP), which the rule has no reason to hold.
    pub fn release<S: AsFd>(&self, stream: &S) {
        if let Ok(info) = braid_sys::mptcp::info::mptcp_info(stream) {
            self.bulk(info.token);
        }
    }

    /// Connection `token` is bulk: its joined subflows carry data from now on.
    pub fn bulk(&self, token: u32) {
        if self.tx.try_send(token).is_err() {
            debug!("path manager busy: connection {token:08x} keeps its joins as backups");
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What status shows.
    pub fn status(&self) -> PathManagerStatus {
        let s = self.stats();
        PathManagerStatus {
            active: true,
            reason: format!(
                "net.mptcp.path_manager = userspace while the relay runs: a connection's joined subflows are backups until it has moved {} KiB one way; at most {} joins per connection (max_joins)",
                self.bond_after / 1024,
                self.max_joins
            ),
            bond_after_bytes: Some(self.bond_after),
            connections: s.connections as u64,
            held_total: s.counts.held,
            bonded_bulk_total: s.counts.bonded_bulk,
            bonded_first_lost_total: s.counts.bonded_first_lost,
            closed_over_limit_total: s.counts.closed_over_limit,
            overruns_total: s.overruns,
        }
    }
}

/// What the status API reads of the path manager.
#[derive(Clone, Debug)]
pub enum View {
    /// It runs.
    On(Handle),
    /// It does not, and why.
    Off(PathManagerStatus),
}

impl View {
    /// The status document's part.
    pub fn status(&self) -> PathManagerStatus {
        match self {
            View::On(h) => h.status(),
            View::Off(s) => s.clone(),
        }
    }
}

/// What status shows of a path manager that does not run, and why.
pub fn inactive(reason: String) -> PathManagerStatus {
    PathManagerStatus {
        reason,
        ..PathManagerStatus::default()
    }
}

/// The running path manager; [`Running::stop`] gives the namespace its old path manager back.
pub struct Running {
    handle: Handle,
    task: tokio::task::JoinHandle<()>,
    switched: Switched,
}

impl Running {
    /// What connections use.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Puts the old path manager back, then stops listening (joins of connections still open
    /// are refused from then on).
    pub fn stop(self) {
        drop(self)
    }
}

/// Also when the relay's task is dropped without a stop (its runtime shut down): the namespace
/// gets its path manager back whenever this process can still write it.
impl Drop for Running {
    fn drop(&mut self) {
        self.switched.restore();
        self.task.abort();
    }
}

/// Switches the namespace to the userspace path manager and starts the task. An error says
/// why the relay runs with the in-kernel one instead (the caller logs it).
pub async fn start(
    bond_after: u64,
    max_joins: usize,
    ports: Vec<u16>,
    state_dir: &Path,
    shutdown: Shutdown,
) -> Result<Running, String> {
    let pm = MptcpPm::connect()
        .await
        .map_err(|e| format!("cannot reach the kernel's MPTCP path manager: {e}"))?;
    // Listening first: the kernel refuses joins to userspace-managed connections until then.
    let events = PmEvents::subscribe(&pm)
        .await
        .map_err(|e| format!("cannot listen to MPTCP events: {e}"))?;
    let port = ports.first().copied().unwrap_or_default();
    let switched = Switched::to_userspace(
        &Procfs::default(),
        state_dir.join(format!("server-{port}.path_manager")),
    )?;
    let (tx, rx) = mpsc::channel(QUEUE);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let rule = SubflowPriority::new(
        Policy {
            bond_after,
            max_joins,
            ..Policy::default()
        },
        ports,
    );
    let task = tokio::spawn(run(pm, events, rx, rule, stats.clone(), shutdown));
    Ok(Running {
        handle: Handle {
            bond_after,
            max_joins,
            tx,
            stats,
        },
        task,
        switched,
    })
}

async fn run(
    pm: MptcpPm,
    mut events: PmEvents,
    mut bulk: mpsc::Receiver<u32>,
    mut rule: SubflowPriority,
    stats: Arc<Mutex<Stats>>,
    _shutdown: Shutdown,
) {
    loop {
        let actions = tokio::select! {
            e = events.next() => match e {
                Some(PmEvent::Connection(e)) => {
                    debug!("MPTCP event {:?} on connection {:08x}: {:?} → {:?}", e.kind, e.token, e.remote, e.local);
                    let sub = e.local.zip(e.remote).map(|(local, remote)| SubflowId { token: e.token, local, remote });
                    match (e.kind, sub) {
                        (PmEventKind::Established, Some(s)) => {
                            rule.established(s.token, s.local, s.remote);
                            Vec::new()
                        }
                        (PmEventKind::SubEstablished, Some(s)) => {
                            rule.joined(s, e.backup.unwrap_or(false)).into_iter().collect()
                        }
                        (PmEventKind::SubClosed, Some(s)) => rule.subflow_closed(s),
                        (PmEventKind::Closed, _) => {
                            rule.closed(e.token);
                            Vec::new()
                        }
                        _ => Vec::new(),
                    }
                }
                Some(PmEvent::Overrun) => {
                    warn!("the kernel dropped MPTCP events (the relay fell behind): every connection's joined subflows carry data now");
                    stats.lock().unwrap_or_else(|e| e.into_inner()).overruns += 1;
                    rule.overrun()
                }
                None => {
                    warn!("MPTCP event socket closed: the relay's path manager stopped");
                    return;
                }
            },
            Some(token) = bulk.recv() => rule.bulk(token),
        };
        for a in actions {
            apply(&pm, a).await;
        }
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        s.counts = rule.counts();
        s.connections = rule.connections();
    }
}

/// Carries out one action. A subflow that closed meanwhile is not an error worth a warning.
async fn apply(pm: &MptcpPm, action: Action) {
    let (id, what) = match action {
        Action::Backup(id) => (id, "hold as backup"),
        Action::Bond(id) => (id, "release"),
        Action::Close(id) => (id, "close (over max_joins)"),
    };
    let sub = Subflow {
        token: id.token,
        local: id.local,
        remote: id.remote,
    };
    let r = match action {
        Action::Backup(_) => pm.set_subflow_backup(sub, true).await,
        Action::Bond(_) => pm.set_subflow_backup(sub, false).await,
        Action::Close(_) => pm.destroy_subflow(sub).await,
    };
    match r {
        Ok(()) => debug!(
            "subflow {} of connection {:08x}: {what}",
            id.remote, id.token
        ),
        Err(e) => debug!(
            "subflow {} of connection {:08x}: cannot {what} (closed meanwhile?): {e}",
            id.remote, id.token
        ),
    }
}

/// What the in-kernel path manager's join limit means for the relay, shared by its start and
/// `braid doctor` so they cannot disagree: with it (`bond_after_kib = 0`) the namespace's `ip
/// mptcp limits` caps a connection's joins, not `max_joins`, and a connection refused a join
/// never gets that uplink back.
pub struct KernelJoins {
    /// The namespace's limit of joined subflows per connection.
    pub limit: u32,
    /// `max_joins` from server.toml.
    pub max_joins: usize,
}

impl KernelJoins {
    /// Reads the namespace's limit.
    pub async fn read(max_joins: usize) -> Result<KernelJoins, String> {
        let pm = MptcpPm::connect()
            .await
            .map_err(|e| format!("cannot reach the MPTCP path manager: {e}"))?;
        let l = pm
            .limits()
            .await
            .map_err(|e| format!("cannot read the MPTCP limits: {e}"))?;
        Ok(KernelJoins {
            limit: l.subflows,
            max_joins,
        })
    }

    /// Whether the kernel takes fewer joins than `max_joins` asks for.
    pub fn short(&self) -> bool {
        (self.limit as usize) < self.max_joins
    }

    /// What a short limit does.
    pub fn consequence(&self) -> String {
        format!(
            "the in-kernel path manager takes at most {} joined subflows per connection (ip mptcp \
             limits), fewer than max_joins = {}: a gateway with more than {} uplinks, or with an \
             uplink that comes back before this relay saw its old subflow close, loses that \
             uplink's share on its connections for good",
            self.limit,
            self.max_joins,
            self.limit + 1
        )
    }

    /// How to fix a short limit.
    pub fn fix(&self) -> String {
        format!(
            "`ip mptcp limits set subflows {}` on this host (not kept across a reboot), or \
             bond_after_kib > 0, where braid applies max_joins itself",
            self.max_joins
        )
    }
}

/// The joins per connection the in-kernel path manager takes here, read at start; says when
/// they are fewer than `max_joins`.
pub async fn kernel_joins_at_start(max_joins: usize) -> Option<u32> {
    match KernelJoins::read(max_joins).await {
        Ok(k) => {
            if k.short() {
                warn!("{}; fix: {}", k.consequence(), k.fix());
            }
            Some(k.limit)
        }
        Err(e) => {
            debug!("{e}");
            None
        }
    }
}

/// The namespace's path manager setting, switched to `userspace` by this relay.
struct Switched {
    procfs: Procfs,
    key: &'static str,
    original: String,
    state_file: PathBuf,
    /// False when the namespace was already on `userspace` and no killed run of this relay
    /// left a record: someone else chose it, and it stays.
    owned: bool,
}

impl Switched {
    fn to_userspace(procfs: &Procfs, state_file: PathBuf) -> Result<Switched, String> {
        let (key, userspace) = if procfs.sysctl("net.mptcp.path_manager").is_ok() {
            ("net.mptcp.path_manager", "userspace")
        } else if procfs.sysctl("net.mptcp.pm_type").is_ok() {
            ("net.mptcp.pm_type", "1")
        } else {
            return Err(
                "this kernel has no userspace MPTCP path manager (Linux 5.19 or later has one)"
                    .into(),
            );
        };
        let current = procfs.sysctl(key).map_err(|e| e.to_string())?;
        let saved = std::fs::read_to_string(&state_file)
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s != userspace);
        let (original, owned) = match saved {
            Some(s) => (s, true),
            None if current == userspace => (current, false),
            None => (current, true),
        };
        if owned {
            let write = |path: &Path| {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::write(path, format!("{original}\n"))
            };
            if let Err(e) = write(&state_file) {
                return Err(format!(
                    "cannot record {key} = {original} in {} ({e}), which a relay killed before its stop needs to restore it: check `state_dir`",
                    state_file.display()
                ));
            }
        }
        procfs.set_sysctl(key, userspace).map_err(|e| {
            let _ = std::fs::remove_file(&state_file);
            format!("cannot set {key} = {userspace}: {e}")
        })?;
        info!("MPTCP path manager: {key} = {userspace} while the relay runs (was {original}): connections keep their first subflow until they are bulk");
        Ok(Switched {
            procfs: procfs.clone(),
            key,
            original,
            state_file,
            owned,
        })
    }

    /// Puts the old value back once; later calls do nothing.
    fn restore(&mut self) {
        if !self.owned {
            return;
        }
        self.owned = false;
        match self.procfs.set_sysctl(self.key, &self.original) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.state_file);
                info!(
                    "MPTCP path manager: {} = {} restored",
                    self.key, self.original
                );
            }
            Err(e) => warn!(
                "cannot restore {} = {} ({e}); the next start of the relay restores it",
                self.key, self.original
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Dir {
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn procfs(value: &str) -> (Dir, Procfs) {
        let dir = std::env::temp_dir().join(format!(
            "braid-pm-{}-{value}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let sys = dir.join("sys/net/mptcp");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("path_manager"), format!("{value}\n")).unwrap();
        let p = Procfs::at(&dir);
        (Dir(dir), p)
    }

    fn read(p: &Procfs) -> String {
        p.sysctl("net.mptcp.path_manager").unwrap()
    }

    #[test]
    fn a_killed_run_s_record_is_what_gets_restored() {
        let (dir, p) = procfs("kernel");
        let state = dir.path().join("server-8388.path_manager");
        let s = Switched::to_userspace(&p, state.clone()).unwrap();
        assert_eq!(read(&p), "userspace");
        assert_eq!(std::fs::read_to_string(&state).unwrap().trim(), "kernel");
        // Killed here: the next start finds userspace, and the record.
        std::mem::forget(s);
        let mut again = Switched::to_userspace(&p, state.clone()).unwrap();
        assert!(again.owned);
        assert_eq!(again.original, "kernel");
        again.restore();
        assert_eq!(read(&p), "kernel");
        assert!(!state.exists());
    }

    #[test]
    fn userspace_chosen_by_someone_else_is_left_alone() {
        let (dir, p) = procfs("userspace");
        let mut s = Switched::to_userspace(&p, dir.path().join("x")).unwrap();
        assert!(!s.owned);
        assert!(!dir.path().join("x").exists());
        s.restore();
        assert_eq!(read(&p), "userspace");
    }
}
