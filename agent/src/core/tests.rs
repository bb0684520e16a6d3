//! Tests of the core over a temporary store: no network, no binary.
