//! `mptcp_pm` netlink attributes and the nested address (`braid_sys::mptcp::pm`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_sys::fuzz_api::pm_addr(data));
