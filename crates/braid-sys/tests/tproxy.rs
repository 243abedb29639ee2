//! TPROXY's kernel side in a private network namespace: the policy routing is installed once
//! however often it is ensured, removed completely, and swept by the crash-recovery cleanup by
//! protocol; a transparent socket binds a foreign address.

mod common;

use braid_sys::netlink::Rtnl;
use braid_sys::tproxy::{reply_socket, TransparentUdp};
use braid_sys::tproxy_route::TproxyRouting;
use common::{in_netns_async, ip};

const ROUTING: TproxyRouting = TproxyRouting {
    mark: 0xb1d,
    table: 100,
    priority: 990,
    protocol: 212,
};

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn tproxy_routing_ensured_twice_is_there_once_and_removed_completely() {
    in_netns_async("tproxy_routing", || async {
        ip(&["link", "set", "lo", "up"]);
        let rtnl = Rtnl::connect().expect("rtnetlink");
        ROUTING.ensure(&rtnl).await.expect("ensure");
        ROUTING.ensure(&rtnl).await.expect("ensure again");
        for family in ["-4", "-6"] {
            let rules = ip(&[family, "rule", "show"]);
            assert_eq!(
                count(&rules, "fwmark 0xb1d lookup 100 proto 212"),
                1,
                "{family}:\n{rules}"
            );
            let routes = ip(&[family, "route", "show", "table", "100"]);
            assert!(
                routes.contains("local default dev lo") && routes.contains("proto 212"),
                "{family}:\n{routes}"
            );
        }
        ROUTING.remove(&rtnl).await.expect("remove");
        ROUTING.remove(&rtnl).await.expect("removing twice is fine");
        for family in ["-4", "-6"] {
            assert_eq!(count(&ip(&[family, "rule", "show"]), "fwmark"), 0);
            assert_eq!(ip(&[family, "route", "show", "table", "100"]).trim(), "");
        }
        // A crashed run's leftovers go with everything else of protocol 212.
        ROUTING.ensure(&rtnl).await.expect("ensure");
        rtnl.delete_rules_by_protocol(212).await.expect("rules");
        rtnl.delete_routes_by_protocol(None, 212)
            .await
            .expect("routes");
        assert_eq!(count(&ip(&["-6", "rule", "show"]), "fwmark"), 0);
        assert_eq!(ip(&["route", "show", "table", "100"]).trim(), "");
    });
}

#[test]
fn transparent_sockets_bind_their_port_and_a_foreign_address() {
    in_netns_async("tproxy_sockets", || async {
        ip(&["link", "set", "lo", "up"]);
        let v4 = TransparentUdp::bind("0.0.0.0:0".parse().unwrap()).expect("IPv4 TPROXY socket");
        let v6 = TransparentUdp::bind("[::]:0".parse().unwrap()).expect("IPv6 TPROXY socket");
        assert_ne!(v4.local_addr().unwrap().port(), 0);
        assert!(v6.local_addr().unwrap().is_ipv6());
        // The far end's address, which is not this host's.
        let r = reply_socket("203.0.113.9:53".parse().unwrap()).expect("foreign bind");
        assert_eq!(r.local_addr().unwrap(), "203.0.113.9:53".parse().unwrap());
        let r6 = reply_socket("[2001:db8::9]:443".parse().unwrap()).expect("foreign bind v6");
        assert_eq!(r6.local_addr().unwrap().port(), 443);
        // Two sessions may answer from the same far end at once.
        reply_socket("203.0.113.9:53".parse().unwrap()).expect("second socket on the same address");
    });
}
