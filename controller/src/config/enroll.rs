//! The enrollment listener's settings: where agents without a certificate
//! ask for one with a bootstrap token (see [`crate::bootstrap`]).
//!
//! ```toml
//! enroll_listen = "0.0.0.0:7444"      # off unless set; TLS, no client certificate
//! enroll_ca_dir = "/etc/trireme/ca"   # the CA that signs agents' certificates (ca.pem, ca.key, issued.json)
//! enroll_cert_days = 365              # validity of certificates issued there (default 365, as `trireme cert issue`)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `enroll_listen` and what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrollSettings {
    /// Where the enrollment service listens.
    pub listen: SocketAddr,
    /// The CA directory whose key signs agents' certificates.
    pub ca_dir: PathBuf,
    /// Days a certificate issued at enrollment is valid.
    pub cert_days: u32,
}

/// The default validity, the same as `trireme cert issue`'s.
pub const DEFAULT_CERT_DAYS: u32 = 365;

/// Build the settings from the raw fields; `None` when `enroll_listen` is
/// not set (then the other two must not be either).
///
/// # Errors
/// What is wrong, and what to write.
pub(super) fn build(
    listen: Option<&str>,
    ca_dir: Option<&Path>,
    cert_days: Option<u32>,
    main_listen: SocketAddr,
    abs: impl Fn(&Path) -> PathBuf,
) -> Result<Option<EnrollSettings>, String> {
    let Some(listen) = listen else {
        if ca_dir.is_some() || cert_days.is_some() {
            return Err("enroll_ca_dir and enroll_cert_days only apply with enroll_listen = \"0.0.0.0:7444\" (the enrollment listener is off)".into());
        }
        return Ok(None);
    };
    let listen: SocketAddr = listen.parse().map_err(|e| {
        format!("enroll_listen = {listen:?} is not an address ({e}); write e.g. \"0.0.0.0:7444\"")
    })?;
    if listen == main_listen {
        return Err(format!(
            "enroll_listen = \"{listen}\" is the main listen address: the enrollment listener needs its own port (the main one keeps requiring client certificates)"
        ));
    }
    let ca_dir = ca_dir.ok_or(
        "enroll_listen needs enroll_ca_dir = \"/etc/trireme/ca\": the CA directory (from `trireme cert init-ca`) whose key signs agents' certificates",
    )?;
    let cert_days = cert_days.unwrap_or(DEFAULT_CERT_DAYS);
    if cert_days == 0 {
        return Err("enroll_cert_days must be at least 1 (default 365)".into());
    }
    Ok(Some(EnrollSettings {
        listen,
        ca_dir: abs(ca_dir),
        cert_days,
    }))
}
