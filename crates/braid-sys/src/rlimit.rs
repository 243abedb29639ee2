//! The open-file limit (`RLIMIT_NOFILE`), which caps how many connections a daemon can hold.
//!
//! Service managers start daemons with a low soft limit (systemd: 1024) and a high hard limit
//! (524288); a relay that keeps the soft one runs out of descriptors at a thousand connections.
//! [`raise_file_limit`] lifts the soft limit to the hard one (or to `fs.nr_open` when the hard
//! limit is unlimited), which needs no privilege, and says what it got.
//!
//! Two libc calls, each with its `// SAFETY:` note.
#![allow(unsafe_code)]

use std::io;

/// Soft and hard open-file limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    /// The limit that applies (`ulimit -n`).
    pub soft: u64,
    /// How far an unprivileged process may raise it (`ulimit -Hn`).
    pub hard: u64,
}

/// The process's open-file limits.
pub fn file_limit() -> io::Result<FileLimit> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable `struct rlimit` that outlives the call.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileLimit {
        soft: rl.rlim_cur,
        hard: rl.rlim_max,
    })
}

fn set_file_limit(limit: FileLimit) -> io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: limit.soft,
        rlim_max: limit.hard,
    };
    // SAFETY: `rl` is a valid `struct rlimit` that outlives the call; the kernel only reads it.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets the soft limit, keeping the hard one (tests use it to provoke EMFILE).
pub fn set_soft_file_limit(soft: u64) -> io::Result<()> {
    let now = file_limit()?;
    set_file_limit(FileLimit {
        soft: soft.min(now.hard),
        hard: now.hard,
    })
}

/// The limits before and after [`raise_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// As the process started.
    pub before: FileLimit,
    /// Now.
    pub after: FileLimit,
}

/// Raises the soft open-file limit as far as the hard limit allows. An unlimited hard limit is
/// capped at `fs.nr_open`, the most the kernel lets one process have.
pub fn raise_file_limit() -> io::Result<Raised> {
    let before = file_limit()?;
    let mut target = before.hard;
    if target == libc::RLIM_INFINITY {
        target = nr_open().unwrap_or(1 << 20);
    }
    if target > before.soft {
        set_file_limit(FileLimit {
            soft: target,
            hard: before.hard,
        })?;
    }
    Ok(Raised {
        before,
        after: file_limit()?,
    })
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Descriptors this process has open now (entries of `/proc/self/fd`, less the one reading it).
pub fn open_files() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_ends_at_the_hard_limit_and_open_files_counts() {
        let r = raise_file_limit().unwrap();
        assert!(r.after.soft >= r.before.soft);
        assert_eq!(r.after.hard, r.before.hard);
        if r.before.hard != libc::RLIM_INFINITY {
            assert_eq!(r.after.soft, r.after.hard);
        }
        // Other tests open and close files meanwhile, so only a floor is certain.
        let held: Vec<_> = (0..64)
            .map(|_| std::fs::File::open("/proc/self/stat").unwrap())
            .collect();
        assert!(open_files().unwrap() >= held.len());
    }
}
