//! The inbox's home: the one module that knows where each file lives, and how a private file
//! is written.
//!
//! ```text
//! HOME/config.json            what init was told (domain, public URL, who the marketer is)
//! HOME/request-signing.pk8    the marketer's Ed25519 request-signing key (PKCS#8, 0600)
//! HOME/requests/ID.jws        each signed request, as published
//! HOME/inbox.sqlite3          grants, slices and deliveries (store/sqlite.rs)
//! HOME/tls/cert.pem, key.pem  the certificate made on first start, unless one is given
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use optin_protocol::request::HttpsUrl;

/// Where the inbox takes pushes, below its public URL.
pub const INBOX_PATH: &str = "/optin/inbox";

/// Version of `config.json`.
const CONFIG_VERSION: u32 = 1;

/// The inbox's home directory.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// The home at `dir`.
    pub fn at(dir: PathBuf) -> Home {
        Home { dir }
    }

    /// The default home: `$XDG_DATA_HOME/optin-inbox`, else `~/.local/share/optin-inbox`.
    /// `--home` and `OPTIN_INBOX_HOME` come before this and are read by the flags.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("optin-inbox"));
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("neither --home, OPTIN_INBOX_HOME, XDG_DATA_HOME nor HOME is set")?;
        Ok(PathBuf::from(home).join(".local/share/optin-inbox"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration `init` wrote.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The request-signing key.
    pub fn signing_key(&self) -> PathBuf {
        self.dir.join("request-signing.pk8")
    }

    /// The signed requests.
    pub fn requests_dir(&self) -> PathBuf {
        self.dir.join("requests")
    }

    /// The SQLite database.
    pub fn database(&self) -> PathBuf {
        self.dir.join("inbox.sqlite3")
    }

    /// The certificate made on first start.
    pub fn tls_cert(&self) -> PathBuf {
        self.dir.join("tls").join("cert.pem")
    }

    /// Its key.
    pub fn tls_key(&self) -> PathBuf {
        self.dir.join("tls").join("key.pem")
    }

    /// Fails with a message naming the directory when `init` has not made this home, so a
    /// mistyped `--home` never looks like an empty inbox.
    pub fn check_exists(&self) -> Result<()> {
        if !self.config_file().is_file() {
            bail!("no optin-inbox home at {} (run optin-inbox init --domain DOMAIN first)", self.dir.display());
        }
        Ok(())
    }

    /// Reads `config.json`.
    pub fn config(&self) -> Result<Config> {
        self.check_exists()?;
        let path = self.config_file();
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let stored: StoredConfig = serde_json::from_str(&text).with_context(|| format!("{} is not an optin-inbox configuration", path.display()))?;
        if stored.version != CONFIG_VERSION {
            bail!("{}: configuration version {} is not one this optin-inbox reads ({CONFIG_VERSION})", path.display(), stored.version);
        }
        Config::new(&stored.domain, stored.public_url.as_deref(), stored.name, stored.contact, stored.privacy_policy)
            .with_context(|| format!("{} holds a configuration that is no longer valid", path.display()))
    }

    /// Writes `config.json`, refusing to replace one.
    pub fn write_config(&self, config: &Config) -> Result<()> {
        let stored = StoredConfig {
            version: CONFIG_VERSION,
            domain: config.domain.clone(),
            public_url: Some(config.public_url.clone()),
            name: config.name.clone(),
            contact: config.contact.clone(),
            privacy_policy: config.privacy_policy.clone(),
        };
        let mut text = serde_json::to_string_pretty(&stored).context("cannot write the configuration")?;
        text.push('\n');
        write_new(&self.config_file(), text.as_bytes(), 0o644)
    }
}

/// `config.json` on disk, versioned.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredConfig {
    version: u32,
    domain: String,
    #[serde(default)]
    public_url: Option<String>,
    name: String,
    contact: String,
    privacy_policy: String,
}

/// Who the inbox is, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The marketer's domain: the audience of every grant this inbox takes.
    pub domain: String,
    /// Where agents reach this inbox, `https://HOST[:PORT]`, no path: the request's
    /// `delivery.inbox` is this and [`INBOX_PATH`].
    pub public_url: String,
    /// The marketer's name, as a person reads it.
    pub name: String,
    /// How a person reaches the marketer about their data.
    pub contact: String,
    /// The marketer's privacy policy.
    pub privacy_policy: String,
}

impl Config {
    /// Checks what `init` was given: a lowercase domain name, a public URL on that domain or
    /// under it, and the rest as a request will need it. The request parser checks them again
    /// when a request is made; this catches a typo at `init`, not weeks later.
    pub fn new(domain: &str, public_url: Option<&str>, name: String, contact: String, privacy_policy: String) -> Result<Config> {
        let url = HttpsUrl::parse(&format!("https://{domain}")).map_err(|reason| anyhow::anyhow!("--domain {}: {reason}", shown(domain)))?;
        if url.host() != domain {
            bail!("--domain {}: expected a lowercase domain name like acme.example", shown(domain));
        }
        let public_url = match public_url {
            None => format!("https://{domain}"),
            Some(text) => {
                let text = text.trim_end_matches('/');
                let url = HttpsUrl::parse(text).map_err(|reason| anyhow::anyhow!("--public-url {}: {reason}", shown(text)))?;
                let rest = &text["https://".len()..];
                if rest.contains(['/', '?']) {
                    bail!("--public-url {}: expected https://HOST[:PORT] with no path", shown(text));
                }
                if url.host() != domain && !url.host().ends_with(&format!(".{domain}")) {
                    bail!("--public-url {}: the host must be {domain} or a name under it, as a request's inbox must", shown(text));
                }
                text.to_owned()
            }
        };
        HttpsUrl::parse(&privacy_policy).map_err(|reason| anyhow::anyhow!("--privacy-policy {}: {reason}", shown(&privacy_policy)))?;
        Ok(Config { domain: domain.to_owned(), public_url, name, contact, privacy_policy })
    }

    /// The URL agents push to.
    pub fn inbox_url(&self) -> String {
        format!("{}{INBOX_PATH}", self.public_url)
    }
}

/// Text from the command line or a file, as an error message may show it.
pub fn shown(text: &str) -> String {
    optin_protocol::request::shown(text)
}

/// Writes a new file, refusing to replace one, readable as `mode` says from its creation:
/// a key written with the default mode and narrowed afterwards would be readable meanwhile.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!("{} already exists; nothing was replaced", path.display()),
        _ => anyhow::anyhow!("cannot create {}: {e}", path.display()),
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}

/// Fails unless `path` is readable by its owner only, for a key someone else placed.
pub fn check_private(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            bail!("{} is readable by others (mode {:o}); chmod 600 it", path.display(), meta.permissions().mode() & 0o777);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(domain: &str, public_url: Option<&str>) -> Result<Config> {
        Config::new(domain, public_url, "Acme".into(), "privacy@acme.example".into(), "https://acme.example/privacy".into())
    }

    #[test]
    fn accepts_a_domain_and_a_public_url_under_it() {
        for (domain, public_url, inbox) in [
            ("acme.example", None, "https://acme.example/optin/inbox"),
            ("acme.example", Some("https://acme.example:8443"), "https://acme.example:8443/optin/inbox"),
            ("acme.example", Some("https://inbox.acme.example/"), "https://inbox.acme.example/optin/inbox"),
        ] {
            assert_eq!(config(domain, public_url).unwrap().inbox_url(), inbox, "{domain} {public_url:?}");
        }
    }

    #[test]
    fn rejects_a_domain_or_public_url_a_request_could_not_name() {
        for (domain, public_url, needle) in [
            ("Acme.example", None, "--domain Acme.example"),
            ("127.0.0.1", None, "--domain 127.0.0.1"),
            ("acme.example/x", None, "--domain"),
            ("acme.example", Some("http://acme.example"), "must be an https:// URL"),
            ("acme.example", Some("https://other.example"), "must be acme.example or a name under it"),
            ("acme.example", Some("https://evilacme.example"), "must be acme.example or a name under it"),
            ("acme.example", Some("https://acme.example/inbox"), "no path"),
        ] {
            let error = format!("{:#}", config(domain, public_url).unwrap_err());
            assert!(error.contains(needle), "{domain} {public_url:?}: {error}");
        }
    }

    #[test]
    fn a_new_file_is_private_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key");
        write_new(&path, b"one", 0o600).unwrap();
        let error = format!("{:#}", write_new(&path, b"two", 0o600).unwrap_err());
        assert!(error.contains("already exists"), "{error}");
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        check_private(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
