//! rtnetlink against the real kernel, each test in its own anonymous network
//! namespace (never the host's): links, addresses, routes, rules.

mod common;

use common::{in_netns_async, ip};
use std::net::IpAddr;

use braid_sys::address::IfAddr;
use braid_sys::netlink::{NetlinkError, Rtnl};
use braid_sys::route::{RouteSpec, TABLE_MAIN};
use braid_sys::rule::RuleSpec;
use rtnetlink::{LinkUnspec, LinkVeth};

const OURS: u8 = 250;
const STATIC: u8 = 4;

/// Sets interface `index` administratively up.
async fn set_up(rtnl: &Rtnl, index: u32) {
    rtnl.handle()
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .expect("set link up");
}

/// Creates veth `name` with peer `{name}p` (this kernel has no dummy driver),
/// sets both up and gives `name` the address `addr`; returns its index.
async fn veth(rtnl: &Rtnl, name: &str, addr: Option<IfAddr>) -> u32 {
    let peer = format!("{name}p");
    rtnl.handle()
        .link()
        .add(LinkVeth::new(name, &peer).build())
        .execute()
        .await
        .expect("add veth pair");
    let index = rtnl
        .link_index(name)
        .await
        .unwrap()
        .expect("index of new link");
    let peer_index = rtnl
        .link_index(&peer)
        .await
        .unwrap()
        .expect("index of peer");
    set_up(rtnl, index).await;
    set_up(rtnl, peer_index).await;
    if let Some(addr) = addr {
        rtnl.ensure_address(index, addr).await.unwrap();
    }
    index
}

/// Polls `link_is_up` until it equals `want` (the kernel's linkwatch updates
/// the operational state asynchronously); panics after 5 s.
async fn wait_link_is_up(rtnl: &Rtnl, index: u32, want: bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while rtnl.link_is_up(index).await.unwrap() != want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "link {index} never became up={want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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

fn route(table: u32, dst: &str, len: u8, gw: Option<&str>, oif: u32, proto: u8) -> RouteSpec {
    RouteSpec {
        table,
        dst: ipa(dst),
        dst_len: len,
        gateway: gw.map(ipa),
        oif,
        src: None,
        protocol: proto,
    }
}

fn rule(from: &str, len: u8, table: u32, priority: u32, protocol: u8) -> RuleSpec {
    RuleSpec {
        from: ipa(from),
        from_len: len,
        table,
        priority,
        protocol,
    }
}

#[test]
fn veth_link_up_reports_index_state_addresses_and_gateway() {
    in_netns_async(
        "veth_link_up_reports_index_state_addresses_and_gateway",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            assert_eq!(rtnl.link_index("nosuch0").await.unwrap(), None);
            assert!(matches!(
                rtnl.link_index("a-name-longer-than-15").await,
                Err(NetlinkError::InvalidLinkName { .. })
            ));

            rtnl.handle()
                .link()
                .add(LinkVeth::new("wan0", "wan0p").build())
                .execute()
                .await
                .unwrap();
            let wan = rtnl.link_index("wan0").await.unwrap().expect("wan0 exists");
            let peer = rtnl
                .link_index("wan0p")
                .await
                .unwrap()
                .expect("wan0p exists");
            assert_eq!(rtnl.link_name(wan).await.unwrap().as_deref(), Some("wan0"));
            assert_eq!(rtnl.link_name(4242).await.unwrap(), None);
            assert!(!rtnl.link_is_up(wan).await.unwrap(), "a new link is down");
            set_up(&rtnl, wan).await;
            let link = rtnl.link(wan).await.unwrap().unwrap();
            assert!(
                link.admin_up && !link.carrier,
                "no carrier while the peer is down: {link:?}"
            );
            assert!(!rtnl.link_is_up(wan).await.unwrap());
            set_up(&rtnl, peer).await;
            wait_link_is_up(&rtnl, wan, true).await;
            assert!(matches!(
                rtnl.link_is_up(4242).await,
                Err(NetlinkError::NoSuchLink { ifindex: 4242 })
            ));
            let other = veth(&rtnl, "wan1", Some(ifaddr("198.51.100.2/24"))).await;

            // Twice: ensure_address is idempotent.
            for a in ["192.0.2.10/24", "192.0.2.10/24", "2001:db8::10/64"] {
                rtnl.ensure_address(wan, ifaddr(a)).await.unwrap();
            }
            let mut addrs = rtnl.addresses(wan).await.unwrap();
            addrs.sort_by_key(|a| a.addr);
            assert_eq!(
                addrs,
                vec![ifaddr("192.0.2.10/24"), ifaddr("2001:db8::10/64")]
            );
            assert!(
                ip(&["-6", "addr", "show", "dev", "wan0"]).contains("fe80::"),
                "the kernel made a link-local address, which addresses() leaves out"
            );

            // A more specific route first, then the DHCP-style default route.
            assert_eq!(rtnl.uplink_gateway(wan).await.unwrap(), None);
            rtnl.ensure_route(&route(
                TABLE_MAIN,
                "203.0.113.0",
                24,
                Some("192.0.2.254"),
                wan,
                STATIC,
            ))
            .await
            .unwrap();
            assert_eq!(
                rtnl.uplink_gateway(wan).await.unwrap(),
                Some(ipa("192.0.2.254"))
            );
            rtnl.ensure_route(&route(
                TABLE_MAIN,
                "0.0.0.0",
                0,
                Some("192.0.2.1"),
                wan,
                STATIC,
            ))
            .await
            .unwrap();
            assert!(ip(&["route", "show", "default"]).contains("default via 192.0.2.1 dev wan0"));
            assert_eq!(
                rtnl.uplink_gateway(wan).await.unwrap(),
                Some(ipa("192.0.2.1"))
            );
            assert_eq!(rtnl.uplink_gateway(other).await.unwrap(), None);

            assert!(rtnl
                .delete_address(wan, ifaddr("2001:db8::10/64"))
                .await
                .unwrap());
            assert!(!rtnl
                .delete_address(wan, ifaddr("2001:db8::10/64"))
                .await
                .unwrap());
            assert_eq!(
                rtnl.addresses(wan).await.unwrap(),
                vec![ifaddr("192.0.2.10/24")]
            );
        },
    );
}

#[test]
fn ensure_route_twice_leaves_one_route_then_delete_leaves_none() {
    in_netns_async(
        "ensure_route_twice_leaves_one_route_then_delete_leaves_none",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let wan = veth(&rtnl, "wan0", Some(ifaddr("192.0.2.10/24"))).await;
            let mut spec = route(101, "0.0.0.0", 0, Some("192.0.2.1"), wan, OURS);
            spec.src = Some(ipa("192.0.2.10"));

            rtnl.ensure_route(&spec).await.unwrap();
            rtnl.ensure_route(&spec).await.unwrap();
            assert_eq!(rtnl.routes(101).await.unwrap(), vec![spec.clone()]);
            let shown = ip(&["route", "show", "table", "101"]);
            assert_eq!(shown.lines().count(), 1, "{shown}");
            assert!(
                shown.contains("default via 192.0.2.1 dev wan0 proto 250 src 192.0.2.10"),
                "{shown}"
            );

            // A new gateway replaces the route rather than adding a second one.
            spec.gateway = Some(ipa("192.0.2.2"));
            rtnl.ensure_route(&spec).await.unwrap();
            assert_eq!(rtnl.routes(101).await.unwrap(), vec![spec.clone()]);

            assert!(rtnl.delete_route(&spec).await.unwrap());
            assert_eq!(rtnl.routes(101).await.unwrap(), vec![]);
            assert!(
                !rtnl.delete_route(&spec).await.unwrap(),
                "missing is Ok(false)"
            );
            assert_eq!(ip(&["route", "show", "table", "101"]), "");
        },
    );
}

#[test]
fn ensure_route_via_unreachable_gateway_keeps_errno_and_names_request() {
    in_netns_async(
        "ensure_route_via_unreachable_gateway_keeps_errno_and_names_request",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let wan = veth(&rtnl, "wan0", Some(ifaddr("192.0.2.10/24"))).await;
            let err = rtnl
                .ensure_route(&route(101, "0.0.0.0", 0, Some("203.0.113.1"), wan, OURS))
                .await
                .unwrap_err();
            eprintln!("unreachable: {err}");
            assert_eq!(err.errno(), Some(libc::ENETUNREACH), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("ip route replace default via 203.0.113.1"),
                "{text}"
            );
            assert!(text.contains("add an address"), "{text}");
            assert_eq!(rtnl.routes(101).await.unwrap(), vec![]);

            let bad = route(101, "10.0.0.1", 8, Some("192.0.2.1"), wan, OURS);
            assert!(matches!(
                rtnl.ensure_route(&bad).await,
                Err(NetlinkError::InvalidSpec { .. })
            ));
        },
    );
}

#[test]
fn ensure_rule_twice_leaves_one_rule_then_delete_leaves_none() {
    in_netns_async(
        "ensure_rule_twice_leaves_one_rule_then_delete_leaves_none",
        || async {
            let rtnl = Rtnl::connect().unwrap();
            let spec = rule("192.0.2.10", 32, 101, 1001, OURS);
            assert!(rtnl.ensure_rule(&spec).await.unwrap(), "first call adds");
            assert!(
                !rtnl.ensure_rule(&spec).await.unwrap(),
                "second call finds it"
            );
            let matching = rtnl
                .rules()
                .await
                .unwrap()
                .into_iter()
                .filter(|r| *r == spec)
                .count();
            assert_eq!(matching, 1);
            let shown = ip(&["rule", "show", "pref", "1001"]);
            assert_eq!(shown.lines().count(), 1, "{shown}");
            assert!(
                shown.contains("1001:\tfrom 192.0.2.10 lookup 101 proto 250"),
                "{shown}"
            );

            // Large table ids go in FRA_TABLE.
            let big = rule("2001:db8::", 64, 100_000, 1002, OURS);
            assert!(rtnl.ensure_rule(&big).await.unwrap());
            assert!(!rtnl.ensure_rule(&big).await.unwrap());
            assert!(ip(&["-6", "rule", "show", "pref", "1002"]).contains("lookup 100000"));

            assert!(rtnl.delete_rule(&spec).await.unwrap());
            assert!(
                !rtnl.delete_rule(&spec).await.unwrap(),
                "missing is Ok(false)"
            );
            assert!(!rtnl.rules().await.unwrap().contains(&spec));
            assert_eq!(ip(&["rule", "show", "pref", "1001"]), "");
        },
    );
}

#[test]
fn delete_by_protocol_removes_only_ours() {
    in_netns_async("delete_by_protocol_removes_only_ours", || async {
        let rtnl = Rtnl::connect().unwrap();
        let wan = veth(&rtnl, "wan0", Some(ifaddr("192.0.2.10/24"))).await;
        rtnl.ensure_address(wan, ifaddr("2001:db8::10/64"))
            .await
            .unwrap();

        let ours_101 = route(101, "0.0.0.0", 0, Some("192.0.2.1"), wan, OURS);
        let ours_102 = route(102, "0.0.0.0", 0, Some("192.0.2.1"), wan, OURS);
        let ours_v6 = route(102, "2001:db8:1::", 48, None, wan, OURS);
        let theirs = route(101, "198.51.100.0", 24, Some("192.0.2.1"), wan, STATIC);
        for r in [&ours_101, &ours_102, &ours_v6, &theirs] {
            rtnl.ensure_route(r).await.unwrap();
        }
        assert_eq!(
            rtnl.delete_routes_by_protocol(Some(101), OURS)
                .await
                .unwrap(),
            1
        );
        assert_eq!(rtnl.routes(101).await.unwrap(), vec![theirs.clone()]);
        assert_eq!(
            rtnl.routes(102).await.unwrap().len(),
            2,
            "other tables untouched"
        );
        assert_eq!(rtnl.delete_routes_by_protocol(None, OURS).await.unwrap(), 2);
        assert_eq!(rtnl.routes(102).await.unwrap(), vec![]);
        assert_eq!(rtnl.routes(101).await.unwrap(), vec![theirs]);
        assert_eq!(rtnl.delete_routes_by_protocol(None, OURS).await.unwrap(), 0);
        let kernel_routes = rtnl.routes(TABLE_MAIN).await.unwrap();
        assert!(
            kernel_routes
                .iter()
                .any(|r| r.dst == ipa("192.0.2.0") && r.dst_len == 24),
            "the kernel's prefix route survives: {kernel_routes:?}"
        );

        let before = rtnl.rules().await.unwrap();
        let theirs_rule = rule("192.0.2.20", 32, 101, 2000, STATIC);
        for r in [
            rule("192.0.2.10", 32, 101, 1001, OURS),
            rule("2001:db8::10", 128, 101, 1001, OURS),
            theirs_rule.clone(),
        ] {
            rtnl.ensure_rule(&r).await.unwrap();
        }
        assert_eq!(rtnl.delete_rules_by_protocol(OURS).await.unwrap(), 2);
        let mut expected = before;
        expected.push(theirs_rule);
        let mut after = rtnl.rules().await.unwrap();
        expected.sort_by_key(|r| (r.from, r.priority));
        after.sort_by_key(|r| (r.from, r.priority));
        assert_eq!(after, expected);
        assert_eq!(rtnl.delete_rules_by_protocol(OURS).await.unwrap(), 0);
        assert!(
            rtnl.delete_rules_by_protocol(0).await.is_err(),
            "proto 0 is refused"
        );
    });
}
