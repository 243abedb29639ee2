//! The router's interfaces: uplinks are those with a default route (as DHCP clients and PPP
//! install them, one per WAN with its own metric) or a DHCP-assigned (dynamic) address; the LAN
//! is an interface that is up, has a private IPv4 address and is not an uplink. Read with
//! `ip -j` (iproute2), so it sees what the user sees.

use std::collections::BTreeSet;

/// What was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Interfaces with a default route or a dynamic address, in route-metric order.
    pub uplinks: Vec<String>,
    /// Candidates for the LAN.
    pub lan: Vec<String>,
}

impl Found {
    /// Sure enough to go on without asking: at least one uplink and exactly one LAN.
    pub fn is_sure(&self) -> bool {
        !self.uplinks.is_empty() && self.lan.len() == 1
    }
}

/// Reads the routes and addresses of this network namespace.
pub fn discover() -> Found {
    let routes = ip_json(&["-j", "route", "show", "default"]);
    let addrs = ip_json(&["-j", "addr", "show"]);
    from_json(&routes, &addrs)
}

fn ip_json(args: &[&str]) -> serde_json::Value {
    std::process::Command::new("ip")
        .args(args)
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

/// The decision, on `ip -j route show default` and `ip -j addr show` output.
pub fn from_json(routes: &serde_json::Value, addrs: &serde_json::Value) -> Found {
    let mut by_metric: Vec<(u64, String)> = routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r["metric"].as_u64().unwrap_or(0),
                r["dev"].as_str()?.to_string(),
            ))
        })
        .collect();
    by_metric.sort();
    let mut uplinks: Vec<String> = Vec::new();
    for (_, dev) in by_metric {
        if !uplinks.contains(&dev) {
            uplinks.push(dev);
        }
    }
    let mut lan = BTreeSet::new();
    for link in addrs.as_array().into_iter().flatten() {
        let Some(name) = link["ifname"].as_str() else {
            continue;
        };
        let flags: Vec<&str> = (link["flags"].as_array().into_iter().flatten())
            .filter_map(|f| f.as_str())
            .collect();
        if flags.contains(&"LOOPBACK") || !flags.contains(&"UP") {
            continue;
        }
        let v4: Vec<&serde_json::Value> = (link["addr_info"].as_array().into_iter().flatten())
            .filter(|a| a["family"] == "inet")
            .collect();
        let dynamic = v4.iter().any(|a| a["dynamic"].as_bool() == Some(true));
        if dynamic && !uplinks.iter().any(|u| u == name) {
            uplinks.push(name.to_string());
            continue;
        }
        let private = v4.iter().any(|a| {
            a["local"]
                .as_str()
                .and_then(|s| s.parse::<std::net::Ipv4Addr>().ok())
                .is_some_and(|ip| ip.is_private())
        });
        if private && !uplinks.iter().any(|u| u == name) {
            lan.insert(name.to_string());
        }
    }
    Found {
        uplinks,
        lan: lan.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uplinks_by_metric_dynamic_addresses_and_one_private_lan() {
        let routes = json!([
            {"dst":"default","gateway":"10.2.0.1","dev":"wan-5g","metric":200},
            {"dst":"default","gateway":"10.1.0.1","dev":"wan-wifi","metric":100}
        ]);
        let addrs = json!([
            {"ifname":"lo","flags":["LOOPBACK","UP"],"addr_info":[{"family":"inet","local":"127.0.0.1"}]},
            {"ifname":"wan-wifi","flags":["UP"],"addr_info":[{"family":"inet","local":"10.1.0.2"}]},
            {"ifname":"wan-5g","flags":["UP"],"addr_info":[{"family":"inet","local":"10.2.0.2"}]},
            {"ifname":"usb0","flags":["UP"],"addr_info":[{"family":"inet","local":"100.64.1.2","dynamic":true}]},
            {"ifname":"br-lan","flags":["UP"],"addr_info":[{"family":"inet","local":"192.168.1.1"}]},
            {"ifname":"eth9","flags":["BROADCAST"],"addr_info":[{"family":"inet","local":"192.168.9.1"}]}
        ]);
        let f = from_json(&routes, &addrs);
        assert_eq!(f.uplinks, ["wan-wifi", "wan-5g", "usb0"]);
        assert_eq!(f.lan, ["br-lan"]);
        assert!(f.is_sure());
    }

    #[test]
    fn two_lan_candidates_are_not_sure() {
        let addrs = json!([
            {"ifname":"a","flags":["UP"],"addr_info":[{"family":"inet","local":"192.168.1.1"}]},
            {"ifname":"b","flags":["UP"],"addr_info":[{"family":"inet","local":"10.0.0.1"}]}
        ]);
        let f = from_json(&json!([]), &addrs);
        assert!(!f.is_sure());
    }
}
