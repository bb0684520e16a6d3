//! End-to-end tests of optin live in `it/` (one test binary, `cargo test -p optin-tests`).
//! They run the real `optin` binary in temporary homes on `127.0.0.1:0` and talk to it over
//! TLS as a marketer would; see `it/main.rs` for how to run them.
