//! The HTTPS certificate: the user's own, or a self-signed one made on first start and
//! reused afterwards. Marketers pin its SHA-256 fingerprint (it travels in grant bundles),
//! so a self-signed certificate is as safe as one from a CA here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::home::{check_private, write_private, Home};

/// A certificate and key ready to serve.
pub struct TlsIdentity {
    /// The server configuration (TLS 1.2 and 1.3, ALPN h2 and http/1.1).
    pub config: Arc<rustls::ServerConfig>,
    /// Hex SHA-256 of the leaf certificate's DER.
    pub sha256: String,
}

/// Where the certificate comes from.
#[derive(Clone, Debug, Default)]
pub struct TlsSource {
    /// The user's certificate chain and key (PEM), or `None` for the home's own.
    pub user: Option<(PathBuf, PathBuf)>,
}

/// Makes the home's self-signed certificate if it has none.
pub fn ensure_self_signed(home: &Home) -> Result<()> {
    if home.tls_cert().exists() && home.tls_key().exists() {
        return Ok(());
    }
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])
        .context("cannot make a self-signed certificate")?;
    write_private(&home.tls_key(), made.key_pair.serialize_pem().as_bytes())?;
    write_private(&home.tls_cert(), made.cert.pem().as_bytes())?;
    Ok(())
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).with_context(|| format!("cannot read certificate {}", path.display()))?;
    let chain =
        CertificateDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().with_context(|| format!("{} is not a PEM certificate chain", path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(chain)
}

/// Hex SHA-256 of the leaf certificate that will be served.
pub fn fingerprint(home: &Home, source: &TlsSource) -> Result<String> {
    let cert = match &source.user {
        Some((cert, _)) => cert.clone(),
        None => {
            ensure_self_signed(home)?;
            home.tls_cert()
        }
    };
    let chain = read_chain(&cert)?;
    Ok(optin_protocol::hex(&optin_protocol::sha256(chain[0].as_ref())))
}

/// Loads the certificate and key to serve.
pub fn load(home: &Home, source: &TlsSource) -> Result<TlsIdentity> {
    let (cert, key) = match &source.user {
        Some(pair) => pair.clone(),
        None => {
            ensure_self_signed(home)?;
            (home.tls_cert(), home.tls_key())
        }
    };
    check_private(&key)?;
    let chain = read_chain(&cert)?;
    let pem = std::fs::read(&key).with_context(|| format!("cannot read key {}", key.display()))?;
    let key_der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => anyhow::anyhow!("{} holds no private key", key.display()),
        // The error can quote a line of the file, which would be key material.
        _ => anyhow::anyhow!("{} is not a PEM private key", key.display()),
    })?;
    let sha256 = optin_protocol::hex(&optin_protocol::sha256(chain[0].as_ref()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("cannot configure TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| format!("{} and {} do not make a usable certificate and key", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsIdentity { config: Arc::new(config), sha256 })
}
