//! Building the lab: namespaces, veth pairs, addresses, routes and sysctls, then shaping.
//!
//! ```text
//!  lan                gw                                vps                         srv
//!  lan0 10.9.0.2 ── eth-lan 10.9.0.1
//!                     wan-NAME 10.{i+1}.0.1 ══ up-NAME 10.{i+1}.0.2   (one pair per uplink)
//!                                                  lo 10.200.0.1/32
//!                                                  eth-srv 10.30.0.1 ── eth-vps 10.30.0.2
//!  IPv6 likewise: lan 2001:db8:9::2 ── gw ::1; uplink i 2001:db8:{i+1}::1 ══ ::2;
//!                 vps lo 2001:db8:200::1/128; vps 2001:db8:30::1 ── srv 2001:db8:30::2
//! ```
//! gw's main table has a default route via each uplink, metric 100·(i+1), as DHCP clients
//! would install, for both families. IPv6 addresses are static (no router advertisements, no
//! duplicate address detection delay). Per-uplink policy routing and MPTCP endpoints are *not* set up here: that is
//! the gateway daemon's job (see [`Lab::kernel_mptcp_policy`] for a baseline without braid).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use crate::cmd;
use crate::lab::{Lab, Role};
use crate::spec::{uplink_addr, uplink_addr6};
use crate::{shaping, LabError};

/// Creates everything for `lab`'s spec. Stops at the first error; the caller drops the lab,
/// which removes what was made.
pub(crate) fn build(lab: &Lab) -> Result<(), LabError> {
    for role in Role::ALL {
        cmd::checked(Command::new("ip").args(["netns", "add", &lab.ns_name(role)]))?;
        lab.ip(role, &["link", "set", "lo", "up"])?;
    }
    quiet_ipv6(lab)?;
    let (lan_if, gw_lan_if) = (Lab::LAN_IFACE, Lab::GW_LAN_IFACE);
    lab.veth(Role::Gw, gw_lan_if, Role::Lan, lan_if)?;
    lab.addr_up(Role::Lan, lan_if, Lab::LAN_CLIENT, 24)?;
    lab.addr_up(Role::Gw, gw_lan_if, Lab::GW_LAN, 24)?;
    lab.addr6(Role::Lan, lan_if, Lab::LAN_CLIENT6)?;
    lab.addr6(Role::Gw, gw_lan_if, Lab::GW_LAN6)?;
    lab.ip(
        Role::Lan,
        &["route", "add", "default", "via", &Lab::GW_LAN.to_string()],
    )?;
    lab.ip(
        Role::Lan,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &Lab::GW_LAN6.to_string(),
        ],
    )?;

    for (i, up) in lab.uplinks.iter().enumerate() {
        let (wan, vps_if) = (lab.uplink_iface(&up.name), lab.uplink_vps_iface(&up.name));
        lab.veth(Role::Gw, &wan, Role::Vps, &vps_if)?;
        lab.addr_up(Role::Gw, &wan, uplink_addr(i, 1), 24)?;
        lab.addr_up(Role::Vps, &vps_if, uplink_addr(i, 2), 24)?;
        lab.addr6(Role::Gw, &wan, uplink_addr6(i, 1))?;
        lab.addr6(Role::Vps, &vps_if, uplink_addr6(i, 2))?;
    }
    lab.ip(
        Role::Vps,
        &[
            "-6",
            "addr",
            "add",
            &format!("{}/128", Lab::VPS_PUBLIC6),
            "dev",
            "lo",
        ],
    )?;
    lab.ip(
        Role::Vps,
        &[
            "addr",
            "add",
            &format!("{}/32", Lab::VPS_PUBLIC),
            "dev",
            "lo",
        ],
    )?;

    let (vps_srv_if, srv_if) = (Lab::VPS_SRV_IFACE, Lab::SRV_IFACE);
    lab.veth(Role::Vps, vps_srv_if, Role::Srv, srv_if)?;
    lab.addr_up(Role::Vps, vps_srv_if, Lab::VPS_SRV_SIDE, 24)?;
    lab.addr_up(Role::Srv, srv_if, Lab::SRV, 24)?;
    lab.addr6(Role::Vps, vps_srv_if, Lab::VPS_SRV_SIDE6)?;
    lab.addr6(Role::Srv, srv_if, Lab::SRV6)?;
    lab.ip(
        Role::Srv,
        &[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &Lab::VPS_SRV_SIDE6.to_string(),
        ],
    )?;
    lab.ip(
        Role::Srv,
        &[
            "route",
            "add",
            "default",
            "via",
            &Lab::VPS_SRV_SIDE.to_string(),
        ],
    )?;

    set_sysctls(lab)?;
    for up in &lab.uplinks {
        lab.install_default_route(&up.name)?;
    }
    for up in &lab.uplinks {
        shaping::apply(lab, up)?;
    }
    Ok(())
}

/// IPv6 without its automatic chatter, in every namespace before any link exists (new links
/// take the defaults): no router advertisements or solicitations, no duplicate address
/// detection delay, so the uplinks' byte counters stay clean and addresses are usable at once.
fn quiet_ipv6(lab: &Lab) -> Result<(), LabError> {
    if !Path::new("/proc/sys/net/ipv6").exists() {
        return Ok(());
    }
    for role in Role::ALL {
        let mut settings = Vec::new();
        for scope in ["all", "default"] {
            for (key, value) in [
                ("accept_ra", "0"),
                ("router_solicitations", "0"),
                ("accept_dad", "0"),
                ("dad_transmits", "0"),
            ] {
                settings.push(format!("net.ipv6.conf.{scope}.{key}={value}"));
            }
        }
        lab.sysctls(role, &settings)?;
    }
    Ok(())
}

/// Forwarding on gw and vps (both families), loose rp_filter on gw (strict breaks MPTCP joins).
fn set_sysctls(lab: &Lab) -> Result<(), LabError> {
    let mut gw = vec![
        "net.ipv4.ip_forward=1".to_owned(),
        "net.ipv4.conf.all.rp_filter=2".to_owned(),
        "net.ipv4.conf.default.rp_filter=2".to_owned(),
    ];
    for up in &lab.uplinks {
        gw.push(format!(
            "net.ipv4.conf.{}.rp_filter=2",
            lab.uplink_iface(&up.name)
        ));
    }
    let v6 = Path::new("/proc/sys/net/ipv6").exists();
    if v6 {
        gw.push("net.ipv6.conf.all.forwarding=1".to_owned());
    }
    lab.sysctls(Role::Gw, &gw)?;
    let mut vps = vec!["net.ipv4.ip_forward=1".to_owned()];
    if v6 {
        vps.push("net.ipv6.conf.all.forwarding=1".to_owned());
    }
    lab.sysctls(Role::Vps, &vps)?;
    Ok(())
}

impl Lab {
    /// Baseline kernel MPTCP without braid, exactly as in the lab notes, in gw: `ip rule add from
    /// ADDR table 101+i`, a default route via the uplink in that table, one `subflow` endpoint
    /// per uplink address, and `ip mptcp limits set subflows N add_addr_accepted N`. The vps gets
    /// `subflows N` too, so it accepts the joins when N > 2. Running it twice changes nothing.
    pub fn kernel_mptcp_policy(&self) -> Result<(), LabError> {
        let n = self.uplinks.len().to_string();
        self.ip(Role::Gw, &["mptcp", "endpoint", "flush"])?;
        for (i, up) in self.uplinks.iter().enumerate() {
            let table = (101 + i).to_string();
            let addr = self.uplink_gw_addr(&up.name).to_string();
            let wan = self.uplink_iface(&up.name);
            let via = self.uplink_vps_addr(&up.name).to_string();
            // Remove an earlier copy of the rule so a second call does not duplicate it.
            while self
                .ip(Role::Gw, &["rule", "del", "from", &addr, "table", &table])
                .is_ok()
            {}
            self.ip(Role::Gw, &["rule", "add", "from", &addr, "table", &table])?;
            let route = [
                "route", "replace", "default", "via", &via, "dev", &wan, "table", &table,
            ];
            self.ip(Role::Gw, &route)?;
            let endpoint = ["mptcp", "endpoint", "add", &addr, "dev", &wan, "subflow"];
            self.ip(Role::Gw, &endpoint)?;
        }
        let limits = [
            "mptcp",
            "limits",
            "set",
            "subflows",
            &n,
            "add_addr_accepted",
            &n,
        ];
        self.ip(Role::Gw, &limits)?;
        self.ip(Role::Vps, &["mptcp", "limits", "set", "subflows", &n])?;
        Ok(())
    }

    /// Re-installs uplink `name`'s main-table default route (via its VPS-side address, metric
    /// 100·(i+1)), as a DHCP client would after the link comes back. The kernel flushes it when
    /// the link goes down.
    pub fn install_default_route(&self, name: &str) -> Result<(), LabError> {
        let i = self.uplink_index(name)?;
        let via = uplink_addr(i, 2).to_string();
        let metric = (100 * (i + 1)).to_string();
        let wan = self.uplink_iface(name);
        self.ip(
            Role::Gw,
            &[
                "route", "replace", "default", "via", &via, "dev", &wan, "metric", &metric,
            ],
        )?;
        if Path::new("/proc/sys/net/ipv6").exists() {
            // Best effort: right after a link comes back (or its addresses were replaced) the
            // kernel may not have the IPv6 prefix route yet, and the IPv4 tests do not need it.
            let via6 = uplink_addr6(i, 2).to_string();
            let _ = self.ip(
                Role::Gw,
                &[
                    "-6", "route", "replace", "default", "via", &via6, "dev", &wan, "metric",
                    &metric,
                ],
            );
        }
        Ok(())
    }

    /// `ip -n NS args…`, checked.
    pub(crate) fn ip(&self, role: Role, args: &[&str]) -> Result<String, LabError> {
        cmd::checked(
            Command::new("ip")
                .arg("-n")
                .arg(self.ns_name(role))
                .args(args),
        )
    }

    /// `sysctl -qw k=v …` inside `role`'s namespace.
    pub(crate) fn sysctls(&self, role: Role, settings: &[String]) -> Result<(), LabError> {
        cmd::checked(self.command(role, "sysctl").arg("-qw").args(settings))?;
        Ok(())
    }

    /// A veth pair created inside `a`'s namespace with its peer moved to `b`'s, so the host's
    /// interface list is never touched.
    fn veth(&self, a: Role, a_if: &str, b: Role, b_if: &str) -> Result<(), LabError> {
        let b_ns = self.ns_name(b);
        self.ip(
            a,
            &[
                "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b_ns,
            ],
        )?;
        Ok(())
    }

    /// A static /64 IPv6 address on `iface`, usable at once (`nodad`).
    fn addr6(&self, role: Role, iface: &str, addr: std::net::Ipv6Addr) -> Result<(), LabError> {
        self.ip(
            role,
            &[
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                iface,
                "nodad",
            ],
        )?;
        Ok(())
    }

    fn addr_up(&self, role: Role, iface: &str, addr: Ipv4Addr, len: u8) -> Result<(), LabError> {
        self.ip(
            role,
            &["addr", "add", &format!("{addr}/{len}"), "dev", iface],
        )?;
        self.ip(role, &["link", "set", iface, "up"])?;
        Ok(())
    }
}
