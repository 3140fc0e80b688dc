//! mTLS for every Trireme link: who a peer is, what it may do, and the
//! certificates that say so.
//!
//! - [`ca`]: the small CA behind `trireme cert ...` (init, issue, revoke, list;
//!   a CRL and an `issued.json` index in the CA directory).
//! - [`config`]: rustls server and client configurations (TLS 1.3 only, client
//!   certificates required, CA root plus CRL, aws-lc-rs).
//! - [`reload`]: a server configuration that follows its files on disk, so a
//!   new certificate or CRL takes effect without a restart.
//! - [`serve`](mod@serve): serving tonic routes over that TLS, dialling a server, and the
//!   per-RPC role check ([`authorize`], [`Authorizer`]).
//! - [`health`]: the `Health` service (`Ping` echoes the caller's identity).
//!
//! # How a certificate carries its identity
//!
//! The **name** is the subject common name (CN) and also a DNS subject
//! alternative name, so the same certificate can serve as a server
//! certificate for that host name. The **role** is a URI subject alternative
//! name `urn:trireme:role:<role>` ([`ROLE_URI_PREFIX`]), one per certificate.
//! A SAN URI is chosen over a custom extension because every X.509 tool shows
//! it (`openssl x509 -text`), it needs no private OID, and webpki ignores it
//! during path validation. Issued certificates have both the `serverAuth` and
//! `clientAuth` extended key usages.

pub mod ca;
pub mod config;
pub mod health;
pub mod reload;
pub mod serve;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use x509_parser::extensions::GeneralName;

use trireme_common::error::{Error, Result};

pub use ca::{init_ca, issue, issue_between, list, revoke, CaInfo, IssuedCert, RevokeTarget};
pub use config::{client_config, server_config, TlsFiles};
pub use health::HealthService;
pub use reload::{RefusalObserver, ReloadingServerConfig};
pub use serve::{authorize, connect, serve, Authorizer, ClientTls, RpcMethod};

/// Prefix of the URI subject alternative name that carries the role.
pub const ROLE_URI_PREFIX: &str = "urn:trireme:role:";

/// What a certificate holder is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A `trireme-agent`: only the agent RPCs (register, session).
    Agent,
    /// A person or tool that changes things: policies, backups, restores.
    Operator,
    /// A person or dashboard that only reads.
    Viewer,
    /// The controller itself (its server certificate). It may call nothing
    /// but `Health.Ping` on another controller; clients check that the server
    /// they dial has this role.
    Controller,
}

/// A class of RPCs, for [`Role::can`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Lists and details: agents, sources, policies, jobs, snapshots, status.
    Read,
    /// Changes: apply policies, run or cancel jobs, restore.
    Operate,
    /// The agent's own RPCs: `Register` and `Session`.
    AgentSession,
}

impl Action {
    /// The roles allowed to perform this action, for [`authorize`].
    pub fn allowed_roles(self) -> &'static [Role] {
        match self {
            Action::Read => &[Role::Operator, Role::Viewer],
            Action::Operate => &[Role::Operator],
            Action::AgentSession => &[Role::Agent],
        }
    }
}

impl Role {
    /// Every role, e.g. for RPCs open to any valid certificate (`Health.Ping`).
    pub const ALL: &'static [Role] = &[Role::Agent, Role::Operator, Role::Viewer, Role::Controller];

    /// Whether this role may perform `action`: viewers read, operators read
    /// and act, agents only use the agent RPCs, the controller none.
    pub fn can(self, action: Action) -> bool {
        action.allowed_roles().contains(&self)
    }

    /// Shorthand for `can(Action::Read)`.
    pub fn can_read(self) -> bool {
        self.can(Action::Read)
    }

    /// Shorthand for `can(Action::Operate)`.
    pub fn can_operate(self) -> bool {
        self.can(Action::Operate)
    }

    /// Shorthand for `can(Action::AgentSession)`.
    pub fn can_run_agent_session(self) -> bool {
        self.can(Action::AgentSession)
    }

    /// The lowercase name used on the command line and in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
            Role::Controller => "controller",
        }
    }

    /// The SAN URI that encodes this role, e.g. `urn:trireme:role:agent`.
    pub fn uri(self) -> String {
        format!("{ROLE_URI_PREFIX}{}", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected agent, operator, viewer or controller")
            })
    }
}

/// Who is at the other end of a connection, as read from its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The certificate's subject CN (also its DNS SAN).
    pub name: String,
    /// The certificate's role.
    pub role: Role,
    /// The certificate's serial number, lowercase hex without leading zero bytes.
    pub serial: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, serial {})", self.name, self.role, self.serial)
    }
}

/// Lowercase hex of a DER serial number, without leading zero bytes: the
/// form used in `issued.json`, logs and `trireme cert revoke --serial`.
pub fn serial_hex(raw: &[u8]) -> String {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    hex::encode(&raw[start..])
}

/// Read the Trireme identity (name and role) from a DER certificate.
///
/// This does not verify the certificate: the TLS handshake has done that
/// before a handler ever sees it.
///
/// # Errors
/// [`Error::Identity`] when the certificate cannot be parsed, has no common
/// name, has no role, several roles, or an unknown role.
pub fn identity_from_cert(der: &[u8]) -> Result<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| Error::Identity {
        subject: "(unparseable certificate)".into(),
        reason: format!("not a valid X.509 certificate: {e}"),
    })?;
    let subject = cert.subject().to_string();
    let bad = |reason: String| Error::Identity {
        subject: subject.clone(),
        reason,
    };
    let name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
        .ok_or_else(|| bad("it has no subject common name (CN)".into()))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| bad(format!("its subject alternative names cannot be read: {e}")))?;
    let mut roles = Vec::new();
    if let Some(san) = san {
        for gn in &san.value.general_names {
            if let GeneralName::URI(uri) = gn {
                if let Some(r) = uri.strip_prefix(ROLE_URI_PREFIX) {
                    roles.push(r.to_owned());
                }
            }
        }
    }
    let role = match roles.as_slice() {
        [] => {
            return Err(bad(format!(
                "it carries no Trireme role (a subject alternative name URI \
                 `{ROLE_URI_PREFIX}<agent|operator|viewer|controller>`); \
                 issue a certificate with `trireme cert issue --role <role> --name {name}`"
            )))
        }
        [one] => Role::from_str(one).map_err(bad)?,
        _ => {
            return Err(bad(format!(
                "it carries several roles ({}); a Trireme certificate has exactly one",
                roles.join(", ")
            )))
        }
    };
    Ok(Identity {
        name,
        role,
        serial: serial_hex(cert.raw_serial()),
    })
}

/// When a DER certificate expires (its notAfter, Unix seconds); `None`
/// when it cannot be parsed. Like [`identity_from_cert`], this does not
/// verify it: the controller reads it from a session's client certificate
/// after the handshake checked it.
pub fn not_after_from_cert(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The notAfter (Unix seconds) of the client certificate `request` came
/// with, when it came with one.
pub fn peer_not_after<T>(request: &tonic::Request<T>) -> Option<i64> {
    let certs = request.peer_certs()?;
    not_after_from_cert(certs.first()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_actions() {
        assert!(Role::Viewer.can_read() && !Role::Viewer.can_operate());
        assert!(Role::Operator.can_read() && Role::Operator.can_operate());
        assert!(!Role::Operator.can_run_agent_session());
        assert!(Role::Agent.can_run_agent_session());
        assert!(!Role::Agent.can_read() && !Role::Agent.can_operate());
        assert!(!Role::Controller.can_read() && !Role::Controller.can_operate());
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
        assert!("admin".parse::<Role>().unwrap_err().contains("admin"));
        assert_eq!(Role::Agent.uri(), "urn:trireme:role:agent");
    }

    #[test]
    fn serial_hex_strips_leading_zeros() {
        assert_eq!(serial_hex(&[0, 0, 0x4a, 0x01]), "4a01");
        assert_eq!(serial_hex(&[0x7f]), "7f");
        assert_eq!(serial_hex(&[]), "");
    }

    #[test]
    fn identity_requires_a_role() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["host-a".to_string()]).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "host-a");
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let err = identity_from_cert(&der).unwrap_err().to_string();
        assert!(err.contains("no Trireme role"), "{err}");
        assert!(err.contains("trireme cert issue"), "{err}");

        p.subject_alt_names.push(rcgen::SanType::URI(
            "urn:trireme:role:admin".try_into().unwrap(),
        ));
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let err = identity_from_cert(&der).unwrap_err().to_string();
        assert!(err.contains("unknown role \"admin\""), "{err}");

        p.subject_alt_names.pop();
        p.subject_alt_names
            .push(rcgen::SanType::URI(Role::Viewer.uri().try_into().unwrap()));
        let der = p.self_signed(&key).unwrap().der().to_vec();
        let id = identity_from_cert(&der).unwrap();
        assert_eq!((id.name.as_str(), id.role), ("host-a", Role::Viewer));

        assert!(identity_from_cert(b"not a certificate").is_err());
    }
}
