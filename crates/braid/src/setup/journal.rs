//! The undo journal: every change setup makes is written here (and synced) *before* it is made,
//! so that `braid setup undo` can take back everything, newest first, even after a crash in the
//! middle of a run. An entry whose change then failed is removed again.
//!
//! The journal lives at `ROOT/var/lib/braid/setup-journal.json`; setup runs append to it, and
//! `undo` empties it entry by entry, so an undo that stops halfway can be run again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::change::{Change, ChangeError};

/// Where the journal is, under the setup root.
pub fn path(root: &Path) -> PathBuf {
    root.join("var/lib/braid/setup-journal.json")
}

/// The journal's content.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Journal {
    /// Format version (1).
    pub version: u32,
    /// Changes in the order they were made.
    pub changes: Vec<Change>,
}

/// Why the journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file exists but is not a journal.
    #[error("{path} is not a braid setup journal ({why}); fix: look at it, and move it away if it is not braid's")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        why: String,
    },
    /// Reading or writing failed.
    #[error(transparent)]
    Io(#[from] ChangeError),
}

impl Journal {
    /// Reads the journal; an absent one is empty.
    pub fn load(root: &Path) -> Result<Journal, JournalError> {
        let p = path(root);
        match std::fs::read_to_string(&p) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| JournalError::Corrupt {
                path: p,
                why: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal {
                version: 1,
                changes: Vec::new(),
            }),
            Err(source) => Err(JournalError::Io(ChangeError::File {
                what: "reading",
                path: p,
                source,
            })),
        }
    }

    /// Writes the journal (atomically, synced); an empty journal removes the file.
    pub fn save(&self, root: &Path) -> Result<(), JournalError> {
        let p = path(root);
        if self.changes.is_empty() {
            return match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(JournalError::Io(ChangeError::File {
                        what: "removing",
                        path: p,
                        source: e,
                    }))
                }
                _ => {
                    // braid's own folder goes too, when nothing else is in it.
                    if let Some(dir) = p.parent() {
                        let _ = std::fs::remove_dir(dir);
                    }
                    Ok(())
                }
            };
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default() + "\n";
        // A journal is itself written the way every file is: through a File change (not
        // journaled, since it is the journal).
        Change::File {
            path: p,
            contents: text,
            mode: 0o600,
            before: None,
            created: Vec::new(),
        }
        .apply()
        .map_err(JournalError::Io)
    }
}
