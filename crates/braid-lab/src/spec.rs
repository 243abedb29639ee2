//! What a lab looks like: its namespace prefix and its uplinks, validated before anything is
//! created.

use std::net::Ipv4Addr;

use crate::LabError;

/// Most uplinks a lab can have (addresses 10.1.0.0/24 … 10.8.0.0/24).
pub const MAX_UPLINKS: usize = 8;
/// Longest uplink name: `wan-` + 10 characters = 15, the kernel's interface-name limit.
pub const MAX_UPLINK_NAME: usize = 10;
/// Longest namespace prefix.
pub const MAX_PREFIX: usize = 24;

/// One emulated internet uplink between the gateway and the VPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// Short name (`wifi`, `5g`): at most 10 characters of `[a-z0-9-]`.
    pub name: String,
    /// Rate limit in Mbit/s in each direction (htb at both ends); `None` = unlimited veth.
    pub rate_mbit: Option<u32>,
    /// Round-trip delay in ms; each direction holds half. 0 = no emulator on this uplink.
    pub rtt_ms: u32,
    /// Random loss in ‰, applied independently in *each* direction (so a ping round trip loses
    /// about twice as much).
    pub loss_permille: u32,
}

impl UplinkSpec {
    /// An unshaped uplink: no rate limit, no delay, no loss.
    pub fn new(name: &str) -> Self {
        UplinkSpec {
            name: name.to_owned(),
            rate_mbit: None,
            rtt_ms: 0,
            loss_permille: 0,
        }
    }

    /// Sets the rate limit.
    pub fn rate_mbit(mut self, mbit: u32) -> Self {
        self.rate_mbit = Some(mbit);
        self
    }

    /// Sets the round-trip delay.
    pub fn rtt_ms(mut self, ms: u32) -> Self {
        self.rtt_ms = ms;
        self
    }

    /// Sets the loss per direction in ‰.
    pub fn loss_permille(mut self, permille: u32) -> Self {
        self.loss_permille = permille;
        self
    }
}

/// The whole lab: namespaces are named `{prefix}-lan`, `{prefix}-gw`, `{prefix}-vps`,
/// `{prefix}-srv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabSpec {
    /// Namespace prefix, unique per test (`blt1`): `[a-z0-9-]`, at most 24 characters.
    pub prefix: String,
    /// 1 to 8 uplinks; the first one is the preferred default route.
    pub uplinks: Vec<UplinkSpec>,
}

impl LabSpec {
    /// Checks names, counts and ranges; returns what is wrong and how to fix it.
    pub fn validate(&self) -> Result<(), LabError> {
        let bad = |msg: String| Err(LabError::InvalidSpec(msg));
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX || !is_name(&self.prefix) {
            return bad(format!(
                "prefix {:?} must be 1..={MAX_PREFIX} characters of [a-z0-9-]",
                self.prefix
            ));
        }
        if self.uplinks.is_empty() || self.uplinks.len() > MAX_UPLINKS {
            return bad(format!(
                "{} uplinks given; a lab has 1..={MAX_UPLINKS}",
                self.uplinks.len()
            ));
        }
        for (i, up) in self.uplinks.iter().enumerate() {
            if up.name.is_empty() || up.name.len() > MAX_UPLINK_NAME || !is_name(&up.name) {
                return bad(format!(
                    "uplink name {:?} must be 1..={MAX_UPLINK_NAME} characters of [a-z0-9-] \
                     (it becomes the interface name wan-NAME, at most 15 characters)",
                    up.name
                ));
            }
            if self.uplinks[..i].iter().any(|o| o.name == up.name) {
                return bad(format!("uplink name {:?} is used twice", up.name));
            }
            if up.loss_permille > 1000 {
                return bad(format!(
                    "uplink {:?}: loss_permille {} is over 1000",
                    up.name, up.loss_permille
                ));
            }
            if up.rate_mbit == Some(0) {
                return bad(format!(
                    "uplink {:?}: rate_mbit 0; use None for unlimited, or set_uplink_blackhole",
                    up.name
                ));
            }
            if up.rtt_ms > 60_000 {
                return bad(format!(
                    "uplink {:?}: rtt_ms {} is over 60 s",
                    up.name, up.rtt_ms
                ));
            }
        }
        Ok(())
    }
}

fn is_name(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Uplink `index`'s IPv6 subnet is 2001:db8:{index+1}::/64; `host` picks the address in it.
pub(crate) fn uplink_addr6(index: usize, host: u16) -> std::net::Ipv6Addr {
    let net = u16::try_from(index + 1).expect("at most 8 uplinks");
    std::net::Ipv6Addr::new(0x2001, 0xdb8, net, 0, 0, 0, 0, host)
}

/// Uplink `index`'s subnet is 10.{index+1}.0.0/24; `host` picks the address in it.
pub(crate) fn uplink_addr(index: usize, host: u8) -> Ipv4Addr {
    let net = u8::try_from(index + 1).expect("at most 8 uplinks");
    Ipv4Addr::new(10, net, 0, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(prefix: &str, names: &[&str]) -> LabSpec {
        LabSpec {
            prefix: prefix.into(),
            uplinks: names.iter().map(|n| UplinkSpec::new(n)).collect(),
        }
    }

    #[test]
    fn validate_good_spec_accepts() {
        spec("blt0", &["wifi", "5g", "abcdefghij"])
            .validate()
            .unwrap();
    }

    #[test]
    fn validate_bad_names_rejects() {
        assert!(spec("blt0", &["abcdefghijk"]).validate().is_err());
        assert!(spec("blt0", &["Wifi"]).validate().is_err());
        assert!(spec("blt0", &["wi fi"]).validate().is_err());
        assert!(spec("blt0", &["a", "a"]).validate().is_err());
        assert!(spec("", &["a"]).validate().is_err());
        assert!(spec("b/x", &["a"]).validate().is_err());
        assert!(spec("blt0", &[]).validate().is_err());
        let nine: Vec<String> = (0..9).map(|i| format!("u{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert!(spec("blt0", &nine).validate().is_err());
    }

    #[test]
    fn validate_bad_shaping_rejects() {
        let mut s = spec("blt0", &["a"]);
        s.uplinks[0].loss_permille = 1001;
        assert!(s.validate().is_err());
        let mut s = spec("blt0", &["a"]);
        s.uplinks[0].rate_mbit = Some(0);
        assert!(s.validate().is_err());
    }

    #[test]
    fn uplink_addr6_numbers_subnets_from_one() {
        assert_eq!(uplink_addr6(0, 1).to_string(), "2001:db8:1::1");
        assert_eq!(uplink_addr6(7, 2).to_string(), "2001:db8:8::2");
    }

    #[test]
    fn uplink_addr_numbers_subnets_from_one() {
        assert_eq!(uplink_addr(0, 1), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(uplink_addr(7, 2), Ipv4Addr::new(10, 8, 0, 2));
    }
}
