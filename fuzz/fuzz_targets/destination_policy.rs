//! The relay's destination policy (`braid_proto::destination`) against a reference classification
//! from the IANA registries (`braid_proto::fuzz_api::destination_reference`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_proto::fuzz_api::destination_policy(data));
