//! Getting this agent's certificate from the controller with a bootstrap
//! token (`trireme agents token create`), instead of one issued beforehand.
//!
//! The agent makes its key here (it never leaves the host), sends its name,
//! the token and a certificate signing request to the controller's
//! enrollment listener (`enroll_listen`: TLS, the controller's certificate
//! checked against `ca.pem`, no client certificate), and writes the
//! certificate it gets back. The key and the certificate are each written
//! to a temporary file in their directory and renamed into place (the key
//! 0600, first), and only after checking that they belong together.
//!
//! `trireme-agent run` does this at start when its certificate and key are
//! both missing and `bootstrap_token_file` is set; `trireme-agent enroll`
//! does it by hand.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use trireme_net::tls::{connect, ClientTls, TlsFiles};
use trireme_net::Role;
use trireme_proto::v1::enroll_service_client::EnrollServiceClient;
use trireme_proto::v1::EnrollRequest;

/// What to enroll with.
#[derive(Debug, Clone)]
pub struct Enrollment {
    /// The controller's enrollment listener, `host:port`.
    pub address: String,
    /// The name the controller's certificate carries.
    pub server_name: String,
    /// This agent's name (its certificate's).
    pub name: String,
    /// Where the certificate and key go, and the CA that vouches for the
    /// controller (`tls.ca`, which must exist: it is the trust anchor).
    pub tls: TlsFiles,
    /// The file holding the bootstrap token.
    pub token_file: PathBuf,
}

/// What an enrollment got.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The certificate's serial (hex).
    pub serial: String,
    /// When it expires (Unix seconds).
    pub not_after_unix: i64,
}

/// The controller answered and refused (wrong token, name out of scope,
/// …): trying again with the same token does not help.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether the agent must enroll: neither its certificate nor its key
/// exists. One without the other is an error (a half-finished setup).
///
/// # Errors
/// Only one of the two files exists.
pub fn needed(tls: &TlsFiles) -> Result<bool> {
    match (tls.cert.exists(), tls.key.exists()) {
        (true, true) => Ok(false),
        (false, false) => Ok(true),
        (true, false) => bail!(
            "the certificate {} exists but its key {} does not: restore the key, or remove the certificate so the agent enrolls again with a bootstrap token",
            tls.cert.display(),
            tls.key.display()
        ),
        (false, true) => bail!(
            "the key {} exists but its certificate {} does not: remove the key so the agent enrolls again with a bootstrap token, or put the certificate back",
            tls.key.display(),
            tls.cert.display()
        ),
    }
}

/// Read a token file: the token on its first line; refused when others may
/// read it.
///
/// # Errors
/// Unreadable, empty, or readable by group or others.
pub fn read_token(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the bootstrap token file {}", path.display()))?;
    // Kubernetes Secret volumes are symlinks to 0644 files by default
    // unless defaultMode is set: ask for 0400/0600 there too.
    if meta.permissions().mode() & 0o077 != 0 {
        bail!(
            "the bootstrap token file {} is readable by group or others (mode {:o}); run `chmod 600 {}` (in Kubernetes: defaultMode: 0400 on the Secret volume)",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the bootstrap token file {}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        bail!(
            "the bootstrap token file {} is empty: put the token from `trireme agents token create` in it",
            path.display()
        );
    }
    Ok(token)
}

/// Enroll: make a key, send the request, write the key and certificate.
///
/// # Errors
/// The token file, the CA file, the controller's refusal (its message says
/// what to do), or the files cannot be written.
pub async fn enroll(e: &Enrollment) -> Result<Enrolled> {
    if !needed(&e.tls)? {
        bail!(
            "{} and {} exist already: nothing to enroll (move them away first to get a new certificate)",
            e.tls.cert.display(),
            e.tls.key.display()
        );
    }
    let token = read_token(&e.token_file)?;
    let config = trireme_net::tls::config::client_config_without_identity(&e.tls.ca)
        .with_context(|| {
            format!(
                "the CA certificate {} is needed to check the controller before sending the token (copy the controller's ca.pem there)",
                e.tls.ca.display()
            )
        })?;
    let (key_pem, csr_pem) = trireme_net::tls::ca::new_key_and_request(&e.name)
        .context("the agent's name must be a valid certificate name")?;
    let channel = connect(
        &e.address,
        ClientTls {
            config: Arc::new(config),
            server_name: e.server_name.clone(),
            server_role: Some(Role::Controller),
        },
    )
    .await
    .with_context(|| {
        format!(
            "cannot reach the controller's enrollment listener at {} (is enroll_listen set in the controller's configuration, and is this its address?)",
            e.address
        )
    })?;
    let reply = EnrollServiceClient::new(channel)
        .enroll(EnrollRequest {
            name: e.name.clone(),
            token,
            csr_pem,
        })
        .await
        .map_err(|s| {
            let m = format!(
                "the controller refused to enroll {:?} ({:?}): {}",
                e.name,
                s.code(),
                s.message()
            );
            if s.code() == tonic::Code::Unavailable {
                anyhow::anyhow!(m)
            } else {
                anyhow::Error::new(Refused(m))
            }
        })?
        .into_inner();
    write_pair(&e.tls, &key_pem, &reply.certificate_pem)?;
    Ok(Enrolled {
        serial: reply.serial,
        not_after_unix: reply.not_after_unix,
    })
}

/// Write the key and certificate atomically (key first, 0600), after
/// checking they make a usable client identity with the CA.
fn write_pair(tls: &TlsFiles, key_pem: &str, cert_pem: &str) -> Result<()> {
    let key = Staged::write(&tls.key, key_pem, 0o600)?;
    let cert = Staged::write(&tls.cert, cert_pem, 0o644)?;
    let staged = TlsFiles {
        cert: cert.0.clone(),
        key: key.0.clone(),
        ca: tls.ca.clone(),
        crl: None,
    };
    trireme_net::tls::client_config(&staged).context(
        "the certificate the controller sent does not fit this agent's new key or its CA",
    )?;
    key.persist(&tls.key)?;
    cert.persist(&tls.cert)
}

/// A new file beside its final path (`.<name>.enroll-<pid>`), removed when
/// dropped unless renamed into place.
struct Staged(PathBuf);

impl Staged {
    fn write(path: &Path, data: &str, mode: u32) -> Result<Staged> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir.join(format!(".{file_name}.enroll-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let staged = Staged(tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&staged.0)
            .with_context(|| format!("cannot create {}", staged.0.display()))?;
        f.write_all(data.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", staged.0.display()))?;
        Ok(staged)
    }

    fn persist(self, to: &Path) -> Result<()> {
        std::fs::rename(&self.0, to)
            .with_context(|| format!("cannot move {} to {}", self.0.display(), to.display()))?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
