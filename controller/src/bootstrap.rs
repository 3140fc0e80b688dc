//! Bootstrap tokens: how an agent without a certificate gets one.
//!
//! An operator makes a token (`trireme agents token create`) scoped to one
//! agent name or to a glob of names (a DaemonSet's node names), valid for a
//! while and for a number of enrollments. The token is printed once; the
//! catalog keeps only its BLAKE3 hash, in the `bootstrap_tokens` table
//! (token id → [`BootstrapToken`]). An agent sends the token with its name
//! and a certificate signing request to the enrollment listener
//! (`server::enroll`); [`redeem`] checks the token and takes one use in one
//! catalog transaction, and the controller's CA signs the certificate.
//!
//! A token reads `trb1.<id>.<secret>`: the id (16 hex digits) finds the
//! record, the secret (64 hex digits, 256 random bits) proves the holder
//! has the token. The stored hash is of the whole token and is compared in
//! constant time ([`blake3::Hash`]'s equality).
//!
//! Names: a token scoped to one agent may enroll that name even when an
//! agent of that name registered before (replacing a lost certificate); a
//! glob token never enrolls a name that has a registered agent or was
//! enrolled before by any token, so a leaked DaemonSet token cannot take
//! over an existing agent's name.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{abort, Catalog, TableDef, Tree};
use crate::error::{Error, Result};
use crate::sources::AGENTS;

/// Tokens by id.
pub const TOKENS: TableDef<String, BootstrapToken> = TableDef::new("bootstrap_tokens");

/// What every token starts with (its format version).
pub const TOKEN_PREFIX: &str = "trb1";
/// A token's validity when the operator gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// The longest validity a token may have.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);
/// The most enrollments one token may allow.
pub const MAX_USES: u32 = 10_000;

/// Which agent names a token may enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Exactly this name.
    Agent(String),
    /// Names matching this glob (`*` any run of characters, `?` one).
    Glob(String),
}

impl Scope {
    /// Whether `name` is in scope.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Scope::Agent(a) => a == name,
            Scope::Glob(g) => glob_match(g.as_bytes(), name.as_bytes()),
        }
    }

    /// `agent NAME` or `glob PATTERN`.
    pub fn describe(&self) -> String {
        match self {
            Scope::Agent(a) => format!("agent {a}"),
            Scope::Glob(g) => format!("glob {g}"),
        }
    }
}

/// `*` matches any run of bytes (also none), `?` one byte.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// One bootstrap token, as the catalog keeps it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootstrapToken {
    /// The public id (the token's middle part).
    pub id: String,
    /// BLAKE3 of the whole token, hex.
    pub hash: String,
    /// Which names it may enroll.
    pub scope: Scope,
    /// Who made it (certificate name).
    pub created_by: String,
    /// When.
    pub created: DateTime<Utc>,
    /// When it stops working.
    pub expires: DateTime<Utc>,
    /// Enrollments it allowed when made.
    pub uses: u32,
    /// Enrollments it still allows.
    pub uses_left: u32,
    /// When it was revoked.
    #[serde(default)]
    pub revoked: Option<DateTime<Utc>>,
    /// Names enrolled with it, oldest first.
    #[serde(default)]
    pub enrolled: Vec<String>,
}

impl BootstrapToken {
    /// `usable`, `expired`, `used up` or `revoked` at `now`.
    pub fn state(&self, now: DateTime<Utc>) -> &'static str {
        if self.revoked.is_some() {
            "revoked"
        } else if now >= self.expires {
            "expired"
        } else if self.uses_left == 0 {
            "used up"
        } else {
            "usable"
        }
    }
}

impl Catalog {
    /// Bootstrap tokens by id.
    pub fn bootstrap_tokens(&self) -> Tree<String, BootstrapToken> {
        self.table(&TOKENS)
    }
}

/// What an operator asks for.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// Which names.
    pub scope: Scope,
    /// Valid for (none: [`DEFAULT_TTL`]).
    pub ttl: Option<Duration>,
    /// Enrollments (none: one).
    pub uses: Option<u32>,
}

/// Check a scope as an operator wrote it: a name the CA would issue a
/// certificate for, or a glob of such characters plus `*` and `?`.
///
/// # Errors
/// [`Error::BadRequest`] saying what to write instead.
pub fn check_scope(scope: &Scope) -> Result<()> {
    match scope {
        Scope::Agent(a) => trireme_net::tls::ca::check_name(a)
            .map_err(|e| Error::BadRequest(format!("--agent: {e}"))),
        Scope::Glob(g) => {
            if g.is_empty()
                || g.len() > 253
                || !g
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*?".contains(&b))
            {
                return Err(Error::BadRequest(format!(
                    "--name-glob {g:?}: use lowercase letters, digits, '-', '.', '*' and '?' (e.g. \"node-*\" or \"*.cluster.example\")"
                )));
            }
            Ok(())
        }
    }
}

/// Make a token: the token text (to show once) and its record (stored).
///
/// # Errors
/// [`Error::BadRequest`] for a bad scope, a TTL of zero or over
/// [`MAX_TTL`], or uses of zero or over [`MAX_USES`]; catalog errors.
pub fn create(
    catalog: &Catalog,
    req: &TokenRequest,
    by: &str,
    now: DateTime<Utc>,
) -> Result<(String, BootstrapToken)> {
    check_scope(&req.scope)?;
    let ttl = req.ttl.unwrap_or(DEFAULT_TTL);
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(Error::BadRequest(format!(
            "--ttl {}: give 1s to {} (a token is for enrolling soon, not a standing credential)",
            humantime::format_duration(ttl),
            humantime::format_duration(MAX_TTL)
        )));
    }
    let uses = req.uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(Error::BadRequest(format!(
            "--uses {uses}: give 1 to {MAX_USES}"
        )));
    }
    let id = hex::encode(trireme_common::crypto::random_bytes::<8>());
    let secret = hex::encode(trireme_common::crypto::random_bytes::<32>());
    let token = format!("{TOKEN_PREFIX}.{id}.{secret}");
    let record = BootstrapToken {
        id: id.clone(),
        hash: blake3::hash(token.as_bytes()).to_hex().to_string(),
        scope: req.scope.clone(),
        created_by: by.to_string(),
        created: now,
        expires: now
            + chrono::Duration::from_std(ttl).map_err(|e| Error::BadRequest(e.to_string()))?,
        uses,
        uses_left: uses,
        revoked: None,
        enrolled: Vec::new(),
    };
    catalog.bootstrap_tokens().insert(&id, &record)?;
    Ok((token, record))
}

/// Every token, oldest first.
///
/// # Errors
/// Catalog errors.
pub fn list(catalog: &Catalog) -> Result<Vec<BootstrapToken>> {
    let mut all = catalog.bootstrap_tokens().values()?;
    all.sort_by_key(|t| t.created);
    Ok(all)
}

/// Revoke token `id`: it enrolls nothing from now on (certificates it got
/// stay valid; revoke those with `trireme cert revoke`).
///
/// # Errors
/// [`Error::NotFound`]-like [`Error::Missing`] for an unknown id,
/// [`Error::Precondition`] when already revoked; catalog errors.
pub fn revoke(catalog: &Catalog, id: &str, now: DateTime<Utc>) -> Result<BootstrapToken> {
    let tokens = catalog.bootstrap_tokens();
    let mut t = tokens.get(&id.to_string())?.ok_or_else(|| {
        Error::Missing(format!(
            "no bootstrap token with id {id:?}; see `trireme agents token ls`"
        ))
    })?;
    if t.revoked.is_some() {
        return Err(Error::Precondition(format!(
            "bootstrap token {id} is already revoked"
        )));
    }
    t.revoked = Some(now);
    tokens.insert(&t.id, &t)?;
    Ok(t)
}

/// Why an enrollment was refused: the message for the agent and the audit
/// log. None of them says whether a token id exists with another secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not a `trb1.<id>.<secret>` token, or no token with that id and secret.
    WrongToken,
    /// Past its expiry.
    Expired(DateTime<Utc>),
    /// Every use taken.
    UsedUp(u32),
    /// Revoked by an operator.
    Revoked,
    /// The name is not in the token's scope.
    OutOfScope { name: String, scope: String },
    /// The name belongs to an agent already.
    NameTaken { name: String, why: String },
}

impl Refusal {
    /// The message, saying what to do.
    pub fn message(&self) -> String {
        match self {
            Refusal::WrongToken => "the bootstrap token is wrong (not a token this controller made, or mistyped): ask an operator for a new one with `trireme agents token create`".into(),
            Refusal::Expired(at) => format!(
                "the bootstrap token expired at {}: ask an operator for a new one with `trireme agents token create`",
                at.format("%Y-%m-%dT%H:%M:%SZ")
            ),
            Refusal::UsedUp(n) => format!(
                "the bootstrap token is used up (it allowed {n} enrollment(s)): ask an operator for a new one, with more --uses if many agents share it"
            ),
            Refusal::Revoked => "the bootstrap token was revoked: ask an operator for a new one with `trireme agents token create`".into(),
            Refusal::OutOfScope { name, scope } => format!(
                "the bootstrap token does not cover the name {name:?} (it is for {scope}): use the name it was made for, or ask for a token for this name"
            ),
            Refusal::NameTaken { name, why } => format!(
                "the name {name:?} {why}: a token for several names never takes over an existing agent's name; to replace that agent's certificate, an operator makes a token for exactly this name (`trireme agents token create --agent {name}`)"
            ),
        }
    }
}

/// Split `trb1.<id>.<secret>` into its id; `None` for anything else.
fn token_id(token: &str) -> Option<&str> {
    let mut parts = token.trim().split('.');
    let (Some(prefix), Some(id), Some(secret), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let hexish = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (prefix == TOKEN_PREFIX && hexish(id, 16) && hexish(secret, 64)).then_some(id)
}

/// Check `token` for enrolling `name` and take one use, in one catalog
/// transaction (two agents racing for the last use: one wins). Returns the
/// token's record after the use.
///
/// # Errors
/// `Ok(Err(refusal))` when the token does not allow it; `Err` for catalog
/// errors.
pub fn redeem(
    catalog: &Catalog,
    token: &str,
    name: &str,
    now: DateTime<Utc>,
) -> Result<std::result::Result<BootstrapToken, Refusal>> {
    let Some(id) = token_id(token) else {
        return Ok(Err(Refusal::WrongToken));
    };
    let id = id.to_string();
    let presented = blake3::hash(token.trim().as_bytes());
    // Names enrolled by any token before (outside the transaction: the
    // tokens table is small and this is only for glob tokens).
    let enrolled_before: Vec<String> = catalog
        .bootstrap_tokens()
        .values()?
        .into_iter()
        .filter(|t| t.enrolled.iter().any(|n| n == name))
        .map(|t| t.id)
        .collect();
    catalog.transaction(|tx| {
        let tokens = tx.table(&TOKENS);
        let Some(mut t) = tokens.get(&id)? else {
            return Ok(Err(Refusal::WrongToken));
        };
        let stored = blake3::Hash::from_hex(&t.hash)
            .map_err(|e| abort(Error::Internal(format!("token {id}: stored hash: {e}"))))?;
        // blake3::Hash compares in constant time.
        if stored != presented {
            return Ok(Err(Refusal::WrongToken));
        }
        if t.revoked.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if now >= t.expires {
            return Ok(Err(Refusal::Expired(t.expires)));
        }
        if t.uses_left == 0 {
            return Ok(Err(Refusal::UsedUp(t.uses)));
        }
        if !t.scope.allows(name) {
            return Ok(Err(Refusal::OutOfScope {
                name: name.to_string(),
                scope: t.scope.describe(),
            }));
        }
        if !matches!(&t.scope, Scope::Agent(a) if a == name) {
            if tx.table(&AGENTS).get(&name.to_string())?.is_some() {
                return Ok(Err(Refusal::NameTaken {
                    name: name.to_string(),
                    why: "already has a registered agent".into(),
                }));
            }
            if let Some(other) = enrolled_before.first() {
                return Ok(Err(Refusal::NameTaken {
                    name: name.to_string(),
                    why: format!("was enrolled before (with token {other})"),
                }));
            }
        }
        t.uses_left -= 1;
        t.enrolled.push(name.to_string());
        tokens.insert(&t.id, &t)?;
        Ok(Ok(t))
    })
}

/// Give a use back after the certificate could not be signed (the agent
/// got nothing for it).
///
/// # Errors
/// Catalog errors.
pub fn give_back(catalog: &Catalog, id: &str, name: &str) -> Result<()> {
    let id = id.to_string();
    catalog.transaction(|tx| {
        let tokens = tx.table(&TOKENS);
        if let Some(mut t) = tokens.get(&id)? {
            if let Some(i) = t.enrolled.iter().rposition(|n| n == name) {
                t.enrolled.remove(i);
                t.uses_left += 1;
                tokens.insert(&t.id, &t)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests;
