//! A new uplink list, applied live (SIGHUP): uplinks that stay keep their slot (health, kernel
//! state, subflows: no connection notices), new ones are installed, removed ones have their
//! routes, rule and endpoint removed, so the kernel moves their subflows to the others. New
//! health settings reach every uplink's health machine without resetting its state, and the
//! probes restart at the new interval.
//!
//! An uplink "stays" when its name, interface, backup flag, tables and tunnel mode are unchanged (its `ip
//! rule` priority follows its position and is updated in place). Tables default by position
//! too, so removing an uplink from the middle of a list without explicit `table`s renumbers
//! those after it, which reinstalls them; `braid setup gateway` writes explicit tables.
//! Probe tasks are restarted with fresh positions and a fresh event channel, so no late event
//! of a removed uplink is taken for another's.

use std::sync::Arc;

use braid_proto::health::HealthConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use super::probe::ProbeEvent;
use super::{kernel, spawn_probe, Manager, Slot};
use crate::config::gateway::Uplink;
use crate::gateway::dialer::Dialer;

/// The same uplink, whatever its position: the rule priority follows the position and is
/// changed in place; a different table, interface or backup flag is a different uplink.
fn same_uplink(a: &Uplink, b: &Uplink) -> bool {
    a.name == b.name
        && a.interface == b.interface
        && a.backup == b.backup
        && a.table == b.table
        && a.tunnel == b.tunnel
        && a.tunnel_table == b.tunnel_table
}

/// What a reload changes while the manager runs: the uplink list and the health settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    /// `[[uplink]]`.
    pub uplinks: Vec<Uplink>,
    /// `[health]`.
    pub health: HealthConfig,
}

/// The next reloaded settings; never completes once the sender is gone (no reloads).
pub(super) async fn next(rx: &mut watch::Receiver<Live>) -> Option<Live> {
    match rx.changed().await {
        Ok(()) => Some(rx.borrow_and_update().clone()),
        Err(_) => std::future::pending().await,
    }
}

impl Manager<'_> {
    /// Gives every uplink's health machine the new settings (its state and RTT stay).
    pub(super) fn set_health(&mut self, health: &HealthConfig) -> Result<(), kernel::UplinkError> {
        for s in &mut self.slots {
            s.health.reconfigure(health.clone())?;
        }
        Ok(())
    }

    /// Replaces the uplink list; returns the receiver of the restarted probes' events.
    pub(super) async fn set_uplinks(
        &mut self,
        list: Vec<Uplink>,
        health: &HealthConfig,
        dialer: &Arc<Dialer>,
        probes: &mut Vec<JoinHandle<()>>,
        limits_before: &mut Option<braid_sys::mptcp::limits::Limits>,
    ) -> Result<mpsc::Receiver<ProbeEvent>, kernel::UplinkError> {
        for p in probes.drain(..) {
            p.abort();
        }
        let (probe_tx, probe_rx) = mpsc::channel::<ProbeEvent>(256);
        let mut old: Vec<Slot> = self.slots.drain(..).collect();
        for (i, u) in list.iter().enumerate() {
            let kept = old.iter().position(|s| same_uplink(&s.cfg, u));
            let slot = match kept {
                Some(k) => {
                    let mut s = old.remove(k);
                    // A new rule priority (a position change) is reconciled in place.
                    s.cfg = u.clone();
                    let (source, source_rx) = watch::channel(s.source.borrow().clone());
                    s.source = source;
                    probes.push(spawn_probe(i, dialer, source_rx, &probe_tx, health));
                    s
                }
                None => {
                    info!("uplink {}: added (reload), on {}", u.name, u.interface);
                    let (s, probe) = Slot::start(
                        i,
                        u,
                        health,
                        dialer,
                        &probe_tx,
                        self.tunnel_retry,
                        self.now(),
                    )?;
                    probes.push(probe);
                    s
                }
            };
            self.slots.push(slot);
        }
        for s in old {
            info!(
                "uplink {}: removed (reload); its routes, rule and endpoint go",
                s.cfg.name
            );
            kernel::remove(self.rtnl, self.pm, self.journal, &s.cfg, &s.endpoint_addrs).await;
            // Dropping the path stops its tunnel; the kernel removes the device.
            drop(s.path);
        }
        let tables: Vec<u32> = list
            .iter()
            .flat_map(|u| [u.table, u.tunnel_table])
            .collect();
        self.journal.note_route_tables(&tables);
        let before = kernel::ensure_limits(self.pm, self.journal, list.len() as u32).await?;
        if limits_before.is_none() {
            *limits_before = before;
        }
        self.reconcile_all().await;
        info!(
            "reload: probes restarted on {} uplink(s), every {:?}",
            list.len(),
            health.interval
        );
        Ok(probe_rx)
    }
}
