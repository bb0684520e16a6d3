//! End-to-end tests: the real `optin` binary in temporary homes, on `127.0.0.1:0`, over TLS,
//! checked the way a person at the CLI or a marketer with a bundle would see it.
//!
//! Run with `cargo build -p optin-agent && cargo test -p optin-tests`. The binary is found
//! next to this test's target directory, or at `$OPTIN_BIN`. The JOSE interoperability test
//! needs a Python with jwcrypto at `$OPTIN_PYTHON`:
//!
//! ```text
//! python3 -m venv .venv && .venv/bin/pip install -r tests/jose/requirements.txt
//! OPTIN_PYTHON=.venv/bin/python cargo test -p optin-tests
//! ```
//!
//! (`OPTIN_SKIP_JOSE=1` skips that one test where Python is not available.)
//!
//! Each test starts its own agent in its own home on its own port, so tests run in
//! parallel. The harness that starts them is this package's library (`src/`), which the
//! slice benchmark shares.

mod aggregate;
mod audit;
mod browser;
mod carts;
mod cli;
mod fetch;
mod filters;
mod forget;
mod hostile;
mod import;
mod inbox;
mod inbox_nats;
mod ingest;
mod jose;
mod linkability;
mod partners;
mod permissions;
mod push;
mod push_python;
mod receipts;
mod requests;
mod restart;
mod revoke;
mod scope;
mod sensitive;
mod tokens;
mod transport;
mod transport_revoke;
mod walkthrough;
