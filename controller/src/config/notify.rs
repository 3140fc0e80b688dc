//! `[[notify]]` targets: who is told what, and how.
//!
//! ```toml
//! [[notify]]
//! name = "oncall"
//! kind = "webhook"                  # POST JSON, signed: X-Trireme-Signature: sha256=<HMAC>
//! url = "https://hooks.example.com/trireme"
//! secret_file = "/etc/trireme/notify.secret"   # mode 0600; the HMAC key
//! events = ["job_failed", "recovery_red", "location_unreachable", "audit_chain_broken"]   # default: all
//!
//! [[notify]]
//! name = "chat"
//! kind = "slack"                    # a Slack incoming webhook: {"text": ...}
//! url = "https://hooks.slack.com/services/T000/B000/XXXX"
//!
//! [[notify]]
//! name = "mail"
//! kind = "email"                    # SMTP
//! url = "smtp://mail.example.com:587"  # STARTTLS required; smtps://host:465 (TLS); smtp+insecure://127.0.0.1:25 (none)
//! from = "trireme@example.com"
//! to = ["oncall@example.com"]
//! username = "trireme"               # optional, with password_file (mode 0600)
//! password_file = "/etc/trireme/smtp.password"
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A job failed (each attempt; the text says whether a retry follows).
    JobFailed,
    /// A source's RPO or RTO turned red (as `trireme status` shows it).
    RecoveryRed,
    /// A restore test finished, passed or failed.
    RestoreTest,
    /// A DR drill finished.
    Drill,
    /// A location could not be listed by a replication pass.
    LocationUnreachable,
    /// Missing, truncated or corrupt copies were found at a location.
    DamagedCopy,
    /// The audit log's hash chain does not verify (checked at start and
    /// every hour): an entry was edited, removed or replaced.
    AuditChainBroken,
}

impl EventKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [EventKind; 7] = [
        EventKind::JobFailed,
        EventKind::RecoveryRed,
        EventKind::RestoreTest,
        EventKind::Drill,
        EventKind::LocationUnreachable,
        EventKind::DamagedCopy,
        EventKind::AuditChainBroken,
    ];

    /// The name in configs and payloads.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::JobFailed => "job_failed",
            EventKind::RecoveryRed => "recovery_red",
            EventKind::RestoreTest => "restore_test",
            EventKind::Drill => "drill",
            EventKind::LocationUnreachable => "location_unreachable",
            EventKind::DamagedCopy => "damaged_copy",
            EventKind::AuditChainBroken => "audit_chain_broken",
        }
    }
}

/// How a target is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyKind {
    /// A JSON POST, signed with HMAC-SHA256 under `secret` when given.
    Webhook {
        /// The HMAC key (the secret file's bytes, trimmed).
        secret: Option<Vec<u8>>,
    },
    /// A Slack incoming webhook.
    Slack,
    /// An email through an SMTP server (`url` = `smtp://`, `smtps://` or
    /// `smtp+insecure://` `host:port`).
    Email {
        /// The sender address.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// How the connection is protected.
        security: SmtpSecurity,
        /// SMTP AUTH user name and password, if any.
        credentials: Option<(String, String)>,
    },
}

impl NotifyKind {
    /// `webhook`, `slack` or `email`, as in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            NotifyKind::Webhook { .. } => "webhook",
            NotifyKind::Slack => "slack",
            NotifyKind::Email { .. } => "email",
        }
    }
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://`: STARTTLS, required (default port 587).
    StartTls,
    /// `smtps://`: TLS from the first byte (default port 465).
    Tls,
    /// `smtp+insecure://`: no encryption (a relay on the same host only).
    None,
}

/// `host` and `port` of an SMTP URL, and its security.
pub fn smtp_endpoint(url: &str) -> Option<(String, u16, SmtpSecurity)> {
    let (security, rest, port) = if let Some(r) = url.strip_prefix("smtps://") {
        (SmtpSecurity::Tls, r, 465)
    } else if let Some(r) = url.strip_prefix("smtp+insecure://") {
        (SmtpSecurity::None, r, 25)
    } else {
        (SmtpSecurity::StartTls, url.strip_prefix("smtp://")?, 587)
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().ok()?),
        None => (rest, port),
    };
    if host.is_empty() || host.contains(['/', '@', '?']) {
        return None;
    }
    Some((host.to_string(), port, security))
}

/// One `[[notify]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyTarget {
    /// Its name, in logs and the audit log.
    pub name: String,
    /// How.
    pub kind: NotifyKind,
    /// Where: `http://` or `https://`; for email the SMTP server's URL.
    pub url: String,
    /// What; empty: everything.
    pub events: Vec<EventKind>,
}

impl NotifyTarget {
    /// Whether this target wants `kind`.
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.is_empty() || self.events.contains(&kind)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    name: String,
    kind: String,
    url: String,
    secret_file: Option<std::path::PathBuf>,
    #[serde(default)]
    events: Vec<String>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
    username: Option<String>,
    password_file: Option<std::path::PathBuf>,
}

impl RawNotify {
    pub(super) fn build(self, base: &Path) -> Result<NotifyTarget> {
        let bad = |field: &'static str, value: &str, why: String| Error::invalid(field, value, why);
        let email = self.kind == "email";
        if !email
            && (self.from.is_some()
                || !self.to.is_empty()
                || self.username.is_some()
                || self.password_file.is_some())
        {
            return Err(bad(
                "notify.kind",
                &self.kind,
                format!("[[notify]] {:?}: from, to, username and password_file are for kind = \"email\"", self.name),
            ));
        }
        if email {
            if smtp_endpoint(&self.url).is_none() {
                return Err(bad(
                    "notify.url",
                    &self.url,
                    format!(
                        "[[notify]] {:?}: write smtp://HOST[:587] (STARTTLS), smtps://HOST[:465] (TLS) or smtp+insecure://HOST[:25] (no encryption: a relay on this host only)",
                        self.name
                    ),
                ));
            }
        } else if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(bad(
                "notify.url",
                &self.url,
                format!(
                    "[[notify]] {:?}: write an http:// or https:// URL",
                    self.name
                ),
            ));
        }
        let events = self
            .events
            .iter()
            .map(|e| {
                EventKind::ALL
                    .into_iter()
                    .find(|k| k.name() == e)
                    .ok_or_else(|| {
                        bad(
                            "notify.events",
                            e,
                            format!(
                                "the events are {}",
                                EventKind::ALL.map(EventKind::name).join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let kind = match self.kind.as_str() {
            "webhook" => NotifyKind::Webhook {
                secret: match &self.secret_file {
                    None => None,
                    Some(f) => {
                        let f = if f.is_absolute() {
                            f.clone()
                        } else {
                            base.join(f)
                        };
                        Some(read_secret(&f)?)
                    }
                },
            },
            "slack" => {
                if self.secret_file.is_some() {
                    return Err(bad(
                        "notify.secret_file",
                        &self.name,
                        "a slack target has no secret_file: the URL is the secret".into(),
                    ));
                }
                NotifyKind::Slack
            }
            "email" => {
                let address = |field: &'static str, a: &str| -> Result<String> {
                    a.parse::<lettre::message::Mailbox>()
                        .map(|_| a.to_string())
                        .map_err(|e| {
                            bad(
                                field,
                                a,
                                format!("[[notify]] {:?}: not an email address ({e})", self.name),
                            )
                        })
                };
                let from = address(
                    "notify.from",
                    self.from.as_deref().ok_or_else(|| {
                        bad(
                            "notify.from",
                            &self.name,
                            "an email target needs from = \"trireme@example.com\"".into(),
                        )
                    })?,
                )?;
                if self.to.is_empty() {
                    return Err(bad(
                        "notify.to",
                        &self.name,
                        "an email target needs to = [\"oncall@example.com\"]".into(),
                    ));
                }
                let to = self
                    .to
                    .iter()
                    .map(|a| address("notify.to", a))
                    .collect::<Result<Vec<_>>>()?;
                let credentials = match (&self.username, &self.password_file) {
                    (None, None) => None,
                    (Some(u), Some(f)) => {
                        let f = if f.is_absolute() {
                            f.clone()
                        } else {
                            base.join(f)
                        };
                        Some((
                            u.clone(),
                            String::from_utf8_lossy(&read_secret(&f)?).into_owned(),
                        ))
                    }
                    _ => {
                        return Err(bad(
                            "notify.username",
                            &self.name,
                            "give both username and password_file, or neither".into(),
                        ))
                    }
                };
                if self.secret_file.is_some() {
                    return Err(bad(
                        "notify.secret_file",
                        &self.name,
                        "an email target has no secret_file (that signs webhooks)".into(),
                    ));
                }
                let (_, _, security) = smtp_endpoint(&self.url).expect("checked above");
                NotifyKind::Email {
                    from,
                    to,
                    security,
                    credentials,
                }
            }
            other => {
                return Err(bad(
                    "notify.kind",
                    other,
                    "write \"webhook\", \"slack\" or \"email\"".into(),
                ))
            }
        };
        Ok(NotifyTarget {
            name: self.name,
            kind,
            url: self.url,
            events,
        })
    }
}

/// A secret file: mode 0600 or 0400, not empty.
fn read_secret(path: &Path) -> Result<Vec<u8>> {
    use std::os::unix::fs::PermissionsExt;
    let io = |e: std::io::Error| Error::Io {
        context: format!("reading the notify secret_file {}", path.display()),
        source: e,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::invalid(
            "notify.secret_file",
            path.display().to_string(),
            format!(
                "it is readable by others (mode {:o}): run chmod 600 {}",
                mode & 0o777,
                path.display()
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let text = String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec();
    if text.is_empty() {
        return Err(Error::invalid(
            "notify.secret_file",
            path.display().to_string(),
            "it is empty: put a random secret in it (e.g. openssl rand -hex 32)",
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn build(text: &str, base: &Path) -> Result<NotifyTarget> {
        toml::from_str::<RawNotify>(text).unwrap().build(base)
    }

    #[test]
    fn targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "k\n").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let hook = "name = \"h\"\nkind = \"webhook\"\nurl = \"https://x/y\"\nsecret_file = \"s\"\n";
        let e = build(hook, dir.path()).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = build(hook, dir.path()).unwrap();
        assert_eq!(
            t.kind,
            NotifyKind::Webhook {
                secret: Some(b"k".to_vec())
            }
        );
        assert!(t.wants(EventKind::Drill), "no events: all of them");
        let e = build(
            "name = \"h\"\nkind = \"pager\"\nurl = \"https://x\"\n",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"webhook\", \"slack\" or \"email\""), "{e}");
        let e = build(
            "name = \"h\"\nkind = \"slack\"\nurl = \"ftp://x\"\n",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("http:// or https://"), "{e}");
        let e = build(
            "name = \"h\"\nkind = \"slack\"\nurl = \"https://x\"\nevents = [\"everything\"]\n",
            dir.path(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("job_failed, recovery_red"), "{e}");
        let t = build(
            "name = \"h\"\nkind = \"slack\"\nurl = \"https://x\"\nevents = [\"drill\"]\n",
            dir.path(),
        )
        .unwrap();
        assert!(t.wants(EventKind::Drill) && !t.wants(EventKind::JobFailed));
    }

    #[test]
    fn email_targets_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mail = "name = \"m\"\nkind = \"email\"\nurl = \"smtp://mail.example.com\"\nfrom = \"t@example.com\"\nto = [\"a@example.com\"]\n";
        let t = build(mail, dir.path()).unwrap();
        assert_eq!(
            t.kind,
            NotifyKind::Email {
                from: "t@example.com".into(),
                to: vec!["a@example.com".into()],
                security: SmtpSecurity::StartTls,
                credentials: None
            }
        );
        assert_eq!(
            smtp_endpoint("smtp://mail.example.com"),
            Some(("mail.example.com".into(), 587, SmtpSecurity::StartTls))
        );
        assert_eq!(
            smtp_endpoint("smtps://mail.example.com:2465"),
            Some(("mail.example.com".into(), 2465, SmtpSecurity::Tls))
        );
        assert_eq!(
            smtp_endpoint("smtp+insecure://127.0.0.1"),
            Some(("127.0.0.1".into(), 25, SmtpSecurity::None))
        );
        for (text, says) in [
            (
                mail.replace("smtp://mail.example.com", "https://x"),
                "smtp://HOST",
            ),
            (
                mail.replace("t@example.com", "not an address"),
                "not an email address",
            ),
            (mail.replace("to = [\"a@example.com\"]\n", ""), "needs to ="),
            (
                mail.replace("from = \"t@example.com\"\n", ""),
                "needs from =",
            ),
            (
                format!("{mail}username = \"u\"\n"),
                "both username and password_file",
            ),
            (
                "name = \"h\"\nkind = \"slack\"\nurl = \"https://x\"\nto = [\"a@example.com\"]\n"
                    .to_string(),
                "are for kind = \"email\"",
            ),
        ] {
            let e = build(&text, dir.path()).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "hunter2\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let t = build(
            &format!("{mail}username = \"u\"\npassword_file = \"pw\"\n"),
            dir.path(),
        )
        .unwrap();
        assert!(
            matches!(t.kind, NotifyKind::Email { credentials: Some((ref u, ref p)), .. } if u == "u" && p == "hunter2")
        );
    }
}
