//! Which TCP congestion control braid's relay sockets use, and why.
//!
//! WiFi and 5G lose packets for reasons other than congestion. A loss-based algorithm (cubic,
//! Debian's default) shrinks its window at each loss, so a bonded download over uplinks with
//! 0.5 % and 1 % random loss reaches a third of what the links carry; BBR, which models the
//! path's rate and round trip instead, keeps most of it. braid therefore sets the algorithm of
//! its own relay sockets (`TCP_CONGESTION`; on an MPTCP socket the kernel applies it to every
//! subflow) and leaves the host's default to other programs.
//!
//! The daemon gathers facts (the host's default, what the kernel answers when asked for the
//! configured algorithm); [`decide`] turns them into one algorithm and one sentence of reason.
//! An algorithm the kernel refuses is never fatal: braid says why once and uses the host's
//! default.

/// braid's default algorithm.
pub const DEFAULT: &str = "bbr";
/// Longest algorithm name the kernel takes (`TCP_CA_NAME_MAX` is 16, with the NUL).
pub const MAX_NAME: usize = 15;

/// `congestion` in the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// `"default"`: leave the sockets on the host's default (`net.ipv4.tcp_congestion_control`).
    HostDefault,
    /// An algorithm by its kernel name (`"bbr"`, `"cubic"`, …).
    Named(String),
}

impl Default for Choice {
    fn default() -> Self {
        Choice::Named(DEFAULT.into())
    }
}

impl Choice {
    /// Parses a config value; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<Choice, String> {
        if s == "default" {
            return Ok(Choice::HostDefault);
        }
        let ok = !s.is_empty()
            && s.len() <= MAX_NAME
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(Choice::Named(s.into()))
        } else {
            Err(format!(
                "is not \"default\" or a kernel congestion control name (1–{MAX_NAME} characters of a-z, 0-9, _)"
            ))
        }
    }
}

impl std::fmt::Display for Choice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Choice::HostDefault => f.write_str("default"),
            Choice::Named(n) => f.write_str(n),
        }
    }
}

/// What the kernel answered when asked for the configured algorithm on a plain TCP socket (on
/// a fresh MPTCP socket the kernel accepts any name and applies it, or not, at connect time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The socket took it.
    Took,
    /// ENOENT: not built in and its module (`tcp_NAME`) could not be loaded.
    NotAvailable,
    /// EPERM: not in `net.ipv4.tcp_allowed_congestion_control`, and braid lacks CAP_NET_ADMIN.
    NotAllowed,
    /// Another errno.
    Failed(i32),
}

/// Everything the decision is based on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `net.ipv4.tcp_congestion_control` in braid's network namespace.
    pub host_default: String,
    /// `net.ipv4.tcp_available_congestion_control`.
    pub available: String,
    /// `net.ipv4.tcp_allowed_congestion_control`.
    pub allowed: String,
    /// The kernel's answer for a named choice; `None` for `"default"`.
    pub probe: Option<Probe>,
}

/// The outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The algorithm braid's relay sockets use.
    pub algorithm: String,
    /// Set it on each relay socket (false: the sockets keep the host's default).
    pub set: bool,
    /// The configured algorithm could not be used; `reason` says why and how to fix it.
    pub fell_back: bool,
    /// One sentence: why this algorithm.
    pub reason: String,
}

/// Decides which algorithm the relay sockets use.
pub fn decide(choice: &Choice, f: &Facts) -> Decision {
    let host = &f.host_default;
    let name = match choice {
        Choice::HostDefault => {
            return Decision {
                algorithm: host.clone(),
                set: false,
                fell_back: false,
                reason: format!(
                    "congestion = \"default\": the host's default (net.ipv4.tcp_congestion_control = {host})"
                ),
            }
        }
        Choice::Named(n) => n,
    };
    let fall_back = |why: String| Decision {
        algorithm: host.clone(),
        set: false,
        fell_back: true,
        reason: format!("{why}; using the host's default, {host}"),
    };
    match f.probe.unwrap_or(Probe::Took) {
        Probe::Took => Decision {
            algorithm: name.clone(),
            set: true,
            fell_back: false,
            reason: if name == host {
                format!("congestion = \"{name}\", which is also the host's default")
            } else {
                format!("congestion = \"{name}\" on braid's relay sockets; other programs keep the host's default, {host}")
            },
        },
        Probe::NotAvailable => fall_back(format!(
            "congestion = \"{name}\" is not available in this kernel (ENOENT; available: {}); fix: modprobe tcp_{name} and list it in /etc/modules-load.d/, or set congestion = \"default\"",
            f.available
        )),
        Probe::NotAllowed => fall_back(format!(
            "braid may not use congestion = \"{name}\": it is not in net.ipv4.tcp_allowed_congestion_control ({}) and braid lacks CAP_NET_ADMIN (EPERM); fix: run braid with CAP_NET_ADMIN, or add {name} to that list in the host's initial namespace, or set congestion = \"default\"",
            f.allowed
        )),
        Probe::Failed(errno) => fall_back(format!(
            "setting congestion = \"{name}\" failed with errno {errno}; fix: check the kernel log, or set congestion = \"default\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(probe: Option<Probe>) -> Facts {
        Facts {
            host_default: "cubic".into(),
            available: "reno cubic".into(),
            allowed: "reno cubic".into(),
            probe,
        }
    }

    #[test]
    fn choice_parses_default_names_and_refuses_junk() {
        assert_eq!(Choice::parse("default"), Ok(Choice::HostDefault));
        assert_eq!(Choice::parse("bbr"), Ok(Choice::Named("bbr".into())));
        assert_eq!(Choice::default(), Choice::Named("bbr".into()));
        for bad in ["", "BBR", "bbr; rm", "a_name_that_is_too_long"] {
            assert!(Choice::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn named_algorithm_the_kernel_takes_is_set_and_the_host_default_named() {
        let d = decide(&Choice::default(), &facts(Some(Probe::Took)));
        assert!(d.set && !d.fell_back && d.algorithm == "bbr", "{d:?}");
        assert!(d.reason.contains("cubic"), "{}", d.reason);
    }

    #[test]
    fn host_default_choice_sets_nothing() {
        let d = decide(&Choice::HostDefault, &facts(None));
        assert!(!d.set && !d.fell_back && d.algorithm == "cubic", "{d:?}");
    }

    #[test]
    fn missing_algorithm_falls_back_with_the_module_to_load() {
        let d = decide(&Choice::default(), &facts(Some(Probe::NotAvailable)));
        assert!(!d.set && d.fell_back && d.algorithm == "cubic", "{d:?}");
        assert!(
            d.reason.contains("modprobe tcp_bbr") && d.reason.contains("reno cubic"),
            "{}",
            d.reason
        );
    }

    #[test]
    fn refused_algorithm_falls_back_naming_the_allowed_list() {
        let d = decide(&Choice::default(), &facts(Some(Probe::NotAllowed)));
        assert!(d.fell_back && !d.set, "{d:?}");
        assert!(
            d.reason.contains("tcp_allowed_congestion_control") && d.reason.contains("fix:"),
            "{}",
            d.reason
        );
    }
}
