//! Per-uplink shaping: htb rate limits, NFQUEUE delay, nftables loss.
//!
//! ```text
//!  gw  ──wan-NAME egress: htb rate──▶  vps PREROUTING: nft loss (raw) → iptables mangle NFQUEUE → netem rtt/2
//!  vps ──up-NAME egress:  htb rate──▶  gw  PREROUTING: nft loss (raw) → iptables mangle NFQUEUE → netem rtt/2
//! ```
//! Loss runs at raw priority, before the packet is queued, so dropped packets cost the emulator
//! nothing.

use std::time::Duration;

use crate::lab::{lock, Lab, Role};
use crate::netem::{self, DelayConfig};
use crate::ns::netns_path;
use crate::spec::UplinkSpec;
use crate::LabError;

/// Applies `up`'s rate, delay and loss.
pub(crate) fn apply(lab: &Lab, up: &UplinkSpec) -> Result<(), LabError> {
    if let Some(mbit) = up.rate_mbit {
        for (role, iface) in ends(lab, &up.name) {
            limit_rate(lab, role, &iface, mbit)?;
        }
    }
    if up.rtt_ms > 0 {
        start_delay(lab, up)?;
    }
    if up.loss_permille > 0 {
        lab.set_uplink_loss(&up.name, up.loss_permille)?;
    }
    Ok(())
}

/// The uplink's two interfaces as (namespace role, interface), gw side first.
pub(crate) fn ends(lab: &Lab, name: &str) -> [(Role, String); 2] {
    [
        (Role::Gw, lab.uplink_iface(name)),
        (Role::Vps, lab.uplink_vps_iface(name)),
    ]
}

/// Bytes of the bfifo under htb: about 100 ms at `mbit`, at least ten full-size packets.
pub fn bfifo_limit_bytes(mbit: u32) -> u64 {
    (u64::from(mbit) * 12_500).max(15_000)
}

/// htb + bfifo on `iface`'s egress, with TSO/GSO/GRO off so the queue sees real packets.
fn limit_rate(lab: &Lab, role: Role, iface: &str, mbit: u32) -> Result<(), LabError> {
    let offloads = [
        "ethtool", "-K", iface, "tso", "off", "gso", "off", "gro", "off",
    ];
    lab.run(role, &offloads)?;
    let rate = format!("{mbit}mbit");
    let limit = bfifo_limit_bytes(mbit).to_string();
    let tc = |args: &[&str]| -> Result<(), LabError> {
        let mut argv = vec!["tc"];
        argv.extend_from_slice(args);
        lab.run(role, &argv).map(drop)
    };
    tc(&[
        "qdisc", "replace", "dev", iface, "root", "handle", "1:", "htb", "default", "1",
    ])?;
    tc(&[
        "class", "replace", "dev", iface, "parent", "1:", "classid", "1:1", "htb", "rate", &rate,
        "ceil", &rate, "burst", "15k",
    ])?;
    tc(&[
        "qdisc", "replace", "dev", iface, "parent", "1:1", "handle", "10:", "bfifo", "limit",
        &limit,
    ])
}

/// One emulator per direction, each in the receiving namespace, holding rtt/2; the NFQUEUE rule
/// is added only once its queue is bound.
fn start_delay(lab: &Lab, up: &UplinkSpec) -> Result<(), LabError> {
    let i = lab.uplink_index(&up.name)?;
    let queue_num = u16::try_from(i).expect("at most 8 uplinks");
    let one_way = Duration::from_micros(u64::from(up.rtt_ms) * 500);
    for (role, iface) in ends(lab, &up.name) {
        let path = netns_path(&lab.ns_name(role));
        let handle = netem::spawn_in_netns(&path, DelayConfig::new(queue_num, one_way))?;
        lock(&lab.netems).push((up.name.clone(), role, handle));
        let q = queue_num.to_string();
        lab.run(
            role,
            &[
                "iptables",
                "-w",
                "-t",
                "mangle",
                "-A",
                "PREROUTING",
                "-i",
                &iface,
                "-j",
                "NFQUEUE",
                "--queue-num",
                &q,
            ],
        )?;
    }
    Ok(())
}

/// nftables table name for a per-uplink rule set (`-` is not allowed in nft identifiers).
pub(crate) fn nft_table(kind: &str, uplink: &str) -> String {
    format!("braid_{kind}_{}", uplink.replace('-', "_"))
}

/// Replaces (or with `rule == None` removes) table `inet TABLE` holding one prerouting rule
/// at `priority`, in both of the uplink's namespaces; `rule` gets the interface name.
pub(crate) fn replace_prerouting_table(
    lab: &Lab,
    name: &str,
    table: &str,
    priority: &str,
    rule: Option<&dyn Fn(&str) -> String>,
) -> Result<(), LabError> {
    for (role, iface) in ends(lab, name) {
        // "table X" first makes the delete succeed whether or not it exists.
        let mut script = format!("table inet {table}\ndelete table inet {table}\n");
        if let Some(rule) = rule {
            script.push_str(&format!(
                "table inet {table} {{\n  chain prerouting {{\n    type filter hook prerouting \
                 priority {priority}; policy accept;\n    {}\n  }}\n}}\n",
                rule(&iface)
            ));
        }
        crate::cmd::checked_with_stdin(lab.command(role, "nft").args(["-f", "-"]), &script)?;
    }
    Ok(())
}

impl Lab {
    /// Sets random loss on uplink `name` to `permille` ‰ in each direction (0 removes it).
    /// `nft … iifname IF numgen random mod 1000 < N drop` at raw priority in both namespaces.
    pub fn set_uplink_loss(&self, name: &str, permille: u32) -> Result<(), LabError> {
        self.uplink_index(name)?;
        if permille > 1000 {
            return Err(LabError::InvalidSpec(format!(
                "loss {permille}‰ is over 1000"
            )));
        }
        let rule = move |iface: &str| {
            format!("iifname \"{iface}\" numgen random mod 1000 < {permille} counter drop")
        };
        let rule: Option<&dyn Fn(&str) -> String> = (permille > 0).then_some(&rule);
        replace_prerouting_table(self, name, &nft_table("loss", name), "raw", rule)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfifo_limit_is_100ms_with_a_floor() {
        assert_eq!(bfifo_limit_bytes(40), 500_000);
        assert_eq!(bfifo_limit_bytes(1), 15_000);
    }

    #[test]
    fn nft_table_names_avoid_dashes() {
        assert_eq!(nft_table("loss", "lte-2"), "braid_loss_lte_2");
    }
}
