//! Second factor for sensitive operator actions: TOTP (RFC 6238; SHA-1,
//! 6 digits, 30 s steps, as every authenticator app does).
//!
//! `trireme mfa enroll` makes a 160-bit secret for the calling certificate
//! name; `trireme mfa confirm <code>` proves the authenticator has it, and
//! from then on every sensitive action of that operator needs a current
//! code (gRPC metadata [`TOTP_HEADER`]). A code is accepted one step either
//! side of the controller's clock, and only for a step later than the last
//! accepted one, so a code cannot be used twice. Wrong codes are limited per
//! name ([`throttle`]): past `[mfa] max_failures` of them, codes are refused
//! unchecked for a back-off.
//!
//! Secrets are stored in the catalog sealed (AES-256-GCM) under a data key
//! that is wrapped by the controller's master key, like backup data: a copy
//! of the catalog alone does not reveal them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use totp_rs::{Algorithm, TOTP};
use trireme_common::crypto::{random_bytes, DataKey};
use trireme_common::{DynKeyProvider, WrappedKey};

use crate::catalog::Catalog;
use crate::error::{Error, Result};

/// gRPC metadata key that carries the code.
pub use trireme_proto::TOTP_HEADER;
/// Seconds per code.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted either side of the controller's clock.
pub const SKEW_STEPS: u64 = 1;
/// Secret length in bytes (160 bits, RFC 4226's recommendation).
pub const SECRET_LEN: usize = 20;
/// Issuer shown by authenticator apps.
pub const ISSUER: &str = "Trireme";

const SEAL_AAD: &str = "trireme mfa secret v1";

/// One operator's enrollment, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaRecord {
    /// The data key sealing the secret, wrapped by the master key.
    pub wrapped_key: Vec<u8>,
    /// The secret, sealed with the data key (AAD binds it to the name).
    pub sealed_secret: Vec<u8>,
    /// Whether a code from the authenticator has been shown once.
    pub confirmed: bool,
    /// When the secret was made.
    pub created: DateTime<Utc>,
    /// The last step a code was accepted for (codes must be later).
    #[serde(default)]
    pub last_step: Option<u64>,
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    /// Not six digits.
    Malformed,
    /// Matches no step within the window.
    Wrong,
    /// Matches a step already used.
    Reused,
}

fn totp(secret: &[u8], account: &str) -> TOTP {
    TOTP::new_unchecked(
        Algorithm::SHA1,
        DIGITS,
        SKEW_STEPS as u8,
        STEP_SECS,
        secret.to_vec(),
        Some(ISSUER.to_string()),
        account.replace(':', "_"),
    )
}

/// The code for the step that holds unix time `unix`.
pub fn code_at(secret: &[u8], unix: u64) -> String {
    totp(secret, "").generate(unix)
}

/// The secret in base32 (what authenticators accept when typed in).
pub fn secret_base32(secret: &[u8]) -> String {
    totp(secret, "").get_secret_base32()
}

/// The `otpauth://` URI for `account` (what a QR code would carry).
pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    totp(secret, account).get_url()
}

/// Decode a base32 secret (as printed by `trireme mfa enroll`).
///
/// # Errors
/// A message when it is not base32.
pub fn secret_from_base32(text: &str) -> std::result::Result<Vec<u8>, String> {
    totp_rs::Secret::Encoded(text.trim().to_ascii_uppercase())
        .to_bytes()
        .map_err(|e| format!("not a base32 secret: {e:?}"))
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Check `code` against the steps around `now_unix`: the step it matches,
/// if that is later than `last_step`.
///
/// # Errors
/// [`CodeError`]: malformed, wrong (or too old or too far ahead), or reused.
pub fn check_code(
    secret: &[u8],
    code: &str,
    now_unix: u64,
    last_step: Option<u64>,
) -> std::result::Result<u64, CodeError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::Malformed);
    }
    let t = totp(secret, "");
    let now = now_unix / STEP_SECS;
    let mut reused = false;
    for step in now.saturating_sub(SKEW_STEPS)..=now + SKEW_STEPS {
        if same(t.generate(step * STEP_SECS).as_bytes(), code.as_bytes()) {
            if last_step.is_some_and(|l| step <= l) {
                reused = true;
            } else {
                return Ok(step);
            }
        }
    }
    Err(if reused {
        CodeError::Reused
    } else {
        CodeError::Wrong
    })
}

pub mod throttle;

pub use throttle::{Burst, Limits};

/// MFA settings (`[mfa]` in the controller configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MfaSettings {
    /// Refuse sensitive actions to operators who have not enrolled. Enrolled
    /// operators always need a code, whatever this says.
    pub required: bool,
    /// How many wrong codes back a name off, and for how long.
    pub limits: Limits,
}

/// A new secret, shown once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrollment {
    /// Base32.
    pub secret_base32: String,
    /// `otpauth://totp/Trireme:<name>?secret=…&issuer=Trireme`.
    pub uri: String,
}

/// How a sensitive action passed the MFA check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// With a valid, fresh code.
    Code,
    /// The operator has not enrolled and MFA is not required.
    NotEnrolled,
}

/// Why MFA refused, or failed.
#[derive(Debug)]
pub enum MfaError {
    /// Refused; the message is for the caller (and the audit log).
    Denied(String),
    /// Refused without checking the code: the name is backed off after too
    /// many wrong codes. The message says until when; the attempt is
    /// counted into the back-off's one audit entry ([`Mfa::take_bursts`]),
    /// not audited on its own.
    Throttled(String),
    /// The catalog or the key service failed.
    Internal(Error),
}

impl From<Error> for MfaError {
    fn from(e: Error) -> Self {
        MfaError::Internal(e)
    }
}

/// The MFA service over the catalog's `mfa` tree.
pub struct Mfa {
    catalog: Catalog,
    keys: DynKeyProvider,
    settings: MfaSettings,
    /// Serialises check-and-update of `last_step` (no code twice) and of
    /// the throttle's counters.
    lock: tokio::sync::Mutex<()>,
    /// Wrong codes and back-offs per name.
    throttle: throttle::Throttle,
}

impl Mfa {
    /// MFA over `catalog`, sealing secrets under `keys`.
    pub fn new(catalog: Catalog, keys: DynKeyProvider, settings: MfaSettings) -> Self {
        Mfa {
            catalog,
            keys,
            settings,
            lock: tokio::sync::Mutex::new(()),
            throttle: throttle::Throttle::new(settings.limits),
        }
    }

    /// The settings.
    pub fn settings(&self) -> MfaSettings {
        self.settings
    }

    fn aad(name: &str) -> Vec<u8> {
        format!("{SEAL_AAD}\0{name}").into_bytes()
    }

    async fn secret(&self, name: &str, r: &MfaRecord) -> Result<Vec<u8>> {
        let key = self.keys.unwrap(&WrappedKey(r.wrapped_key.clone())).await?;
        key.open(&Self::aad(name), &r.sealed_secret).map_err(|_| {
            Error::Common(trireme_common::Error::Key(format!(
                "the MFA secret of {name} failed authentication (damaged catalog entry); re-enroll after removing it"
            )))
        })
    }

    /// Whether `name` has a confirmed enrollment.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn is_enrolled(&self, name: &str) -> Result<bool> {
        Ok(self
            .catalog
            .mfa()
            .get(&name.to_string())?
            .is_some_and(|r| r.confirmed))
    }

    /// Make a new secret for `name`. Replacing a confirmed enrollment needs
    /// a valid `code` from the current one.
    ///
    /// # Errors
    /// [`MfaError::Denied`] when a code is needed and missing or wrong.
    pub async fn enroll(
        &self,
        name: &str,
        code: Option<&str>,
        now: DateTime<Utc>,
    ) -> std::result::Result<Enrollment, MfaError> {
        if self.is_enrolled(name)? {
            self.check(name, code, "mfa enroll (replacing an enrollment)", now)
                .await?;
        }
        let secret: [u8; SECRET_LEN] = random_bytes();
        let (key, wrapped): (DataKey, WrappedKey) =
            self.keys.generate().await.map_err(Error::from)?;
        let record = MfaRecord {
            wrapped_key: wrapped.0,
            sealed_secret: key.seal(&Self::aad(name), &secret),
            confirmed: false,
            created: now,
            last_step: None,
        };
        self.catalog.mfa().insert(&name.to_string(), &record)?;
        self.catalog.flush()?;
        Ok(Enrollment {
            secret_base32: secret_base32(&secret),
            uri: otpauth_uri(&secret, name),
        })
    }

    /// Confirm `name`'s enrollment with a first code.
    ///
    /// # Errors
    /// [`MfaError::Denied`] when there is nothing to confirm or the code is wrong.
    pub async fn confirm(
        &self,
        name: &str,
        code: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<(), MfaError> {
        let _guard = self.lock.lock().await;
        let key = name.to_string();
        let mut r = match self.catalog.mfa().get(&key)? {
            None => {
                return Err(MfaError::Denied(format!(
                    "{name} has not enrolled: run `trireme mfa enroll` first"
                )))
            }
            Some(r) if r.confirmed => {
                return Err(MfaError::Denied(format!(
                    "{name} is already enrolled and confirmed; to replace the secret run `trireme mfa enroll --totp <code>`"
                )))
            }
            Some(r) => r,
        };
        let step = self.checked(name, &r, code, "mfa confirm", now).await?;
        r.confirmed = true;
        r.last_step = Some(step);
        self.catalog.mfa().insert(&key, &r)?;
        self.catalog.flush()?;
        Ok(())
    }

    /// Check the second factor of `name` for the sensitive `action`.
    ///
    /// # Errors
    /// [`MfaError::Denied`] with a message naming the action and what to do.
    pub async fn check(
        &self,
        name: &str,
        code: Option<&str>,
        action: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<Passed, MfaError> {
        let _guard = self.lock.lock().await;
        let key = name.to_string();
        let record = self.catalog.mfa().get(&key)?.filter(|r| r.confirmed);
        let Some(mut r) = record else {
            if self.settings.required {
                return Err(MfaError::Denied(format!(
                    "{action} is a sensitive action and this controller requires MFA, but {name} has not enrolled: run `trireme mfa enroll`, add the secret to your authenticator, `trireme mfa confirm <code>`, then pass --totp <code>"
                )));
            }
            return Ok(Passed::NotEnrolled);
        };
        let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
            return Err(MfaError::Denied(format!(
                "{action} is a sensitive action: pass --totp <code> from your authenticator (or set TRIREME_TOTP; enroll with `trireme mfa enroll`)"
            )));
        };
        let step = self.checked(name, &r, code, action, now).await?;
        r.last_step = Some(step);
        self.catalog.mfa().insert(&key, &r)?;
        self.catalog.flush()?;
        Ok(Passed::Code)
    }

    /// Check `code` against `name`'s secret through the throttle (called
    /// with `lock` held): refused unchecked while backed off; a wrong code
    /// counts, and the one that reaches the limit says the back-off began.
    async fn checked(
        &self,
        name: &str,
        r: &MfaRecord,
        code: &str,
        action: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<u64, MfaError> {
        if let Some(until) = self.throttle.admit(name, now) {
            return Err(MfaError::Throttled(format!(
                "{action}: too many wrong TOTP codes for {name}: codes are refused without being checked until {} (in {} s); try again after that with the current code",
                until.format("%Y-%m-%d %H:%M:%S UTC"),
                (until - now).num_seconds().max(1)
            )));
        }
        let secret = self.secret(name, r).await?;
        match check_code(&secret, code, unix(now), r.last_step) {
            Ok(step) => {
                self.throttle.succeeded(name);
                Ok(step)
            }
            Err(e) => {
                let message = code_message(action, e);
                Err(MfaError::Denied(match self.throttle.failed(name, now) {
                    None => message,
                    Some(b) => format!(
                        "{message}. That makes {} wrong codes for {name} within {} min: further codes are refused without being checked until {} (in {} s)",
                        b.failures,
                        throttle::FAILURE_WINDOW.as_secs() / 60,
                        b.until.format("%Y-%m-%d %H:%M:%S UTC"),
                        (b.until - now).num_seconds().max(1)
                    ),
                }))
            }
        }
    }

    /// Back-offs that ended by `now` (or all, with `all`) and refused
    /// attempts unchecked, each once: for one audit entry per back-off.
    pub fn take_bursts(&self, now: DateTime<Utc>, all: bool) -> Vec<Burst> {
        self.throttle.take_bursts(now, all)
    }
}

fn unix(t: DateTime<Utc>) -> u64 {
    u64::try_from(t.timestamp()).unwrap_or(0)
}

/// The caller's message for a refused code.
pub fn code_message(action: &str, e: CodeError) -> String {
    match e {
        CodeError::Malformed => format!(
            "{action}: the TOTP code must be the {DIGITS} digits your authenticator shows"
        ),
        CodeError::Wrong => format!(
            "{action}: the TOTP code is wrong or expired (take the current code from your authenticator; check that its clock is right)"
        ),
        CodeError::Reused => format!(
            "{action}: this TOTP code was already used; wait for the next code from your authenticator"
        ),
    }
}

/// MFA enrollments by operator certificate name.
pub const MFA: crate::catalog::TableDef<String, MfaRecord> = crate::catalog::TableDef::new("mfa");

impl crate::catalog::Catalog {
    /// MFA enrollments by operator certificate name.
    pub fn mfa(&self) -> crate::catalog::Tree<String, MfaRecord> {
        self.table(&MFA)
    }
}

#[cfg(test)]
mod tests;
