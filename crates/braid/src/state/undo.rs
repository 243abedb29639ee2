//! Carrying out the [`Undo`] steps of a record against the kernel.
//!
//! Every step is idempotent (deleting what is gone, writing a value that is already there), so a
//! record that names something never applied, or a step run twice, changes nothing. Every step
//! is tried even when one fails, because one refused request must not leave the rest in place.

use std::net::IpAddr;

use braid_sys::mptcp::endpoint::EndpointFlags;
use braid_sys::mptcp::limits::Limits;
use braid_sys::mptcp::pm::MptcpPm;
use braid_sys::netlink::Rtnl;
use braid_sys::sysctl::Procfs;

use super::record::{Undo, RESTORABLE_SYSCTLS};
use crate::gateway::uplink::plan::RTPROT_BRAID;

/// Carries out `steps` in order; returns each with its outcome (an error says why).
pub async fn run(steps: &[Undo]) -> Vec<(Undo, Result<(), String>)> {
    let mut kernel = Kernel::default();
    let mut out = Vec::new();
    for s in steps {
        let r = kernel.undo(s).await;
        out.push((s.clone(), r));
    }
    out
}

/// Netlink sockets, opened on first use (a record with only an nft table needs none).
#[derive(Default)]
struct Kernel {
    rtnl: Option<Rtnl>,
    pm: Option<MptcpPm>,
}

impl Kernel {
    fn rtnl(&mut self) -> Result<&Rtnl, String> {
        if self.rtnl.is_none() {
            self.rtnl = Some(Rtnl::connect().map_err(|e| e.to_string())?);
        }
        self.rtnl.as_ref().ok_or_else(|| "no rtnetlink".to_string())
    }

    async fn pm(&mut self) -> Result<&MptcpPm, String> {
        if self.pm.is_none() {
            self.pm = Some(MptcpPm::connect().await.map_err(|e| e.to_string())?);
        }
        self.pm
            .as_ref()
            .ok_or_else(|| "no MPTCP path manager".to_string())
    }

    async fn undo(&mut self, step: &Undo) -> Result<(), String> {
        match step {
            Undo::DeleteNftTable(t) => {
                braid_sys::nftables::delete_table(t).map_err(|e| e.to_string())
            }
            Undo::DeleteEndpoints(addrs) => delete_endpoints(self.pm().await?, addrs).await,
            Undo::DeleteRoutesAndRules(tables) => {
                delete_routes_and_rules(self.rtnl()?, tables).await
            }
            Undo::RestoreLimits(l) => self
                .pm()
                .await?
                .set_limits(Limits {
                    subflows: l.subflows,
                    add_addr_accepted: l.add_addr_accepted,
                })
                .await
                .map_err(|e| e.to_string()),
            Undo::RestoreSysctl(s) if RESTORABLE_SYSCTLS.contains(&s.key.as_str()) => {
                Procfs::default()
                    .set_sysctl(&s.key, &s.original)
                    .map_err(|e| e.to_string())
            }
            Undo::RestoreSysctl(s) => Err(format!("{} is not a sysctl braid sets", s.key)),
        }
    }
}

/// Deletes the user-created (not kernel-implicit, port-less) endpoints on `addrs`: exactly the
/// ones the uplink manager treats as its own.
async fn delete_endpoints(pm: &MptcpPm, addrs: &[IpAddr]) -> Result<(), String> {
    let mine: Vec<u8> = pm
        .endpoints()
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|e| {
            addrs.contains(&e.addr)
                && e.port.is_none()
                && !e.flags.contains(EndpointFlags::IMPLICIT)
        })
        .map(|e| e.id)
        .collect();
    for id in mine {
        pm.delete_endpoint(id).await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Deletes braid's rules that select one of `tables`, then braid's routes in them.
async fn delete_routes_and_rules(rtnl: &Rtnl, tables: &[u32]) -> Result<(), String> {
    // Every rule of braid's that selects these tables, whatever it matches on (a source address,
    // or the TPROXY fwmark).
    rtnl.delete_rules_by_protocol_in(RTPROT_BRAID, Some(tables))
        .await
        .map_err(|e| e.to_string())?;
    for t in tables {
        rtnl.delete_routes_by_protocol(Some(*t), RTPROT_BRAID)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}
