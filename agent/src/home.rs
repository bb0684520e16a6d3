//! The agent's home directory: where everything it keeps lives, private to the user.
//!
//! ```text
//! HOME/            0700
//!   store/         the sled database (only `store.rs` opens it)
//!   identity.pk8   Ed25519 key, PKCS#8, 0600: the root every per-grant secret derives from
//!   tls/cert.pem   the HTTPS certificate (self-signed on first start unless the user brings one)
//!   tls/key.pem    its key, 0600
//!   admin.sock     the admin socket of a running agent, 0600
//! ```
//!
//! Like ssh, the agent refuses to use a home or a key that others can read: a leaked key
//! lets anyone mint tokens and sign slices in the person's name.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The paths of one home.
#[derive(Clone, Debug)]
pub struct Home {
    root: PathBuf,
}

impl Home {
    /// The default home: `$XDG_DATA_HOME/optin`, else `~/.local/share/optin`.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
            return Ok(PathBuf::from(dir).join("optin"));
        }
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context("neither --home, OPTIN_HOME, XDG_DATA_HOME nor HOME is set")?;
        Ok(PathBuf::from(home).join(".local/share/optin"))
    }

    /// Opens `root`, creating it with mode 0700 if it does not exist, and refuses it if
    /// others can read it.
    pub fn open(root: &Path) -> Result<Home> {
        if !root.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(root).with_context(|| format!("cannot create home {}", root.display()))?;
        }
        check_private(root)?;
        let home = Home { root: root.to_path_buf() };
        for key in [home.identity_key(), home.tls_key()] {
            if key.exists() {
                check_private(&key)?;
            }
        }
        Ok(home)
    }

    /// The home directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sled database directory.
    pub fn store(&self) -> PathBuf {
        self.root.join("store")
    }

    /// The identity key.
    pub fn identity_key(&self) -> PathBuf {
        self.root.join("identity.pk8")
    }

    /// The TLS certificate chain (PEM).
    pub fn tls_cert(&self) -> PathBuf {
        self.root.join("tls/cert.pem")
    }

    /// The TLS private key (PEM).
    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls/key.pem")
    }

    /// The admin socket.
    pub fn admin_socket(&self) -> PathBuf {
        self.root.join("admin.sock")
    }
}

/// Refuses `path` if its group or others have any access, naming the fix.
pub fn check_private(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        let fix = if meta.is_dir() { 0o700 } else { 0o600 };
        bail!("{} is accessible by group or others (mode {mode:04o}); refusing to use it: run `chmod {fix:o} {}`", path.display(), path.display());
    }
    Ok(())
}

/// Writes a new private file (0600) atomically: to a temporary name, synced, then renamed,
/// so a crash never leaves a half-written key behind.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut file =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
