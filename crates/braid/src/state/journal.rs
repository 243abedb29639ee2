//! The live side of the state record: a running daemon notes each change here before it makes
//! it, and a new run reconciles what the last one left.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use braid_sys::mptcp::limits::Limits;
use tracing::{info, warn};

use super::file::StateFile;
use super::owner::{verdict, Owner, Verdict};
use super::record::{undo_plan, LimitsRecord, Record, Undo};
use super::{undo, StateError};

/// Undoes what an earlier run of this daemon left in the kernel, if its state file says so and
/// that run is gone. The file is deleted once the kernel is as the earlier run found it; a step
/// that fails stays recorded (its original values win) and is tried again at the next start.
pub async fn recover(dir: &Path, role: &str, name: &str) -> Result<(), StateError> {
    let me = Owner::current().map_err(StateError::Owner)?;
    reconcile(&StateFile::new(dir, role, name), &me)
        .await
        .map(drop)
}

/// The record of what this run changes, kept in memory and on disk.
#[derive(Debug)]
pub struct Journal {
    file: StateFile,
    record: Mutex<Record>,
}

impl Journal {
    /// Reconciles what an earlier run left (as [`recover`] does), then starts this run's record,
    /// adopting whatever could not be undone. Fails when the state file cannot be written, so a
    /// daemon never changes the kernel without a record.
    pub async fn open(dir: &Path, role: &str, name: &str) -> Result<Arc<Journal>, StateError> {
        let me = Owner::current().map_err(StateError::Owner)?;
        let file = StateFile::new(dir, role, name);
        let record = match reconcile(&file, &me).await? {
            Some(left) => left.adopted_by(me),
            None => Record::new(role, name, me),
        };
        file.store(&record)?;
        Ok(Arc::new(Journal {
            file,
            record: Mutex::new(record),
        }))
    }

    /// Where the record is kept.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` and, if it changed the record, writes the file before returning.
    fn update(&self, change: impl FnOnce(&mut Record) -> bool) {
        let mut r = self.lock();
        if change(&mut r) {
            if let Err(e) = self.file.store(&r) {
                warn!("{e}; if braid is killed now, the next start cannot undo this change");
            }
        }
    }

    /// Before braid creates nftables table `table`.
    pub fn note_nft_table(&self, table: &str) {
        self.update(|r| r.note_nft_table(table));
    }

    /// Before braid gives `addr` an MPTCP endpoint.
    pub fn note_endpoint(&self, addr: std::net::IpAddr) {
        self.update(|r| r.note_endpoint(addr));
    }

    /// After braid removed the endpoint of `addr`.
    pub fn forget_endpoint(&self, addr: std::net::IpAddr) {
        self.update(|r| r.forget_endpoint(addr));
    }

    /// Before braid installs routes in, and rules selecting, `tables`.
    pub fn note_route_tables(&self, tables: &[u32]) {
        self.update(|r| r.note_route_tables(tables));
    }

    /// Before braid changes the MPTCP limits from `current`; returns the limits to restore (an
    /// original recorded earlier wins over `current`).
    pub fn note_limits(&self, current: Limits) -> Limits {
        let mut original = current;
        self.update(|r| {
            let (o, changed) = r.note_limits(LimitsRecord {
                subflows: current.subflows,
                add_addr_accepted: current.add_addr_accepted,
            });
            original = Limits {
                subflows: o.subflows,
                add_addr_accepted: o.add_addr_accepted,
            };
            changed
        });
        original
    }

    /// The MPTCP limits recorded as original, if braid changed them.
    pub fn recorded_limits(&self) -> Option<Limits> {
        self.lock().mptcp_limits.map(|l| Limits {
            subflows: l.subflows,
            add_addr_accepted: l.add_addr_accepted,
        })
    }

    /// Before braid sets sysctl `key` away from `current`; returns the value to restore (an
    /// original recorded earlier wins over `current`).
    pub fn note_sysctl(&self, key: &str, current: &str) -> String {
        let mut original = current.to_string();
        self.update(|r| {
            let (o, changed) = r.note_sysctl(key, current);
            original = o;
            changed
        });
        original
    }

    /// At the end of a run, after the daemon removed its state: undoes whatever is still
    /// recorded (normally nothing changes) and deletes the file; what cannot be undone stays
    /// recorded for the next start.
    pub async fn finish(&self) {
        let record = self.lock().clone();
        let left = undo_all(record, "").await;
        let mut r = self.lock();
        *r = left;
        let stored = if r.is_empty() {
            self.file.remove()
        } else {
            self.file.store(&r)
        };
        if let Err(e) = stored {
            warn!("{e}");
        }
    }
}

/// Loads the file and acts on its owner; returns what is left to undo (kept in the file).
async fn reconcile(file: &StateFile, me: &Owner) -> Result<Option<Record>, StateError> {
    let Some(rec) = file.load()? else {
        return Ok(None);
    };
    let path = file.path().display();
    match verdict(&rec.owner, me, rec.owner.is_alive()) {
        Verdict::Own => Ok(Some(rec)),
        Verdict::Alive => Err(StateError::InUse {
            path: file.path().to_path_buf(),
            pid: rec.owner.pid,
        }),
        Verdict::OtherNamespace => {
            let to = file.set_aside(&format!("netns-{}", rec.owner.netns))?;
            warn!(
                "{path} was written by braid pid {} in another network namespace (inode {}, this one is {}); its state there cannot be undone from here, so the record was moved to {}",
                rec.owner.pid,
                rec.owner.netns,
                me.netns,
                to.display()
            );
            Ok(None)
        }
        Verdict::Undo => {
            let what = format!(
                "the last braid {} (pid {}) ended without removing its kernel state (killed, or its start failed)",
                rec.role, rec.owner.pid
            );
            let left = undo_all(rec, &what).await;
            if left.is_empty() {
                file.remove()?;
                Ok(None)
            } else {
                file.store(&left)?;
                warn!("{path}: some of the last run's kernel state could not be undone (see above); it stays recorded and braid tries again at its next start");
                Ok(Some(left))
            }
        }
    }
}

/// Runs every undo step of `record`; returns the record without the steps that succeeded.
/// With `why`, says what is being undone and why (a recovery); without, stays quiet unless a
/// step fails (the end of a clean run, where normally nothing is left).
async fn undo_all(mut record: Record, why: &str) -> Record {
    let steps = undo_plan(&record);
    if steps.is_empty() {
        return record;
    }
    if !why.is_empty() {
        info!("{why}; undoing it: {}", join(&steps));
    }
    for (step, result) in undo::run(&steps).await {
        match result {
            Ok(()) => record.forget(&step),
            Err(e) => warn!("undoing `{step}` failed: {e}"),
        }
    }
    if !why.is_empty() && record.is_empty() {
        info!("the kernel state of the last run is undone");
    }
    record
}

fn join(steps: &[Undo]) -> String {
    steps
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("braid-journal-{tag}-{}", std::process::id()))
    }

    fn left_by(owner: Owner, d: &Path) -> StateFile {
        let f = StateFile::new(d, "gateway", "braid");
        f.store(&Record::new("gateway", "braid", owner))
            .expect("store");
        f
    }

    #[tokio::test]
    async fn open_replaces_an_empty_record_of_a_dead_run_and_finish_deletes_it() {
        let d = dir("dead");
        let me = Owner::current().expect("me");
        // pid 0 never appears in /proc: that writer is gone.
        let f = left_by(Owner { pid: 0, ..me }, &d);
        let j = Journal::open(&d, "gateway", "braid").await.expect("open");
        assert_eq!(f.load().expect("load").expect("record").owner, me);
        j.note_nft_table("braid");
        let on_disk = f.load().expect("load").expect("record");
        assert_eq!(on_disk.nft_tables, ["braid"], "noted before the change");
        j.lock().nft_tables.clear();
        j.finish().await;
        assert!(f.load().expect("load").is_none(), "finish deletes the file");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn open_refuses_a_record_whose_writer_still_runs() {
        let d = dir("alive");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let owner = Owner::of_pid(child.id()).expect("owner");
        let f = left_by(owner, &d);
        let e = Journal::open(&d, "gateway", "braid").await.unwrap_err();
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            matches!(e, StateError::InUse { pid, .. } if pid == owner.pid),
            "{e}"
        );
        assert_eq!(f.load().expect("load").expect("kept").owner, owner);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[tokio::test]
    async fn a_record_of_another_namespace_is_set_aside_untouched() {
        let d = dir("netns");
        let me = Owner::current().expect("me");
        let other = Owner {
            pid: 0,
            netns: me.netns + 1,
            ..me
        };
        let f = left_by(other, &d);
        let _j = Journal::open(&d, "gateway", "braid").await.expect("open");
        let aside = d.join(format!("gateway-braid.json.netns-{}", other.netns));
        let moved = std::fs::read_to_string(&aside).unwrap_or_default();
        assert!(moved.contains(&other.netns.to_string()), "{moved}");
        assert_eq!(f.load().expect("load").expect("new").owner, me);
        let _ = std::fs::remove_dir_all(&d);
    }
}
