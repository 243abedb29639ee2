//! The sysctls braid needs, persisted in `/etc/sysctl.d/90-braid.conf` and applied at once.
//! Only `net.*` keys: they are per network namespace, so a lab namespace can take them.

use std::path::{Path, PathBuf};

use braid_sys::sysctl::Procfs;

use super::change::Change;

/// One sysctl and the value braid needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    /// `net.mptcp.enabled`.
    pub key: &'static str,
    /// The value, or the bits that must be set.
    pub value: u64,
    /// True when `value` holds bits to OR into the current value (TFO), false for an exact
    /// value, and a minimum when [`Need::at_least`] is set.
    pub bits: bool,
    /// True when `value` is a minimum (limits): a larger current value is kept.
    pub at_least: bool,
}

const fn exact(key: &'static str, value: u64) -> Need {
    Need {
        key,
        value,
        bits: false,
        at_least: false,
    }
}

/// The relay: MPTCP on, TFO's server bit (2) and client bit (1, for the control probes), and a
/// listen backlog big enough for many gateways' connections at once.
pub const SERVER: &[Need] = &[
    exact("net.mptcp.enabled", 1),
    Need {
        key: "net.ipv4.tcp_fastopen",
        value: 3,
        bits: true,
        at_least: false,
    },
    Need {
        key: "net.core.somaxconn",
        value: 4096,
        bits: false,
        at_least: true,
    },
];

/// The gateway: MPTCP on, forwarding for the LAN, TFO's client bit.
pub const GATEWAY: &[Need] = &[
    exact("net.mptcp.enabled", 1),
    exact("net.ipv4.ip_forward", 1),
    Need {
        key: "net.ipv4.tcp_fastopen",
        value: 1,
        bits: true,
        at_least: false,
    },
];

/// Where the persisted settings go.
pub fn conf_path(root: &Path) -> PathBuf {
    root.join("etc/sysctl.d/90-braid.conf")
}

/// The file, and one change per sysctl whose running value is not already right. A key the
/// kernel does not have (old kernel, fake procfs) is left out of the running changes, said in
/// `notes`, and still persisted.
pub fn plan(root: &Path, procfs: &Procfs, needs: &[Need]) -> (Vec<Change>, Vec<String>) {
    let mut lines =
        vec!["# braid: written by `braid setup`; `braid setup undo` removes it.".to_string()];
    let mut now = Vec::new();
    let mut notes = Vec::new();
    for n in needs {
        let current = procfs.sysctl_u64(n.key);
        let want = match (current.as_ref(), n.bits, n.at_least) {
            (Ok(c), true, _) => c | n.value,
            (Ok(c), _, true) => (*c).max(n.value),
            _ => n.value,
        };
        lines.push(format!("{} = {want}", n.key));
        match current {
            Ok(c) if c == want => {}
            Ok(c) => now.push(Change::Sysctl {
                key: n.key.to_string(),
                path: procfs.root().join("sys").join(n.key.replace('.', "/")),
                value: want.to_string(),
                before: c.to_string(),
            }),
            Err(e) => notes.push(format!("{} not applied now: {e}", n.key)),
        }
    }
    let mut changes = vec![Change::file(
        conf_path(root),
        lines.join("\n") + "\n",
        0o644,
    )];
    changes.extend(now);
    (changes, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_sets_what_differs_ors_bits_and_keeps_larger_limits() {
        let dir = std::env::temp_dir().join(format!("braid-sysctl-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let set = |k: &str, v: &str| {
            let p = dir.join("proc/sys").join(k.replace('.', "/"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        };
        set("net.mptcp.enabled", "0\n");
        set("net.ipv4.tcp_fastopen", "1\n");
        set("net.core.somaxconn", "8192\n");
        let (changes, notes) = plan(&dir, &Procfs::at(dir.join("proc")), SERVER);
        assert!(notes.is_empty(), "{notes:?}");
        let Change::File { contents, .. } = &changes[0] else {
            panic!("first the file")
        };
        assert!(
            contents.contains(
                "net.mptcp.enabled = 1\nnet.ipv4.tcp_fastopen = 3\nnet.core.somaxconn = 8192\n"
            ),
            "{contents}"
        );
        let now: Vec<String> = changes[1..].iter().map(Change::describe).collect();
        assert_eq!(
            now,
            [
                "sysctl -w net.mptcp.enabled=1 (was 0)",
                "sysctl -w net.ipv4.tcp_fastopen=3 (was 1)"
            ]
        );
        for c in &changes[1..] {
            c.apply().unwrap();
        }
        assert_eq!(
            Procfs::at(dir.join("proc"))
                .sysctl_u64("net.mptcp.enabled")
                .unwrap(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
