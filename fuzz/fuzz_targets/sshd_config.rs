//! `sshd_config`, `/proc/net/tcp` and `Include` patterns (`braid::firewall::sshd`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid::fuzz_api::sshd_config(data));
