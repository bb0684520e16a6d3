//! The agent's home directory: where everything it keeps lives, private to the user.
//!
//! ```text
//! HOME/            0700
//!   store/         the sled database (only `store.rs` opens it)
//!   identity.pk8   Ed25519 key, PKCS#8, 0600: the root every per-grant secret derives from
//!   tls/cert.pem   the HTTPS certificate (self-signed on first start unless the user brings one)
//!   tls/key.pem    its key, 0600
//!   admin.sock     the admin socket of a running agent, 0600
//!   browser/       the native host's launcher, and when the extension last connected
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

    /// Opens the home at `root`, creating it with mode 0700 if it does not exist, and refuses
    /// it if others can read it. For the commands that start using optin: `serve`, `ingest`,
    /// `import`, `grant`, `ingest-token`, `browser install` and the native host.
    pub fn open_or_create(root: &Path) -> Result<Home> {
        if !root.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(root).with_context(|| format!("cannot create home {}", root.display()))?;
        }
        Home::checked(root)
    }

    /// Opens the home at `root`, which must exist, and refuses it if others can read it. For
    /// the commands that look at or change what is already there: a mistyped `--home` then
    /// says so, instead of showing an empty store.
    pub fn open_existing(root: &Path) -> Result<Home> {
        match fs::symlink_metadata(root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no optin home at {}: `optin serve`, `optin ingest` or `optin import` makes one; --home or OPTIN_HOME names another", root.display())
            }
            _ => Home::checked(root),
        }
    }

    /// The paths of the home at `root`, which may not exist, without looking at it: for
    /// commands that only compare paths or read what is there if anything is, like
    /// `optin browser status`.
    pub fn unopened(root: &Path) -> Home {
        Home { root: root.to_path_buf() }
    }

    fn checked(root: &Path) -> Result<Home> {
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

    /// When the browser extension last connected, as the native host records it.
    pub fn last_connection(&self) -> PathBuf {
        self.root.join("browser/last-connection.json")
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

/// What [`write_new_private`] does when the file is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IfExists {
    /// Leave it alone and fail with [`std::io::ErrorKind::AlreadyExists`].
    Refuse,
    /// Replace it whole.
    Replace,
}

/// Writes `bytes` to a new file at `path` that only the user can read or write (0600 from
/// the moment it exists, never a chmod afterwards: a secret written into a file first
/// created 0644 is readable for that moment, and for good if the chmod fails).
///
/// An existing file is refused, or with [`IfExists::Replace`] replaced by a new file renamed
/// over it. Never opened and truncated: that would keep its old mode, and follow a link put
/// there to where the secret should not go.
pub fn write_new_private(path: &Path, bytes: &[u8], if_exists: IfExists) -> std::io::Result<()> {
    match if_exists {
        IfExists::Refuse => write_created(path, bytes),
        IfExists::Replace => {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
            write_created(&tmp, bytes)?;
            fs::rename(&tmp, path).inspect_err(|_| {
                let _ = fs::remove_file(&tmp);
            })
        }
    }
}

/// Creates `path` (0600, failing if anything is there) and writes `bytes`; a file left
/// half-written would look whole, so it is removed if writing fails.
fn write_created(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).inspect_err(|_| {
        let _ = fs::remove_file(path);
    })
}
