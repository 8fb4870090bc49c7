#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| muster_core::api::decode::fuzz_bodies(data));
