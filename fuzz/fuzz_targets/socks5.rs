//! SOCKS5 greeting, CONNECT request and address (`braid_proto::socks5`), from a LAN client, and
//! the same address as a parked request's second stage (`braid_proto::park`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_proto::fuzz_api::socks5(data));
