//! Faults for failover tests. Each has its inverse (the same call with the flag flipped, or the
//! old value).

use std::net::Ipv4Addr;

use crate::lab::{lock, Lab, Role};
use crate::shaping::{ends, nft_table, replace_prerouting_table};
use crate::spec::uplink_addr;
use crate::LabError;

impl Lab {
    /// `ip link set wan-NAME up|down` in gw. The kernel flushes the uplink's routes when it goes
    /// down; bringing it up does not restore the default route (a daemon or
    /// [`Lab::install_default_route`] must).
    pub fn set_uplink_link(&self, name: &str, up: bool) -> Result<(), LabError> {
        self.uplink_index(name)?;
        let state = if up { "up" } else { "down" };
        self.ip(Role::Gw, &["link", "set", &self.uplink_iface(name), state])?;
        Ok(())
    }

    /// Silently drops everything arriving over uplink `name` in both namespaces (nftables,
    /// before loss and delay), while the carrier stays up. `on = false` removes it.
    pub fn set_uplink_blackhole(&self, name: &str, on: bool) -> Result<(), LabError> {
        self.uplink_index(name)?;
        let rule = |iface: &str| format!("iifname \"{iface}\" counter drop");
        let rule: Option<&dyn Fn(&str) -> String> = on.then_some(&rule);
        replace_prerouting_table(self, name, &nft_table("blackhole", name), "-400", rule)
    }

    /// A firewall that drops all UDP arriving over uplink `name` in both namespaces (nftables,
    /// before loss and delay), as a hotel or corporate network that passes only TCP would.
    /// `on = false` removes it.
    pub fn set_udp_block(&self, name: &str, on: bool) -> Result<(), LabError> {
        self.uplink_index(name)?;
        let rule = |iface: &str| format!("iifname \"{iface}\" meta l4proto udp counter drop");
        let rule: Option<&dyn Fn(&str) -> String> = on.then_some(&rule);
        replace_prerouting_table(self, name, &nft_table("udpblock", name), "-400", rule)
    }

    /// A middlebox that strips MPTCP options (TCP option 30) on uplink `name`: iptables mangle
    /// `TCPOPTSTRIP --strip-options 30` in vps PREROUTING for packets from gw and in gw
    /// PREROUTING for packets from vps, ahead of the delay queue. Idempotent.
    pub fn set_mptcp_strip(&self, name: &str, on: bool) -> Result<(), LabError> {
        self.uplink_index(name)?;
        for (role, iface) in ends(self, name) {
            let spec = |op: &'static str| {
                [
                    "iptables",
                    "-w",
                    "-t",
                    "mangle",
                    op,
                    "PREROUTING",
                    "-i",
                    &iface,
                    "-p",
                    "tcp",
                    "-j",
                    "TCPOPTSTRIP",
                    "--strip-options",
                    "30",
                ]
                .map(str::to_owned)
            };
            let present = |lab: &Lab| {
                let check = spec("-C");
                let argv: Vec<&str> = check.iter().map(String::as_str).collect();
                lab.output(role, &argv).map(|o| o.status.success())
            };
            if on && !present(self)? {
                // Position 1: an NFQUEUE accept ends the chain, so strip before queueing.
                let mut insert: Vec<String> = spec("-I").into();
                insert.insert(6, "1".into());
                let argv: Vec<&str> = insert.iter().map(String::as_str).collect();
                self.run(role, &argv)?;
            }
            while !on && present(self)? {
                let delete = spec("-D");
                let argv: Vec<&str> = delete.iter().map(String::as_str).collect();
                self.run(role, &argv)?;
            }
        }
        Ok(())
    }

    /// Gives uplink `name` a new gateway-side address, as a DHCP lease change would: the old
    /// address is removed, `new`/24 added and the default route re-installed. `new` must stay in
    /// the uplink's subnet 10.{i+1}.0.0/24 (host 1, 3..=254). Not reflected in
    /// [`Lab::kernel_mptcp_policy`] until it is called again.
    pub fn change_uplink_address(&self, name: &str, new: Ipv4Addr) -> Result<(), LabError> {
        let i = self.uplink_index(name)?;
        let net = uplink_addr(i, 0).octets();
        let o = new.octets();
        if o[..3] != net[..3] || matches!(o[3], 0 | 2 | 255) {
            return Err(LabError::InvalidSpec(format!(
                "{new} is not a usable gateway address in uplink {name}'s subnet {}/24 \
                 (host .2 is the vps)",
                uplink_addr(i, 0)
            )));
        }
        let wan = self.uplink_iface(name);
        self.ip(Role::Gw, &["addr", "flush", "dev", &wan])?;
        self.ip(
            Role::Gw,
            &["addr", "add", &format!("{new}/24"), "dev", &wan],
        )?;
        lock(&self.gw_addrs)[i] = new;
        self.install_default_route(name)
    }

    /// `sysctl -w key=value` inside `role`'s namespace.
    pub fn sysctl(&self, role: Role, key: &str, value: &str) -> Result<(), LabError> {
        self.sysctls(role, &[format!("{key}={value}")])
    }

    /// `sysctl -n key` inside `role`'s namespace, trimmed.
    pub fn read_sysctl(&self, role: Role, key: &str) -> Result<String, LabError> {
        Ok(self.run(role, &["sysctl", "-n", key])?.trim().to_owned())
    }
}
