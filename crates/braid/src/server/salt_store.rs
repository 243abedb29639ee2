//! Keeps the relay's replay filter across a restart.
//!
//! ```text
//!  start:  <state_dir>/server-<port>.salts ─► SaltLog::decode (salts < 60 s old)
//!                                          └► Context::check_nonce_replay (the crate's filter)
//!  run:    accepted request ─► SaltLog::record ─► written every FLUSH_EVERY if it changed
//!  stop:   written once more after the connections drained
//! ```
//!
//! A SIGKILL loses at most the salts of the last [`FLUSH_EVERY`]. The file is replaced by
//! rename, so a crash leaves the old file or the new one. Without a readable file the relay
//! still starts (one warning): the crate's timestamp check still refuses any request more than
//! 30 s old, so at worst a request captured in the seconds before the restart can be replayed,
//! as before this store existed.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shadowsocks::context::Context;
use shadowsocks::crypto::CipherKind;
use tracing::{info, warn};

use super::salts::SaltLog;
use crate::shutdown::Shutdown;

/// How often the salts are written while they change.
pub const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// The salt log of a running relay and the file it is kept in.
#[derive(Debug)]
pub struct SaltStore {
    path: PathBuf,
    log: Mutex<SaltLog>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `<state_dir>/server-<port>.salts`: one file per relay port, so two relays on one host keep
/// their own.
pub fn path(state_dir: &Path, port: u16) -> PathBuf {
    state_dir.join(format!("server-{port}.salts"))
}

impl SaltStore {
    /// Reads the salts a previous run kept at `path` and puts the ones still inside the window
    /// into `ctx`'s replay filter, so a request replayed from before the restart is refused.
    pub fn open(path: PathBuf, ctx: &Context, method: CipherKind) -> SaltStore {
        let log = match std::fs::read(&path) {
            Ok(bytes) => match SaltLog::decode(&bytes, now_ms()) {
                Ok(log) => {
                    for (_, salt) in log.salts() {
                        // Inserts the salt; an error only says it was there already.
                        let _ = ctx.check_nonce_replay(method, salt);
                    }
                    info!(
                        "replay filter: {} salts of the last {} s restored from {}",
                        log.len(),
                        super::salts::WINDOW.as_secs(),
                        path.display()
                    );
                    log
                }
                Err(e) => {
                    warn!("replay filter: cannot read {}: {e}; the relay starts without the salts of its last run (requests replayed from the last 30 s before the restart are not refused); fix: nothing to do if it happens once, else delete the file", path.display());
                    SaltLog::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => SaltLog::default(),
            Err(e) => {
                warn!("replay filter: cannot read {}: {e}; the relay starts without the salts of its last run; fix: make `state_dir` a directory that braid can read and write", path.display());
                SaltLog::default()
            }
        };
        SaltStore {
            path,
            log: Mutex::new(log),
        }
    }

    /// Remembers the salt of an accepted request.
    pub fn record(&self, salt: &[u8]) {
        if let Ok(mut log) = self.log.lock() {
            log.record(salt, now_ms());
        }
    }

    /// Writes the salts every [`FLUSH_EVERY`] while they change, until `shutdown`. Call
    /// [`SaltStore::save`] once more when the connections have drained.
    pub async fn keep(self: std::sync::Arc<Self>, mut shutdown: Shutdown) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let store = self.clone();
            let r = tokio::task::spawn_blocking(move || store.save()).await;
            match r {
                Ok(Err(e)) if !failing => {
                    warn!("replay filter: {e}");
                    failing = true;
                }
                Ok(Ok(())) => failing = false,
                _ => {}
            }
        }
    }

    /// Writes the file if the salts changed since the last write (expired ones are dropped).
    pub fn save(&self) -> Result<(), SaltStoreError> {
        let bytes = {
            let Ok(mut log) = self.log.lock() else {
                return Ok(());
            };
            log.expire(now_ms());
            if !log.take_changed() {
                return Ok(());
            }
            log.encode()
        };
        write_atomically(&self.path, &bytes).map_err(|source| SaltStoreError {
            path: self.path.clone(),
            source,
        })
    }
}

/// The salt file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {}: {source}; a restart would forget the salts of the last 60 s (requests replayed from the 30 s before it would be accepted); fix: make `state_dir` (default /run/braid) a directory braid can write", path.display())]
pub struct SaltStoreError {
    /// The salt file.
    pub path: PathBuf,
    /// What the kernel said.
    #[source]
    pub source: std::io::Error,
}

/// Replaces `path` with `bytes` (temporary file, rename: see `state::file::replace`), creating
/// the directory (mode 0700) if needed.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    crate::state::file::replace(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowsocks::config::ServerType;

    const METHOD: CipherKind = CipherKind::AEAD2022_BLAKE3_AES_256_GCM;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("braid-salts-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn saved_salts_are_refused_by_the_next_runs_filter() {
        let d = dir("restart");
        let p = path(&d, 8388);
        let first = SaltStore::open(p.clone(), &Context::new(ServerType::Server), METHOD);
        first.record(&[7; 32]);
        first.save().unwrap();
        let ctx = Context::new(ServerType::Server);
        let _second = SaltStore::open(p, &ctx, METHOD);
        assert!(ctx.check_nonce_replay(METHOD, &[7; 32]).is_err());
        assert!(ctx.check_nonce_replay(METHOD, &[8; 32]).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn unchanged_salts_are_not_written_again_and_damage_is_survived() {
        let d = dir("damage");
        let p = path(&d, 1);
        let s = SaltStore::open(p.clone(), &Context::new(ServerType::Server), METHOD);
        s.save().unwrap();
        assert!(!p.exists(), "nothing recorded, nothing written");
        s.record(&[1; 16]);
        s.save().unwrap();
        std::fs::write(&p, b"garbage").unwrap();
        s.save().unwrap();
        assert_eq!(
            std::fs::read(&p).unwrap(),
            b"garbage",
            "unchanged: not rewritten"
        );
        let ctx = Context::new(ServerType::Server);
        let again = SaltStore::open(p, &ctx, METHOD);
        assert_eq!(again.log.lock().unwrap().len(), 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
