//! Control frames (`braid_proto::control::decode`, `SourceEnd`, `SourceTail`), from the other end of the tunnel.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_proto::fuzz_api::control(data));
