//! Per-namespace limits of the in-kernel path manager (`ip mptcp limits`).

use std::fmt;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use super::pm::{attr, cmd, parse_nlas, parse_u32, MptcpPm, NlaWriter, PmError, PmMessage};

/// How many extra subflows a connection may have and how many addresses
/// announced by the peer it accepts. The kernel caps both (at 8 up to at
/// least Linux 6.18).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Extra subflows per connection (`subflows`).
    pub subflows: u32,
    /// Peer-announced addresses accepted per connection (`add_addr_accepted`).
    pub add_addr_accepted: u32,
}

/// Like `ip mptcp limits show`.
impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "add_addr_accepted {} subflows {}",
            self.add_addr_accepted, self.subflows
        )
    }
}

impl MptcpPm {
    /// The current limits. Like `ip mptcp limits show`.
    pub async fn limits(&self) -> Result<Limits, PmError> {
        let request = || "ip mptcp limits show".to_string();
        let replies = self
            .request(
                PmMessage::new(cmd::GET_LIMITS, NlaWriter::default()),
                NLM_F_REQUEST,
                request,
            )
            .await?;
        let decode = |reason: String| PmError::Decode {
            request: request(),
            reason,
        };
        let mut subflows = None;
        let mut accepted = None;
        for nlas in &replies {
            for (kind, value) in parse_nlas(nlas).map_err(decode)? {
                match kind {
                    attr::SUBFLOWS => subflows = Some(parse_u32(value).map_err(decode)?),
                    attr::RCV_ADD_ADDRS => accepted = Some(parse_u32(value).map_err(decode)?),
                    _ => {}
                }
            }
        }
        match (subflows, accepted) {
            (Some(subflows), Some(add_addr_accepted)) => Ok(Limits {
                subflows,
                add_addr_accepted,
            }),
            _ => Err(decode("the reply lacks SUBFLOWS or RCV_ADD_ADDRS".into())),
        }
    }

    /// Sets both limits. Idempotent.
    /// Like `ip mptcp limits set subflows N add_addr_accepted M`.
    pub async fn set_limits(&self, limits: Limits) -> Result<(), PmError> {
        let mut w = NlaWriter::default();
        w.u32(attr::RCV_ADD_ADDRS, limits.add_addr_accepted)
            .u32(attr::SUBFLOWS, limits.subflows);
        self.request(
            PmMessage::new(cmd::SET_LIMITS, w),
            NLM_F_REQUEST | NLM_F_ACK,
            || {
                format!(
                    "ip mptcp limits set subflows {} add_addr_accepted {}",
                    limits.subflows, limits.add_addr_accepted
                )
            },
        )
        .await?;
        Ok(())
    }
}
