//! The CA behind `trireme cert ...`: a self-signed CA, certificates signed by
//! it, a CRL, and an index of what was issued. No openssl needed.
//!
//! A CA directory holds:
//!
//! | file | what |
//! |---|---|
//! | `ca.pem` | the CA certificate: give it to every controller, agent and CLI |
//! | `ca.key` | the CA private key (0600): keep it offline if you can |
//! | `crl.pem` | the revocation list signed by the CA: the controller re-reads it when it changes |
//! | `issued.json` | index of issued certificates: serial, name, role, validity, revoked |
//!
//! Issued certificates go to `<name>.pem` and `<name>.key` (0600) in the CA
//! directory or `--out`. Nothing is ever overwritten. Run one `trireme cert`
//! command at a time per CA directory: the index is not locked.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::Role;
use trireme_common::error::{Error, Result};

/// CA certificate file in a CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Revocation list file in a CA directory.
pub const CRL_FILE: &str = "crl.pem";
/// Index of issued certificates in a CA directory.
pub const INDEX_FILE: &str = "issued.json";

/// How long the CA certificate is valid.
const CA_DAYS: i64 = 3650;
/// How long a CRL says it is good for (rustls does not enforce it; every
/// revoke signs a fresh one).
const CRL_DAYS: i64 = 365;
/// Certificates start being valid a little before now, for clock skew.
const BACKDATE: Duration = Duration::from_secs(300);

/// One certificate in `issued.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial number, lowercase hex (as shown by `trireme cert ls`).
    pub serial: String,
    /// Subject CN and DNS name.
    pub name: String,
    /// Role encoded in the certificate.
    pub role: Role,
    /// Start of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    /// End of validity.
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    /// Whether the certificate is in the CRL.
    pub revoked: bool,
    /// When it was revoked.
    #[serde(with = "time::serde::rfc3339::option", default)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl IssuedCert {
    /// `revoked`, `expired`, `not yet valid` or `valid`, as of now.
    pub fn status(&self) -> &'static str {
        let now = OffsetDateTime::now_utc();
        if self.revoked {
            "revoked"
        } else if now > self.not_after {
            "expired"
        } else if now < self.not_before {
            "not yet valid"
        } else {
            "valid"
        }
    }
}

/// `issued.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    /// Format version of this file.
    version: u32,
    /// Number of the last CRL signed (CRL numbers must increase).
    crl_number: u64,
    /// Every certificate issued, oldest first.
    certs: Vec<IssuedCert>,
}

/// What [`init_ca`] created.
#[derive(Debug, Clone)]
pub struct CaInfo {
    /// Subject CN of the CA certificate.
    pub name: String,
    /// `ca.pem`.
    pub cert_path: PathBuf,
    /// `ca.key`.
    pub key_path: PathBuf,
    /// `crl.pem` (empty list).
    pub crl_path: PathBuf,
    /// End of the CA's validity.
    pub not_after: OffsetDateTime,
}

/// What [`issue`] wrote.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The index entry.
    pub cert: IssuedCert,
    /// `<out>/<name>.pem`.
    pub cert_path: PathBuf,
    /// `<out>/<name>.key` (0600).
    pub key_path: PathBuf,
}

/// Which certificates to revoke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeTarget {
    /// One certificate by serial (hex; `:` separators and case are ignored).
    Serial(String),
    /// Every not-yet-revoked certificate with this name.
    Name(String),
}

/// Create a CA in `dir` (created 0700 when missing): `ca.pem`, `ca.key`
/// (0600), an empty `crl.pem` and an empty `issued.json`.
///
/// # Errors
/// [`Error::Ca`] when `dir` already holds a CA (nothing is overwritten);
/// [`Error::Io`] when files cannot be written.
pub fn init_ca(dir: &Path) -> Result<CaInfo> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    for p in [&cert_path, &key_path, &dir.join(INDEX_FILE)] {
        if p.exists() {
            return Err(Error::Ca {
                dir: dir.to_path_buf(),
                reason: format!(
                    "{} already exists: refusing to overwrite an existing CA \
                     (choose another --dir, or remove the old CA on purpose)",
                    p.display()
                ),
            });
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io("creating CA directory", dir, e))?;

    let now = OffsetDateTime::now_utc();
    let name = format!(
        "Trireme CA {}",
        hex::encode(trireme_common::crypto::random_bytes::<4>())
    );
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, &name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Trireme");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = whole_seconds(now - BACKDATE);
    params.not_after = whole_seconds(now + time::Duration::days(CA_DAYS));
    params.serial_number = Some(random_serial());
    let key = KeyPair::generate().map_err(|e| rcgen_err(dir, "generating the CA key", e))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| rcgen_err(dir, "signing the CA certificate", e))?;

    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    let issuer = Issuer::new(params.clone(), key);
    let mut index = Index {
        version: 1,
        ..Index::default()
    };
    write_crl(dir, &issuer, &mut index)?;
    write_index(dir, &index)?;
    Ok(CaInfo {
        name,
        cert_path,
        key_path,
        crl_path: dir.join(CRL_FILE),
        not_after: params.not_after,
    })
}

/// Issue a certificate for `name` with `role`, valid from now for `days`
/// days, into `<out_dir>/<name>.pem` and `<out_dir>/<name>.key`.
///
/// # Errors
/// [`Error::CertRequest`] for an invalid name or `days == 0`; [`Error::Ca`]
/// when the CA is missing or its key is readable by others; [`Error::Io`]
/// when an output file exists or cannot be written.
pub fn issue(ca_dir: &Path, role: Role, name: &str, days: u32, out_dir: &Path) -> Result<Issued> {
    if days == 0 {
        return Err(Error::CertRequest("--days must be at least 1".to_string()));
    }
    let now = SystemTime::now();
    let not_after = now + Duration::from_secs(u64::from(days) * 86_400);
    issue_between(ca_dir, role, name, now - BACKDATE, not_after, out_dir)
}

/// Like [`issue`] with an explicit validity window (which may lie in the
/// past: tests use it to make expired certificates).
///
/// # Errors
/// As [`issue`]; also when `not_after` is not after `not_before`.
pub fn issue_between(
    ca_dir: &Path,
    role: Role,
    name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    out_dir: &Path,
) -> Result<Issued> {
    check_name(name)?;
    if not_after <= not_before {
        return Err(Error::CertRequest(
            "the certificate would end before it starts".to_string(),
        ));
    }
    let (issuer, mut index) = open_ca(ca_dir)?;
    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(Error::CertRequest(format!(
                "{} already exists: refusing to overwrite it (revoke the old certificate \
                 if it is compromised, move its files away, or choose another --out)",
                p.display()
            )));
        }
    }

    let serial = random_serial();
    let params = leaf_params(role, name, not_before, not_after, &serial)?;
    let key = KeyPair::generate().map_err(|e| rcgen_err(ca_dir, "generating a key", e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| rcgen_err(ca_dir, "signing the certificate", e))?;

    std::fs::create_dir_all(out_dir).map_err(|e| Error::io("creating", out_dir, e))?;
    write_new(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    if let Err(e) = write_new(&cert_path, cert.pem().as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    let entry = issued_entry(&serial, name, role, &params);
    index.certs.push(entry.clone());
    if let Err(e) = write_index(ca_dir, &index) {
        let _ = std::fs::remove_file(&key_path);
        let _ = std::fs::remove_file(&cert_path);
        return Err(e);
    }
    Ok(Issued {
        cert: entry,
        cert_path,
        key_path,
    })
}

/// The index entry of a certificate just signed with `params`.
fn issued_entry(
    serial: &SerialNumber,
    name: &str,
    role: Role,
    params: &CertificateParams,
) -> IssuedCert {
    IssuedCert {
        serial: super::serial_hex(serial.as_ref()),
        name: name.to_string(),
        role,
        not_before: params.not_before,
        not_after: params.not_after,
        revoked: false,
        revoked_at: None,
    }
}

/// The profile of every certificate this CA issues to an agent, operator,
/// viewer or controller: CN and DNS SAN `name`, the role URI SAN, digital
/// signature, both `serverAuth` and `clientAuth`, whole-second validity.
fn leaf_params(
    role: Role,
    name: &str,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: &SerialNumber,
) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = vec![
        SanType::DnsName(
            name.try_into()
                .map_err(|e| Error::CertRequest(format!("name {name:?}: {e}")))?,
        ),
        SanType::URI(
            role.uri()
                .try_into()
                .map_err(|e| Error::CertRequest(format!("role URI: {e}")))?,
        ),
    ];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(serial.clone());
    // X.509 times have whole seconds: keep the index equal to the certificate.
    params.not_before = whole_seconds(OffsetDateTime::from(not_before));
    params.not_after = whole_seconds(OffsetDateTime::from(not_after));
    Ok(params)
}

/// A new private key (PEM, PKCS #8) and a certificate signing request for
/// `name` signed with it (PEM), for an agent that enrolls: the key stays
/// on the agent's host, the request goes to the controller
/// ([`sign_request`]).
///
/// # Errors
/// [`Error::CertRequest`] for an invalid name or when the key or request
/// cannot be made.
pub fn new_key_and_request(name: &str) -> Result<(String, String)> {
    check_name(name)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names =
        vec![SanType::DnsName(name.try_into().map_err(|e| {
            Error::CertRequest(format!("name {name:?}: {e}"))
        })?)];
    let key =
        KeyPair::generate().map_err(|e| Error::CertRequest(format!("generating a key: {e}")))?;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| Error::CertRequest(format!("making the signing request: {e}")))?;
    Ok((key.serialize_pem(), csr))
}

/// What [`sign_request`] made: the index entry and the certificate (PEM).
#[derive(Debug, Clone)]
pub struct Signed {
    /// The index entry (in `issued.json`).
    pub cert: IssuedCert,
    /// The certificate, PEM.
    pub pem: String,
}

/// Sign a certificate for `name` with `role`, valid from now for `days`
/// days, over the public key of `csr_pem` (a PKCS #10 request whose
/// signature proves its sender holds the private key; the key never comes
/// here). The request's own subject and extensions are ignored: the
/// certificate has the same profile as [`issue`]'s. It is recorded in
/// `issued.json` (so `trireme cert ls` and `revoke` know it); nothing is
/// written besides the index.
///
/// # Errors
/// [`Error::CertRequest`] for an invalid name, `days == 0`, or a request
/// that does not parse or whose signature does not verify; [`Error::Ca`]
/// when the CA is missing or its key is readable by others.
pub fn sign_request(
    ca_dir: &Path,
    role: Role,
    name: &str,
    days: u32,
    csr_pem: &str,
) -> Result<Signed> {
    check_name(name)?;
    if days == 0 {
        return Err(Error::CertRequest("days must be at least 1".to_string()));
    }
    let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
        Error::CertRequest(format!(
            "the certificate signing request is not a valid, self-signed PKCS #10 request in PEM: {e}"
        ))
    })?;
    let (issuer, mut index) = open_ca(ca_dir)?;
    let now = SystemTime::now();
    let serial = random_serial();
    let params = leaf_params(
        role,
        name,
        now - BACKDATE,
        now + Duration::from_secs(u64::from(days) * 86_400),
        &serial,
    )?;
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(|e| rcgen_err(ca_dir, "signing the certificate", e))?;
    let entry = issued_entry(&serial, name, role, &params);
    index.certs.push(entry.clone());
    write_index(ca_dir, &index)?;
    Ok(Signed {
        cert: entry,
        pem: cert.pem(),
    })
}

/// Revoke certificates and sign a new `crl.pem`. Returns the certificates
/// revoked by this call.
///
/// # Errors
/// [`Error::CertRequest`] when nothing matches or everything that matches is
/// already revoked; [`Error::Ca`] when the CA cannot be opened.
pub fn revoke(ca_dir: &Path, target: &RevokeTarget) -> Result<Vec<IssuedCert>> {
    let (issuer, mut index) = open_ca(ca_dir)?;
    let now = whole_seconds(OffsetDateTime::now_utc());
    let (matches, what): (Vec<usize>, String) = match target {
        RevokeTarget::Serial(s) => {
            let want = normalize_serial(s);
            (
                index
                    .certs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| c.serial == want)
                    .map(|(i, _)| i)
                    .collect(),
                format!("serial {want}"),
            )
        }
        RevokeTarget::Name(n) => (
            index
                .certs
                .iter()
                .enumerate()
                .filter(|(_, c)| &c.name == n)
                .map(|(i, _)| i)
                .collect(),
            format!("name {n:?}"),
        ),
    };
    if matches.is_empty() {
        return Err(Error::CertRequest(format!(
            "no certificate with {what} in {}; see `trireme cert ls --dir {}`",
            ca_dir.join(INDEX_FILE).display(),
            ca_dir.display()
        )));
    }
    let mut revoked = Vec::new();
    for i in matches {
        let c = &mut index.certs[i];
        if !c.revoked {
            c.revoked = true;
            c.revoked_at = Some(now);
            revoked.push(c.clone());
        }
    }
    if revoked.is_empty() {
        return Err(Error::CertRequest(format!(
            "every certificate with {what} is already revoked"
        )));
    }
    write_crl(ca_dir, &issuer, &mut index)?;
    write_index(ca_dir, &index)?;
    Ok(revoked)
}

/// A renewed certificate and the one it replaces.
#[derive(Debug)]
pub struct Renewed {
    /// The new certificate, written over the old files.
    pub issued: Issued,
    /// The certificate it replaces (still valid until it expires or is revoked).
    pub replaced: IssuedCert,
}

/// Renew the certificate called `name`: a new key and certificate with the
/// same name and role as its newest valid one, valid `days` from now,
/// replacing `<out_dir>/<name>.pem` and `.key`. The new pair is written
/// beside them first and renamed over them (key, then certificate), so a
/// server that reloads its files on change never reads half a file. The
/// old certificate stays valid until it expires; revoke it by serial once
/// every holder uses the new one.
///
/// # Errors
/// [`Error::CertRequest`] when the CA issued no valid certificate of that
/// name, or `<out_dir>/<name>.pem` is not that certificate's file (another
/// name's or a foreign one: nothing is replaced then); CA and I/O errors.
pub fn renew(ca_dir: &Path, name: &str, days: u32, out_dir: &Path) -> Result<Renewed> {
    let replaced = list(ca_dir)?
        .into_iter()
        .filter(|c| c.name == name && c.status() == "valid")
        .max_by_key(|c| c.not_after)
        .ok_or_else(|| {
            Error::CertRequest(format!(
                "this CA has no valid certificate named {name:?} to renew (see `trireme cert ls`); issue one with `trireme cert issue`"
            ))
        })?;
    let cert_path = out_dir.join(format!("{name}.pem"));
    let key_path = out_dir.join(format!("{name}.key"));
    // Replace only a certificate this CA issued under that name.
    let current = super::config::load_certs(&cert_path).map_err(|e| {
        Error::CertRequest(format!(
            "{}: {e}; give --out the directory holding {name}.pem and {name}.key",
            cert_path.display()
        ))
    })?;
    let serial = current
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, c)| super::serial_hex(c.raw_serial()));
    let known = list(ca_dir)?;
    if !serial
        .as_ref()
        .is_some_and(|s| known.iter().any(|c| &c.serial == s && c.name == name))
    {
        return Err(Error::CertRequest(format!(
            "{} is not a certificate this CA issued for {name:?}: nothing replaced",
            cert_path.display()
        )));
    }
    let staging = out_dir.join(format!(".renew-{name}"));
    if staging.exists() {
        return Err(Error::CertRequest(format!(
            "{} exists (an interrupted renewal?): look at it, remove it, and run renew again",
            staging.display()
        )));
    }
    std::fs::create_dir(&staging)
        .map_err(|e| Error::CertRequest(format!("{}: {e}", staging.display())))?;
    let issued = issue(ca_dir, replaced.role, name, days, &staging);
    let moved = issued.and_then(|mut i| {
        for (from, to) in [(&i.key_path, &key_path), (&i.cert_path, &cert_path)] {
            std::fs::rename(from, to).map_err(|e| {
                Error::CertRequest(format!(
                    "moving {} to {}: {e}",
                    from.display(),
                    to.display()
                ))
            })?;
        }
        i.key_path = key_path.clone();
        i.cert_path = cert_path.clone();
        Ok(i)
    });
    // The staging directory is ours and empty once both files moved.
    let _ = std::fs::remove_dir(&staging);
    Ok(Renewed {
        issued: moved?,
        replaced,
    })
}

/// Every certificate this CA issued, oldest first.
///
/// # Errors
/// [`Error::Ca`] when `ca_dir` has no index.
pub fn list(ca_dir: &Path) -> Result<Vec<IssuedCert>> {
    Ok(read_index(ca_dir)?.certs)
}

fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Lowercase hex without separators or leading zero bytes.
fn normalize_serial(s: &str) -> String {
    let h: String = s
        .trim()
        .trim_start_matches("0x")
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    match hex::decode(if h.len() % 2 == 1 {
        format!("0{h}")
    } else {
        h.clone()
    }) {
        Ok(raw) => super::serial_hex(&raw),
        Err(_) => h,
    }
}

/// A positive 16-byte serial with a non-zero first byte, so its DER form,
/// its CRL entry and its hex are the same bytes.
fn random_serial() -> SerialNumber {
    let mut b = trireme_common::crypto::random_bytes::<16>();
    b[0] = (b[0] & 0x7f) | 0x10;
    SerialNumber::from_slice(&b)
}

/// Names become a CN, a DNS SAN and file names: DNS characters only.
///
/// # Errors
/// [`Error::CertRequest`] saying what is wrong with `name`.
pub fn check_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::CertRequest(format!(
            "invalid name {name:?}: {why} (use a host name such as `db-1` or `controller.example.net`)"
        )))
    };
    if name.is_empty() || name.len() > 253 {
        return bad("it must be 1 to 253 characters");
    }
    if name == "ca" || name == "crl" {
        return bad("it would collide with the CA's own files");
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return bad("each dot-separated part must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return bad("a part cannot start or end with '-'");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("only lowercase letters, digits, '-' and '.' are allowed");
        }
    }
    Ok(())
}

/// The CA's issuer (certificate and key) and its index.
fn open_ca(dir: &Path) -> Result<(Issuer<'static, KeyPair>, Index)> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if !cert_path.exists() || !key_path.exists() {
        return Err(no_ca(dir));
    }
    let meta = std::fs::metadata(&key_path).map_err(|e| Error::io("reading", &key_path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(Error::Ca {
            dir: dir.to_path_buf(),
            reason: format!(
                "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
                key_path.display(),
                meta.permissions().mode() & 0o777,
                key_path.display()
            ),
        });
    }
    let key_pem =
        std::fs::read_to_string(&key_path).map_err(|e| Error::io("reading", &key_path, e))?;
    let cert_pem =
        std::fs::read_to_string(&cert_path).map_err(|e| Error::io("reading", &cert_path, e))?;
    let key = KeyPair::from_pem(&key_pem).map_err(|e| rcgen_err(dir, "reading ca.key", e))?;
    let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
        .map_err(|e| rcgen_err(dir, "reading ca.pem", e))?;
    Ok((issuer, read_index(dir)?))
}

fn no_ca(dir: &Path) -> Error {
    Error::Ca {
        dir: dir.to_path_buf(),
        reason: format!(
            "no CA here; create one with `trireme cert init-ca --dir {}`",
            dir.display()
        ),
    }
}

fn rcgen_err(dir: &Path, what: &str, e: rcgen::Error) -> Error {
    Error::Ca {
        dir: dir.to_path_buf(),
        reason: format!("{what}: {e}"),
    }
}

fn read_index(dir: &Path) -> Result<Index> {
    let path = dir.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(no_ca(dir)),
        Err(e) => return Err(Error::io("reading", &path, e)),
    };
    let index: Index = serde_json::from_slice(&bytes).map_err(|e| Error::Ca {
        dir: dir.to_path_buf(),
        reason: format!("{} is damaged: {e}", path.display()),
    })?;
    let mut seen = HashSet::new();
    if let Some(dup) = index.certs.iter().find(|c| !seen.insert(&c.serial)) {
        return Err(Error::Ca {
            dir: dir.to_path_buf(),
            reason: format!("{} lists serial {} twice", path.display(), dup.serial),
        });
    }
    Ok(index)
}

fn write_index(dir: &Path, index: &Index) -> Result<()> {
    let mut json = serde_json::to_vec_pretty(index).expect("index serializes");
    json.push(b'\n');
    write_replace(&dir.join(INDEX_FILE), &json, 0o644)
}

/// Sign a CRL listing every revoked certificate of `index` (bumping its CRL
/// number) and replace `crl.pem` atomically, so a server polling the file
/// never reads half of it.
fn write_crl(dir: &Path, issuer: &Issuer<'_, KeyPair>, index: &mut Index) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    index.crl_number += 1;
    let mut revoked_certs = Vec::new();
    for c in index.certs.iter().filter(|c| c.revoked) {
        let raw = hex::decode(&c.serial).map_err(|_| Error::Ca {
            dir: dir.to_path_buf(),
            reason: format!("{INDEX_FILE} has an invalid serial {:?}", c.serial),
        })?;
        revoked_certs.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&raw),
            revocation_time: c.revoked_at.unwrap_or(now),
            reason_code: None,
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now - BACKDATE,
        next_update: now + time::Duration::days(CRL_DAYS),
        crl_number: SerialNumber::from(index.crl_number),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(issuer)
        .map_err(|e| rcgen_err(dir, "signing the CRL", e))?;
    let pem = crl
        .pem()
        .map_err(|e| rcgen_err(dir, "encoding the CRL", e))?;
    write_replace(&dir.join(CRL_FILE), pem.as_bytes(), 0o644)
}

/// Create `path` with `mode`; never overwrites.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

/// Replace `path` atomically (temporary file in the same directory, rename).
fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(|e| Error::io("creating a temporary file in", dir, e))?;
    tmp.write_all(data)
        .and_then(|_| tmp.as_file().sync_all())
        .map_err(|e| Error::io("writing", tmp.path().to_path_buf(), e))?;
    tmp.persist(path)
        .map_err(|e| Error::io("replacing", path, e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["db-1", "controller.example.net", "a", "x1.y2"] {
            check_name(ok).unwrap();
        }
        for bad in [
            "", "ca", "Upper", "a/b", "../x", "-a", "a-", "a..b", "a b", "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn serials_normalize() {
        assert_eq!(normalize_serial("1A:2b:03"), "1a2b03");
        assert_eq!(normalize_serial("001a"), "1a");
        assert_eq!(normalize_serial("0x1a2"), "01a2");
        let s = random_serial();
        let h = crate::tls::serial_hex(s.as_ref());
        assert_eq!(h.len(), 32);
        assert_eq!(normalize_serial(&h.to_uppercase()), h);
    }

    #[test]
    fn ca_issue_revoke_list() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let info = init_ca(&ca).unwrap();
        assert!(info.name.starts_with("Trireme CA "));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&info.key_path), 0o600);
        assert!(matches!(init_ca(&ca), Err(Error::Ca { .. })));

        let a = issue(&ca, Role::Agent, "db-1", 30, &ca).unwrap();
        assert_eq!(mode(&a.key_path), 0o600);
        let der = rustls::pki_types::CertificateDer::from_pem_file(&a.cert_path).unwrap();
        let id = crate::tls::identity_from_cert(&der).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("db-1", Role::Agent));
        assert_eq!(id.serial, a.cert.serial);
        // no overwrite of an existing certificate
        assert!(issue(&ca, Role::Agent, "db-1", 30, &ca).is_err());
        let out = dir.path().join("out");
        let b = issue(&ca, Role::Viewer, "db-1", 30, &out).unwrap();
        assert_eq!(list(&ca).unwrap().len(), 2);

        let r = revoke(&ca, &RevokeTarget::Serial(a.cert.serial.to_uppercase())).unwrap();
        assert_eq!(r.len(), 1);
        assert!(revoke(&ca, &RevokeTarget::Serial(a.cert.serial.clone())).is_err());
        let r = revoke(&ca, &RevokeTarget::Name("db-1".into())).unwrap();
        assert_eq!(r[0].serial, b.cert.serial);
        assert!(revoke(&ca, &RevokeTarget::Name("nobody".into())).is_err());
        assert!(list(&ca).unwrap().iter().all(|c| c.revoked));

        let crl_pem = std::fs::read(ca.join(CRL_FILE)).unwrap();
        use rustls::pki_types::pem::PemObject;
        let crl =
            rustls::pki_types::CertificateRevocationListDer::from_pem_slice(&crl_pem).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&crl).unwrap();
        let serials: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| crate::tls::serial_hex(r.raw_serial()))
            .collect();
        assert_eq!(serials, vec![a.cert.serial.clone(), b.cert.serial.clone()]);
    }

    #[test]
    fn group_readable_ca_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let info = init_ca(dir.path()).unwrap();
        std::fs::set_permissions(&info.key_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = issue(dir.path(), Role::Agent, "x", 1, dir.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }
}
