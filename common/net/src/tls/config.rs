//! rustls configurations for Trireme links: TLS 1.3 only, aws-lc-rs, HTTP/2
//! (ALPN `h2`), the Trireme CA as the only root, client certificates
//! required by servers and checked against the CA's CRL.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::ca::{CA_CERT_FILE, CRL_FILE};
use trireme_common::error::{Error, Result};

/// The files one end of a link needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Own certificate (PEM; the leaf first, intermediates after).
    pub cert: PathBuf,
    /// Own private key (PEM, mode 0600).
    pub key: PathBuf,
    /// The Trireme CA certificate (`ca.pem`).
    pub ca: PathBuf,
    /// The CA's revocation list (`crl.pem`). Servers should always have one;
    /// without it no certificate can be revoked.
    pub crl: Option<PathBuf>,
}

impl TlsFiles {
    /// The files `trireme cert issue --name <name>` writes, in a directory
    /// that also holds `ca.pem` and `crl.pem` (the CA directory, or a copy).
    pub fn in_dir(dir: &Path, name: &str) -> Self {
        Self {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
            ca: dir.join(CA_CERT_FILE),
            crl: Some(dir.join(CRL_FILE)),
        }
    }

    /// When the own certificate and the CA certificate expire, as
    /// `("cert" | "ca", subject CN, not-after in Unix seconds)`, read from
    /// the files now (a renewed certificate shows at the next call). A file
    /// that cannot be read or parsed is left out.
    pub fn expiry(&self) -> Vec<(&'static str, String, i64)> {
        let one = |path: &Path| -> Option<(String, i64)> {
            let der = load_certs(path).ok()?.into_iter().next()?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            let name = cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .unwrap_or("")
                .to_string();
            Some((name, cert.validity().not_after.timestamp()))
        };
        [("cert", &self.cert), ("ca", &self.ca)]
            .into_iter()
            .filter_map(|(kind, p)| one(p).map(|(n, t)| (kind, n, t)))
            .collect()
    }

    /// Every file, for change detection.
    pub(crate) fn all(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path(), self.ca.as_path()];
        v.extend(self.crl.as_deref());
        v
    }
}

/// The crypto provider of every Trireme TLS config: aws-lc-rs.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration: TLS 1.3 only, a client certificate signed by the
/// CA required, revoked certificates (per the CRL) refused.
///
/// # Errors
/// [`Error::Certificate`] naming the file that is missing, unreadable,
/// malformed or does not fit (e.g. a key that is not the certificate's).
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig> {
    let (roots, crls) = trust(files)?;
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| cert_err(&files.ca, format!("cannot verify clients with it: {e}")))?;
    let (chain, key) = identity(files)?;
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| {
            cert_err(
                &files.cert,
                format!("unusable with {}: {e}", files.key.display()),
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client configuration: TLS 1.3 only, this client's certificate, the CA
/// as the only root (and the CRL, when given, for the server's certificate).
///
/// # Errors
/// As [`server_config`].
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig> {
    let (roots, crls) = trust(files)?;
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .with_crls(crls)
        .build()
        .map_err(|e| cert_err(&files.ca, format!("cannot verify servers with it: {e}")))?;
    let (chain, key) = identity(files)?;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
        .with_webpki_verifier(verifier)
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            cert_err(
                &files.cert,
                format!("unusable with {}: {e}", files.key.display()),
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A server configuration that asks for no client certificate: TLS 1.3
/// only, the server's own certificate. Only for the controller's enrollment
/// listener, where agents without a certificate ask for one; every other
/// Trireme server uses [`server_config`].
///
/// # Errors
/// As [`server_config`].
pub fn server_config_without_client_auth(files: &TlsFiles) -> Result<ServerConfig> {
    let (chain, key) = identity(files)?;
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            cert_err(
                &files.cert,
                format!("unusable with {}: {e}", files.key.display()),
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// A client configuration without a client certificate: TLS 1.3 only, the
/// CA certificate `ca` as the only root. For an agent that has no
/// certificate yet and enrolls for one.
///
/// # Errors
/// [`Error::Certificate`] when `ca` is missing, unreadable or no CA
/// certificate.
pub fn client_config_without_identity(ca: &Path) -> Result<ClientConfig> {
    let files = TlsFiles {
        cert: PathBuf::new(),
        key: PathBuf::new(),
        ca: ca.to_path_buf(),
        crl: None,
    };
    let (roots, _) = trust(&files)?;
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| cert_err(ca, format!("cannot verify servers with it: {e}")))?;
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Tls(format!("TLS 1.3 unavailable: {e}")))?
        .with_webpki_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    Ok(cfg)
}

/// The CA root store and the CRLs.
fn trust(
    files: &TlsFiles,
) -> Result<(
    Arc<RootCertStore>,
    Vec<CertificateRevocationListDer<'static>>,
)> {
    let mut roots = RootCertStore::empty();
    for der in load_certs(&files.ca)? {
        roots
            .add(der)
            .map_err(|e| cert_err(&files.ca, format!("not a usable CA certificate: {e}")))?;
    }
    let crls = match &files.crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    Ok((Arc::new(roots), crls))
}

fn identity(files: &TlsFiles) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    Ok((load_certs(&files.cert)?, load_key(&files.key)?))
}

/// Every certificate in a PEM file (at least one).
///
/// # Errors
/// [`Error::Certificate`] when the file is unreadable or holds no certificate.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cert_err(path, format!("malformed PEM: {e}")))?;
    if certs.is_empty() {
        return Err(cert_err(
            path,
            "no `BEGIN CERTIFICATE` block found; expected a PEM certificate from `trireme cert issue`".into(),
        ));
    }
    Ok(certs)
}

/// A private key from a PEM file that only its owner can read.
///
/// # Errors
/// [`Error::Certificate`] when unreadable, readable by group or others, or
/// not a key.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let meta = std::fs::metadata(path).map_err(|e| cert_err(path, format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(cert_err(
            path,
            format!(
                "private key is readable by group or others (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| {
        cert_err(
            path,
            format!(
                "no private key found ({e}); expected the `.key` file from `trireme cert issue`"
            ),
        )
    })
}

/// Every CRL in a PEM file (at least one: a CRL file without a CRL must not
/// silently switch revocation off).
///
/// # Errors
/// [`Error::Certificate`] when the file is unreadable, malformed or holds no CRL.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let bytes = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| cert_err(path, format!("malformed CRL PEM: {e}")))?;
    if crls.is_empty() {
        return Err(cert_err(
            path,
            "no `BEGIN X509 CRL` block found; `trireme cert init-ca` and `trireme cert revoke` write one".into(),
        ));
    }
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| cert_err(path, format!("cannot read: {e}")))
}

fn cert_err(path: &Path, reason: String) -> Error {
    Error::Certificate {
        path: path.to_path_buf(),
        reason,
    }
}
