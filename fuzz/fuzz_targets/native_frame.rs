#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| optin_agent::fuzz::native_frame(data));
