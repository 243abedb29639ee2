//! Which process wrote a state record, and whether it still runs.
//!
//! A record is only undone when its writer is gone: undoing the live state of a running gateway
//! would cut its traffic. A pid alone can be reused, so the owner is the pid plus the process's
//! start time (field 22 of `/proc/PID/stat`, in clock ticks since boot). The network namespace
//! (the inode of `/proc/self/ns/net`) is kept too: routes, rules, endpoints, limits and the nft
//! table all live in one namespace, and undoing another namespace's record here would change the
//! wrong kernel state.

use std::io;
use std::os::unix::fs::MetadataExt;

use serde::{Deserialize, Serialize};

/// A process and the network namespace it changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Start time of the process, clock ticks after boot.
    pub start_ticks: u64,
    /// Inode of its network namespace.
    pub netns: u64,
}

/// What a new run may do with a record it finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Written by this very process.
    Own,
    /// Its writer is gone and it is about this namespace: undo it.
    Undo,
    /// Its writer is gone, but it is about another network namespace: nothing here to undo.
    OtherNamespace,
    /// Its writer still runs: another daemon uses the same state file.
    Alive,
}

impl Owner {
    /// This process.
    pub fn current() -> io::Result<Owner> {
        Owner::of_pid(std::process::id())
    }

    /// A running process (reading its network namespace needs the rights to inspect it).
    pub fn of_pid(pid: u32) -> io::Result<Owner> {
        Ok(Owner {
            pid,
            start_ticks: start_ticks(pid)?,
            netns: netns_inode(&format!("/proc/{pid}/ns/net"))?,
        })
    }

    /// Whether this owner's process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        start_ticks(self.pid).is_ok_and(|t| t == self.start_ticks)
    }
}

/// What `me` may do with a record written by `writer` (`writer_alive` from
/// [`Owner::is_alive`]).
pub fn verdict(writer: &Owner, me: &Owner, writer_alive: bool) -> Verdict {
    if writer == me {
        Verdict::Own
    } else if writer_alive {
        Verdict::Alive
    } else if writer.netns == me.netns {
        Verdict::Undo
    } else {
        Verdict::OtherNamespace
    }
}

fn start_ticks(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat has no start time"),
        )
    })
}

fn netns_inode(path: &str) -> io::Result<u64> {
    Ok(std::fs::metadata(path)?.ino())
}

/// Field 22 (`starttime`) of `/proc/PID/stat`. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_found_after_a_command_name_with_parentheses() {
        let stat = "4242 (braid (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 9 0 1234567 99999 100 18446744073709551615";
        assert_eq!(parse_start_ticks(stat), Some(1234567));
        assert_eq!(parse_start_ticks("4242 (braid) S 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_changed_start_time_is_not() {
        let me = Owner::current().expect("procfs");
        assert!(me.is_alive());
        let reused = Owner {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(!reused.is_alive());
    }

    #[test]
    fn verdict_undoes_only_a_dead_writer_of_this_namespace() {
        let me = Owner {
            pid: 2,
            start_ticks: 9,
            netns: 1,
        };
        let dead = Owner { pid: 1, ..me };
        assert_eq!(verdict(&me, &me, true), Verdict::Own);
        assert_eq!(verdict(&dead, &me, true), Verdict::Alive);
        assert_eq!(verdict(&dead, &me, false), Verdict::Undo);
        let elsewhere = Owner { netns: 5, ..dead };
        assert_eq!(verdict(&elsewhere, &me, false), Verdict::OtherNamespace);
    }
}
