//! `uplink.<name>.tunnel`: whether an uplink carries its subflows directly, through braid's
//! encrypted UDP tunnel (its path strips or resets MPTCP), or not at all, as the running gateway
//! reports it.

use super::check::Check;
use crate::config::gateway::Uplink;
use crate::gateway::running::Running;

/// The check for uplink `u`.
pub fn check(u: &Uplink, gateway: &Running) -> Check {
    let id = format!("uplink.{}.tunnel", u.name);
    let Some(s) = gateway
        .status()
        .and_then(|s| s.uplinks.iter().find(|x| x.name == u.name))
    else {
        return Check::skip(
            id,
            "the gateway's status API does not answer, so its path decisions are not known",
        );
    };
    let c = match s.path.as_str() {
        "tunnel" => {
            let via = s
                .tunnel
                .as_ref()
                .map(|t| format!("{} {}", t.interface, t.address))
                .unwrap_or_else(|| "a tunnel that is starting".into());
            Check::warn(
                id,
                format!("{} carries its subflows through braid's encrypted UDP tunnel ({via})", u.name),
                s.path_reason.clone(),
                format!("nothing to fix in braid: it tries the direct path again from time to time; to bond without the tunnel, ask the ISP of {} to stop removing TCP options", u.interface),
            )
        }
        "out" => Check::fail(
            id,
            format!("{} is left out: neither MPTCP nor the tunnel passes its path", u.name),
            s.path_reason.clone(),
            format!("allow UDP to the relay's tunnel port on {} (and in the VPS's firewall), or set tunnel = \"never\" to use it as a plain uplink", u.interface),
        ),
        _ => Check::ok(id, format!("{} carries MPTCP directly ({})", u.name, s.path_reason)),
    };
    c.with("path", s.path.clone())
        .with("tunnel_mode", u.tunnel.to_string())
}
