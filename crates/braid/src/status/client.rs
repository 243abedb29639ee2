//! `braid status`: reads a daemon's HTTP status API and prints it, as a table, as JSON, or refreshed
//! in place every second (`--watch`, like top).

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::model::Status;
use crate::config::{side_of, Side};

/// The control address a config file names, and its `control_token`.
pub fn control_of(path: &Path) -> Result<(SocketAddr, Option<String>), String> {
    let (addr, access) = match side_of(path)? {
        Side::Gateway => {
            let c = crate::config::gateway::GatewayConfig::load(path).map_err(|e| e.to_string())?;
            (c.control, c.control_access)
        }
        Side::Server => {
            let c = crate::config::server::ServerConfig::load(path).map_err(|e| e.to_string())?;
            (c.control, c.control_access)
        }
    };
    let token = access.token.map(|t| t.as_str().to_string());
    addr.map(|a| (a, token)).ok_or_else(|| format!("{}: control = \"off\", so the daemon serves no status; fix: set control = \"127.0.0.1:9090\" and restart it", path.display()))
}

/// One GET of `/api/status`, with the API's token if it has one.
pub async fn fetch(addr: SocketAddr, token: Option<&str>) -> Result<Status, String> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let work = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot reach the HTTP status API at {addr}: {e}; fix: is the daemon running, and is `control` the same in its config?"))?;
        s.write_all(format!("GET /api/status HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&buf);
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or("the HTTP status API sent no HTTP response")?;
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!(
                "the HTTP status API answered: {}",
                head.lines().next().unwrap_or("")
            ));
        }
        serde_json::from_str(body).map_err(|e| format!("the HTTP status API sent a status this braid cannot read ({e}); fix: use the same braid version on both"))
    };
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| format!("the HTTP status API at {addr} did not answer within 5 s"))?
}

fn mbit(bps: f64) -> String {
    format!("{:.1}", bps / 1e6)
}

fn bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1} {}", U[i])
}

/// The human form.
pub fn render_text(s: &Status) -> String {
    let mut o = format!("braid {} ({}) on Linux {}\n", s.version, s.role, s.kernel);
    if !s.uplinks.is_empty() {
        o += &format!(
            "\n{:<10} {:<11} {:<16} {:>8} {:>6} {:>9} {:>9} {:>10} {:>10} {:>4}\n",
            "UPLINK",
            "STATE",
            "ADDRESS",
            "RTT ms",
            "LOSS",
            "DOWN Mb/s",
            "UP Mb/s",
            "RX",
            "TX",
            "SUBF"
        );
        for u in &s.uplinks {
            let state = if u.backup {
                format!("{} (backup)", u.state)
            } else {
                u.state.to_string()
            };
            let state = match u.path.as_str() {
                "tunnel" => format!("{state}/tun"),
                "out" => format!("{state}/out"),
                _ => state,
            };
            o += &format!(
                "{:<10} {:<11} {:<16} {:>8} {:>5.1}% {:>9} {:>9} {:>10} {:>10} {:>4}\n",
                u.name,
                state,
                u.address.as_deref().unwrap_or("-"),
                u.rtt_ms
                    .map(|r| format!("{r:.1}"))
                    .unwrap_or_else(|| "-".into()),
                u.loss * 100.0,
                mbit(u.rx_bps),
                mbit(u.tx_bps),
                bytes(u.rx_bytes),
                bytes(u.tx_bytes),
                u.subflows
            );
        }
        for u in s.uplinks.iter().filter(|u| u.path != "direct") {
            let via = u
                .tunnel
                .as_ref()
                .map(|t| format!(" via {} {}", t.interface, t.address))
                .unwrap_or_default();
            o += &format!("  {} {}{via}: {}\n", u.name, u.path, u.path_reason);
        }
        o += &format!(
            "{:<10} {:<11} {:<16} {:>8} {:>6} {:>9} {:>9}\n",
            "bonded",
            "",
            "",
            "",
            "",
            mbit(s.total.rx_bps),
            mbit(s.total.tx_bps)
        );
    }
    let c = &s.connections;
    o += &format!(
        "\nconnections: {} MPTCP, {} fallen back to TCP, {} plain TCP ({} fallbacks since start{})\n",
        c.mptcp,
        c.fallback,
        c.tcp,
        c.fallback_total,
        if c.stranded_total > 0 {
            format!(
                "; {} reset with no subflow left",
                c.stranded_total
            )
        } else {
            String::new()
        }
    );
    if c.lost_join > 0 {
        o += &format!(
            "  {} without the subflow of an uplink that is up (the kernel does not join it again; \
             they run without that uplink's share; {} such subflows lost since start)\n",
            c.lost_join, c.lost_join_total
        );
    }
    for x in c.list.iter().take(20) {
        let per: Vec<String> = x
            .subflows_per_uplink
            .iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        o += &format!(
            "  {:<40} {:<8} {} subflow(s) {} {:.0} s\n",
            x.target,
            x.transport,
            x.subflows,
            per.join(" "),
            x.age_secs
        );
    }
    o += &udp_text(&s.udp);
    o += &format!(
        "TCP Fast Open: {} ({})\n",
        if s.tfo.enabled { "on" } else { "off" },
        s.tfo.reason
    );
    o += &format!(
        "congestion control: {} ({})\n",
        s.congestion.algorithm, s.congestion.reason
    );
    if !s.congestion.initial_window_reason.is_empty() {
        o += &format!(
            "initial congestion window: {} ({})\n",
            s.congestion
                .initial_window
                .map_or("the kernel's".to_string(), |n| format!("{n} segments")),
            s.congestion.initial_window_reason
        );
    }
    o += &format!(
        "MPTCP blackhole: {} (MPTcpExtBlackhole={}{})\n",
        if s.blackhole.active {
            "ACTIVE: new connections use plain TCP"
        } else {
            "not active"
        },
        s.blackhole.count,
        s.blackhole
            .timeout_secs
            .map(|t| format!(", timeout {t} s"))
            .unwrap_or_default()
    );
    if let Some(p) = &s.warm_pool {
        o += &pool_line(p);
    }
    if let Some(p) = &s.path_manager {
        o += &path_manager_line(p);
    }
    o += &format!("TCP memory: {}: {}\n", s.tcp_mem.state, s.tcp_mem.reason);
    if let Some(r) = &s.relay {
        o += &format!(
            "relay: {} braid {} on Linux {}\n",
            r.address, r.version, r.kernel
        );
    }
    o
}

/// The UDP lines: how UDP travels, the session counts and bytes, and the busiest sessions.
fn udp_text(u: &crate::status::model::UdpStatus) -> String {
    use crate::status::model::UdpTransport;
    if u.transport == UdpTransport::Off {
        return "UDP: not relayed\n".into();
    }
    let mut o = format!(
        "UDP: {}{} — {} session(s), {} since start, {} up, {} down, {} dropped ({})\n",
        u.transport,
        u.uplink
            .as_deref()
            .map(|x| format!(" over {x}"))
            .unwrap_or_default(),
        u.sessions,
        u.sessions_total,
        bytes(u.up_bytes),
        bytes(u.down_bytes),
        u.dropped,
        u.reason
    );
    for x in u.list.iter().take(20) {
        o += &format!(
            "  {:<22} → {:<28} {:<8} {:>10} up {:>10} down {:.0} s\n",
            x.client,
            x.target,
            x.uplink.as_deref().unwrap_or("-"),
            bytes(x.up_bytes),
            bytes(x.down_bytes),
            x.age_secs
        );
    }
    o
}

/// One line on the warm pool: its size, what it served, and why it has that size.
fn pool_line(p: &braid_proto::pool::PoolStats) -> String {
    let parked = if p.parked {
        ", parked on the relay"
    } else {
        ""
    };
    // Why connections left unused, the unusual reasons first; only those that happened.
    let dropped: Vec<String> = [
        (p.dropped_stripped, "on a path stripping MPTCP"),
        (p.dropped_lost_join, "without an Up uplink's subflow"),
        (p.dropped_uplink_down, "on a Down uplink"),
        (p.closed_by_relay, "closed by the relay"),
        (p.retired, "aged"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, why)| format!("{n} {why}"))
    .collect();
    let dropped = if dropped.is_empty() {
        String::new()
    } else {
        format!("; dropped unused: {}", dropped.join(", "))
    };
    format!(
        "warm pool: {} idle ({} warm{parked}) of {} wanted; {} hits, {} misses{dropped}; {}\n",
        p.idle, p.warm, p.target, p.hits, p.misses, p.reason
    )
}

/// Entry point of `braid status` (on the CLI's runtime).
pub async fn main(addr: SocketAddr, token: Option<String>, json: bool, watch: bool) -> ExitCode {
    loop {
        match fetch(addr, token.as_deref()).await {
            Ok(s) => {
                let out = if json {
                    serde_json::to_string_pretty(&s).unwrap_or_default()
                } else {
                    render_text(&s)
                };
                if watch {
                    print!("\x1b[H\x1b[2J{out}");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                } else {
                    println!("{}", out.trim_end());
                    return ExitCode::SUCCESS;
                }
            }
            Err(e) => {
                eprintln!("braid status: {e}");
                if !watch {
                    return ExitCode::from(1);
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The relay's path manager, one line.
fn path_manager_line(p: &crate::status::model::PathManagerStatus) -> String {
    if !p.active {
        return format!("path manager: in-kernel ({})\n", p.reason);
    }
    format!(
        "path manager: joins held until {} KiB one way; {} connection(s) followed, {} join(s) held, {} bonded as bulk, {} after losing their first subflow, {} join(s) over the limit closed, {} event overrun(s)\n",
        p.bond_after_bytes.unwrap_or_default() / 1024,
        p.connections,
        p.held_total,
        p.bonded_bulk_total,
        p.bonded_first_lost_total,
        p.closed_over_limit_total,
        p.overruns_total
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::model::UplinkStatus;

    #[test]
    fn text_shows_each_uplink_and_the_bonded_total() {
        let s = Status {
            role: crate::status::model::Role::Gateway,
            uplinks: vec![
                UplinkStatus {
                    name: "wifi".into(),
                    state: braid_proto::health::LinkState::Up,
                    rx_bps: 38e6,
                    rx_bytes: 1_500_000,
                    ..Default::default()
                },
                UplinkStatus {
                    name: "5g".into(),
                    state: braid_proto::health::LinkState::Down,
                    backup: true,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let t = render_text(&s);
        assert!(
            t.contains("wifi") && t.contains("38.0") && t.contains("1.5 MB"),
            "{t}"
        );
        assert!(t.contains("Down (backup)"), "{t}");
        assert!(t.contains("bonded"), "{t}");
        assert!(t.contains("UDP: not relayed"), "{t}");
    }

    #[test]
    fn text_shows_udp_sessions_with_their_uplink() {
        use crate::status::model::{UdpSessionStatus, UdpStatus, UdpTransport};
        let s = Status {
            udp: UdpStatus {
                transport: UdpTransport::Udp,
                reason: "Shadowsocks-2022 UDP".into(),
                uplink: Some("wifi".into()),
                sessions: 1,
                sessions_total: 3,
                up_bytes: 2_400_000,
                list: vec![UdpSessionStatus {
                    client: "10.9.0.2:40000".into(),
                    target: "1.1.1.1:53".into(),
                    uplink: Some("wifi".into()),
                    ..Default::default()
                }],
                ..Default::default()
            },
            ..Default::default()
        };
        let t = render_text(&s);
        assert!(
            t.contains("UDP: udp over wifi — 1 session(s), 3 since start, 2.4 MB up"),
            "{t}"
        );
        assert!(
            t.contains("10.9.0.2:40000") && t.contains("1.1.1.1:53"),
            "{t}"
        );
    }

    #[test]
    fn text_shows_the_warm_pool_when_there_is_one() {
        let s = Status {
            warm_pool: Some(braid_proto::pool::PoolStats {
                target: 2,
                idle: 2,
                warm: 1,
                hits: 14,
                misses: 3,
                reason: "0.40 LAN connections/s recently".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render_text(&s);
        assert!(
            t.contains("warm pool: 2 idle (1 warm) of 2 wanted; 14 hits, 3 misses; 0.40 LAN"),
            "{t}"
        );
        assert!(!render_text(&Status::default()).contains("warm pool"));
        let s = Status {
            warm_pool: Some(braid_proto::pool::PoolStats {
                hits: 1,
                retired: 4,
                dropped_stripped: 2,
                reason: "idle".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render_text(&s);
        assert!(
            t.contains(
                "1 hits, 0 misses; dropped unused: 2 on a path stripping MPTCP, 4 aged; idle"
            ),
            "{t}"
        );
    }

    #[test]
    fn text_says_what_the_relay_path_manager_did_or_why_it_is_off() {
        let on = Status {
            path_manager: Some(crate::status::model::PathManagerStatus {
                active: true,
                bond_after_bytes: Some(128 * 1024),
                connections: 3,
                held_total: 7,
                bonded_bulk_total: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render_text(&on);
        assert!(
            t.contains("path manager: joins held until 128 KiB one way; 3 connection(s) followed, 7 join(s) held, 2 bonded as bulk"),
            "{t}"
        );
        let off = Status {
            path_manager: Some(crate::server::path_manager::inactive(
                "bond_after_kib = 0".into(),
            )),
            ..Default::default()
        };
        assert!(
            render_text(&off).contains("path manager: in-kernel (bond_after_kib = 0)"),
            "{}",
            render_text(&off)
        );
    }

    #[test]
    fn text_names_the_congestion_control_and_why() {
        let s = Status {
            congestion: crate::status::model::Congestion {
                algorithm: "bbr".into(),
                fell_back: false,
                reason: "congestion = \"bbr\" on braid's relay sockets".into(),
                initial_window: Some(32),
                initial_window_reason: "initial_window = 32 on accepted relay connections".into(),
            },
            ..Default::default()
        };
        let t = render_text(&s);
        assert!(
            t.contains("congestion control: bbr (congestion = \"bbr\""),
            "{t}"
        );
        assert!(
            t.contains("initial congestion window: 32 segments (initial_window = 32"),
            "{t}"
        );
        let gateway = Status {
            congestion: crate::status::model::Congestion {
                initial_window_reason: String::new(),
                ..s.congestion.clone()
            },
            ..Default::default()
        };
        assert!(!render_text(&gateway).contains("initial congestion window"));
    }
}
