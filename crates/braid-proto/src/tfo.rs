//! The TCP Fast Open decision, from evidence.
//!
//! A setsockopt that succeeds proves nothing: on Linux 6.2 to 6.18 an MPTCP server holds back a
//! reply written before the third ACK of a TFO handshake until the client sends again, which for
//! a request/reply means forever (docs/TFO-MPTCP.md). braid's relay pushes such replies itself;
//! other servers, and older braid relays, stall. So the gateway gathers facts (the sysctl, the
//! setsockopt result, timed request/replies through the relay with and without TFO) and this
//! module turns them into one decision with one sentence of reason. The caller logs that
//! sentence once.

use std::time::Duration;

/// `fast_open` in the config: `"auto"`, `"on"` or `"off"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Use TFO when the kernel accepts it and it works end to end; otherwise say why, once.
    #[default]
    Auto,
    /// Use TFO or refuse to start.
    On,
    /// Never try.
    Off,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::Auto => "auto",
            Policy::On => "on",
            Policy::Off => "off",
        })
    }
}

/// One timed request/reply through the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// The reply arrived after this long; `syn_data` says whether the SYN carried the request.
    Replied {
        /// Request sent → reply read.
        elapsed: Duration,
        /// The kernel reports the SYN's data was accepted (`TCPI_OPT_SYN_DATA`).
        syn_data: bool,
    },
    /// No reply before the probe's deadline.
    TimedOut,
    /// The connection failed.
    Failed,
}

/// What the kernel answered to a TFO socket option (`TCP_FASTOPEN_CONNECT` on a client,
/// `TCP_FASTOPEN` on a listener), on a socket of the kind braid uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Sockopt {
    /// Accepted (which proves nothing end to end, but is the first step).
    #[default]
    Accepted,
    /// ENOPROTOOPT: the kernel has no TFO for this protocol (MPTCP before Linux 6.2).
    Unsupported,
    /// Another errno.
    Failed(i32),
}

/// Everything the decision is based on.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `uname -r`.
    pub kernel: String,
    /// "MPTCP" or "TCP": what the relay connections are.
    pub transport: String,
    /// `net.ipv4.tcp_fastopen` has the client bit.
    pub sysctl_client: bool,
    /// The raw sysctl value, for the message.
    pub sysctl_value: u32,
    /// `setsockopt(TCP_FASTOPEN_CONNECT)` on a socket like the relay connections'.
    pub setsockopt: Sockopt,
    /// A request/reply without TFO; `None` if the relay did not answer braid's control request.
    pub baseline: Option<Exchange>,
    /// Request/replies with TFO, in order (the first one fetches the cookie).
    pub tfo: Vec<Exchange>,
    /// The relay's `uname -r`, when it answered braid's control request.
    pub relay_kernel: Option<String>,
}

impl Facts {
    /// "the relay (Linux 6.18.44)", or "the relay" when its kernel is not known.
    fn relay(&self) -> String {
        match &self.relay_kernel {
            Some(k) => format!("the relay (Linux {k})"),
            None => "the relay".into(),
        }
    }
}

/// Why a TFO reply over MPTCP comes late, and the fix: appended to the stall and timeout reasons.
const HELD_BACK: &str = "an MPTCP server on Linux 6.2 to 6.18 holds back a reply written before the third ACK of a TFO handshake unless it pushes it, as this braid version's relay does (docs/TFO-MPTCP.md); fix: run this braid version on the relay, or set fast_open = \"off\"";

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Use TFO toward the relay.
    pub enabled: bool,
    /// One sentence: why.
    pub reason: String,
    /// With `fast_open = "on"`: TFO cannot work and the daemon must not start.
    pub fatal: bool,
}

/// Slack over the no-TFO time that a TFO exchange may take before it counts as slow.
pub const STALL_SLACK: Duration = Duration::from_millis(200);
/// A slow TFO reply this late is a stall on its own: the kernel's hold lasts seconds (about 3 s
/// on Linux 6.18). A shorter one is a stall only when another try is slow too: a loaded machine
/// delayed one reply by 245–253 ms in the lab (twice in full CI runs), once, among fast ones.
pub const LONE_STALL: Duration = Duration::from_secs(1);

/// Decides from the facts gathered so far. Call it first with only the local facts (no
/// exchanges) to learn whether probing is worth it: `None` means "probe the relay, then ask again".
pub fn decide(policy: Policy, f: &Facts) -> Option<Decision> {
    let off = |reason: String| {
        let fatal = policy == Policy::On;
        Some(Decision {
            enabled: false,
            reason,
            fatal,
        })
    };
    if policy == Policy::Off {
        return Some(Decision {
            enabled: false,
            reason: "fast_open = \"off\" in the config".into(),
            fatal: false,
        });
    }
    if !f.sysctl_client {
        return off(format!(
            "net.ipv4.tcp_fastopen = {} lacks the client bit (1) on Linux {}; fix: sysctl -w net.ipv4.tcp_fastopen=3",
            f.sysctl_value, f.kernel
        ));
    }
    match f.setsockopt {
        Sockopt::Accepted => {}
        Sockopt::Unsupported => return off(format!("Linux {} refuses TCP Fast Open on {} sockets (ENOPROTOOPT, 'protocol not available'); TFO on MPTCP needs Linux 6.2 or newer; fix: upgrade the kernel, or set fast_open = \"off\"", f.kernel, f.transport)),
        Sockopt::Failed(errno) => {
            return off(format!(
                "setsockopt(TCP_FASTOPEN_CONNECT) failed with errno {errno} on Linux {}",
                f.kernel
            ))
        }
    }
    let base = match f.baseline {
        None if f.tfo.is_empty() => return None,
        None | Some(Exchange::TimedOut) | Some(Exchange::Failed) => {
            let reason = "the relay did not answer braid's control request (a stock Shadowsocks-2022 server, or unreachable), so TFO cannot be verified end to end".to_string();
            return if policy == Policy::On {
                Some(Decision { enabled: true, reason: format!("fast_open = \"on\": used without end-to-end verification, because {reason}"), fatal: false })
            } else {
                off(reason)
            };
        }
        Some(Exchange::Replied { elapsed, .. }) => elapsed,
    };
    if f.tfo.is_empty() {
        return None;
    }
    let limit = base * 2 + STALL_SLACK;
    // Slow replies to requests that rode in the SYN: (try, time).
    let mut slow: Vec<(usize, Duration)> = Vec::new();
    for (i, x) in f.tfo.iter().enumerate() {
        match x {
            Exchange::Replied { elapsed, .. } if *elapsed <= limit => {}
            // A slow reply on a connection whose SYN carried no data (the cookie exchange, or a
            // cookie refused) says nothing about TFO: its request went after the handshake, as
            // without TFO. Seen once in the lab at 245 ms on plain TCP, a scheduling delay.
            Exchange::Replied {
                syn_data: false, ..
            } => {}
            Exchange::Replied { elapsed, .. } => slow.push((i, *elapsed)),
            Exchange::TimedOut => {
                return off(format!("a TFO request over {} got no reply in time (try {} of {}) from {}, while the same request without TFO took {} ms; {}", f.transport, i + 1, f.tfo.len(), f.relay(), base.as_millis(), held_back(f)))
            }
            Exchange::Failed => return off(format!("a TFO connection to the relay failed (try {} of {}) on Linux {}", i + 1, f.tfo.len(), f.kernel)),
        }
    }
    if let Some(&(i, elapsed)) = slow.iter().max_by_key(|(_, e)| *e) {
        if elapsed >= LONE_STALL || slow.len() >= 2 {
            return off(format!(
                "a TFO request/reply over {} took {} ms against {} ms without TFO (try {} of {}, {} of them slow): {} stalls replies to TFO requests; {}",
                f.transport, elapsed.as_millis(), base.as_millis(), i + 1, f.tfo.len(), slow.len(), f.relay(), held_back(f)
            ));
        }
    }
    if !f
        .tfo
        .iter()
        .skip(1)
        .any(|x| matches!(x, Exchange::Replied { syn_data: true, .. }))
    {
        return off(format!(
            "no TFO SYN carried data after the cookie exchange (Linux {}): the relay's kernel (net.ipv4.tcp_fastopen server bit 2) or a middlebox does not accept TFO",
            f.kernel
        ));
    }
    Some(Decision {
        enabled: true,
        reason: format!(
            "TFO over {} verified end to end on Linux {}: data in the SYN, replies within {} ms",
            f.transport,
            f.kernel,
            limit.as_millis()
        ),
        fatal: false,
    })
}

/// The kernel's reason for a late TFO reply where it applies (MPTCP), else a plain fix.
fn held_back(f: &Facts) -> &'static str {
    if f.transport == "MPTCP" {
        HELD_BACK
    } else {
        "fix: set fast_open = \"off\""
    }
}

/// Everything the relay's listener decision is based on.
#[derive(Debug, Clone, Default)]
pub struct ListenerFacts {
    /// `uname -r`.
    pub kernel: String,
    /// "MPTCP" or "TCP": what the listener is.
    pub transport: String,
    /// The raw `net.ipv4.tcp_fastopen` value (bit 2 lets listeners accept data in the SYN).
    pub sysctl_value: u32,
    /// `setsockopt(TCP_FASTOPEN)` on a socket like the listener.
    pub setsockopt: Sockopt,
}

/// Whether the relay's listener takes TCP Fast Open. Unlike the gateway's, this needs no
/// end-to-end check: gateways verify it from their side, and a listener that accepts TFO costs
/// nothing when clients do not use it. The relay and `braid doctor` both call this.
pub fn decide_listener(policy: Policy, f: &ListenerFacts) -> Decision {
    let off = |reason: String| Decision {
        enabled: false,
        reason,
        fatal: policy == Policy::On,
    };
    if policy == Policy::Off {
        return Decision {
            enabled: false,
            reason: "fast_open = \"off\" in the config".into(),
            fatal: false,
        };
    }
    if f.sysctl_value & 2 == 0 {
        return off(format!(
            "net.ipv4.tcp_fastopen = {} lacks the server bit (2) on Linux {}, so the kernel ignores TFO on listeners; fix: sysctl -w net.ipv4.tcp_fastopen=3 (persist it in /etc/sysctl.d/)",
            f.sysctl_value, f.kernel
        ));
    }
    match f.setsockopt {
        Sockopt::Accepted => Decision {
            enabled: true,
            reason: format!(
                "the {} listener accepts TCP Fast Open on Linux {} (net.ipv4.tcp_fastopen = {}); gateways verify it end to end",
                f.transport, f.kernel, f.sysctl_value
            ),
            fatal: false,
        },
        Sockopt::Unsupported => off(format!("Linux {} refuses TCP_FASTOPEN on {} listeners (ENOPROTOOPT); TFO on MPTCP needs Linux 6.2 or newer; fix: upgrade the kernel, or set fast_open = \"off\"", f.kernel, f.transport)),
        Sockopt::Failed(errno) => off(format!(
            "setsockopt(TCP_FASTOPEN) on a {} listener failed with errno {errno} on Linux {}",
            f.transport, f.kernel
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(ms: u64, syn: bool) -> Exchange {
        Exchange::Replied {
            elapsed: Duration::from_millis(ms),
            syn_data: syn,
        }
    }

    fn facts() -> Facts {
        Facts {
            kernel: "6.18.44".into(),
            transport: "MPTCP".into(),
            sysctl_client: true,
            sysctl_value: 1,
            ..Facts::default()
        }
    }

    #[test]
    fn off_policy_never_probes() {
        let d = decide(Policy::Off, &facts()).unwrap();
        assert!(!d.enabled && !d.fatal);
    }

    #[test]
    fn enoprotoopt_names_the_kernel_and_is_fatal_only_when_on() {
        let f = Facts {
            kernel: "6.1.0-31".into(),
            setsockopt: Sockopt::Unsupported,
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(
            !d.enabled && !d.fatal && d.reason.contains("6.1.0-31") && d.reason.contains("6.2"),
            "{}",
            d.reason
        );
        assert!(decide(Policy::On, &f).unwrap().fatal);
    }

    #[test]
    fn missing_client_bit_disables() {
        let f = Facts {
            sysctl_client: false,
            sysctl_value: 0,
            ..facts()
        };
        assert!(decide(Policy::Auto, &f)
            .unwrap()
            .reason
            .contains("tcp_fastopen = 0"));
    }

    #[test]
    fn local_facts_alone_ask_for_a_probe() {
        assert_eq!(decide(Policy::Auto, &facts()), None);
    }

    #[test]
    fn stalled_reply_disables_with_both_timings() {
        let f = Facts {
            baseline: Some(ok(20, false)),
            tfo: vec![ok(22, false), ok(3020, true), ok(21, true)],
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(
            !d.enabled && d.reason.contains("3020 ms") && d.reason.contains("20 ms"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn stall_over_mptcp_names_the_relay_kernel_and_the_fix() {
        let f = Facts {
            baseline: Some(ok(20, false)),
            tfo: vec![ok(22, false), Exchange::TimedOut],
            relay_kernel: Some("6.18.44".into()),
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(
            !d.enabled
                && d.reason.contains("the relay (Linux 6.18.44)")
                && d.reason.contains("third ACK")
                && d.reason.contains("fix:"),
            "{}",
            d.reason
        );
        assert!(decide(Policy::On, &f).unwrap().fatal);
    }

    #[test]
    fn a_slow_reply_without_syn_data_is_not_a_tfo_stall() {
        let f = Facts {
            baseline: Some(ok(21, false)),
            tfo: vec![ok(245, false), ok(11, true), ok(11, true)],
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(d.enabled, "{}", d.reason);
    }

    #[test]
    fn one_late_reply_among_fast_ones_is_not_a_stall() {
        // Seen in a full CI run on plain TCP: try 1 (its SYN carried data, a cookie was cached)
        // took 253 ms against 24 ms without TFO, on a loaded machine.
        let f = Facts {
            baseline: Some(ok(24, false)),
            tfo: vec![ok(253, true), ok(12, true), ok(11, true)],
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(d.enabled, "{}", d.reason);
    }

    #[test]
    fn two_late_replies_are_a_stall() {
        let f = Facts {
            baseline: Some(ok(24, false)),
            tfo: vec![ok(22, false), ok(300, true), ok(310, true)],
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(
            !d.enabled && d.reason.contains("310 ms") && d.reason.contains("2 of them slow"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn timeout_disables() {
        let f = Facts {
            baseline: Some(ok(20, false)),
            tfo: vec![ok(22, false), Exchange::TimedOut],
            ..facts()
        };
        assert!(!decide(Policy::Auto, &f).unwrap().enabled);
    }

    #[test]
    fn fast_replies_with_syn_data_enable() {
        let f = Facts {
            baseline: Some(ok(20, false)),
            tfo: vec![ok(22, false), ok(11, true), ok(11, true)],
            ..facts()
        };
        let d = decide(Policy::Auto, &f).unwrap();
        assert!(d.enabled, "{}", d.reason);
    }

    #[test]
    fn fast_replies_without_syn_data_disable() {
        let f = Facts {
            baseline: Some(ok(20, false)),
            tfo: vec![ok(22, false), ok(21, false)],
            ..facts()
        };
        assert!(decide(Policy::Auto, &f)
            .unwrap()
            .reason
            .contains("no TFO SYN carried data"));
    }

    fn listener(sysctl: u32, setsockopt: Sockopt) -> ListenerFacts {
        ListenerFacts {
            kernel: "6.1.0-31".into(),
            transport: "MPTCP".into(),
            sysctl_value: sysctl,
            setsockopt,
        }
    }

    #[test]
    fn listener_with_server_bit_and_accepted_option_takes_tfo() {
        let d = decide_listener(Policy::Auto, &listener(3, Sockopt::Accepted));
        assert!(d.enabled && !d.fatal, "{}", d.reason);
        assert!(!decide_listener(Policy::Off, &listener(3, Sockopt::Accepted)).enabled);
    }

    #[test]
    fn listener_without_server_bit_or_before_6_2_is_off_and_fatal_only_when_on() {
        for f in [
            listener(1, Sockopt::Accepted),
            listener(3, Sockopt::Unsupported),
        ] {
            let d = decide_listener(Policy::Auto, &f);
            assert!(
                !d.enabled && !d.fatal && d.reason.contains("fix:"),
                "{}",
                d.reason
            );
            assert!(decide_listener(Policy::On, &f).fatal);
        }
        let d = decide_listener(Policy::Auto, &listener(3, Sockopt::Unsupported));
        assert!(
            d.reason.contains("6.2") && d.reason.contains("6.1.0-31"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn stock_server_disables_auto_but_on_proceeds_unverified() {
        let f = Facts {
            baseline: Some(Exchange::Failed),
            ..facts()
        };
        assert!(!decide(Policy::Auto, &f).unwrap().enabled);
        let d = decide(Policy::On, &f).unwrap();
        assert!(d.enabled && !d.fatal && d.reason.contains("without end-to-end verification"));
    }
}
