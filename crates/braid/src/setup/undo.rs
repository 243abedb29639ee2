//! `braid setup undo`: takes back every journaled change, newest first. Each change leaves the
//! journal as soon as it is undone, so an undo that stops (a command fails) can be run again and
//! goes on where it stopped.

use std::path::Path;

use super::journal::Journal;
use super::SetupError;

/// Undoes everything in the journal under `root`; with `dry_run`, prints what it would do.
pub fn run(root: &Path, dry_run: bool) -> Result<usize, SetupError> {
    let mut journal = Journal::load(root)?;
    if journal.changes.is_empty() {
        println!(
            "nothing to undo: no setup journal at {}",
            super::journal::path(root).display()
        );
        return Ok(0);
    }
    let mut undone = 0;
    while let Some(change) = journal.changes.last().cloned() {
        let line = change.describe_undo();
        if dry_run {
            println!("would: {line}");
            journal.changes.pop();
            undone += 1;
            continue;
        }
        change.undo().map_err(|e| SetupError::Undo {
            step: line.clone(),
            source: e,
        })?;
        journal.changes.pop();
        journal.save(root)?;
        println!("undone: {line}");
        undone += 1;
    }
    Ok(undone)
}
