//! MPTCP endpoints of the in-kernel path manager (`ip mptcp endpoint …`):
//! the local addresses the kernel may open subflows from or announce.

use std::fmt;
use std::net::IpAddr;
use std::ops::{BitOr, BitOrAssign};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};

use super::pm::{attr, cmd, parse_nlas, MptcpPm, NlaWriter, PmAddr, PmError, PmMessage};

/// Endpoint flags (`MPTCP_PM_ADDR_FLAG_*`). Unknown bits from newer kernels
/// are kept and shown in hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointFlags(pub u32);

impl EndpointFlags {
    /// No flags.
    pub const NONE: Self = Self(0);
    /// Announce this address to the peer (ADD_ADDR); server side.
    pub const SIGNAL: Self = Self(1);
    /// Open a subflow from this address; client side.
    pub const SUBFLOW: Self = Self(2);
    /// Subflows from this address are backups (MP_PRIO).
    pub const BACKUP: Self = Self(4);
    /// Open a subflow to every known peer address.
    pub const FULLMESH: Self = Self(8);
    /// Created by the kernel for an address a peer used, not by the user.
    pub const IMPLICIT: Self = Self(16);
    /// Linux 6.18: use this endpoint for every announced peer address.
    pub const LAMINAR: Self = Self(32);
    /// The flags `SET_FLAGS` can change on an existing endpoint.
    pub const CHANGEABLE: Self = Self(4 | 8);

    const NAMES: [(EndpointFlags, &'static str); 6] = [
        (Self::SIGNAL, "signal"),
        (Self::SUBFLOW, "subflow"),
        (Self::BACKUP, "backup"),
        (Self::FULLMESH, "fullmesh"),
        (Self::IMPLICIT, "implicit"),
        (Self::LAMINAR, "laminar"),
    ];

    /// The raw bits.
    pub fn bits(self) -> u32 {
        self.0
    }

    /// True if every bit of `other` is set.
    pub fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// `self` with the bits of `other` set (`on`) or cleared.
    pub fn with(self, other: Self, on: bool) -> Self {
        if on {
            Self(self.0 | other.0)
        } else {
            Self(self.0 & !other.0)
        }
    }

    fn without(self, other: Self) -> Self {
        self.with(other, false)
    }
}

impl BitOr for EndpointFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for EndpointFlags {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Space-separated names as `ip mptcp endpoint show` prints them, e.g.
/// `subflow backup`; empty for no flags.
impl fmt::Display for EndpointFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { " " };
            first = false;
            f.write_str(s)
        };
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                sep(f)?;
                f.write_str(name)?;
                rest &= !flag.0;
            }
        }
        if rest != 0 {
            sep(f)?;
            write!(f, "{rest:#x}")?;
        }
        Ok(())
    }
}

/// One endpoint, as `ip mptcp endpoint show` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Kernel-assigned id (1..=255).
    pub id: u8,
    /// Local address.
    pub addr: IpAddr,
    /// Port for `signal` endpoints that announce one.
    pub port: Option<u16>,
    /// Interface the endpoint is bound to (`dev`).
    pub ifindex: Option<u32>,
    /// Flags.
    pub flags: EndpointFlags,
}

/// Like a line of `ip mptcp endpoint show`, with `ifindex N` for `dev NAME`.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if let Some(port) = self.port {
            write!(f, " port {port}")?;
        }
        write!(f, " id {}", self.id)?;
        if self.flags != EndpointFlags::NONE {
            write!(f, " {}", self.flags)?;
        }
        if let Some(i) = self.ifindex {
            write!(f, " ifindex {i}")?;
        }
        Ok(())
    }
}

impl Endpoint {
    fn from_pm_addr(a: PmAddr) -> Option<Endpoint> {
        Some(Endpoint {
            id: a.id?,
            addr: a.addr?,
            port: a.port,
            ifindex: a.ifindex.and_then(|i| u32::try_from(i).ok()),
            flags: EndpointFlags(a.flags.unwrap_or(0)),
        })
    }
}

fn ifindex_arg(ifindex: Option<u32>) -> Result<Option<i32>, PmError> {
    ifindex
        .map(|i| {
            i32::try_from(i)
                .map_err(|_| PmError::InvalidArgument(format!("ifindex {i} is out of range")))
        })
        .transpose()
}

fn addr_message(cmd: u8, addr: PmAddr) -> PmMessage {
    let mut w = NlaWriter::default();
    w.nested(attr::ADDR, addr.encode());
    PmMessage::new(cmd, w)
}

fn describe(addr: IpAddr, ifindex: Option<u32>, flags: EndpointFlags) -> String {
    let mut s = addr.to_string();
    if flags != EndpointFlags::NONE {
        s = format!("{s} {flags}");
    }
    if let Some(i) = ifindex {
        s = format!("{s} dev #{i}");
    }
    s
}

impl MptcpPm {
    /// All endpoints. Like `ip mptcp endpoint show`.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, PmError> {
        let request = || "ip mptcp endpoint show".to_string();
        let replies = self
            .request(
                PmMessage::new(cmd::GET_ADDR, NlaWriter::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                request,
            )
            .await?;
        let mut out = Vec::new();
        for nlas in &replies {
            let decode = |reason: String| PmError::Decode {
                request: request(),
                reason,
            };
            for (kind, value) in parse_nlas(nlas).map_err(decode)? {
                if kind == attr::ADDR {
                    let a = PmAddr::decode(value).map_err(decode)?;
                    if let Some(e) = Endpoint::from_pm_addr(a) {
                        out.push(e);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The user-created endpoint for `addr` (no port), if any.
    /// Like `ip mptcp endpoint show` filtered by address.
    pub async fn endpoint_by_addr(&self, addr: IpAddr) -> Result<Option<Endpoint>, PmError> {
        Ok(self.endpoints().await?.into_iter().find(|e| {
            e.addr == addr && e.port.is_none() && !e.flags.contains(EndpointFlags::IMPLICIT)
        }))
    }

    /// Adds an endpoint and returns the id the kernel gave it; EEXIST if one
    /// for `addr` exists. Like `ip mptcp endpoint add ADDR [dev DEV] FLAGS`.
    pub async fn add_endpoint(
        &self,
        addr: IpAddr,
        ifindex: Option<u32>,
        flags: EndpointFlags,
    ) -> Result<u8, PmError> {
        let msg = addr_message(
            cmd::ADD_ADDR,
            PmAddr {
                addr: Some(addr),
                flags: Some(flags.bits()),
                ifindex: ifindex_arg(ifindex)?,
                ..PmAddr::default()
            },
        );
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK, || {
            format!("ip mptcp endpoint add {}", describe(addr, ifindex, flags))
        })
        .await?;
        // ADD_ADDR does not return the id; read it back.
        match self.endpoint_by_addr(addr).await? {
            Some(e) => Ok(e.id),
            None => Err(PmError::EndpointMissing { addr }),
        }
    }

    /// Makes sure an endpoint for `addr` exists with exactly `flags` and
    /// `ifindex`; returns it and whether it was (re)created. Idempotent.
    ///
    /// An existing endpoint that differs only in `backup`/`fullmesh` keeps
    /// its id and gets its flags changed (`SET_FLAGS`, so live connections
    /// see the new priority). One that differs in anything else (`signal`,
    /// `subflow`, interface) is deleted and added again, which gets a new id.
    /// A kernel-created (`implicit`) endpoint for the address is replaced by
    /// the kernel itself on add.
    /// Like `ip mptcp endpoint show`, then `change`, or `delete` and `add`.
    pub async fn ensure_endpoint(
        &self,
        addr: IpAddr,
        ifindex: Option<u32>,
        flags: EndpointFlags,
    ) -> Result<(Endpoint, bool), PmError> {
        let flags = flags.without(EndpointFlags::IMPLICIT);
        if let Some(existing) = self.endpoint_by_addr(addr).await? {
            let same_base = existing.flags.without(EndpointFlags::CHANGEABLE)
                == flags.without(EndpointFlags::CHANGEABLE)
                && existing.ifindex == ifindex;
            if same_base {
                if existing.flags != flags {
                    self.set_endpoint_flags(addr, flags).await?;
                }
                let now = self
                    .endpoint_by_addr(addr)
                    .await?
                    .ok_or(PmError::EndpointMissing { addr })?;
                return Ok((now, false));
            }
            self.delete_endpoint(existing.id).await?;
        }
        self.add_endpoint(addr, ifindex, flags).await?;
        let now = self
            .endpoint_by_addr(addr)
            .await?
            .ok_or(PmError::EndpointMissing { addr })?;
        Ok((now, true))
    }

    /// Deletes endpoint `id`; returns whether it existed (the kernel answers
    /// EINVAL for a missing id, so this checks first).
    /// Like `ip mptcp endpoint delete id ID`.
    pub async fn delete_endpoint(&self, id: u8) -> Result<bool, PmError> {
        if !self.endpoints().await?.iter().any(|e| e.id == id) {
            return Ok(false);
        }
        // By id only: FAMILY without an address makes the kernel say EINVAL.
        let msg = addr_message(
            cmd::DEL_ADDR,
            PmAddr {
                id: Some(id),
                ..PmAddr::default()
            },
        );
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK, || {
            format!("ip mptcp endpoint delete id {id}")
        })
        .await?;
        Ok(true)
    }

    /// Sets the changeable flags (`backup`, `fullmesh`) of the endpoint for
    /// `addr` to those in `flags`; other bits are ignored by the kernel.
    /// Like `ip mptcp endpoint change ADDR backup|nobackup [fullmesh|nofullmesh]`.
    pub async fn set_endpoint_flags(
        &self,
        addr: IpAddr,
        flags: EndpointFlags,
    ) -> Result<(), PmError> {
        let msg = addr_message(
            cmd::SET_FLAGS,
            PmAddr {
                addr: Some(addr),
                flags: Some(flags.bits()),
                ..PmAddr::default()
            },
        );
        self.request(msg, NLM_F_REQUEST | NLM_F_ACK, || {
            let backup = if flags.contains(EndpointFlags::BACKUP) {
                "backup"
            } else {
                "nobackup"
            };
            let fullmesh = if flags.contains(EndpointFlags::FULLMESH) {
                "fullmesh"
            } else {
                "nofullmesh"
            };
            format!("ip mptcp endpoint change {addr} {backup} {fullmesh}")
        })
        .await?;
        Ok(())
    }

    /// Deletes all endpoints. Like `ip mptcp endpoint flush`.
    pub async fn flush_endpoints(&self) -> Result<(), PmError> {
        self.request(
            PmMessage::new(cmd::FLUSH_ADDRS, NlaWriter::default()),
            NLM_F_REQUEST | NLM_F_ACK,
            || "ip mptcp endpoint flush".to_string(),
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_display_like_ip_mptcp() {
        assert_eq!(
            (EndpointFlags::SUBFLOW | EndpointFlags::BACKUP).to_string(),
            "subflow backup"
        );
        assert_eq!(EndpointFlags::NONE.to_string(), "");
        assert_eq!(EndpointFlags(1 | 0x100).to_string(), "signal 0x100");
        assert_eq!(EndpointFlags(0x40).to_string(), "0x40");
    }

    #[test]
    fn flags_with_sets_and_clears() {
        let f = EndpointFlags::SUBFLOW.with(EndpointFlags::BACKUP, true);
        assert_eq!(f, EndpointFlags(6));
        assert_eq!(f.with(EndpointFlags::BACKUP, false), EndpointFlags::SUBFLOW);
        assert!(f.contains(EndpointFlags::SUBFLOW));
        assert!(!f.contains(EndpointFlags::FULLMESH));
    }

    #[test]
    fn endpoint_display_like_ip_mptcp() {
        let e = Endpoint {
            id: 3,
            addr: "192.0.2.1".parse().unwrap(),
            port: None,
            ifindex: Some(4),
            flags: EndpointFlags::SUBFLOW | EndpointFlags::BACKUP,
        };
        assert_eq!(e.to_string(), "192.0.2.1 id 3 subflow backup ifindex 4");
    }
}
