//! Gateway-side checks: kernel, applied state per uplink, reachability per uplink, the relay's
//! answer, UDP to the relay per uplink, MPTCP end to end (and who broke it), joins per uplink,
//! the blackhole state, TFO, congestion control.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_proto::control::{ControlResponse, ServerReport, CONTROL_HOST, CONTROL_PORT};
use braid_sys::mptcp::info::{mptcp_state, subflow_addrs, MptcpState};
use braid_sys::mptcp::pm::MptcpPm;
use braid_sys::netlink::Rtnl;
use braid_sys::sysctl::Procfs;
use shadowsocks::relay::socks5::Address;

use super::applied::Applied;
use super::check::{Check, Report, Status};
use super::kernel::{self, KernelRoots};
use crate::config::gateway::{GatewayConfig, Uplink};
use crate::gateway::dialer::{Dialer, RelayStream};
use crate::gateway::resolve;
use crate::gateway::running::{self, Running};
use crate::gateway::uplink::discover::{observe, Observed};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs every gateway check.
pub async fn checks(cfg: &GatewayConfig, roots: &KernelRoots) -> Report {
    let mut r = Report::default();
    let mptcp = kernel::kernel_mptcp(roots);
    let have_mptcp = mptcp.status == Status::Ok;
    r.checks.push(mptcp);
    r.checks.push(kernel::reboot_pending(roots));
    r.checks.push(kernel::mptcp_enabled(roots));
    r.checks.push(kernel::tcp_mem(roots));
    let relay = match resolve::relay(&cfg.server).await {
        Ok(a) => a,
        Err(e) => {
            r.checks.push(Check::fail(
                "server.reachable",
                format!("cannot resolve the relay {}", cfg.server),
                e.reason,
                "check `server` in gateway.toml and the gateway's DNS",
            ));
            return r;
        }
    };
    let (rtnl, pm) = match (Rtnl::connect(), MptcpPm::connect().await) {
        (Ok(a), Ok(b)) => (Some(a), Some(b)),
        (a, b) => {
            let why = [
                a.err().map(|e| e.to_string()),
                b.err().map(|e| e.to_string()),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
            r.checks.push(Check::warn(
                "netlink",
                "cannot read the kernel's routing or MPTCP state",
                why,
                "run braid doctor as root",
            ));
            (None, None)
        }
    };
    let gateway = running::detect(cfg, rtnl.as_ref()).await;
    let running = gateway.is_running();
    r.checks.push(limits(pm.as_ref(), cfg, running).await);

    let mut seen = Vec::new();
    let mut reaches = Vec::new();
    for u in &cfg.uplinks {
        let s = match &rtnl {
            Some(n) => observe(n, &u.interface, relay.ip()).await.ok().flatten(),
            None => None,
        };
        reaches.push(match s.as_ref().and_then(Observed::usable_addr) {
            Some(addr) => reach(u, addr, relay).await,
            None => Check::skip(
                format!("uplink.{}.reach", u.name),
                "the uplink has no usable address",
            ),
        });
        seen.push(s);
    }
    let any_reach = reaches.iter().any(|c| c.status == Status::Ok);
    let reachable = if any_reach {
        Check::ok(
            "server.reachable",
            format!("the relay {relay} accepts TCP connections"),
        )
        .with(
            "uplinks_reaching",
            reaches.iter().filter(|c| c.status == Status::Ok).count(),
        )
    } else {
        Check::fail("server.reachable", format!("no uplink reaches the relay {relay}"), "see the uplink.*.reach checks for each uplink's cause", "open the relay port in the VPS provider's firewall and on the VPS (ufw/nftables), and check that braid server runs")
    };
    let tcp_dialer = dialer(cfg, relay, false);
    let (relay_check, report) = if any_reach {
        relay_check(&tcp_dialer).await
    } else {
        (
            Check::skip("server.relay", "the relay is not reachable"),
            None,
        )
    };
    let relay_ok = matches!(relay_check.status, Status::Ok | Status::Warn);
    let mut udp_checks = Vec::new();
    for (u, s) in cfg.uplinks.iter().zip(&seen) {
        if let Some(addr) = s.as_ref().and_then(Observed::usable_addr) {
            udp_checks.push(super::udp::check(cfg, u, addr, relay, report.is_some()).await);
        }
    }
    for ((u, s), reach) in cfg.uplinks.iter().zip(&seen).zip(reaches) {
        r.checks.push(address_check(u, s.as_ref(), relay.ip()));
        if let (Some(n), Some(p), Some(s)) = (&rtnl, &pm, s.as_ref()) {
            // The gateway removes the endpoint of an uplink whose health probes through the
            // relay fail; that is its job, not a fault.
            let probes_can_work = reach.status == Status::Ok && relay_ok;
            let applied = Applied {
                u,
                relay: relay.ip(),
                seen: s,
                cfg,
                gateway: &gateway,
                probes_can_work,
            };
            r.checks.extend(applied.checks(n, p).await);
        }
        r.checks.push(kernel::rp_filter(
            roots,
            &format!("uplink.{}.rp_filter", u.name),
            &u.interface,
        ));
        r.checks.push(super::tunnel::check(u, &gateway));
        r.checks.push(reach);
    }
    r.checks.push(reachable);
    r.checks.push(relay_check);
    if let Some(rep) = &report {
        r.checks.push(relay_joins(cfg.uplinks.len(), rep.joins));
    }
    r.checks.extend(udp_checks);
    let limits_ok = r
        .checks
        .iter()
        .any(|c| c.id == "mptcp.limits" && c.status != Status::Fail);
    let mut blackhole = kernel::blackhole(roots);
    if have_mptcp && any_reach {
        let joins = if !relay_ok {
            Joins::Skip("the relay closes unauthenticated connections, so no subflow can stay up to be checked (see server.relay)")
        } else if !limits_ok {
            Joins::Skip("the MPTCP subflow limit allows no extra subflow (see mptcp.limits)")
        } else if !running {
            Joins::Skip("the gateway is not running, so no endpoint asks the kernel to join from this uplink")
        } else {
            Joins::Check(tunnel_addrs(cfg, &gateway))
        };
        if mptcp_checks(&mut r, cfg, relay, report.as_ref(), &seen, joins, roots).await {
            blackhole = Check::fail(
                "mptcp.blackhole",
                "the kernel's blackhole state is active: it sends new connections as plain TCP",
                "MPTCP SYNs were dropped on some path, so the kernel disabled MPTCP for every new connection in this namespace for net.mptcp.blackhole_timeout seconds",
                "find the path that drops MPTCP options (try each uplink alone), then wait out the timeout or set mptcp_blackhole_timeout_secs in gateway.toml",
            )
            .with("evidence", "doctor's own MPTCP connection went out as plain TCP and MPTcpExtMPCapableSYNTXDisabled rose");
        }
    } else {
        r.checks.push(Check::skip(
            "server.mptcp",
            if have_mptcp {
                "the relay is not reachable"
            } else {
                "this kernel has no MPTCP"
            },
        ));
    }
    r.checks.push(blackhole);
    r.checks
        .push(tfo_check(cfg, relay, any_reach && report.is_some(), roots).await);
    r.checks
        .push(super::congestion::check(&cfg.congestion, roots));
    r
}

/// `server.joins`: whether the relay takes a joined subflow per uplink beyond the first, with
/// room for one that comes back before the relay saw its old subflow close. A connection the
/// relay refuses a join never gets that uplink back, so too few joins cost bandwidth for good
/// and nothing else says why.
fn relay_joins(uplinks: usize, joins: Option<u32>) -> Check {
    const ID: &str = "server.joins";
    let need = uplinks.saturating_sub(1);
    let Some(n) = joins else {
        return Check::skip(
            ID,
            "the relay does not say how many joins it takes (braid older than max_joins, or no MPTCP there)",
        );
    };
    let fix = format!(
        "on the VPS: max_joins = {} or more in server.toml (the default is 8), then restart braid server; with bond_after_kib = 0, `ip mptcp limits set subflows {}`",
        need + 1,
        need + 1
    );
    let c = if (n as usize) < need {
        Check::fail(
            ID,
            format!("the relay takes {n} joined subflows per connection, but {uplinks} uplinks need {need}"),
            format!("the relay closes the joins over {n}: on every connection, {} uplink(s) never carry traffic", need - n as usize),
            fix,
        )
    } else if need > 0 && n as usize == need {
        Check::warn(
            ID,
            format!("the relay takes {n} joined subflows per connection, exactly what {uplinks} uplinks need"),
            "an uplink that comes back before the relay saw its old subflow close is refused its join on the connections that had one, and never carries them again",
            fix,
        )
    } else {
        Check::ok(
            ID,
            format!("the relay takes {n} joined subflows per connection ({uplinks} uplinks need {need})"),
        )
    };
    c.with("joins", n).with("needed", need as u64)
}

/// Each uplink's tunnel address, while the running gateway reports it tunnelled.
fn tunnel_addrs(cfg: &GatewayConfig, gateway: &Running) -> Vec<Option<IpAddr>> {
    cfg.uplinks
        .iter()
        .map(|u| {
            gateway
                .status()
                .and_then(|s| s.uplinks.iter().find(|x| x.name == u.name))
                .and_then(|x| x.tunnel.as_ref())
                .and_then(|t| t.address.parse().ok())
        })
        .collect()
}

/// Whether the per-uplink join checks can run, and each uplink's tunnel address while the
/// gateway reports it tunnelled (its joins come from there).
enum Joins {
    Check(Vec<Option<IpAddr>>),
    Skip(&'static str),
}

fn dialer(cfg: &GatewayConfig, relay: SocketAddr, mptcp: bool) -> Arc<Dialer> {
    let mut c = cfg.clone();
    c.mptcp = mptcp;
    c.connect_timeout = CONNECT_TIMEOUT;
    Dialer::new(&c, relay).expect("a config that parsed has a valid key")
}

fn address_check(u: &Uplink, s: Option<&Observed>, relay: IpAddr) -> Check {
    let id = format!("uplink.{}.address", u.name);
    match s {
        None => Check::fail(
            id,
            format!("interface {} does not exist", u.interface),
            "the interface named in [[uplink]] is missing (modem not attached, wrong name)",
            "check `interface` against `ip link`, or bring the modem up",
        ),
        Some(s) if !s.link_up => Check::fail(
            id,
            format!("interface {} is down", u.interface),
            "the link has no carrier or is administratively down",
            format!(
                "ip link set {} up; check the cable or the modem",
                u.interface
            ),
        ),
        Some(Observed { addr: None, .. }) => Check::fail(
            id,
            format!(
                "interface {} has no {} address",
                u.interface,
                if relay.is_ipv4() { "IPv4" } else { "IPv6" }
            ),
            "the uplink's DHCP lease or the modem connection is missing",
            "check the DHCP client or the modem for this interface",
        ),
        Some(s) => Check::ok(
            id,
            format!(
                "{} has {}",
                u.interface,
                s.addr.map(|a| a.to_string()).unwrap_or_default()
            ),
        )
        .with("ifindex", s.ifindex),
    }
}

async fn limits(pm: Option<&MptcpPm>, cfg: &GatewayConfig, running: bool) -> Check {
    let Some(pm) = pm else {
        return Check::skip("mptcp.limits", "the MPTCP path manager cannot be read");
    };
    if !running {
        return Check::skip(
            "mptcp.limits",
            format!(
                "{}; braid gateway raises the limits when it starts",
                Running::NOT_RUNNING
            ),
        );
    }
    match pm.limits().await {
        Ok(l) => {
            let need = cfg.uplinks.len().saturating_sub(1) as u32;
            let c = if l.subflows >= need {
                Check::ok(
                    "mptcp.limits",
                    format!("{l}: enough for {} uplink(s)", cfg.uplinks.len()),
                )
            } else {
                Check::fail(
                    "mptcp.limits",
                    format!("the MPTCP subflow limit is {}, but {} uplinks need {need} extra subflows", l.subflows, cfg.uplinks.len()),
                    "something lowered `ip mptcp limits` after braid set them; connections cannot use every uplink",
                    format!("ip mptcp limits set subflows {} add_addr_accepted {}, or restart braid gateway", cfg.uplinks.len(), cfg.uplinks.len()),
                )
            };
            c.with("subflows", l.subflows)
                .with("add_addr_accepted", l.add_addr_accepted)
        }
        Err(e) => Check::warn(
            "mptcp.limits",
            "cannot read the MPTCP limits",
            e.to_string(),
            "run braid doctor as root",
        ),
    }
}

/// A TCP connection to the relay bound to one uplink; tells a refused port, a silent drop and
/// no route apart.
async fn reach(u: &Uplink, addr: IpAddr, relay: SocketAddr) -> Check {
    let id = format!("uplink.{}.reach", u.name);
    let started = Instant::now();
    let r = async {
        let (sock, _, _) = braid_sys::socket::stream_socket(&relay, false)?;
        sock.bind_device(Some(u.interface.as_str().as_bytes()))?;
        sock.bind(&SocketAddr::new(addr, 0).into())?;
        let s = tokio::net::TcpSocket::from_std_stream(sock.into());
        tokio::time::timeout(CONNECT_TIMEOUT, s.connect(relay))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))?
    }
    .await;
    let ms = started.elapsed().as_millis() as u64;
    match r {
        Ok(s) => {
            let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
            Check::ok(
                id,
                format!("TCP to {relay} over {} connects in {ms} ms", u.interface),
            )
            .with("connect_ms", ms)
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            let (summary, cause, fix) = match e.raw_os_error() {
                Some(libc::ECONNREFUSED) => (
                    format!("the relay port {} is closed: the VPS answered with a reset", relay.port()),
                    "nothing listens on that port, or the VPS firewall rejects it".to_string(),
                    "start braid server (systemctl status braid-server) and check `listen`; if ufw/nftables rejects the port, allow it".to_string(),
                ),
                Some(libc::ENETUNREACH) | Some(libc::EHOSTUNREACH) => (
                    format!("no route to {relay} over {}", u.interface),
                    "the uplink has no usable next hop (no default route via it)".to_string(),
                    "check the uplink's gateway (DHCP, modem) and `ip route show dev IFACE`".to_string(),
                ),
                _ if e.kind() == std::io::ErrorKind::TimedOut => (
                    format!("connections to {relay} over {} are silently dropped", u.interface),
                    "a firewall drops the SYNs: the cloud provider's security group, ufw/nftables on the VPS, or a filter on this uplink".to_string(),
                    format!("allow TCP port {} in the provider's firewall and on the VPS (ufw allow {}/tcp)", relay.port(), relay.port()),
                ),
                _ => (format!("connecting to {relay} over {} failed: {e}", u.interface), "see the error".to_string(), "check the uplink and the relay".to_string()),
            };
            Check::fail(id, summary, cause, fix)
                .with("errno", errno)
                .with("elapsed_ms", ms)
        }
    }
}

async fn relay_check(d: &Dialer) -> (Check, Option<ServerReport>) {
    let started = Instant::now();
    let target = Address::DomainNameAddress(CONTROL_HOST.into(), CONTROL_PORT);
    let res = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let mut s = d.open(target, false).await.ok()?;
        hello(&mut s).await
    })
    .await
    .ok()
    .flatten();
    match res {
        Some(rep) => {
            let rtt = started.elapsed();
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
            let offset_ms = rep.time_unix_ms as i64 - (now - rtt.as_millis() as i64 / 2);
            let c = if rep.time_unix_ms == 0 || offset_ms.abs() < 10_000 {
                Check::ok("server.relay", format!("braid {} on Linux {} answered an authenticated request", rep.version, rep.kernel))
            } else {
                Check::warn(
                    "server.relay",
                    format!("the relay answered, but its clock differs from this one by {} s", offset_ms / 1000),
                    "Shadowsocks-2022 refuses requests whose timestamp is more than 30 s off; a little more drift breaks every connection",
                    "run NTP on both machines (timedatectl set-ntp true)",
                )
            };
            (c.with("clock_offset_ms", offset_ms).with("server_version", rep.version.clone()).with("server_kernel", rep.kernel.clone()), Some(rep))
        }
        None => (
            Check::fail(
                "server.relay",
                "the relay accepts TCP but gives no authenticated answer",
                "the key or method differs from the server's, the two clocks differ by more than 30 s (Shadowsocks-2022 rejects such requests), or the server is a stock Shadowsocks-2022 server, which cannot answer braid's control request",
                "compare `key` and `method` with server.toml (braid keygen prints a fresh key for both), and check the clocks (timedatectl on both machines)",
            ),
            None,
        ),
    }
}

/// The relay's report from a control `Hello`; `None` for no answer, any other answer, or a
/// frame that cannot be read (reported at once rather than waited on).
async fn hello(s: &mut RelayStream) -> Option<ServerReport> {
    let mut conn = crate::control::Connection::new(s);
    match conn.request(&crate::control::hello()).await.ok()? {
        ControlResponse::Report(r) => Some(r),
        _ => None,
    }
}

fn uplink_of(cfg: &GatewayConfig, seen: &[Option<Observed>], ip: IpAddr) -> Option<String> {
    cfg.uplinks
        .iter()
        .zip(seen)
        .find(|(_, s)| s.as_ref().and_then(|s| s.addr) == Some(ip))
        .map(|(u, _)| u.name.clone())
}

/// `server.mptcp` and `uplink.*.join` from one MPTCP control connection. Returns true when the
/// kernel's blackhole state turned doctor's own connection into plain TCP.
async fn mptcp_checks(
    r: &mut Report,
    cfg: &GatewayConfig,
    relay: SocketAddr,
    braid: Option<&ServerReport>,
    seen: &[Option<Observed>],
    joins: Joins,
    roots: &KernelRoots,
) -> bool {
    let procfs = Procfs::at(&roots.proc);
    let disabled_before = procfs
        .net_counter("MPTcpExtMPCapableSYNTXDisabled")
        .unwrap_or(0);
    let d = dialer(cfg, relay, true);
    let target = Address::DomainNameAddress(CONTROL_HOST.into(), CONTROL_PORT);
    let Ok(Ok(mut s)) = tokio::time::timeout(CONNECT_TIMEOUT, d.open(target, false)).await else {
        r.checks.push(Check::fail(
            "server.mptcp",
            "an MPTCP connection to the relay could not be opened",
            "see server.reachable",
            "fix reachability first",
        ));
        return false;
    };
    let first = hello(&mut s).await;
    let state = mptcp_state(s.get_ref());
    let local = s
        .get_ref()
        .local_addr()
        .ok()
        .map(|a| braid_sys::socket::normalize(a).ip());
    let first_uplink = local
        .and_then(|ip| uplink_of(cfg, seen, ip))
        .unwrap_or_else(|| "the main route's uplink".into());
    let server_enabled = braid.and_then(|b| b.sysctls.get("net.mptcp.enabled").cloned());
    match state {
        MptcpState::Mptcp { subflows } => {
            r.checks.push(
                Check::ok(
                    "server.mptcp",
                    format!("the relay speaks MPTCP (first subflow over {first_uplink})"),
                )
                .with("subflows", subflows),
            );
        }
        _ => {
            let disabled_now = procfs
                .net_counter("MPTcpExtMPCapableSYNTXDisabled")
                .unwrap_or(0);
            let seen_by_server = first.as_ref().or(braid).map(|b| b.connection.transport);
            let blackholed = disabled_now > disabled_before;
            let c = if blackholed {
                Check::warn("server.mptcp", "this gateway's kernel sent the connection as plain TCP", "the kernel's MPTCP blackhole state is active (see mptcp.blackhole); the relay itself was not tested", "see mptcp.blackhole")
            } else if server_enabled.as_deref() == Some("0") {
                Check::fail(
                    "server.mptcp",
                    "the server does not speak MPTCP: connections fall back to plain TCP and only one uplink carries traffic",
                    "net.mptcp.enabled = 0 on the relay's kernel",
                    "on the VPS: sysctl -w net.mptcp.enabled=1 (persist it in /etc/sysctl.d/), then restart braid server",
                )
            } else if braid.is_some() {
                Check::fail(
                    "server.mptcp",
                    format!("connections fall back to plain TCP: a middlebox strips the MPTCP option on the first path ({first_uplink})"),
                    format!("the relay speaks MPTCP (net.mptcp.enabled = 1 there) but received this connection as {}; something between this gateway and the VPS removed the MP_CAPABLE option", seen_by_server.map_or_else(|| "plain TCP".to_string(), |t| t.to_string())),
                    format!("make another uplink the main route, tunnel {first_uplink} (MPTCP over a VPN), or ask that ISP"),
                )
            } else {
                Check::warn(
                    "server.mptcp",
                    "connections fall back to plain TCP",
                    "the relay is not braid (or did not answer), so whether the server lacks MPTCP or a middlebox strips it cannot be told apart",
                    "run braid server on the VPS, or check `sysctl net.mptcp.enabled` there",
                )
            };
            r.checks.push(c.with(
                "first_path_local",
                local.map(|a| a.to_string()).unwrap_or_default(),
            ));
            for u in &cfg.uplinks {
                r.checks.push(Check::skip(
                    format!("uplink.{}.join", u.name),
                    "no MPTCP connection to join",
                ));
            }
            return blackholed;
        }
    }
    let tunnels = match joins {
        Joins::Skip(why) => {
            for u in &cfg.uplinks {
                r.checks
                    .push(Check::skip(format!("uplink.{}.join", u.name), why));
            }
            return false;
        }
        Joins::Check(t) => t,
    };
    // Give the path manager time to open a subflow per endpoint.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let subflows = subflow_addrs(s.get_ref()).unwrap_or_default();
    let locals: Vec<IpAddr> = subflows
        .iter()
        .map(|(l, _)| braid_sys::socket::normalize(*l).ip())
        .collect();
    for ((u, sn), tun) in cfg.uplinks.iter().zip(seen).zip(&tunnels) {
        let id = format!("uplink.{}.join", u.name);
        if let Some(t) = tun.filter(|t| locals.contains(t)) {
            r.checks.push(Check::ok(
                id,
                format!("an MP_JOIN subflow through braid's tunnel from {t} is established"),
            ));
            continue;
        }
        let Some(addr) = sn.as_ref().and_then(Observed::usable_addr) else {
            r.checks
                .push(Check::skip(id, "the uplink has no usable address"));
            continue;
        };
        let c = if Some(addr) == local {
            Check::ok(
                id,
                format!("{} carries the connection's first subflow", u.interface),
            )
        } else if locals.contains(&addr) {
            Check::ok(id, format!("an MP_JOIN subflow from {addr} is established"))
        } else if r
            .checks
            .iter()
            .any(|c| c.id == format!("uplink.{}.endpoint", u.name) && c.status != Status::Ok)
        {
            Check::skip(
                id,
                "the uplink has no MPTCP endpoint (see its endpoint check)",
            )
        } else {
            Check::fail(
                id,
                format!("no subflow joined over {} within 1.5 s", u.interface),
                format!("the MP_JOIN from {addr} was stripped or reset on {}'s path (a middlebox that removes MPTCP options)", u.name),
                format!("use {} as a backup uplink, tunnel it (MPTCP over a VPN), or ask that ISP", u.name),
            )
        };
        let c = c
            .with(
                "subflow_locals",
                locals.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            )
            .with(
                "MPJoinSynTx",
                procfs.net_counter("MPTcpExtMPJoinSynTx").unwrap_or(0),
            )
            .with(
                "MPJoinSynAckRx",
                procfs.net_counter("MPTcpExtMPJoinSynAckRx").unwrap_or(0),
            );
        r.checks.push(c);
    }
    false
}

async fn tfo_check(
    cfg: &GatewayConfig,
    relay: SocketAddr,
    braid: bool,
    roots: &KernelRoots,
) -> Check {
    use braid_proto::tfo::{decide, Policy};
    let policy = cfg.fast_open;
    if policy == Policy::Off {
        return Check::skip("tfo", "fast_open = \"off\" in gateway.toml");
    }
    let mut facts =
        crate::fast_open::client_facts(relay, cfg.mptcp, &roots.procfs(), &roots.running());
    if decide(policy, &facts).is_none() && braid {
        let d = dialer(cfg, relay, cfg.mptcp);
        crate::gateway::tfo_probe::probe_relay(&d, &mut facts).await;
    }
    let d = decide(policy, &facts);
    let evidence = |c: Check| {
        c.with("kernel", facts.kernel.clone())
            .with("tcp_fastopen", facts.sysctl_value)
            .with("setsockopt", format!("{:?}", facts.setsockopt))
            .with(
                "exchanges",
                format!("baseline {:?}; tfo {:?}", facts.baseline, facts.tfo),
            )
    };
    match d {
        Some(d) if d.enabled => evidence(Check::ok("tfo", d.reason)),
        Some(d) if d.fatal => evidence(Check::fail("tfo", "fast_open = \"on\", but TCP Fast Open cannot work", d.reason, "set fast_open = \"auto\" (braid then says once what it gave up), or fix the cause above")),
        Some(d) => evidence(Check::warn("tfo", "TCP Fast Open is not used", d.reason, "nothing is broken: braid runs without TFO; to gain one round trip per connection, fix the cause above")),
        None => evidence(Check::skip("tfo", "the relay is not a braid relay, so TFO cannot be checked end to end")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_joins_are_judged_against_the_uplinks() {
        let status = |uplinks, joins| relay_joins(uplinks, joins).status;
        assert_eq!(status(4, Some(2)), Status::Fail);
        assert_eq!(status(3, Some(2)), Status::Warn);
        assert_eq!(status(2, Some(8)), Status::Ok);
        assert_eq!(status(1, Some(0)), Status::Ok);
        assert_eq!(status(4, None), Status::Skip);
        let c = relay_joins(4, Some(2));
        assert!(c.fix.contains("max_joins = 4"), "{}", c.fix);
        assert!(
            c.cause.contains("1 uplink(s) never carry traffic"),
            "{}",
            c.cause
        );
    }
}
