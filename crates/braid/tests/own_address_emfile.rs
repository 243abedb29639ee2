//! The relay's own-address guard fails closed when the process is out of descriptors (EMFILE):
//! a destination it cannot check is refused. A list of interface addresses that came back empty
//! under EMFILE used to let a request to the server's own address through.
//!
//! Alone in its test binary because it lowers the process's open-file limit. Needs no root.

use std::net::IpAddr;

use braid::server::OwnAddrs;
use braid_proto::destination::{DestinationPolicy, Refusal};

/// Lowers the soft open-file limit to what is open now and opens files until EMFILE; the files
/// are returned so the caller decides when descriptors come back.
fn exhaust_descriptors() -> (Vec<std::fs::File>, u64) {
    let before = braid_sys::rlimit::file_limit().expect("getrlimit").soft;
    let open = braid_sys::rlimit::open_files().expect("count fds") as u64;
    braid_sys::rlimit::set_soft_file_limit(open + 8).expect("setrlimit");
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("unexpected error while exhausting descriptors: {e}"),
        }
        assert!(held.len() < 100_000, "EMFILE never came");
    }
    (held, before)
}

#[test]
fn own_address_check_under_emfile_refuses_instead_of_allowing() {
    let own = OwnAddrs::new(Vec::new());
    let policy = DestinationPolicy::default();
    let loopback: IpAddr = "127.0.0.1".parse().unwrap();
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    assert_eq!(own.is_own(loopback), Some(true));
    assert_eq!(policy.check(public, |ip| own.is_own(ip)), Ok(()));

    let (held, before) = exhaust_descriptors();
    let unknown = own.is_own(loopback);
    let verdict = policy.check(public, |ip| own.is_own(ip));
    drop(held);
    braid_sys::rlimit::set_soft_file_limit(before).expect("restore the limit");

    assert_eq!(unknown, None, "under EMFILE the guard claimed to know");
    let refused = verdict.expect_err("a destination that cannot be checked went through");
    assert_eq!(refused.reason, Refusal::OwnUnknown);
    assert!(refused.to_string().contains("could not tell"), "{refused}");
}
