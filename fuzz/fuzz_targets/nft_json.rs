//! `nft -j list ruleset` (`braid::firewall::nft`), parsed and judged by doctor's evaluator.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| braid::fuzz_api::nft_json(data));
