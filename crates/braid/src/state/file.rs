//! The state file on disk: `<state_dir>/<role>-<name>.json`, replaced atomically.
//!
//! A write goes to a temporary file in the same directory, is flushed to disk, and is renamed
//! over the old one, so a crash at any moment leaves either the old record or the new one, never
//! half of one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::record::Record;
use super::StateError;

/// One daemon's state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `dir/role-name.json`.
    pub fn new(dir: &Path, role: &str, name: &str) -> StateFile {
        StateFile {
            path: dir.join(format!("{role}-{name}.json")),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The record, or `None` when there is no file.
    pub fn load(&self) -> Result<Option<Record>, StateError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(self.io("reading", source)),
        };
        Record::parse(&text)
            .map(Some)
            .map_err(|source| StateError::Unreadable {
                path: self.path.clone(),
                source,
            })
    }

    /// Replaces the file with `r` (temporary file, fsync, rename); creates the directory
    /// (mode 0700) if needed.
    pub fn store(&self, r: &Record) -> Result<(), StateError> {
        if let Some(dir) = self.path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| self.io("creating the directory of", e))?;
        }
        let text = serde_json::to_string_pretty(r).map_err(|e| {
            self.io(
                "encoding",
                std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            )
        })?;
        replace(&self.path, format!("{text}\n").as_bytes()).map_err(|e| self.io("writing", e))
    }

    /// Deletes the file; a missing one is fine.
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io("deleting", e)),
            _ => Ok(()),
        }
    }

    /// Moves the file aside to `<path>.<suffix>` and returns the new path.
    pub fn set_aside(&self, suffix: &str) -> Result<PathBuf, StateError> {
        let to = PathBuf::from(format!("{}.{suffix}", self.path.display()));
        std::fs::rename(&self.path, &to).map_err(|e| self.io("moving aside", e))?;
        Ok(to)
    }

    fn io(&self, what: &'static str, source: std::io::Error) -> StateError {
        StateError::Io {
            what,
            path: self.path.clone(),
            source,
        }
    }
}

/// Replaces `path` with `bytes`: written to `<path>.tmp` (mode 0600), flushed to disk and
/// renamed over it, so a crash leaves the old file or the new one, never half of one. The
/// directory must exist.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::super::owner::Owner;
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("braid-state-{tag}-{}", std::process::id()))
    }

    fn record() -> Record {
        Record::new(
            "gateway",
            "braid",
            Owner {
                pid: 1,
                start_ticks: 2,
                netns: 3,
            },
        )
    }

    #[test]
    fn missing_file_loads_as_none_and_a_stored_record_loads_back() {
        let d = dir("roundtrip");
        let f = StateFile::new(&d.join("sub"), "gateway", "braid");
        assert!(f.load().expect("load").is_none());
        let mut r = record();
        r.note_nft_table("braid");
        f.store(&r).expect("store");
        assert!(f.path().ends_with("sub/gateway-braid.json"));
        assert_eq!(f.load().expect("load"), Some(r));
        assert!(!f.path().with_extension("json.tmp").exists());
        f.remove().expect("remove");
        f.remove().expect("removing twice is fine");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_path() {
        let d = dir("corrupt");
        let f = StateFile::new(&d, "gateway", "braid");
        std::fs::create_dir_all(&d).expect("dir");
        std::fs::write(f.path(), "{ not json").expect("write");
        let e = f.load().unwrap_err().to_string();
        assert!(e.contains("gateway-braid.json"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}
