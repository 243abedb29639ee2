//! The relay's salt file (`braid::server::salts`), read back at start from `state_dir`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid::fuzz_api::salt_file(data));
