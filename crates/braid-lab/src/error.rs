//! Errors of the lab. Every failed command names itself, its exit status and its stderr.

use std::io;

use crate::netem::NetemError;

/// Why a lab operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab changes namespaces, links and firewalls, which needs root (CAP_NET_ADMIN and
    /// CAP_SYS_ADMIN for `ip netns`).
    #[error(
        "braid-lab needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN); run the tests with sudo or as root"
    )]
    NotRoot,
    /// The spec is not usable; the message says which field and why.
    #[error("invalid lab spec: {0}")]
    InvalidSpec(String),
    /// No uplink of that name exists in this lab.
    #[error("the lab has no uplink named `{0}`; use one of the names in LabSpec::uplinks")]
    UnknownUplink(String),
    /// A command could not be started at all (usually: the program is not installed).
    #[error("could not start `{command}`: {source}; is it installed? (apt-get install iproute2 nftables iptables ethtool iputils-ping)")]
    Spawn {
        /// The full command line.
        command: String,
        /// The error from `exec`.
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The full command line.
        command: String,
        /// Exit status as printed by std (`exit status: 2`, `signal: 9`).
        status: String,
        /// Its trimmed stderr.
        stderr: String,
    },
    /// Output of a command or a kernel file could not be understood.
    #[error("could not parse {what} from {text:?}")]
    Parse {
        /// What we were reading.
        what: &'static str,
        /// The text that did not parse (trimmed to a sane length).
        text: String,
    },
    /// Opening a namespace or another file failed.
    #[error("{what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The OS error, errno kept.
        #[source]
        source: io::Error,
    },
    /// The delay emulator failed to start.
    #[error(transparent)]
    Netem(#[from] NetemError),
}

impl LabError {
    pub(crate) fn parse(what: &'static str, text: &str) -> Self {
        let text: String = text.chars().take(400).collect();
        LabError::Parse { what, text }
    }
}
