#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| muster_runtime::decode::fuzz_bodies(data));
