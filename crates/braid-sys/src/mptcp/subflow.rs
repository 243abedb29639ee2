//! Commands on one subflow of one connection, for the kernel's *userspace* path manager
//! (`net.mptcp.path_manager = userspace`): its backup flag, and closing it.
//!
//! The in-kernel path manager has no per-connection form of these: its `SET_FLAGS` changes
//! an endpoint, so every connection with a subflow on that address. The kernel refuses these
//! commands for a connection the in-kernel path manager manages ("userspace PM not selected").

use std::net::SocketAddr;

use netlink_packet_core::{NLM_F_ACK, NLM_F_REQUEST};

use super::endpoint::EndpointFlags;
use super::pm::{attr, cmd, MptcpPm, NlaWriter, PmAddr, PmError, PmMessage};

/// One subflow: the connection's local token and the subflow's two ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subflow {
    /// The connection's local token (from its events, or `MPTCP_INFO`'s `mptcpi_token`).
    pub token: u32,
    /// This end of the subflow.
    pub local: SocketAddr,
    /// The peer's end.
    pub remote: SocketAddr,
}

impl Subflow {
    fn message(&self, cmd: u8, flags: Option<u32>) -> PmMessage {
        let mut w = NlaWriter::default();
        w.u32(attr::TOKEN, self.token);
        w.nested(attr::ADDR, end(self.local, flags).encode());
        w.nested(attr::ADDR_REMOTE, end(self.remote, None).encode());
        PmMessage::new(cmd, w)
    }
}

fn end(addr: SocketAddr, flags: Option<u32>) -> PmAddr {
    PmAddr {
        addr: Some(addr.ip()),
        port: Some(addr.port()),
        flags,
        ..PmAddr::default()
    }
}

impl MptcpPm {
    /// Sets or clears the backup flag of one subflow. The kernel sends the peer an MP_PRIO,
    /// and both ends' schedulers then send on it only while no other subflow can carry data.
    pub async fn set_subflow_backup(&self, sub: Subflow, backup: bool) -> Result<(), PmError> {
        let flags = if backup {
            EndpointFlags::BACKUP.bits()
        } else {
            0
        };
        self.request(
            sub.message(cmd::SET_FLAGS, Some(flags)),
            NLM_F_REQUEST | NLM_F_ACK,
            || {
                format!(
                    "MPTCP_PM_CMD_SET_FLAGS token {} local {} remote {} {}",
                    sub.token,
                    sub.local,
                    sub.remote,
                    if backup { "backup" } else { "nobackup" }
                )
            },
        )
        .await?;
        Ok(())
    }

    /// Closes one subflow; the connection goes on over its others.
    pub async fn destroy_subflow(&self, sub: Subflow) -> Result<(), PmError> {
        self.request(
            sub.message(cmd::SUBFLOW_DESTROY, None),
            NLM_F_REQUEST | NLM_F_ACK,
            || {
                format!(
                    "MPTCP_PM_CMD_SUBFLOW_DESTROY token {} local {} remote {}",
                    sub.token, sub.local, sub.remote
                )
            },
        )
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mptcp::pm::parse_nlas;

    #[test]
    fn set_flags_names_the_connection_and_both_ends() {
        let sub = Subflow {
            token: 42,
            local: "10.9.0.2:8388".parse().unwrap(),
            remote: "10.2.0.1:40000".parse().unwrap(),
        };
        let msg = sub.message(cmd::SET_FLAGS, Some(4));
        let nlas = parse_nlas(&msg.nlas).unwrap();
        let kinds: Vec<u16> = nlas.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![attr::TOKEN, attr::ADDR, attr::ADDR_REMOTE]);
        assert_eq!(nlas[0].1, 42u32.to_ne_bytes());
        let local = PmAddr::decode(nlas[1].1).unwrap();
        assert_eq!((local.port, local.flags), (Some(8388), Some(4)));
        let remote = PmAddr::decode(nlas[2].1).unwrap();
        assert_eq!(remote.addr, Some("10.2.0.1".parse().unwrap()));
        assert_eq!((remote.port, remote.flags), (Some(40000), None));
    }
}
