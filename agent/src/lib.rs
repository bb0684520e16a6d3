//! # optin-agent
//!
//! The agent a person runs on their own machine, and its CLI (`optin`, a thin `main.rs`).
//!
//! ## Codemap
//!
//! - [`cli`]: flags and commands; each command becomes a [`command::Request`].
//! - [`command`]: the owner's requests and replies, the admin socket's wire format.
//! - [`core`]: every operation on the store: ingest, grants, revoke, slices, audit. The
//!   HTTPS API, the admin socket and the offline CLI all call it.
//! - [`slicer`]: cutting a slice (range scans, cart states, granularity).
//! - [`gate`]: per-grant revocation gates, so `revoke` returns only when nothing more flows.
//! - [`store`]: the only module that knows sled; key layout and on-disk format.
//! - [`audit`]: hash-chained audit records.
//! - [`keys`]: the identity key and the per-grant keys, secrets and pseudonyms derived from it.
//! - [`home`]: the home directory, its layout and its permission checks.
//! - [`http`]: the only module that knows HTTP: routes, problem+json errors.
//! - [`server`]: TLS listener, connection limits, timeouts, graceful shutdown.
//! - [`tls`]: the certificate (self-signed on first start, or the user's).
//! - [`admin`]: the Unix admin socket, server and client.
//! - [`native_host`]: `optin native-host`, the extension's way in (native messaging).
//! - [`browser`]: installing the native-messaging manifests.
//! - [`merchant`]: registrable domains via the public suffix list.
//! - [`engines`]: search-engine URL rules, read from the extension's `engines.json`.
//! - [`history`]: reading searches from Chromium and Firefox history databases.
//!
//! ## Invariants
//!
//! - Nothing leaves the store except through [`core::Core::slice`], which evaluates scope
//!   with `optin_protocol::scope::Terms::evaluate` and nowhere else.
//! - The store holds no secret: keys, token secrets and pseudonyms derive from
//!   `identity.pk8` ([`keys`]).
//! - Writes the owner is told about are flushed before the answer.
//! - Tokens, keys and signal contents are never logged.

pub mod browser;
pub mod cli;
pub mod core;
pub mod home;
pub mod import;
pub mod keys;
pub mod merchant;
pub mod serve;
pub mod session;
pub mod store;
