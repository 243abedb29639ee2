//! Configuration: TOML files parsed into typed values.
//!
//! Each file is read into a private DTO (`serde` with `deny_unknown_fields`) and converted by one
//! small function per section into the typed config the daemons take. Every error names the
//! file, the key, the value and the fix, because a relay that silently ignores a typo is worse
//! than one that refuses to start.

mod common;
pub mod gateway;
pub mod server;
pub mod udp;
mod warm_pool;

pub use common::{Congestion, ControlAccess, ControlToken, FastOpen, LimitsConfig, Method, SsKey};

/// The default control address, used by `braid status` without arguments.
pub fn common_default_control() -> Option<std::net::SocketAddr> {
    common::DEFAULT_CONTROL.parse().ok()
}

use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the file: {source}; fix: check the path given to --config")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown or mistyped key.
    #[error("{path}: {message}; fix: see examples/{example} for every key and its type")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
        /// Which example file documents the keys.
        example: &'static str,
    },
    /// A key has a value braid cannot use.
    #[error("{path}: `{key}` = {value}: {problem}; fix: {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key, dotted for nested ones (`uplink[1].interface`).
        key: String,
        /// The offending value, as written.
        value: String,
        /// What is wrong.
        problem: String,
        /// How to fix it.
        fix: String,
    },
}

/// Collects the pieces of an [`ConfigError::Invalid`] before the file name is known.
#[derive(Debug)]
pub struct Invalid {
    key: String,
    value: String,
    problem: String,
    fix: String,
}

impl Invalid {
    /// A bad value for `key`.
    pub fn new(
        key: impl Into<String>,
        value: impl fmt::Display,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Invalid {
            key: key.into(),
            value: value.to_string(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    fn in_file(self, path: &Path) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_path_buf(),
            key: self.key,
            value: self.value,
            problem: self.problem,
            fix: self.fix,
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn parse_toml<T: for<'de> serde::Deserialize<'de>>(
    path: &Path,
    text: &str,
    example: &'static str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim().replace('\n', " "),
        example,
    })
}

/// Which side a config file is for (by its keys: `server` on the gateway, `listen` on the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// gateway.toml
    Gateway,
    /// server.toml
    Server,
}

pub fn side_of(path: &Path) -> Result<Side, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read the file: {e}; fix: check the path given to --config",
            path.display()
        )
    })?;
    let v: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: not valid TOML: {e}", path.display()))?;
    match (v.contains_key("server"), v.contains_key("listen")) {
        (true, false) => Ok(Side::Gateway),
        (false, true) => Ok(Side::Server),
        _ => Err(format!("{}: cannot tell whether this is a gateway config (has `server`) or a server config (has `listen`); fix: pass gateway.toml or server.toml", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn example(name: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(name);
        let text = std::fs::read_to_string(&p).unwrap();
        text.replace("REPLACE-WITH-THE-OUTPUT-OF-braid-keygen", KEY)
            .replace("REPLACE-WITH-THE-SERVERS-KEY", KEY)
    }

    #[test]
    fn example_configs_parse_and_document_every_key() {
        let g =
            gateway::GatewayConfig::from_toml(Path::new("gateway.toml"), &example("gateway.toml"))
                .unwrap();
        assert_eq!(g.uplinks.len(), 2);
        assert_eq!(g.health.down_after, 3);
        server::ServerConfig::from_toml(Path::new("server.toml"), &example("server.toml")).unwrap();
    }

    /// Every key, set or commented out with its default, so the examples stay the reference.
    #[test]
    fn example_configs_mention_every_key() {
        let common = [
            "method",
            "key",
            "fast_open",
            "mptcp",
            "connect_timeout_secs",
            "idle_timeout_secs",
            "control",
            "max_connections",
            "max_handshakes",
            "max_handshakes_per_source",
            "control_allow_from",
            "control_hosts",
            "control_token",
        ];
        let server = [
            "listen",
            "allow_destinations",
            "handshake_timeout_secs",
            "tunnel_port",
            "tunnel_net",
            "bond_after_kib",
            "initial_window",
        ];
        let gateway = [
            "server",
            "redirect",
            "lan",
            "socks",
            "socks_allow_from",
            "nft_table",
            "mptcp_blackhole_timeout_secs",
            "warm_pool",
            "relay_handshake_timeout_secs",
            "tunnel_retry_secs",
            "tunnel",
        ];
        for (file, keys) in [("server.toml", &server[..]), ("gateway.toml", &gateway[..])] {
            let text = example(file);
            for key in common.iter().chain(keys) {
                let documented = text.lines().any(|l| {
                    let l = l.trim_start_matches(['#', ' ']);
                    l.starts_with(&format!("{key} ="))
                });
                assert!(documented, "examples/{file} does not document `{key}`");
            }
        }
    }
}
