//! Prometheus metrics, rendered from the status document at each scrape, in the text format with
//! HELP and TYPE lines (prometheus-client's encoder).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::model::{Status, TcpMem, TcpMemState};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UplinkLabel {
    uplink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlgorithmLabel {
    algorithm: String,
}

type FGauge = Gauge<f64, AtomicU64>;

/// The metrics text for one status document.
pub fn render(s: &Status) -> String {
    let mut reg = Registry::default();
    let up = Family::<UplinkLabel, Gauge>::default();
    let rtt = Family::<UplinkLabel, FGauge>::default();
    let loss = Family::<UplinkLabel, FGauge>::default();
    let tx = Family::<UplinkLabel, Counter>::default();
    let rx = Family::<UplinkLabel, Counter>::default();
    let subflows = Family::<UplinkLabel, Gauge>::default();
    let changes = Family::<UplinkLabel, Counter>::default();
    let tunnelled = Family::<UplinkLabel, Gauge>::default();
    let conns = Family::<KindLabel, Gauge>::default();
    let fallback_total = Counter::<u64>::default();
    let stranded_total = Counter::<u64>::default();
    let lost_join = Gauge::<i64>::default();
    let lost_join_total = Counter::<u64>::default();
    let blackhole = Gauge::<i64>::default();
    let congestion = Family::<AlgorithmLabel, Gauge>::default();
    let udp_uplink_sessions = Family::<UplinkLabel, Gauge>::default();
    for u in &s.uplinks {
        let l = UplinkLabel {
            uplink: u.name.clone(),
        };
        up.get_or_create(&l)
            .set(i64::from(u.state.carries_traffic()));
        if let Some(r) = u.rtt_ms {
            rtt.get_or_create(&l).set(r / 1000.0);
        }
        loss.get_or_create(&l).set(u.loss);
        tx.get_or_create(&l).inc_by(u.tx_bytes);
        rx.get_or_create(&l).inc_by(u.rx_bytes);
        subflows.get_or_create(&l).set(i64::from(u.subflows));
        changes.get_or_create(&l).inc_by(u.state_changes);
        udp_uplink_sessions
            .get_or_create(&l)
            .set(i64::from(u.udp_sessions));
        tunnelled
            .get_or_create(&l)
            .set(i64::from(u.path == "tunnel"));
    }
    conns
        .get_or_create(&KindLabel {
            kind: "mptcp".into(),
        })
        .set(s.connections.mptcp as i64);
    conns
        .get_or_create(&KindLabel {
            kind: "fallback".into(),
        })
        .set(s.connections.fallback as i64);
    fallback_total.inc_by(s.connections.fallback_total);
    stranded_total.inc_by(s.connections.stranded_total);
    lost_join.set(s.connections.lost_join as i64);
    lost_join_total.inc_by(s.connections.lost_join_total);
    blackhole.set(i64::from(s.blackhole.active));
    if !s.congestion.algorithm.is_empty() {
        congestion
            .get_or_create(&AlgorithmLabel {
                algorithm: s.congestion.algorithm.clone(),
            })
            .set(1);
    }
    if !s.congestion.initial_window_reason.is_empty() {
        let g = Gauge::<i64>::default();
        g.set(s.congestion.initial_window.map_or(0, i64::from));
        reg.register(
            "braid_initial_window_segments",
            "The congestion window accepted relay connections start with, in segments (0: the kernel's own)",
            g,
        );
    }
    reg.register(
        "braid_uplink_up",
        "1 while the uplink carries traffic (Up or Suspect)",
        up,
    );
    reg.register(
        "braid_uplink_rtt_seconds",
        "Smoothed probe round-trip time to the relay",
        rtt,
    );
    reg.register(
        "braid_uplink_loss_ratio",
        "Probe loss over the recent window",
        loss,
    );
    reg.register(
        "braid_uplink_tx_bytes",
        "Bytes sent on the uplink interface since braid started",
        tx,
    );
    reg.register(
        "braid_uplink_rx_bytes",
        "Bytes received on the uplink interface since braid started",
        rx,
    );
    reg.register(
        "braid_uplink_subflows",
        "Subflows of live relay connections on the uplink",
        subflows,
    );
    reg.register(
        "braid_uplink_state_changes",
        "Health state changes of the uplink",
        changes,
    );
    reg.register(
        "braid_uplink_tunnelled",
        "1 while the uplink's subflows go through the encrypted UDP tunnel (its path strips or resets MPTCP)",
        tunnelled,
    );
    reg.register(
        "braid_connections",
        "Live relayed connections by transport",
        conns,
    );
    reg.register(
        "braid_mptcp_fallback",
        "Relay connections that fell back to plain TCP",
        fallback_total,
    );
    reg.register(
        "braid_connections_stranded",
        "Relay connections reset because the kernel left them without a subflow",
        stranded_total,
    );
    reg.register(
        "braid_connections_lost_join",
        "Relay connections without the subflow of an uplink that is up (the kernel does not join it again)",
        lost_join,
    );
    reg.register(
        "braid_subflows_lost_join",
        "Subflows of uplinks that are up found missing from a relay connection, once per connection and uplink",
        lost_join_total,
    );
    reg.register(
        "braid_mptcp_blackhole_active",
        "1 while the kernel's MPTCP blackhole state disables MPTCP",
        blackhole,
    );
    register_tcp_mem(&mut reg, &s.tcp_mem);
    if let Some(p) = &s.warm_pool {
        register_pool(&mut reg, p);
    }
    if let Some(p) = &s.path_manager {
        register_path_manager(&mut reg, p);
    }
    reg.register(
        "braid_congestion_control",
        "1, labelled with the congestion control of the relay sockets",
        congestion,
    );
    if !s.uplinks.is_empty() {
        reg.register(
            "braid_uplink_udp_sessions",
            "Live UDP sessions riding the uplink",
            udp_uplink_sessions,
        );
    }
    register_udp(&mut reg, &s.udp);
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
}

/// The relay's path manager: what it held and released.
fn register_path_manager(reg: &mut Registry, p: &crate::status::model::PathManagerStatus) {
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    let active = Gauge::<i64>::default();
    active.set(i64::from(p.active));
    reg.register(
        "braid_path_manager_active",
        "1 while the relay holds joined subflows as backups until a connection is bulk",
        active,
    );
    reg.register(
        "braid_subflows_held",
        "Joined subflows held as backups at their arrival",
        counter(p.held_total),
    );
    reg.register(
        "braid_connections_bonded_bulk",
        "Connections whose joined subflows were released because they moved bond_after_kib",
        counter(p.bonded_bulk_total),
    );
    reg.register(
        "braid_connections_bonded_first_lost",
        "Connections whose joined subflows were released because their first subflow closed",
        counter(p.bonded_first_lost_total),
    );
    reg.register(
        "braid_subflows_closed_over_limit",
        "Joined subflows closed over the relay's max_joins",
        counter(p.closed_over_limit_total),
    );
}

/// The gateway's warm pool: its sizes, what it served, and why connections left it unused.
fn register_pool(reg: &mut Registry, p: &braid_proto::pool::PoolStats) {
    let gauge = |v: u32| {
        let g = Gauge::<i64>::default();
        g.set(i64::from(v));
        g
    };
    let counter = |v: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        c
    };
    reg.register(
        "braid_warm_pool_target",
        "Idle relay connections the warm pool wants now",
        gauge(p.target),
    );
    reg.register(
        "braid_warm_pool_idle",
        "Idle relay connections held by the warm pool",
        gauge(p.idle),
    );
    reg.register(
        "braid_warm_pool_warm",
        "Idle pool connections with a subflow on every healthy uplink",
        gauge(p.warm),
    );
    reg.register(
        "braid_warm_pool_hits",
        "LAN connections that got a pooled relay connection",
        counter(p.hits),
    );
    reg.register(
        "braid_warm_pool_misses",
        "LAN connections that opened their own relay connection",
        counter(p.misses),
    );
    let discarded = Family::<ReasonLabel, Counter>::default();
    for (reason, n) in [
        ("aged", p.retired),
        ("closed_by_relay", p.closed_by_relay),
        ("uplink_down", p.dropped_uplink_down),
        ("stripped", p.dropped_stripped),
        ("lost_join", p.dropped_lost_join),
    ] {
        discarded
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc_by(n);
    }
    reg.register(
        "braid_warm_pool_discarded",
        "Pool connections closed unused, by reason",
        discarded,
    );
}

/// The kernel's TCP memory: the counter and its limits in pages and the kernel log's MPTCP
/// warnings (each only when known), and 0/1 flags.
fn register_tcp_mem(reg: &mut Registry, t: &TcpMem) {
    let gauge = |v: Option<u64>| {
        v.map(|v| {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            g
        })
    };
    let flag = |on: bool| {
        let g = Gauge::<i64>::default();
        g.set(i64::from(on));
        g
    };
    let known = [
        (
            "braid_kernel_tcp_mem_pages",
            "Pages charged to TCP host-wide (mem in /proc/net/sockstat)",
            gauge(t.pages),
        ),
        (
            "braid_kernel_tcp_mem_pressure_pages",
            "net.ipv4.tcp_mem pressure threshold, pages",
            gauge(t.pressure_pages),
        ),
        (
            "braid_kernel_tcp_mem_max_pages",
            "net.ipv4.tcp_mem maximum, pages: past it new TCP connections fail",
            gauge(t.max_pages),
        ),
        (
            "braid_kernel_tcp_mem_socket_bound_pages",
            "The most the open TCP sockets could hold, pages",
            gauge(t.socket_bound_pages),
        ),
        (
            "braid_kernel_mptcp_warnings",
            "MPTCP inet_sock_destruct warnings in the kernel log since boot",
            gauge(t.mptcp_warnings),
        ),
    ];
    for (name, help, g) in known {
        if let Some(g) = g {
            reg.register(name, help, g);
        }
    }
    reg.register(
        "braid_kernel_tcp_mem_pressure",
        "1 while TCP memory is at or above the pressure threshold",
        flag(matches!(
            t.state,
            TcpMemState::Pressure | TcpMemState::Exhausted
        )),
    );
    reg.register(
        "braid_kernel_tcp_mem_exhausted",
        "1 while TCP memory is above tcp_mem's maximum: new TCP connections fail",
        flag(t.state == TcpMemState::Exhausted),
    );
    reg.register(
        "braid_kernel_tcp_mem_runaway",
        "1 while the TCP memory counter is above what the open sockets could hold (kernel accounting fault)",
        flag(t.runaway),
    );
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: String,
}

/// `braid_udp_*`: sessions, bytes each way, drops, and whether UDP rides inside TCP.
fn register_udp(reg: &mut Registry, u: &super::model::UdpStatus) {
    let sessions = Gauge::<i64>::default();
    sessions.set(u.sessions as i64);
    let total = Counter::<u64>::default();
    total.inc_by(u.sessions_total);
    let bytes = Family::<DirectionLabel, Counter>::default();
    for (dir, n) in [("up", u.up_bytes), ("down", u.down_bytes)] {
        bytes
            .get_or_create(&DirectionLabel {
                direction: dir.into(),
            })
            .inc_by(n);
    }
    let dropped = Counter::<u64>::default();
    dropped.inc_by(u.dropped);
    let over_tcp = Gauge::<i64>::default();
    over_tcp.set(i64::from(u.transport == super::model::UdpTransport::Tcp));
    reg.register("braid_udp_sessions", "Live UDP sessions", sessions);
    reg.register(
        "braid_udp_sessions_started",
        "UDP sessions since start",
        total,
    );
    reg.register(
        "braid_udp_bytes",
        "UDP payload bytes relayed, up (toward destinations) and down",
        bytes,
    );
    reg.register(
        "braid_udp_dropped",
        "UDP datagrams dropped: unauthentic, replayed, refused, over the session cap",
        dropped,
    );
    reg.register(
        "braid_udp_over_tcp",
        "1 while UDP rides inside the bonded TCP connection (UDP to the relay is blocked)",
        over_tcp,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::UplinkStatus;

    #[test]
    fn tcp_mem_runaway_is_rendered_with_counter_limits_and_flags() {
        let s = Status {
            tcp_mem: TcpMem {
                state: TcpMemState::Exhausted,
                pages: Some(5_800_000),
                pressure_pages: Some(383_866),
                max_pages: Some(575_796),
                socket_bound_pages: Some(61_440),
                runaway: true,
                mptcp_warnings: Some(1),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = render(&s);
        for m in [
            "braid_kernel_tcp_mem_pages 5800000",
            "braid_kernel_tcp_mem_pressure_pages 383866",
            "braid_kernel_tcp_mem_max_pages 575796",
            "braid_kernel_tcp_mem_socket_bound_pages 61440",
            "braid_kernel_mptcp_warnings 1",
            "braid_kernel_tcp_mem_pressure 1",
            "braid_kernel_tcp_mem_exhausted 1",
            "braid_kernel_tcp_mem_runaway 1",
        ] {
            assert!(t.contains(m), "missing {m}:\n{t}");
        }
    }

    #[test]
    fn warm_pool_is_rendered_on_the_gateway_only() {
        let s = Status {
            warm_pool: Some(braid_proto::pool::PoolStats {
                target: 2,
                idle: 1,
                warm: 1,
                hits: 9,
                misses: 4,
                retired: 3,
                dropped_stripped: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render(&s);
        for m in [
            "braid_warm_pool_target 2",
            "braid_warm_pool_idle 1",
            "braid_warm_pool_warm 1",
            "braid_warm_pool_hits_total 9",
            "braid_warm_pool_misses_total 4",
            "braid_warm_pool_discarded_total{reason=\"aged\"} 3",
            "braid_warm_pool_discarded_total{reason=\"uplink_down\"} 0",
            "braid_warm_pool_discarded_total{reason=\"stripped\"} 2",
        ] {
            assert!(t.contains(m), "missing {m}:\n{t}");
        }
        assert!(!render(&Status::default()).contains("braid_warm_pool"));
    }

    #[test]
    fn the_relay_path_manager_is_counted_when_it_reports() {
        let s = Status {
            path_manager: Some(crate::status::model::PathManagerStatus {
                active: true,
                held_total: 5,
                bonded_bulk_total: 2,
                bonded_first_lost_total: 1,
                closed_over_limit_total: 3,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render(&s);
        for m in [
            "braid_path_manager_active 1",
            "braid_subflows_held_total 5",
            "braid_connections_bonded_bulk_total 2",
            "braid_connections_bonded_first_lost_total 1",
            "braid_subflows_closed_over_limit_total 3",
        ] {
            assert!(t.contains(m), "missing {m}:\n{t}");
        }
        assert!(!render(&Status::default()).contains("braid_path_manager"));
    }

    #[test]
    fn tunnelled_uplink_is_one_and_a_direct_one_zero() {
        let up = |name: &str, path: &str| UplinkStatus {
            name: name.into(),
            path: path.into(),
            ..Default::default()
        };
        let s = Status {
            uplinks: vec![up("wifi", "direct"), up("5g", "tunnel")],
            ..Default::default()
        };
        let t = render(&s);
        assert!(t.contains("braid_uplink_tunnelled{uplink=\"5g\"} 1"), "{t}");
        assert!(
            t.contains("braid_uplink_tunnelled{uplink=\"wifi\"} 0"),
            "{t}"
        );
    }

    #[test]
    fn render_names_every_required_metric_with_help_and_type() {
        let s = Status {
            uplinks: vec![UplinkStatus {
                name: "wifi".into(),
                state: braid_proto::health::LinkState::Up,
                rtt_ms: Some(12.0),
                tx_bytes: 5,
                rx_bytes: 7,
                subflows: 2,
                ..Default::default()
            }],
            congestion: crate::status::model::Congestion {
                algorithm: "bbr".into(),
                ..Default::default()
            },
            ..Default::default()
        };
        let t = render(&s);
        for m in [
            "braid_uplink_up{uplink=\"wifi\"} 1",
            "braid_uplink_rtt_seconds{uplink=\"wifi\"} 0.012",
            "braid_uplink_loss_ratio{uplink=\"wifi\"} 0",
            "braid_uplink_tx_bytes_total{uplink=\"wifi\"} 5",
            "braid_uplink_rx_bytes_total{uplink=\"wifi\"} 7",
            "braid_uplink_subflows{uplink=\"wifi\"} 2",
            "braid_uplink_state_changes_total{uplink=\"wifi\"} 0",
            "braid_connections{kind=\"mptcp\"} 0",
            "braid_connections{kind=\"fallback\"} 0",
            "braid_mptcp_fallback_total 0",
            "braid_connections_stranded_total 0",
            "braid_connections_lost_join 0",
            "braid_subflows_lost_join_total 0",
            "braid_mptcp_blackhole_active 0",
            "braid_congestion_control{algorithm=\"bbr\"} 1",
            "braid_uplink_udp_sessions{uplink=\"wifi\"} 0",
            "braid_udp_sessions 0",
            "braid_udp_sessions_started_total 0",
            "braid_udp_bytes_total{direction=\"up\"} 0",
            "braid_udp_dropped_total 0",
            "braid_udp_over_tcp 0",
        ] {
            assert!(t.contains(m), "missing {m}:\n{t}");
        }
        assert!(
            !t.contains("braid_kernel_tcp_mem_pages"),
            "an unknown counter is left out:\n{t}"
        );
        assert!(
            t.contains("# HELP braid_uplink_up")
                && t.contains("# TYPE braid_uplink_tx_bytes counter"),
            "{t}"
        );
    }
}
