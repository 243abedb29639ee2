//! `MPTCP_INFO` and `MPTCP_SUBFLOW_ADDRS` as the kernel returns them (`braid_sys::mptcp::info`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_sys::fuzz_api::mptcp_info(data));
