//! The gateway's status document, assembled from the uplink manager's view, the interface
//! counters, the live connections' subflows, the dialer's TFO decision and the UDP capture's
//! sessions.
//!
//! Byte counts and rates come from the uplink interfaces' own counters, so they are true by
//! construction (they include everything the interface carried, probes too).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use braid_proto::rate::CounterRate;
use braid_sys::mptcp::info::MptcpState;
use tokio::sync::watch;

use braid_sys::link::{byte_counters, IfName};

use super::kernel::KernelWatch;
use super::model::{
    Blackhole, ConnectionStatus, Connections, RelayInfo, Role, Status, Tfo, Totals, UplinkStatus,
};
use super::registry::Registry;
use crate::gateway::dialer::Dialer;
use crate::gateway::uplink::ManagerView;
use crate::status::http::StatusSource;

/// How often the interface counters are read.
const SAMPLE: Duration = Duration::from_millis(500);

struct Counters {
    base: Option<(u64, u64)>,
    now: (u64, u64),
    rx: CounterRate,
    tx: CounterRate,
}

/// Everything the gateway's status is made of.
pub struct GatewayStatus {
    /// Live relayed connections.
    pub registry: Arc<Registry>,
    view: watch::Receiver<ManagerView>,
    dialer: Arc<Dialer>,
    /// The relay, once it answered a control request.
    pub relay: Mutex<Option<RelayInfo>>,
    counters: Mutex<BTreeMap<String, Counters>>,
    epoch: Instant,
    kernel: String,
    /// The kernel's TCP memory; its watch runs on the daemon's background tasks.
    pub tcp_mem: Arc<KernelWatch>,
    udp: std::sync::OnceLock<crate::gateway::udp::UdpCapture>,
}

impl GatewayStatus {
    /// A status source over the manager's view, the dialer and the kernel watch.
    pub fn new(
        registry: Arc<Registry>,
        view: watch::Receiver<ManagerView>,
        dialer: Arc<Dialer>,
        tcp_mem: Arc<KernelWatch>,
    ) -> Arc<Self> {
        Arc::new(GatewayStatus {
            registry,
            view,
            dialer,
            relay: Mutex::new(None),
            counters: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            kernel: braid_sys::kernel::KernelRelease::running().release,
            tcp_mem,
            udp: std::sync::OnceLock::new(),
        })
    }

    /// Adds the UDP capture's sessions to the document (once, when it starts).
    pub fn set_udp(&self, udp: crate::gateway::udp::UdpCapture) {
        let _ = self.udp.set(udp);
    }

    /// The uplink manager's view, for what else follows the uplinks (the warm pool).
    pub fn uplink_view(&self) -> watch::Receiver<ManagerView> {
        self.view.clone()
    }

    /// Reads every uplink's interface counters twice a second, forever.
    pub async fn sample_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE);
        loop {
            tick.tick().await;
            self.sample();
        }
    }

    fn sample(&self) {
        let now = self.epoch.elapsed();
        let ifaces: Vec<(String, IfName)> = self
            .view
            .borrow()
            .uplinks
            .iter()
            .map(|u| (u.name.clone(), u.interface.clone()))
            .collect();
        let Ok(mut c) = self.counters.lock() else {
            return;
        };
        for (name, iface) in ifaces {
            let Some((rx, tx)) = byte_counters(&iface) else {
                continue;
            };
            let e = c.entry(name).or_insert_with(|| Counters {
                base: None,
                now: (rx, tx),
                rx: CounterRate::new(),
                tx: CounterRate::new(),
            });
            e.base.get_or_insert((rx, tx));
            e.now = (rx, tx);
            e.rx.observe(now, rx);
            e.tx.observe(now, tx);
        }
    }

    /// Subflows per uplink address, and per connection.
    fn connections(
        &self,
        by_addr: &BTreeMap<IpAddr, String>,
    ) -> (Connections, BTreeMap<String, u32>) {
        let mut per_uplink: BTreeMap<String, u32> = BTreeMap::new();
        let mut conns = Connections {
            fallback_total: self
                .registry
                .fallback_total
                .load(std::sync::atomic::Ordering::Relaxed),
            stranded_total: self
                .registry
                .stranded_total
                .load(std::sync::atomic::Ordering::Relaxed),
            lost_join: self
                .registry
                .lost_join_now
                .load(std::sync::atomic::Ordering::Relaxed),
            lost_join_total: self
                .registry
                .lost_join_total
                .load(std::sync::atomic::Ordering::Relaxed),
            ..Default::default()
        };
        self.registry.for_each(|live| {
            let (state, locals) = crate::gateway::pool::subflow_locals(&live.socket);
            let mut mine: BTreeMap<String, u32> = BTreeMap::new();
            for ip in &locals {
                if let Some(name) = by_addr.get(ip) {
                    *mine.entry(name.clone()).or_default() += 1;
                    *per_uplink.entry(name.clone()).or_default() += 1;
                }
            }
            let transport = crate::server::transport_of(state);
            match state {
                MptcpState::Mptcp { .. } => conns.mptcp += 1,
                MptcpState::Fallback => conns.fallback += 1,
                MptcpState::Tcp => conns.tcp += 1,
            }
            conns.list.push(ConnectionStatus {
                target: live.target.clone(),
                transport,
                subflows: state.subflows().max(locals.len() as u32),
                subflows_per_uplink: mine,
                age_secs: (live.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            });
        });
        conns.list.sort_by(|a, b| b.age_secs.total_cmp(&a.age_secs));
        (conns, per_uplink)
    }
}

fn add_histories(total: &mut Vec<f64>, h: Vec<f64>) {
    // Align at the newest second.
    if h.len() > total.len() {
        let pad = h.len() - total.len();
        total.splice(0..0, std::iter::repeat_n(0.0, pad));
    }
    let off = total.len() - h.len();
    for (i, v) in h.into_iter().enumerate() {
        total[off + i] += v;
    }
}

impl StatusSource for GatewayStatus {
    fn snapshot(&self) -> Status {
        let view = self.view.borrow().clone();
        // Subflows of a tunnelled uplink come from its tunnel's address.
        let by_addr: BTreeMap<IpAddr, String> = view
            .uplinks
            .iter()
            .flat_map(|u| u.subflow_sources().map(|a| (a, u.name.clone())))
            .collect();
        let (connections, per_uplink) = self.connections(&by_addr);
        let udp_per_uplink = self
            .udp
            .get()
            .map(|u| u.sessions_per_uplink())
            .unwrap_or_default();
        let counters = self.counters.lock();
        let mut total = Totals::default();
        let uplinks =
            view.uplinks
                .iter()
                .map(|u| {
                    let mut s =
                        UplinkStatus {
                            name: u.name.clone(),
                            state: u.state,
                            state_reason: u.state_reason.clone(),
                            address: u.addr.map(|a| a.to_string()),
                            rtt_ms: u.rtt_ms,
                            loss: u.loss,
                            subflows: per_uplink.get(&u.name).copied().unwrap_or(0),
                            udp_sessions: udp_per_uplink.get(&u.name).copied().unwrap_or(0),
                            backup: u.backup,
                            interface: u.interface.to_string(),
                            state_changes: u.state_changes,
                            path: u.path.path.to_string(),
                            path_reason: u.path.reason.clone(),
                            tunnel: u.path.tunnel.as_ref().map(|(d, a)| {
                                super::model::TunnelStatus {
                                    interface: d.clone(),
                                    address: a.to_string(),
                                }
                            }),
                            ..Default::default()
                        };
                    if let Some(c) = counters.as_ref().ok().and_then(|c| c.get(&u.name)) {
                        // Bytes are read fresh, so they match the interface at this very moment.
                        let (brx, btx) = c.base.unwrap_or(c.now);
                        let (rx_now, tx_now) = byte_counters(&u.interface).unwrap_or(c.now);
                        s.rx_bytes = rx_now.saturating_sub(brx);
                        s.tx_bytes = tx_now.saturating_sub(btx);
                        s.rx_bps = c.rx.rate_bps();
                        s.tx_bps = c.tx.rate_bps();
                        s.history_rx_bps = c.rx.history().to_vec();
                        s.history_tx_bps = c.tx.history().to_vec();
                        total.rx_bps += s.rx_bps;
                        total.tx_bps += s.tx_bps;
                        add_histories(&mut total.history_rx_bps, s.history_rx_bps.clone());
                        add_histories(&mut total.history_tx_bps, s.history_tx_bps.clone());
                    }
                    s
                })
                .collect();
        Status {
            role: Role::Gateway,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: self.kernel.clone(),
            uplinks,
            connections,
            tfo: Tfo {
                enabled: self.dialer.tfo(),
                reason: self.dialer.tfo_reason(),
            },
            congestion: self.dialer.congestion().into(),
            blackhole: Blackhole {
                active: view.blackhole_active,
                count: view.blackhole_count,
                timeout_secs: view.blackhole_timeout_secs,
            },
            relay: self.relay.lock().ok().and_then(|r| r.clone()),
            total,
            tcp_mem: self.tcp_mem.latest(),
            udp: self.udp.get().map(|u| u.status()).unwrap_or_default(),
            warm_pool: self.dialer.pool().map(|p| p.stats()),
            path_manager: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histories_add_aligned_at_the_newest_second() {
        let mut t = vec![1.0, 1.0];
        add_histories(&mut t, vec![5.0, 6.0, 7.0]);
        assert_eq!(t, vec![5.0, 7.0, 8.0]);
        add_histories(&mut t, vec![1.0]);
        assert_eq!(t, vec![5.0, 7.0, 9.0]);
    }
}
