#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| optin_protocol::fuzz::slice(data));
