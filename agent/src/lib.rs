//! # optin-agent
//!
//! The agent a person runs on their own machine, and its CLI (`optin`, a thin `main.rs`).
//!
//! ## Codemap, by what runs where
//!
//! - [`core`]: every operation on the store, whatever the way in. `owner` runs the person's
//!   [`core::command::Request`]s; `marketer` admits tokens and cuts signed slices;
//!   `slicer`, `gate` (revocation gates) and `audit` (the hash chain) serve those two.
//! - [`store`]: the only module that knows sled. `key` is the one store-key codec, `meta`
//!   the typed settings, `record` the on-disk records, `arrival` the order signals were
//!   stored in, which pushed slices follow, `audit` the audit log, pruned behind a
//!   checkpoint.
//! - [`serve`]: `optin serve`. `http` is the only module that knows HTTP; `listener` the
//!   TLS connections, caps and timeouts; `admin` the admin socket's server; `prune` keeps
//!   the audit log within its bound.
//!   [`serve::serve`] runs in-process on given listeners.
//! - [`push`]: the sender `optin serve` runs, which posts push grants' queued events to
//!   their inboxes through [`outbound`]; what to send and what an answer does is the
//!   core's (`core::push`).
//! - [`site`]: a marketer's published consent requests, fetched and added for
//!   `optin requests fetch` and the native host alike.
//! - [`session`]: reaching optin from another process: the running agent over its admin
//!   socket, or the store itself when none runs. The CLI and the native host use it.
//! - [`cli`]: flags, dispatch and printing of `optin`.
//! - [`browser`]: the one `Browser` enum, native-messaging manifests, the native host.
//! - [`import`]: searches from browser history databases, and the engine URL rules.
//! - [`keys`]: the identity key and everything derived from it; [`tls`]: the certificate;
//!   [`home`]: the home's paths and permissions; [`merchant`]: registrable domains.
//!
//! ## Invariants
//!
//! - Modules depend one way, in layers: `cli` → `serve`, `site`, `session`, `browser`, `import` →
//!   `core` → `store`, `keys`, `tls`, `merchant` → `home`. A module never imports one
//!   above it: `store` knows no `core`, `core` no way in, `serve` and `session` not each
//!   other. `architecture.rs` checks this on the sources.
//! - Nothing leaves the store except through [`core::Core::slice`], a pushed slice (and the
//!   owner's preview), which evaluate scope with `optin_protocol::scope::Terms::evaluate` only.
//! - Failures carry a kind decided once ([`core::CoreError::kind`]): the admin socket and
//!   the native host say `invalid`/`not_found` (the request is wrong: drop it) apart from
//!   `unavailable`/`internal` (try again later).
//! - The store holds no secret: keys, token secrets and pseudonyms derive from
//!   `identity.pk8` ([`keys`]).
//! - Writes the owner is told about are flushed before the answer.
//! - Tokens, keys and signal contents are never logged.

pub mod browser;
pub mod cli;
pub mod core;
#[doc(hidden)]
pub mod fuzz;
pub mod home;
pub mod import;
pub mod keys;
pub mod merchant;
pub mod outbound;
pub mod push;
pub mod serve;
pub mod session;
pub mod site;
pub mod store;
pub mod tls;

#[cfg(test)]
mod architecture;
