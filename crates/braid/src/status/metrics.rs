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
    let blackhole = Gauge::<i64>::default();
    let congestion = Family::<AlgorithmLabel, Gauge>::default();
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
    blackhole.set(i64::from(s.blackhole.active));
    if !s.congestion.algorithm.is_empty() {
        congestion
            .get_or_create(&AlgorithmLabel {
                algorithm: s.congestion.algorithm.clone(),
            })
            .set(1);
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
        "braid_mptcp_blackhole_active",
        "1 while the kernel's MPTCP blackhole state disables MPTCP",
        blackhole,
    );
    register_tcp_mem(&mut reg, &s.tcp_mem);
    reg.register(
        "braid_congestion_control",
        "1, labelled with the congestion control of the relay sockets",
        congestion,
    );
    let mut out = String::new();
    let _ = encode(&mut out, &reg);
    out
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
            "braid_mptcp_blackhole_active 0",
            "braid_congestion_control{algorithm=\"bbr\"} 1",
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
