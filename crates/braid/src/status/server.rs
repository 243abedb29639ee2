//! The relay's status document: its live connections (MPTCP or fallback, subflows), its TFO
//! listener decision, its congestion control, the kernel's blackhole counters and TCP memory,
//! and the UDP relay's sessions.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use braid_sys::mptcp::info::{mptcp_state, MptcpState};

use super::kernel::KernelWatch;
use super::model::{Blackhole, Congestion, ConnectionStatus, Connections, Status, Tfo};
use super::registry::Registry;
use crate::status::http::StatusSource;

/// Everything the relay's status is made of.
pub struct ServerStatus {
    /// Live relayed connections.
    pub registry: Arc<Registry>,
    tfo: Tfo,
    congestion: Congestion,
    kernel: String,
    tcp_mem: Arc<KernelWatch>,
    udp: Option<crate::server::UdpRelay>,
    path_manager: crate::server::PathManagerView,
}

impl ServerStatus {
    /// A status source for the relay; `tcp_mem` is polled by the relay's own task.
    pub fn new(
        registry: Arc<Registry>,
        tfo_enabled: bool,
        tfo_reason: String,
        tcp_mem: Arc<KernelWatch>,
        congestion: Congestion,
        udp: Option<crate::server::UdpRelay>,
        path_manager: crate::server::PathManagerView,
    ) -> Arc<Self> {
        Arc::new(ServerStatus {
            registry,
            tfo: Tfo {
                enabled: tfo_enabled,
                reason: tfo_reason,
            },
            congestion,
            kernel: braid_sys::kernel::KernelRelease::running().release,
            tcp_mem,
            udp,
            path_manager,
        })
    }
}

impl StatusSource for ServerStatus {
    fn snapshot(&self) -> Status {
        let mut conns = Connections {
            fallback_total: self.registry.fallback_total.load(Ordering::Relaxed),
            ..Default::default()
        };
        self.registry.for_each(|live| {
            let st = mptcp_state(&live.socket);
            match st {
                MptcpState::Mptcp { .. } => conns.mptcp += 1,
                MptcpState::Fallback => conns.fallback += 1,
                MptcpState::Tcp => conns.tcp += 1,
            }
            conns.list.push(ConnectionStatus {
                target: live.target.clone(),
                transport: crate::server::transport_of(st),
                subflows: st.subflows(),
                subflows_per_uplink: Default::default(),
                age_secs: (live.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            });
        });
        let bh = braid_sys::mptcp::blackhole::read(&braid_sys::sysctl::Procfs::default());
        Status {
            role: super::model::Role::Server,
            version: env!("CARGO_PKG_VERSION").into(),
            kernel: self.kernel.clone(),
            connections: conns,
            tfo: self.tfo.clone(),
            congestion: self.congestion.clone(),
            blackhole: Blackhole {
                active: false,
                count: bh.counters.blackhole,
                timeout_secs: bh.timeout_secs,
            },
            tcp_mem: self.tcp_mem.latest(),
            udp: self.udp.as_ref().map(|u| u.status()).unwrap_or_default(),
            path_manager: Some(self.path_manager.status()),
            ..Default::default()
        }
    }
}
