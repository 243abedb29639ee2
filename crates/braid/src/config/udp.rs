//! The UDP keys both daemons share: whether UDP is relayed, how long idle sessions live and how
//! many there may be.

use std::time::Duration;

use braid_proto::udp::liveness::Timeouts;

use super::Invalid;

/// Session timeouts and cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpLimits {
    /// Idle timeouts: unreplied (or younger than 2 s) and stream.
    pub timeouts: Timeouts,
    /// Most sessions at once; datagrams of new sessions beyond it are dropped (and said so).
    pub max_sessions: usize,
}

/// Most sessions a config may ask for: every session holds a socket (a file descriptor).
pub const MAX_SESSIONS_CEILING: usize = 65_536;

/// Checks the three keys; `min_unreplied` is SIP022's floor on the server (a relay session must
/// be remembered for at least 60 s, or a replayed packet of a forgotten session would be
/// accepted as new).
pub fn limits(
    unreplied_secs: u64,
    stream_secs: u64,
    max_sessions: usize,
    min_unreplied: u64,
) -> Result<UdpLimits, Invalid> {
    if !(min_unreplied..=86_400).contains(&unreplied_secs) {
        return Err(Invalid::new(
            "udp_unreplied_timeout_secs",
            unreplied_secs,
            format!("is outside {min_unreplied}–86400 seconds"),
            if min_unreplied > 1 {
                "Shadowsocks-2022 needs relay sessions kept at least 60 s (replay protection); use 60 or more"
            } else {
                "pick a value between 1 and 86400"
            },
        ));
    }
    if !(unreplied_secs..=86_400).contains(&stream_secs) {
        return Err(Invalid::new(
            "udp_timeout_secs",
            stream_secs,
            format!("is outside {unreplied_secs}–86400 seconds (it may not be shorter than udp_unreplied_timeout_secs)"),
            "pick a value between udp_unreplied_timeout_secs and 86400",
        ));
    }
    if !(1..=MAX_SESSIONS_CEILING).contains(&max_sessions) {
        return Err(Invalid::new(
            "udp_max_sessions",
            max_sessions,
            format!("is outside 1–{MAX_SESSIONS_CEILING}"),
            "pick e.g. 1024; each session holds one socket, so keep it under the service's open-file limit",
        ));
    }
    Ok(UdpLimits {
        timeouts: Timeouts {
            unreplied: Duration::from_secs(unreplied_secs),
            stream: Duration::from_secs(stream_secs),
        },
        max_sessions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_floor_and_order_of_timeouts_are_enforced() {
        assert!(limits(60, 180, 1024, 60).is_ok());
        let e = limits(30, 180, 1024, 60).unwrap_err();
        assert!(e.fix.contains("60"), "{e:?}");
        assert!(limits(30, 180, 1024, 1).is_ok());
        let e = limits(60, 30, 1024, 1).unwrap_err();
        assert_eq!(e.key, "udp_timeout_secs");
        assert!(limits(60, 180, 0, 1).is_err());
    }
}

/// The gateway's UDP settings (`udp = true`, the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayUdp {
    /// Session timeouts and cap.
    pub limits: UdpLimits,
    /// `udp_uplink`: the uplink sessions ride while it is Up (else the health choice).
    pub uplink: Option<String>,
}

/// The routing table of the TPROXY local route (`local default dev lo table 100`); an
/// `[[uplink]] table` may not use it.
pub const TPROXY_TABLE: u32 = 100;
/// The packet mark of captured LAN UDP (`meta mark set 0xb1d`, `ip rule fwmark 0xb1d`).
pub const TPROXY_MARK: u32 = 0x0b1d;
/// The priority of the `fwmark` rule: before the uplinks' (1000…) and the main table's.
pub const TPROXY_RULE_PRIORITY: u32 = 990;
