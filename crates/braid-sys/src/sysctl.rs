//! Reading sysctls and procfs counters, from a root that tests can point elsewhere.
//!
//! `braid doctor` must be testable against a faked `/proc` (an out-of-tree v0 kernel, a pending
//! reboot), so nothing here hard-codes `/proc`: a [`Procfs`] carries its root.

use std::io;
use std::path::{Path, PathBuf};

/// A procfs root, `/proc` in production.
#[derive(Debug, Clone)]
pub struct Procfs {
    root: PathBuf,
}

impl Default for Procfs {
    fn default() -> Self {
        Procfs {
            root: PathBuf::from("/proc"),
        }
    }
}

/// A sysctl that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// The file does not exist: the kernel lacks that feature (or it has another name there).
    #[error("sysctl {key} does not exist on this kernel ({path}); fix: this kernel lacks the feature, boot a newer upstream kernel")]
    Missing {
        /// Dotted name.
        key: String,
        /// File that was tried.
        path: PathBuf,
    },
    /// Any other I/O error, with the kernel's errno.
    #[error("sysctl {key} ({path}): {source}; fix: run as root in the right network namespace")]
    Io {
        /// Dotted name.
        key: String,
        /// File that was tried.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Procfs {
    /// A procfs rooted elsewhere (tests, `doctor --proc-root`).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Procfs { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A dotted key (`net.mptcp.enabled`) or, as sysctl(8) takes it, a key with `/` separators
    /// (`net/ipv4/conf/eth0.5/rp_filter`), which keeps a dotted interface name whole.
    fn sysctl_path(&self, key: &str) -> PathBuf {
        if key.contains('/') {
            self.root.join("sys").join(key)
        } else {
            self.root.join("sys").join(key.replace('.', "/"))
        }
    }

    /// `sysctl -n KEY`, trimmed. `KEY` is dotted, or `/`-separated (see [`Procfs::sysctl_path`]).
    pub fn sysctl(&self, key: &str) -> Result<String, SysctlError> {
        let path = self.sysctl_path(key);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(s.trim().to_string()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(SysctlError::Missing {
                key: key.into(),
                path,
            }),
            Err(source) => Err(SysctlError::Io {
                key: key.into(),
                path,
                source,
            }),
        }
    }

    /// `sysctl -n KEY` as an integer; a non-number reads as an I/O error naming the value.
    pub fn sysctl_u64(&self, key: &str) -> Result<u64, SysctlError> {
        let v = self.sysctl(key)?;
        v.parse().map_err(|_| SysctlError::Io {
            key: key.into(),
            path: self.sysctl_path(key),
            source: io::Error::new(io::ErrorKind::InvalidData, format!("not a number: {v:?}")),
        })
    }

    /// `sysctl -w KEY=VALUE`.
    pub fn set_sysctl(&self, key: &str, value: &str) -> Result<(), SysctlError> {
        let path = self.sysctl_path(key);
        std::fs::write(&path, value).map_err(|source| SysctlError::Io {
            key: key.into(),
            path,
            source,
        })
    }

    /// A procfs file below the root, e.g. `net/sockstat`.
    pub fn file(&self, rel: &str) -> io::Result<String> {
        std::fs::read_to_string(self.root.join(rel))
    }

    /// A counter from `/proc/net/netstat` or `/proc/net/snmp` (`nstat` names, e.g.
    /// `MPTcpExtBlackhole`, `TcpExtTCPFastOpenActive`). Missing counters read as `None`.
    pub fn net_counter(&self, name: &str) -> Option<u64> {
        ["net/netstat", "net/snmp"]
            .iter()
            .filter_map(|f| self.file(f).ok())
            .find_map(|text| find_counter(&text, name))
    }
}

/// Finds `PrefixField` in procfs's two-line "Prefix: names…" / "Prefix: values…" format.
pub fn find_counter(text: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (prefix, names) = names.split_once(':')?;
        let (_, values) = values.split_once(':')?;
        let Some(field) = name.strip_prefix(prefix) else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if n == field {
                return v.parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_counter_reads_the_matching_prefix_and_column() {
        let t = "TcpExt: A B\nTcpExt: 1 2\nMPTcpExt: Blackhole MPCapableSYNTX\nMPTcpExt: 7 9\n";
        assert_eq!(find_counter(t, "MPTcpExtBlackhole"), Some(7));
        assert_eq!(find_counter(t, "TcpExtB"), Some(2));
        assert_eq!(find_counter(t, "MPTcpExtNope"), None);
    }

    #[test]
    fn sysctl_missing_names_the_key() {
        let p = Procfs::at("/nonexistent-root");
        let e = p.sysctl("net.mptcp.enabled").unwrap_err();
        assert!(e.to_string().contains("net.mptcp.enabled"), "{e}");
    }
}
