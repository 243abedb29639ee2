//! The one switch between a real run and `--dry-run`: steps hand every change to an
//! [`Executor`], which either journals and applies it, or prints it. Nothing else differs.

use std::path::PathBuf;

use super::change::Change;
use super::journal::{Journal, JournalError};
use super::SetupError;

/// Applies (or prints) changes; see the module doc.
pub struct Executor {
    mode: Mode,
    /// Lines a dry run printed or a real run did, in order (for the summary and tests).
    pub done: Vec<String>,
}

enum Mode {
    DryRun,
    Apply { root: PathBuf, journal: Journal },
}

impl Executor {
    /// A real run, journaling under `root`.
    pub fn apply(root: PathBuf) -> Result<Executor, SetupError> {
        let journal = Journal::load(&root)?;
        Ok(Executor {
            mode: Mode::Apply { root, journal },
            done: Vec::new(),
        })
    }

    /// A dry run: prints each change (and the full content of each file) and makes none.
    pub fn dry_run() -> Executor {
        Executor {
            mode: Mode::DryRun,
            done: Vec::new(),
        }
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        matches!(self.mode, Mode::DryRun)
    }

    /// Journals `change`, then makes it (a dry run prints it instead). A change that fails is
    /// taken off the journal again, and its error returned.
    pub fn run(&mut self, change: Change) -> Result<(), SetupError> {
        let line = change.describe();
        match &mut self.mode {
            Mode::DryRun => {
                println!("would: {line}");
                if let Some(detail) = change.detail() {
                    for l in detail.lines() {
                        println!("    | {l}");
                    }
                }
            }
            Mode::Apply { root, journal } => {
                journal.changes.push(change.clone());
                journal.save(root)?;
                if let Err(e) = change.apply() {
                    journal.changes.pop();
                    journal.save(root)?;
                    return Err(SetupError::Change {
                        step: line,
                        source: e,
                    });
                }
                println!("done: {line}");
            }
        }
        self.done.push(line);
        Ok(())
    }
}

impl From<JournalError> for SetupError {
    fn from(e: JournalError) -> Self {
        SetupError::Journal(e)
    }
}
