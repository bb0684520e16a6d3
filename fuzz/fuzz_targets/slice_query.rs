#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| optin_agent::fuzz::slice_query(data));
