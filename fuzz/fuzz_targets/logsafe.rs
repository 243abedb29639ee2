//! A peer's string in a log line (`braid_proto::logsafe`): one line, no raw control or bidi characters.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid_proto::fuzz_api::logsafe(data));
