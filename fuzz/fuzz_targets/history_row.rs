#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| optin_agent::fuzz::history_row(data));
