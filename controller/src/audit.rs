//! The audit log: who did what, from where, and whether it was allowed.
//!
//! Every entry is kept in the catalog's `audit` tree under its sequence
//! number (1, 2, 3, …) and carries the SHA-256 of the previous entry
//! (`prev_hash`) and its own hash over a canonical encoding of all its
//! fields including `prev_hash` ([`AuditEntry::compute_hash`]). Editing an
//! entry breaks its hash; removing one leaves a gap in the sequence and
//! breaks the next entry's `prev_hash`; [`AuditLog::verify`] finds the
//! first broken entry.
//!
//! The chain does not stop someone who can write the catalog from
//! rewriting the whole log from the damaged entry on. That is what the
//! mirror is for: [`AuditLog::mirror_to`] writes new entries to every
//! location as JSON-lines segments under `audit/` (named by their first
//! sequence number), and [`compare_mirror`] checks the catalog's chain
//! against a location's copy. The segments are integrity-protected by the
//! chain and, in the controller, by a last line `{"mac":"<hex>"}`: keyed
//! BLAKE3 of the segment's preceding bytes under a key derived from the
//! controller key ([`crate::custody`]), which no agent can obtain, so an
//! agent with write access to a location cannot rewrite a segment with a
//! consistent chain. They are not encrypted; they hold names, actions and
//! addresses, never secrets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::{DynBackend, ObjectKey, ObjectKind};
use trireme_net::Identity;

use crate::catalog::{Catalog, TableDef, Tree};
use crate::error::{Error, Result};

/// `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Most entries in one mirror segment.
const SEGMENT_ENTRIES: usize = 10_000;

/// Tag that starts the hashed encoding, so an entry hash is never mistaken
/// for another kind of hash.
const HASH_TAG: &str = "trireme audit entry v1";

/// Whether the action happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Allowed and done.
    Ok,
    /// Refused (wrong role, no certificate, MFA missing or wrong, a key
    /// request for a job that is not the caller's…); `reason` says why.
    Refused,
    /// Something went wrong that is not a refusal (e.g. a damaged copy found).
    Problem,
}

impl Outcome {
    /// `ok`, `refused` or `problem`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Problem => "problem",
        }
    }
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When it happened (the controller's clock).
    pub time: DateTime<Utc>,
    /// Who: the certificate name, `controller` for the controller's own
    /// findings, `(no certificate)` when the caller showed none.
    pub actor: String,
    /// The certificate's role (empty when unknown).
    pub role: String,
    /// What, e.g. `policy apply`, `restore`, `data key generated`.
    pub action: String,
    /// On what, and details.
    pub target: String,
    /// Whether it was allowed.
    pub outcome: Outcome,
    /// Why it was refused, or what went wrong.
    #[serde(default)]
    pub reason: String,
    /// From where: the caller's address, `local` for commands run on the
    /// controller host, empty for the controller's own findings.
    pub peer: String,
    /// The previous entry's `hash` (hex), [`GENESIS`] for the first.
    pub prev_hash: String,
    /// SHA-256 (hex) of this entry's canonical encoding.
    pub hash: String,
}

impl AuditEntry {
    /// SHA-256 over the canonical encoding of every field but `hash`: CBOR
    /// of the array `[tag, seq, time (RFC 3339, nanoseconds, Z), actor,
    /// role, action, target, outcome, reason, peer, prev_hash]`.
    pub fn compute_hash(&self) -> String {
        let time = self.time.to_rfc3339_opts(SecondsFormat::Nanos, true);
        let canonical = (
            HASH_TAG,
            self.seq,
            time.as_str(),
            self.actor.as_str(),
            self.role.as_str(),
            self.action.as_str(),
            self.target.as_str(),
            self.outcome.as_str(),
            self.reason.as_str(),
            self.peer.as_str(),
            self.prev_hash.as_str(),
        );
        let mut buf = Vec::new();
        ciborium::into_writer(&canonical, &mut buf).expect("strings and integers encode to CBOR");
        hex::encode(trireme_common::crypto::sha256(&buf))
    }
}

/// What a caller records; the log adds sequence number, time and hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// See [`AuditEntry::actor`].
    pub actor: String,
    /// See [`AuditEntry::role`].
    pub role: String,
    /// See [`AuditEntry::action`].
    pub action: String,
    /// See [`AuditEntry::target`].
    pub target: String,
    /// See [`AuditEntry::outcome`].
    pub outcome: Outcome,
    /// See [`AuditEntry::reason`].
    pub reason: String,
    /// See [`AuditEntry::peer`].
    pub peer: String,
}

impl Event {
    /// `id` did `action` on `target`.
    pub fn by(id: &Identity, action: impl Into<String>, target: impl Into<String>) -> Self {
        Self::actor(&id.name, id.role.as_str(), action, target)
    }

    /// `actor` (in `role`) did `action` on `target`.
    pub fn actor(
        actor: impl Into<String>,
        role: impl Into<String>,
        action: impl Into<String>,
        target: impl Into<String>,
    ) -> Self {
        Event {
            actor: actor.into(),
            role: role.into(),
            action: action.into(),
            target: target.into(),
            outcome: Outcome::Ok,
            reason: String::new(),
            peer: String::new(),
        }
    }

    /// The controller's own finding.
    pub fn controller(action: impl Into<String>, target: impl Into<String>) -> Self {
        Self::actor("controller", "controller", action, target)
    }

    /// Mark it refused, and why.
    #[must_use]
    pub fn refused(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Refused;
        self.reason = reason.into();
        self
    }

    /// Mark it a problem, and what.
    #[must_use]
    pub fn problem(mut self, reason: impl Into<String>) -> Self {
        self.outcome = Outcome::Problem;
        self.reason = reason.into();
        self
    }

    /// Where the request came from.
    #[must_use]
    pub fn from_peer(mut self, peer: Option<SocketAddr>) -> Self {
        self.peer = peer.map(|a| a.to_string()).unwrap_or_default();
        self
    }

    /// Where the request came from, as text (e.g. `local`).
    #[must_use]
    pub fn from_place(mut self, peer: impl Into<String>) -> Self {
        self.peer = peer.into();
        self
    }
}

/// The first entry that does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// Its sequence number (for a removed entry: the missing number).
    pub seq: u64,
    /// What is wrong, for the operator.
    pub problem: String,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    /// Entries that verified before the first broken one (or all).
    pub checked: u64,
    /// The last entry's sequence number and hash.
    pub head: Option<(u64, String)>,
    /// The first broken entry, if any.
    pub broken: Option<Broken>,
}

/// Check a sequence of `(stored key, entry)` in key order: sequence numbers
/// from 1 without gaps, each entry's `prev_hash` the previous entry's hash,
/// and each hash matching the entry. Stops at the first broken entry.
pub fn verify_chain(entries: impl IntoIterator<Item = Result<(u64, AuditEntry)>>) -> VerifyReport {
    let mut report = VerifyReport::default();
    let mut expected = 1u64;
    let mut prev_hash = GENESIS.to_string();
    for item in entries {
        let (key, e) = match item {
            Ok(kv) => kv,
            Err(err) => {
                let seq = match &err {
                    Error::CatalogCorrupt { key, .. } => key.parse().unwrap_or(expected),
                    _ => expected,
                };
                report.broken = Some(Broken {
                    seq,
                    problem: format!("entry {seq} cannot be read: {err}"),
                });
                return report;
            }
        };
        let broken = |seq: u64, problem: String| Some(Broken { seq, problem });
        if key > expected {
            report.broken = broken(
                expected,
                if expected == key - 1 {
                    format!(
                        "entry {expected} is missing (removed): the log goes from {} to {key}",
                        expected - 1
                    )
                } else {
                    format!(
                        "entries {expected} to {} are missing (removed): the log goes from {} to {key}",
                        key - 1,
                        expected - 1
                    )
                },
            );
            return report;
        }
        if e.seq != key {
            report.broken = broken(
                key,
                format!("entry {key} says it is entry {} (edited or moved)", e.seq),
            );
            return report;
        }
        if e.compute_hash() != e.hash {
            report.broken = broken(
                key,
                format!("entry {key} does not match its hash (edited after it was written)"),
            );
            return report;
        }
        if e.prev_hash != prev_hash {
            report.broken = broken(
                key,
                if key == 1 {
                    "entry 1 does not start the chain (its prev_hash is not the genesis value)"
                        .to_string()
                } else {
                    format!(
                        "entry {key}'s prev_hash does not match entry {}'s hash (entry {} was replaced, or entries before {key} were rewritten)",
                        key - 1,
                        key - 1
                    )
                },
            );
            return report;
        }
        report.checked += 1;
        report.head = Some((key, e.hash.clone()));
        prev_hash = e.hash;
        expected = key + 1;
    }
    report
}

/// The audit log in the catalog. Cloning is cheap and shares the writer lock.
#[derive(Clone)]
pub struct AuditLog {
    entries: Tree<u64, AuditEntry>,
    mirrored: Tree<String, u64>,
    db: sled::Db,
    writer: Arc<Mutex<()>>,
}

/// The hash-chained entries by sequence number.
pub const AUDIT: TableDef<u64, AuditEntry> = TableDef::new("audit");
/// The last sequence number mirrored to each location.
pub const AUDIT_MIRROR: TableDef<String, u64> = TableDef::new("audit_mirror");

impl Catalog {
    /// The hash-chained audit log.
    pub fn audit(&self) -> AuditLog {
        AuditLog {
            entries: self.table(&AUDIT),
            mirrored: self.table(&AUDIT_MIRROR),
            db: self.db().clone(),
            writer: self.write_lock(&AUDIT),
        }
    }
}

impl AuditLog {
    /// The entries by sequence number (raw access, e.g. for tests and
    /// repairs; appending goes through [`AuditLog::append`]).
    pub fn entries(&self) -> Tree<u64, AuditEntry> {
        self.entries.clone()
    }

    /// Append `event` at `now` and flush it to disk.
    ///
    /// # Errors
    /// Catalog errors, including an undecodable last entry.
    pub fn append(&self, event: Event, now: DateTime<Utc>) -> Result<AuditEntry> {
        let entry = self.append_lazy(event, now)?;
        self.db
            .flush()
            .map_err(|e| Error::catalog("flush the audit log", e))?;
        Ok(entry)
    }

    /// Append `event` without waiting for the disk: durable within sled's
    /// flush interval (0.5 s). For bursts of findings (one per damaged
    /// copy) where a flush each would stall the caller.
    ///
    /// # Errors
    /// As [`AuditLog::append`].
    pub fn append_lazy(&self, event: Event, now: DateTime<Utc>) -> Result<AuditEntry> {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let (seq, prev_hash) = match self.entries.last()? {
            Some((seq, last)) => (seq + 1, last.hash),
            None => (1, GENESIS.to_string()),
        };
        let mut entry = AuditEntry {
            seq,
            time: now,
            actor: event.actor,
            role: event.role,
            action: event.action,
            target: event.target,
            outcome: event.outcome,
            reason: event.reason,
            peer: event.peer,
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash();
        self.entries.insert(&seq, &entry)?;
        Ok(entry)
    }

    /// Walk the whole chain; see [`verify_chain`].
    pub fn verify(&self) -> VerifyReport {
        verify_chain(self.entries.iter())
    }

    /// Entries at or after `since` by `actor` (both optional), oldest first;
    /// the newest `limit` of them.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn list(
        &self,
        since: Option<DateTime<Utc>>,
        actor: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let mut out = Vec::new();
        for item in self.entries.iter() {
            let (_, e) = item?;
            if since.is_some_and(|s| e.time < s) || actor.is_some_and(|a| e.actor != a) {
                continue;
            }
            out.push(e);
        }
        let skip = out.len().saturating_sub(limit);
        out.drain(..skip);
        Ok(out)
    }

    /// Write the entries `location` has not received yet as JSON-lines
    /// segments `audit/<first seq, 20 digits>.jsonl`; returns how many.
    /// A failed write is retried at the next call (the segment is rewritten
    /// whole, under the same name).
    ///
    /// # Errors
    /// Catalog and storage errors.
    pub async fn mirror_to(
        &self,
        location: &str,
        backend: &DynBackend,
        mac_key: Option<&[u8; 32]>,
    ) -> Result<u64> {
        let mut written = 0;
        loop {
            let from = self.mirrored.get(&location.to_string())?.unwrap_or(0) + 1;
            let batch = self.entries.range_from(&from, SEGMENT_ENTRIES)?;
            let (Some((first, _)), Some((last, _))) = (batch.first(), batch.last()) else {
                return Ok(written);
            };
            let (first, last) = (*first, *last);
            let mut body = Vec::new();
            for (_, e) in &batch {
                serde_json::to_writer(&mut body, e).expect("audit entries encode to JSON");
                body.push(b'\n');
            }
            if let Some(k) = mac_key {
                let mac = trireme_common::attribution::keyed_mac(k, &body);
                body.extend_from_slice(
                    format!("{{\"mac\":\"{}\"}}\n", hex::encode(mac)).as_bytes(),
                );
            }
            let key = segment_key(first);
            let sum = trireme_common::crypto::sha256(&body);
            backend.put(&key, Bytes::from(body), sum).await?;
            self.mirrored.insert(&location.to_string(), &last)?;
            written += last - first + 1;
        }
    }
}

/// Why a mirror segment's MAC line does not vouch for it, if it does not.
fn segment_mac_problem(key: &ObjectKey, bytes: &[u8], mac_key: &[u8; 32]) -> Option<String> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let (signed, last) = match body.iter().rposition(|b| *b == b'\n') {
        Some(i) => (&bytes[..=i], &body[i + 1..]),
        None => (&bytes[..0], body),
    };
    let mac = serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|v| v["mac"].as_str().and_then(|m| hex::decode(m).ok()));
    match mac {
        None => Some(format!(
            "{key}: carries no controller MAC: not written by this controller (or by one before audit mirrors were authenticated); its entries are not believed"
        )),
        Some(m) if m == trireme_common::attribution::keyed_mac(mac_key, signed) => None,
        Some(_) => Some(format!(
            "{key}: its controller MAC does not match: the segment was rewritten by someone without the controller key; its entries are not believed"
        )),
    }
}

/// The object holding the mirror segment that starts at `first`.
pub fn segment_key(first: u64) -> ObjectKey {
    ObjectKey::new(ObjectKind::Audit, format!("{first:020}.jsonl"))
}

/// Compare the log with a location's mirror: every mirrored entry must be
/// in the log with the same hash, and the mirror's entries must chain.
/// Returns the problems found (empty: the mirror agrees), and how many
/// mirrored entries were compared.
///
/// # Errors
/// Storage errors listing or reading the mirror.
pub async fn compare_mirror(
    log: &AuditLog,
    backend: &DynBackend,
    mac_key: Option<&[u8; 32]>,
) -> Result<(u64, Vec<String>)> {
    let mut segments = backend.list(ObjectKind::Audit).await?;
    segments.sort_by(|a, b| a.key.name.cmp(&b.key.name));
    let mut mirrored = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    for s in segments {
        let bytes = backend.get(&s.key).await?;
        if let Some(k) = mac_key {
            if let Some(p) = segment_mac_problem(&s.key, &bytes, k) {
                problems.push(p);
                continue;
            }
        }
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.is_empty() || line.starts_with(b"{\"mac\":") {
                continue;
            }
            match serde_json::from_slice::<AuditEntry>(line) {
                // A segment rewritten after a failed write repeats entries.
                Ok(e) => {
                    mirrored.insert(e.seq, e);
                }
                Err(e) => {
                    problems.push(format!("{} line {}: not an audit entry: {e}", s.key, i + 1))
                }
            }
        }
    }
    let mut compared = 0;
    for (seq, m) in &mirrored {
        if m.compute_hash() != m.hash {
            problems.push(format!(
                "mirrored entry {seq} does not match its hash (the mirror was edited)"
            ));
            continue;
        }
        match log.entries.get(seq) {
            Ok(Some(e)) if e.hash == m.hash => {}
            Ok(Some(_)) => problems.push(format!(
                "entry {seq} differs from the mirrored copy (the catalog's log was rewritten)"
            )),
            Ok(None) => problems.push(format!(
                "entry {seq} is in the mirror but not in the catalog (removed from the catalog)"
            )),
            Err(e) => problems.push(format!("entry {seq}: {e}")),
        }
        compared += 1;
    }
    Ok((compared, problems))
}

#[cfg(test)]
mod tests;
