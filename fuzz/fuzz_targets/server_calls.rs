#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| muster_core::fuzzing::server_calls(data));
