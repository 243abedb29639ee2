//! braid's own nftables table: transparent capture of LAN TCP.
//!
//! braid owns exactly one table (`inet braid` by default) and never edits anyone else's, so
//! removal is one atomic `delete table` and a reload is "delete and re-create" in one
//! transaction. Rules are written in nft's own syntax and applied with `nft -f -`: every name in
//! them was validated first (interface names), so no quoting issue can arise.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// Why an nftables change failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed.
    #[error("the nft program was not found ({0}); fix: apt-get install nftables")]
    NotInstalled(std::io::Error),
    /// nft rejected the ruleset.
    #[error("nft rejected braid's ruleset (exit {status}): {stderr}; fix: check that the kernel has nf_tables with nat/redirect (CONFIG_NFT_REDIR) and that braid runs as root")]
    Rejected {
        /// Exit status.
        status: i32,
        /// What nft printed.
        stderr: String,
    },
    /// An interface name that cannot be a Linux interface name.
    #[error("interface name {0:?} is not valid (1–15 characters of letters, digits, '-', '_', '.'); fix: correct `lan` in the config")]
    BadInterface(String),
}

/// What the capture table redirects.
#[derive(Debug, Clone)]
pub struct CaptureRules {
    /// Table name inside family `inet`.
    pub table: String,
    /// LAN interfaces whose forwarded TCP is captured.
    pub lan: Vec<String>,
    /// Local port of the transparent listener.
    pub redirect_port: u16,
    /// Destinations never captured (the relay itself).
    pub exclude: Vec<IpAddr>,
}

/// True for names the kernel accepts as interface names (IFNAMSIZ-1, no '/', no spaces).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl CaptureRules {
    /// The ruleset text. Traffic to the gateway's own addresses is never captured
    /// (`fib daddr type local`), nor is traffic to the relay.
    pub fn render(&self) -> Result<String, NftError> {
        if let Some(bad) = self.lan.iter().find(|n| !valid_ifname(n)) {
            return Err(NftError::BadInterface(bad.clone()));
        }
        let ifs = self
            .lan
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let v4: Vec<String> = self
            .exclude
            .iter()
            .filter(|a| a.is_ipv4())
            .map(|a| a.to_string())
            .collect();
        let v6: Vec<String> = self
            .exclude
            .iter()
            .filter(|a| a.is_ipv6())
            .map(|a| a.to_string())
            .collect();
        let t = &self.table;
        let mut s = format!(
            "table inet {t}\ndelete table inet {t}\ntable inet {t} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n"
        );
        if !v4.is_empty() {
            s += &format!("    ip daddr {{ {} }} return\n", v4.join(", "));
        }
        if !v6.is_empty() {
            s += &format!("    ip6 daddr {{ {} }} return\n", v6.join(", "));
        }
        s += &format!(
            "    iifname {{ {ifs} }} meta l4proto tcp fib daddr type != {{ local, broadcast, multicast }} redirect to :{}\n  }}\n}}\n",
            self.redirect_port
        );
        Ok(s)
    }

    /// Creates or replaces the table atomically (`nft -f`).
    pub fn apply(&self) -> Result<(), NftError> {
        run_nft(&self.render()?)
    }
}

/// Removes a table braid owns (`nft delete table inet NAME`); a missing table is fine.
pub fn delete_table(table: &str) -> Result<(), NftError> {
    run_nft(&format!("table inet {table}\ndelete table inet {table}\n"))
}

/// Whether the table exists (`nft list table inet NAME`).
pub fn table_exists(table: &str) -> Result<bool, NftError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", table])
        .output()
        .map_err(NftError::NotInstalled)?;
    Ok(out.status.success())
}

fn run_nft(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::NotInstalled)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(NftError::NotInstalled)?;
    }
    let out = child.wait_with_output().map_err(NftError::NotInstalled)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Rejected {
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_excludes_relay_and_local_addresses() {
        let r = CaptureRules {
            table: "braid".into(),
            lan: vec!["eth1".into()],
            redirect_port: 1100,
            exclude: vec!["203.0.113.7".parse().unwrap()],
        };
        let s = r.render().unwrap();
        assert!(s.contains("ip daddr { 203.0.113.7 } return"), "{s}");
        assert!(s.contains("iifname { \"eth1\" }"), "{s}");
        assert!(
            s.contains("fib daddr type != { local, broadcast, multicast } redirect to :1100"),
            "{s}"
        );
    }

    #[test]
    fn render_rejects_an_interface_name_with_quotes() {
        let r = CaptureRules {
            table: "braid".into(),
            lan: vec!["eth1\" accept".into()],
            redirect_port: 1,
            exclude: vec![],
        };
        assert!(matches!(r.render(), Err(NftError::BadInterface(_))));
    }
}
