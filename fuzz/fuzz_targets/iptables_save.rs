//! `iptables-save` / `ip6tables-save` (`braid::firewall::iptables`), parsed and judged.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid::fuzz_api::iptables_save(data));
