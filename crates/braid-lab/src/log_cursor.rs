//! A cursor on a daemon's log file that sees only lines written after it was taken.
//!
//! A test that waits for "uplink wifi is Up again" must not be satisfied by the start-up line
//! `uplink wifi: Recovering → Up`, which has the same words. So a wait starts from a cursor
//! taken *before* the action (or before the daemon starts, for a start-up message), and only
//! complete lines written after that point count:
//!
//! ```text
//!  let mut c = h.log_cursor("gateway.log");   // offset = end of the file now
//!  …fault…
//!  c.wait_for("uplink wifi: Up → Down", 5 s)  // new complete lines only; the cursor moves past
//! ```
//!
//! The harness renames an old log before a daemon starts again (`gateway.log` →
//! `gateway-1.log`) instead of deleting it, so the old file keeps its inode: a cursor compares
//! the file's (device, inode) with the one it was taken on and reads a replaced file from its
//! start.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often a waiting cursor reads the file again.
const POLL: Duration = Duration::from_millis(50);

/// A braid daemon that refuses to start (or dies) prints `braid: <error>` as its last line, so
/// a wait can stop at once instead of running into its time limit.
const EXIT_LINE: &str = "braid: ";

/// A position in a log file; see the module doc.
#[derive(Debug, Clone)]
pub struct LogCursor {
    path: PathBuf,
    /// (device, inode) of the file `offset` is in; `None` when the file did not exist.
    file: Option<(u64, u64)>,
    /// Byte offset of the first line not seen yet.
    offset: u64,
}

/// Why a wait on a log line failed.
#[derive(Debug, thiserror::Error)]
#[error("{file}: no new line containing {needle:?}: {why}; the lines written since the wait began:\n{new_lines}")]
pub struct LogWaitError {
    /// The log file.
    pub file: String,
    /// What was awaited.
    pub needle: String,
    /// "it did not appear within 5 s", or that the daemon exited.
    pub why: String,
    /// The complete lines written after the cursor (what the daemon said instead).
    pub new_lines: String,
}

/// New complete lines read from a cursor's position.
struct Fresh {
    file: Option<(u64, u64)>,
    /// Offset of `text`'s first byte in the file.
    start: u64,
    text: String,
}

impl LogCursor {
    /// A cursor at the current end of `path`; at its start if it does not exist yet (the daemon
    /// that will write it has not started).
    pub fn at_end(path: impl Into<PathBuf>) -> LogCursor {
        let path = path.into();
        let (file, offset) = match std::fs::metadata(&path) {
            Ok(m) => (Some((m.dev(), m.ino())), m.len()),
            Err(_) => (None, 0),
        };
        LogCursor { path, file, offset }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The complete lines written after the cursor, without moving it.
    pub fn new_lines(&self) -> String {
        self.read().map(|f| f.text).unwrap_or_default()
    }

    /// Waits until a line written after the cursor contains `needle`, and returns that line.
    /// The cursor moves past it, so the next wait sees only later lines. Fails after `limit`,
    /// or as soon as the daemon prints its `braid: <error>` exit line, with the new lines.
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> Result<String, LogWaitError> {
        let deadline = Instant::now() + limit;
        loop {
            // An unreadable file is the same as one with no new lines yet: the daemon may not
            // have created it.
            let fresh = self.read().unwrap_or(Fresh {
                file: self.file,
                start: self.offset,
                text: String::new(),
            });
            let mut end = fresh.start;
            for line in fresh.text.split_inclusive('\n') {
                end += line.len() as u64;
                let line = line.trim_end_matches('\n');
                if line.contains(needle) {
                    self.file = fresh.file;
                    self.offset = end;
                    return Ok(line.to_owned());
                }
                if line.starts_with(EXIT_LINE) {
                    return Err(self.failed(needle, "the daemon exited first", fresh.text));
                }
            }
            if Instant::now() >= deadline {
                let why = format!("it did not appear within {limit:?}");
                return Err(self.failed(needle, &why, fresh.text));
            }
            std::thread::sleep(POLL);
        }
    }

    fn failed(&self, needle: &str, why: &str, new_lines: String) -> LogWaitError {
        LogWaitError {
            file: self.path.display().to_string(),
            needle: needle.to_owned(),
            why: why.to_owned(),
            new_lines: if new_lines.is_empty() {
                "(none)".into()
            } else {
                new_lines
            },
        }
    }

    /// The complete lines after the cursor: from `offset` in the same file, from the start in a
    /// file that replaced it (or shrank).
    fn read(&self) -> io::Result<Fresh> {
        let mut f = File::open(&self.path)?;
        let m = f.metadata()?;
        let id = Some((m.dev(), m.ino()));
        let start = if id == self.file && m.len() >= self.offset {
            self.offset
        } else {
            0
        };
        f.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        // A line still being written is not seen until its newline arrives.
        let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(complete);
        Ok(Fresh {
            file: id,
            start,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A fresh folder for one test's log, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let dir = std::env::temp_dir()
                .join(format!("braid-log-cursor-{}-{test}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn log(&self) -> PathBuf {
            self.0.join("gateway.log")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn append(p: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    const SHORT: Duration = Duration::from_millis(200);

    #[test]
    fn wait_for_line_written_before_the_cursor_is_not_seen() {
        let dir = TempDir::new("old");
        let p = dir.log();
        append(&p, "uplink wifi: Recovering → Up\n");
        let mut c = LogCursor::at_end(&p);
        let e = c.wait_for("Recovering → Up", SHORT).unwrap_err();
        assert!(e.why.contains("did not appear"), "{e}");
        assert_eq!(e.new_lines, "(none)");
        append(
            &p,
            "uplink wifi: Up → Down\nuplink wifi: Recovering → Up again\n",
        );
        assert_eq!(
            c.wait_for("Recovering → Up", SHORT).unwrap(),
            "uplink wifi: Recovering → Up again"
        );
    }

    #[test]
    fn wait_for_moves_past_the_match_and_ignores_a_partial_line() {
        let dir = TempDir::new("moves");
        let p = dir.log();
        let mut c = LogCursor::at_end(&p);
        append(&p, "a ready\nb ready\nc rea");
        assert_eq!(c.wait_for("ready", SHORT).unwrap(), "a ready");
        assert_eq!(c.wait_for("ready", SHORT).unwrap(), "b ready");
        let e = c.wait_for("ready", SHORT).unwrap_err();
        assert_eq!(e.new_lines, "(none)", "a partial line is not a line yet");
        append(&p, "dy\n");
        assert_eq!(c.wait_for("ready", SHORT).unwrap(), "c ready");
    }

    #[test]
    fn wait_for_reads_a_replacing_file_from_its_start() {
        let dir = TempDir::new("replaced");
        let p = dir.log();
        append(&p, "first run: gateway up\n");
        let mut c = LogCursor::at_end(&p);
        // The harness keeps the old run's log under another name; the new run writes afresh, a
        // first line longer than the old file, so reading it from the old offset would miss it.
        std::fs::rename(&p, dir.0.join("gateway-1.log")).unwrap();
        let line = "gateway up: the second run, on a line longer than the first file";
        append(&p, &format!("{line}\n"));
        assert_eq!(c.wait_for("gateway up", SHORT).unwrap(), line);
    }

    #[test]
    fn wait_for_stops_at_the_exit_line_and_shows_the_new_lines() {
        let dir = TempDir::new("exit");
        let p = dir.log();
        let mut c = LogCursor::at_end(&p);
        append(&p, "starting\nbraid: bad config\n");
        let started = Instant::now();
        let e = c
            .wait_for("gateway up", Duration::from_secs(10))
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(e.why.contains("exited"), "{e}");
        assert!(e.to_string().contains("braid: bad config"), "{e}");
    }
}
