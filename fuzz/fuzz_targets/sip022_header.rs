//! The first chunk of an SS2022 request (`braid_proto::sip022`), decrypted, from a key holder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_proto::fuzz_api::sip022(data));
