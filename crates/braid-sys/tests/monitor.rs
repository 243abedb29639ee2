//! `Monitor` against the real kernel, each test in its own anonymous network
//! namespace (never the host's): every expected event must arrive within 1 s
//! of the change that causes it.

mod common;

use common::in_netns_async;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use braid_sys::address::IfAddr;
use braid_sys::monitor::{KernelEvent, Monitor};
use braid_sys::netlink::Rtnl;
use braid_sys::route::RouteSpec;
use rtnetlink::{LinkUnspec, LinkVeth};
use tokio::time::{timeout_at, Instant};

/// The correctness bound of the gateway: it must react within 1 s.
const BOUND: Duration = Duration::from_secs(1);
const OURS: u8 = 250;

/// Waits for the first event matching `want`, skipping others; panics (with
/// everything seen) if none arrives within [`BOUND`].
async fn expect(
    monitor: &mut Monitor,
    what: &str,
    want: impl Fn(&KernelEvent) -> bool,
) -> KernelEvent {
    let deadline = Instant::now() + BOUND;
    let mut seen = Vec::new();
    loop {
        match timeout_at(deadline, monitor.next()).await {
            Ok(Some(event)) if want(&event) => return event,
            Ok(Some(event)) => seen.push(event),
            Ok(None) => panic!(
                "monitor ended while waiting for {what}; saw {}",
                summary(&seen)
            ),
            Err(_) => panic!("no {what} within {BOUND:?}; saw {}", summary(&seen)),
        }
    }
}

/// The events seen, at most the last 20 of them.
fn summary(seen: &[KernelEvent]) -> String {
    let overruns = seen.iter().filter(|e| **e == KernelEvent::Overrun).count();
    let last = &seen[seen.len().saturating_sub(20)..];
    format!("{} events ({overruns} overruns), last {last:?}", seen.len())
}

/// Sets interface `index` administratively up or down.
async fn set_link(rtnl: &Rtnl, index: u32, up: bool) {
    let link = LinkUnspec::new_with_index(index);
    let link = if up { link.up() } else { link.down() };
    rtnl.handle()
        .link()
        .set(link.build())
        .execute()
        .await
        .expect("set link up/down");
}

/// Creates veth `name` with peer `{name}p` (this kernel has no dummy driver);
/// returns both indexes.
async fn add_veth(rtnl: &Rtnl, name: &str) -> (u32, u32) {
    let peer = format!("{name}p");
    rtnl.handle()
        .link()
        .add(LinkVeth::new(name, &peer).build())
        .execute()
        .await
        .expect("add veth pair");
    let index = rtnl.link_index(name).await.unwrap().expect("index");
    let peer_index = rtnl.link_index(&peer).await.unwrap().expect("peer");
    (index, peer_index)
}

/// A veth pair with both ends up and carrier settled; returns both indexes.
async fn veth_up(rtnl: &Rtnl, name: &str) -> (u32, u32) {
    let (index, peer) = add_veth(rtnl, name).await;
    set_link(rtnl, index, true).await;
    set_link(rtnl, peer, true).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rtnl.link_is_up(index).await.unwrap() {
        assert!(Instant::now() < deadline, "{name} never came up");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (index, peer)
}

fn ifaddr(s: &str) -> IfAddr {
    let (a, l) = s.split_once('/').unwrap();
    IfAddr {
        addr: a.parse().unwrap(),
        prefix_len: l.parse().unwrap(),
    }
}

fn ipa(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn onlink_route(table: u32, dst: &str, len: u8, oif: u32) -> RouteSpec {
    RouteSpec {
        table,
        dst: ipa(dst),
        dst_len: len,
        gateway: None,
        oif,
        src: None,
        protocol: OURS,
    }
}

fn is_link(ifindex: u32, up: bool, removed: bool) -> impl Fn(&KernelEvent) -> bool {
    move |e| {
        matches!(e, KernelEvent::Link { ifindex: i, up: u, removed: r, .. }
            if *i == ifindex && *u == up && *r == removed)
    }
}

fn is_address(ifindex: u32, addr: IfAddr, removed: bool) -> impl Fn(&KernelEvent) -> bool {
    move |e| {
        *e == KernelEvent::Address {
            ifindex,
            addr: addr.addr,
            prefix_len: addr.prefix_len,
            removed,
        }
    }
}

fn is_route(table: u32, oif: u32, removed: bool) -> impl Fn(&KernelEvent) -> bool {
    move |e| {
        *e == KernelEvent::Route {
            table,
            oif: Some(oif),
            removed,
        }
    }
}

#[test]
fn subscribe_outside_runtime_is_an_error() {
    assert!(matches!(
        Monitor::subscribe(),
        Err(braid_sys::netlink::NetlinkError::NoRuntime)
    ));
}

#[test]
fn link_set_down_then_up_reports_down_then_up() {
    in_netns_async("link_set_down_then_up_reports_down_then_up", || async {
        let rtnl = Rtnl::connect().unwrap();
        let (wan, _) = veth_up(&rtnl, "wan0").await;
        let mut monitor = Monitor::subscribe().unwrap();

        set_link(&rtnl, wan, false).await;
        let down = expect(&mut monitor, "Link{up:false}", is_link(wan, false, false)).await;
        assert!(
            matches!(&down, KernelEvent::Link { name: Some(n), .. } if n == "wan0"),
            "{down:?}"
        );

        set_link(&rtnl, wan, true).await;
        expect(&mut monitor, "Link{up:true}", is_link(wan, true, false)).await;
    });
}

#[test]
fn peer_down_loses_carrier_reports_down() {
    in_netns_async("peer_down_loses_carrier_reports_down", || async {
        let rtnl = Rtnl::connect().unwrap();
        let (wan, peer) = veth_up(&rtnl, "wan0").await;
        let mut monitor = Monitor::subscribe().unwrap();

        // wan0 stays administratively up; only its carrier goes.
        set_link(&rtnl, peer, false).await;
        expect(
            &mut monitor,
            "Link{up:false} on carrier loss",
            is_link(wan, false, false),
        )
        .await;

        set_link(&rtnl, peer, true).await;
        expect(
            &mut monitor,
            "Link{up:true} on carrier",
            is_link(wan, true, false),
        )
        .await;
    });
}

#[test]
fn address_added_then_removed_reports_both() {
    in_netns_async("address_added_then_removed_reports_both", || async {
        let rtnl = Rtnl::connect().unwrap();
        let (wan, _) = veth_up(&rtnl, "wan0").await;
        let mut monitor = Monitor::subscribe().unwrap();

        for a in ["192.0.2.10/24", "2001:db8::10/64"] {
            let addr = ifaddr(a);
            rtnl.ensure_address(wan, addr).await.unwrap();
            expect(
                &mut monitor,
                &format!("Address {a} added"),
                is_address(wan, addr, false),
            )
            .await;
            assert!(rtnl.delete_address(wan, addr).await.unwrap());
            expect(
                &mut monitor,
                &format!("Address {a} removed"),
                is_address(wan, addr, true),
            )
            .await;
        }
    });
}

#[test]
fn dhcp_style_address_change_reports_old_removed_and_new_added() {
    in_netns_async(
        "dhcp_style_address_change_reports_old_removed_and_new_added",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let (wan, _) = veth_up(&rtnl, "wan0").await;
            let old = ifaddr("198.51.100.7/24");
            let new = ifaddr("203.0.113.9/24");
            rtnl.ensure_address(wan, old).await.unwrap();
            let mut monitor = Monitor::subscribe().unwrap();

            rtnl.ensure_address(wan, new).await.unwrap();
            rtnl.delete_address(wan, old).await.unwrap();
            expect(
                &mut monitor,
                "new address added",
                is_address(wan, new, false),
            )
            .await;
            expect(
                &mut monitor,
                "old address removed",
                is_address(wan, old, true),
            )
            .await;
        },
    );
}

#[test]
fn route_in_table_101_added_then_removed_reports_both() {
    in_netns_async(
        "route_in_table_101_added_then_removed_reports_both",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let (wan, _) = veth_up(&rtnl, "wan0").await;
            let mut monitor = Monitor::subscribe().unwrap();

            for spec in [
                onlink_route(101, "198.18.0.0", 15, wan),
                onlink_route(101, "2001:db8:1::", 64, wan),
            ] {
                rtnl.ensure_route(&spec).await.unwrap();
                expect(
                    &mut monitor,
                    &format!("Route {spec} added"),
                    is_route(101, wan, false),
                )
                .await;
                assert!(rtnl.delete_route(&spec).await.unwrap());
                expect(
                    &mut monitor,
                    &format!("Route {spec} removed"),
                    is_route(101, wan, true),
                )
                .await;
            }
        },
    );
}

#[test]
fn link_down_flush_reports_link_down_and_ipv6_route_removed() {
    in_netns_async(
        "link_down_flush_reports_link_down_and_ipv6_route_removed",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let (wan, _) = veth_up(&rtnl, "wan0").await;
            rtnl.ensure_route(&onlink_route(101, "2001:db8:1::", 64, wan))
                .await
                .unwrap();
            let mut monitor = Monitor::subscribe().unwrap();

            set_link(&rtnl, wan, false).await;
            // The kernel flushes the table-101 route; IPv6 announces it (IPv4
            // does not: callers resync on the Link event).
            let mut link_down = false;
            let mut route_gone = false;
            let down = is_link(wan, false, false);
            let gone = is_route(101, wan, true);
            while !(link_down && route_gone) {
                let e = expect(&mut monitor, "Link down and Route removed", |e| {
                    (!link_down && down(e)) || (!route_gone && gone(e))
                })
                .await;
                link_down |= down(&e);
                route_gone |= gone(&e);
            }
        },
    );
}

#[test]
fn late_link_appears_then_deleted_reports_new_then_removed() {
    in_netns_async(
        "late_link_appears_then_deleted_reports_new_then_removed",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let mut monitor = Monitor::subscribe().unwrap();

            let (wan, peer) = add_veth(&rtnl, "late0").await;
            let new = expect(
                &mut monitor,
                "Link late0 appeared",
                is_link(wan, false, false),
            )
            .await;
            assert!(
                matches!(&new, KernelEvent::Link { name: Some(n), .. } if n == "late0"),
                "{new:?}"
            );

            rtnl.handle()
                .link()
                .del(wan)
                .execute()
                .await
                .expect("delete veth");
            expect(
                &mut monitor,
                "Link late0 removed",
                is_link(wan, false, true),
            )
            .await;
            // Deleting one end of a veth pair removes the other too.
            expect(
                &mut monitor,
                "Link late0p removed",
                is_link(peer, false, true),
            )
            .await;
        },
    );
}

#[test]
fn burst_beyond_socket_buffer_reports_overrun_then_keeps_working() {
    in_netns_async(
        "burst_beyond_socket_buffer_reports_overrun_then_keeps_working",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let (wan, _) = veth_up(&rtnl, "wan0").await;
            let mut monitor = Monitor::subscribe().unwrap();

            // Blocking (no await): the monitor's task cannot read while `ip`
            // adds 20,000 routes, so the kernel must drop notifications.
            // `ip` inherits this thread's network namespace.
            let mut child = Command::new("ip")
                .args(["-batch", "-"])
                .stdin(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run ip -batch");
            let mut stdin = child.stdin.take().unwrap();
            for i in 0..20_000u32 {
                writeln!(
                    stdin,
                    "route add 10.{}.{}.0/24 dev wan0 table 102",
                    i / 256,
                    i % 256
                )
                .unwrap();
            }
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "ip -batch: {}",
                String::from_utf8_lossy(&out.stderr)
            );

            // Drain what was queued: an Overrun must be among it.
            let deadline = Instant::now() + BOUND;
            let mut routes = 0usize;
            loop {
                match timeout_at(deadline, monitor.next()).await {
                    Ok(Some(KernelEvent::Overrun)) => break,
                    Ok(Some(KernelEvent::Route { table: 102, .. })) => routes += 1,
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("monitor ended before reporting the overrun"),
                    Err(_) => panic!("no Overrun within {BOUND:?} after {routes} route events"),
                }
            }
            assert!(
                routes < 20_000,
                "an overrun yet all {routes} events arrived"
            );

            // Right away, with the old queue not drained: a change racing the
            // caller's resync must still be reported (the kernel drops
            // notifications to an overrun socket until its queue empties).
            set_link(&rtnl, wan, false).await;
            expect(
                &mut monitor,
                "Link{up:false} after overrun",
                is_link(wan, false, false),
            )
            .await;
        },
    );
}
