//! `optin-inbox`: a marketer's counterpart to an optin agent's push delivery. It publishes
//! the marketer's signed consent requests, takes what agents push for the grants people make
//! from them, verifies every push before it stores anything, and honours revocations by
//! erasing what it received under the grant. It speaks only SPEC.md, through
//! `optin-protocol`; it never depends on the agent.
//!
//! Modules, from the outside in:
//! - `cli`: flags and what each command does; `main.rs` only calls it.
//! - `serve`: the HTTPS listener (TLS, connection cap, every wait bounded); `serve/http.rs`
//!   is the only module that knows HTTP requests and statuses.
//! - `receive`: the decision on one push, with one status per refusal.
//! - `requests`: the request-signing key, making and publishing requests.
//! - `store`: the storage trait and its rules; `store/sqlite.rs` is the only module that
//!   knows SQLite, `store/nats.rs` the only one that knows NATS JetStream.
//! - `listing`: what `grants`, `slices` and `export` print, inert.
//! - `home`: every path of the home, the configuration, private files.

#![cfg_attr(test, allow(clippy::unwrap_used))] // tests unwrap: a panic is their failure report

pub mod cli;
pub mod home;
pub mod listing;
pub mod receive;
pub mod requests;
pub mod serve;
pub mod store;
