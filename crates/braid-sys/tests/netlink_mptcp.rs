//! The `mptcp_pm` generic-netlink client against the real kernel, each test in
//! its own anonymous network namespace (never the host's): endpoints, limits.

mod common;

use common::{in_netns_async, ip};
use std::net::IpAddr;

use braid_sys::mptcp::endpoint::{Endpoint, EndpointFlags};
use braid_sys::mptcp::limits::Limits;
use braid_sys::mptcp::pm::{MptcpPm, PmError};
use braid_sys::netlink::Rtnl;
use rtnetlink::LinkVeth;

/// A veth `wan0` (peer `wan0p`) to bind endpoints to; returns its index.
async fn wan_link() -> u32 {
    let rtnl = Rtnl::connect().unwrap();
    rtnl.handle()
        .link()
        .add(LinkVeth::new("wan0", "wan0p").build())
        .execute()
        .await
        .expect("add veth pair");
    rtnl.link_index("wan0").await.unwrap().expect("wan0 exists")
}

fn ipa(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn with_addr(eps: &[Endpoint], addr: IpAddr) -> Vec<Endpoint> {
    eps.iter().filter(|e| e.addr == addr).cloned().collect()
}

#[test]
fn ensure_endpoint_twice_creates_one_then_backup_toggles_in_place() {
    in_netns_async(
        "ensure_endpoint_twice_creates_one_then_backup_toggles_in_place",
        || async {
            let wan = wan_link().await;
            let pm = MptcpPm::connect().await.unwrap();
            let addr = ipa("192.0.2.10");
            assert!(
                pm.endpoints().await.unwrap().is_empty(),
                "a new namespace has none"
            );

            let (first, created) = pm
                .ensure_endpoint(addr, Some(wan), EndpointFlags::SUBFLOW)
                .await
                .unwrap();
            assert!(created);
            let (second, created) = pm
                .ensure_endpoint(addr, Some(wan), EndpointFlags::SUBFLOW)
                .await
                .unwrap();
            assert!(!created, "the second call changes nothing");
            assert_eq!(first, second);
            let eps = pm.endpoints().await.unwrap();
            assert_eq!(eps.len(), 1, "{eps:?}");
            assert_eq!(eps[0].addr, addr);
            assert_eq!(eps[0].flags, EndpointFlags::SUBFLOW);
            assert_eq!(eps[0].ifindex, Some(wan));
            let shown = ip(&["mptcp", "endpoint", "show"]);
            assert_eq!(
                shown.trim(),
                format!("192.0.2.10 id {} subflow dev wan0", first.id),
                "{shown}"
            );

            // backup on: same id, flag read back from the kernel.
            let backup = EndpointFlags::SUBFLOW | EndpointFlags::BACKUP;
            let (ep, created) = pm.ensure_endpoint(addr, Some(wan), backup).await.unwrap();
            assert!(!created);
            assert_eq!(ep.id, first.id);
            assert_eq!(
                with_addr(&pm.endpoints().await.unwrap(), addr)[0].flags,
                backup
            );
            assert!(ip(&["mptcp", "endpoint", "show"]).contains("subflow backup"));

            // backup off through set_endpoint_flags.
            pm.set_endpoint_flags(addr, EndpointFlags::SUBFLOW)
                .await
                .unwrap();
            let eps = pm.endpoints().await.unwrap();
            assert_eq!(eps.len(), 1);
            assert_eq!(eps[0].flags, EndpointFlags::SUBFLOW);
            assert_eq!(eps[0].id, first.id);

            // signal instead of subflow: replaced, still one endpoint.
            let (ep, created) = pm
                .ensure_endpoint(addr, Some(wan), EndpointFlags::SIGNAL)
                .await
                .unwrap();
            assert!(created);
            let eps = pm.endpoints().await.unwrap();
            assert_eq!(eps, vec![ep.clone()]);
            assert_eq!(ep.flags, EndpointFlags::SIGNAL);

            assert!(pm.delete_endpoint(ep.id).await.unwrap());
            assert!(pm.endpoints().await.unwrap().is_empty());
            assert!(
                !pm.delete_endpoint(ep.id).await.unwrap(),
                "missing is Ok(false)"
            );
            assert_eq!(ip(&["mptcp", "endpoint", "show"]), "");
        },
    );
}

#[test]
fn add_endpoint_returns_kernel_id_and_duplicate_keeps_errno() {
    in_netns_async(
        "add_endpoint_returns_kernel_id_and_duplicate_keeps_errno",
        || async {
            let wan = wan_link().await;
            let pm = MptcpPm::connect().await.unwrap();
            let a = pm
                .add_endpoint(ipa("192.0.2.10"), Some(wan), EndpointFlags::SUBFLOW)
                .await
                .unwrap();
            let b = pm
                .add_endpoint(ipa("2001:db8::10"), None, EndpointFlags::SIGNAL)
                .await
                .unwrap();
            assert_ne!(a, b);
            let mut eps = pm.endpoints().await.unwrap();
            eps.sort_by_key(|e| e.id);
            let mut expected = vec![
                Endpoint {
                    id: a,
                    addr: ipa("192.0.2.10"),
                    port: None,
                    ifindex: Some(wan),
                    flags: EndpointFlags::SUBFLOW,
                },
                Endpoint {
                    id: b,
                    addr: ipa("2001:db8::10"),
                    port: None,
                    ifindex: None,
                    flags: EndpointFlags::SIGNAL,
                },
            ];
            expected.sort_by_key(|e| e.id);
            assert_eq!(eps, expected);

            let err = pm
                .add_endpoint(ipa("192.0.2.10"), Some(wan), EndpointFlags::SUBFLOW)
                .await
                .unwrap_err();
            eprintln!("duplicate add: {err}");
            assert!(matches!(err, PmError::Kernel { .. }), "{err}");
            assert_eq!(err.errno(), Some(libc::EEXIST));
            assert!(
                err.to_string().contains("ip mptcp endpoint add 192.0.2.10"),
                "{err}"
            );
            assert_eq!(
                pm.endpoints().await.unwrap().len(),
                2,
                "the failed add changed nothing"
            );

            // Deleting by id removes only that one.
            assert!(pm.delete_endpoint(a).await.unwrap());
            let left = pm.endpoints().await.unwrap();
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].id, b);

            pm.flush_endpoints().await.unwrap();
            assert!(pm.endpoints().await.unwrap().is_empty());
        },
    );
}

#[test]
fn set_limits_reads_back_and_out_of_range_keeps_errno() {
    in_netns_async(
        "set_limits_reads_back_and_out_of_range_keeps_errno",
        || async {
            let pm = MptcpPm::connect().await.unwrap();
            let before = pm.limits().await.unwrap();
            let want = Limits {
                subflows: 4,
                add_addr_accepted: 3,
            };
            assert_ne!(before, want);
            pm.set_limits(want).await.unwrap();
            pm.set_limits(want).await.unwrap();
            assert_eq!(pm.limits().await.unwrap(), want);
            let shown = ip(&["mptcp", "limits", "show"]);
            assert_eq!(shown.trim(), "add_addr_accepted 3 subflows 4", "{shown}");

            let err = pm
                .set_limits(Limits {
                    subflows: 1000,
                    add_addr_accepted: 1,
                })
                .await
                .unwrap_err();
            eprintln!("limits: {err}");
            assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");
            assert!(
                err.to_string()
                    .contains("ip mptcp limits set subflows 1000"),
                "{err}"
            );
            assert_eq!(
                pm.limits().await.unwrap(),
                want,
                "the rejected set changed nothing"
            );
        },
    );
}
