//! The `meta` tree, through typed accessors: nothing outside the store names a meta key or
//! parses a meta value.
//!
//! | key             | value                                                  |
//! |-----------------|--------------------------------------------------------|
//! | `schema`        | the on-disk format version ([`super::SCHEMA`])         |
//! | `paused`        | `1` while the person has paused all sharing, else `0`  |
//! | `agent_url`     | where the last `optin serve` listened                  |
//! | `cert_sha256`   | hex SHA-256 of the certificate it served               |
//! | `abandon_after` | its cart abandonment delay, like `24h`                 |
//! | `audit_head`    | `SEQ:HEX`, the last audit record and its hash          |
//! | `audit_head_mac`| hex MAC of the head (see [`super::seal`])              |
//!
//! `audit_head` and its MAC are written with each audit record, in its transaction (see
//! `append_audit`), so `optin audit --verify` notices a changed or missing last record, and
//! a head rebuilt over a shortened log. `agent_url`,
//! `cert_sha256` and `abandon_after` let commands run without an agent (the offline CLI, the native host)
//! print the same bundles and derive the same cart states as the agent would.

use optin_protocol::span::Span;

use super::{corrupt, Result, Store};

/// Where the agent was last reachable, for bundles made while it does not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// Its HTTPS URL.
    pub url: String,
    /// Hex SHA-256 of its certificate.
    pub cert_sha256: String,
}

impl Store {
    fn meta(&self, name: &str) -> Result<Option<String>> {
        self.meta.get(name)?.map(|v| String::from_utf8(v.to_vec()).map_err(|_| corrupt("meta", format!("`{name}` is not UTF-8")))).transpose()
    }

    fn set_meta(&self, name: &str, value: &str) -> Result<()> {
        self.meta.insert(name, value)?;
        self.flush()
    }

    /// Whether the person has paused all sharing.
    pub fn paused(&self) -> Result<bool> {
        match self.meta("paused")?.as_deref() {
            None | Some("0") => Ok(false),
            Some("1") => Ok(true),
            Some(other) => Err(corrupt("meta", format!("`paused` is {other:?}, not 0 or 1"))),
        }
    }

    /// Pauses or resumes all sharing. Durable on return.
    pub fn set_paused(&self, paused: bool) -> Result<()> {
        self.set_meta("paused", if paused { "1" } else { "0" })
    }

    /// Where the agent last listened, if it ever ran on this store.
    pub fn address(&self) -> Result<Option<Address>> {
        Ok(self.meta("agent_url")?.zip(self.meta("cert_sha256")?).map(|(url, cert_sha256)| Address { url, cert_sha256 }))
    }

    /// Records where the agent listens. Durable on return.
    pub fn set_address(&self, address: &Address) -> Result<()> {
        self.meta.insert("agent_url", address.url.as_str())?;
        self.set_meta("cert_sha256", &address.cert_sha256)
    }

    /// The cart abandonment delay the agent last ran with.
    pub fn abandon_after(&self) -> Result<Option<Span>> {
        self.meta("abandon_after")?.map(|text| text.parse().map_err(|_| corrupt("meta", format!("`abandon_after` is {text:?}, not a span")))).transpose()
    }

    /// Records the cart abandonment delay. Durable on return.
    pub fn set_abandon_after(&self, delay: Span) -> Result<()> {
        self.set_meta("abandon_after", &delay.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_round_trip_and_survive_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store");
        let address = Address { url: "https://127.0.0.1:7676".into(), cert_sha256: "ab".repeat(32) };
        let delay: Span = "36h".parse().expect("span");
        {
            let store = Store::open(&path).expect("open");
            assert!(!store.paused().expect("paused"), "a new store shares");
            assert_eq!(store.address().expect("address"), None);
            assert_eq!(store.abandon_after().expect("delay"), None);
            store.set_paused(true).expect("pause");
            store.set_address(&address).expect("address");
            store.set_abandon_after(delay).expect("delay");
        }
        let store = Store::open(&path).expect("reopen");
        assert!(store.paused().expect("paused"));
        assert_eq!(store.address().expect("address"), Some(address));
        assert_eq!(store.abandon_after().expect("delay"), Some(delay));
        store.set_paused(false).expect("resume");
        assert!(!store.paused().expect("paused"));
    }

    #[test]
    fn rejects_damaged_values() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("store")).expect("open");
        store.set_meta("paused", "yes").expect("write");
        assert!(matches!(store.paused(), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })));
        store.set_meta("abandon_after", "soon").expect("write");
        assert!(matches!(store.abandon_after(), Err(crate::store::StoreError::Corrupt { tree: "meta", .. })));
    }
}
