//! Attribution: which job wrote what, and the check of every backup result
//! against the location before anything of it enters the catalog.
//!
//! Agents are untrusted (`docs/security.md`). Two things make what they
//! write attributable without trusting their word:
//!
//! - **The ledger.** The key service records every data key it generates
//!   for a backup job (the SHA-256 of the wrapped key → job, agent, source).
//!   Packs, index objects and manifests carry their wrapped key, so each is
//!   tied to the job whose key sealed it.
//! - **The result check** ([`check_backup`]). An agent's "done, snapshot S at
//!   location L" is believed only when S's manifest is at L, sealed with a
//!   key generated for that very job, names the job's source and the agent's
//!   host, has times inside the job's run, and every chunk it references is
//!   in a pack at L (present, with the size and SHA-256 the index gives)
//!   whose key was generated for a job of the same agent. An agent can
//!   therefore neither claim another host's snapshot nor make a snapshot of
//!   its own that reaches into another host's packs (which would put those
//!   packs' keys into its restore scope). Backups deduplicate only against
//!   their own agent's packs for the same reason (the key service hands a
//!   backup that list, see `server/keys.rs`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::attribution::Attributable;
use trireme_common::backend::{ObjectKey, ObjectKind};
use trireme_common::scope::KeyedIndex;
use trireme_common::{DynBackend, Id, WrappedKey};

use crate::catalog::Catalog;
use crate::custody::Custody;
use crate::error::Result;
use crate::jobs::{Job, JobId};
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::sources::SourceId;

/// How far a manifest's times may lie outside the job's run (clock skew
/// between the agent's host and the controller's).
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// A data key the key service generated for a backup job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedKey {
    /// The job.
    pub job: JobId,
    /// The agent that ran it.
    pub agent: String,
    /// The source it backed up (unknown for keys a catalog rebuild found
    /// in attributed objects).
    pub source: Option<SourceId>,
    /// When the key was generated.
    pub at: DateTime<Utc>,
}

/// An index object the controller believes (catalog tree `index_objects`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// The checked backup job that wrote it; `None`: the controller (a
    /// prune's replacement) or adopted at the upgrade to attribution.
    pub job: Option<JobId>,
    /// When it was recorded.
    pub at: DateTime<Utc>,
}

/// Record index objects as believed.
///
/// # Errors
/// Catalog errors.
pub fn believe(
    catalog: &Catalog,
    names: impl IntoIterator<Item = String>,
    job: Option<JobId>,
    now: DateTime<Utc>,
) -> Result<()> {
    for n in names {
        catalog
            .index_objects()
            .insert(&n, &IndexRecord { job, at: now })?;
    }
    Ok(())
}

/// Whether the controller believes index object `name`.
pub fn believed(catalog: &Catalog, name: &str) -> bool {
    matches!(catalog.index_objects().get(&name.to_string()), Ok(Some(_)))
}

/// On the first start of a controller that attributes objects, over a
/// catalog that already ran backups: adopt the index objects at `backend`
/// as believed (they were written before attribution existed, and were
/// believed then). A new controller (no jobs yet) or one that already
/// recorded index objects adopts nothing.
///
/// # Errors
/// Catalog and storage errors.
pub async fn adopt_existing(
    catalog: &Catalog,
    backend: &DynBackend,
    now: DateTime<Utc>,
) -> Result<usize> {
    if !catalog.index_objects().is_empty() || catalog.jobs().is_empty() {
        return Ok(0);
    }
    let names: Vec<String> = backend
        .list(ObjectKind::Index)
        .await?
        .into_iter()
        .map(|o| o.key.name)
        .collect();
    let n = names.len();
    believe(catalog, names, None, now)?;
    if n > 0 {
        tracing::info!(
            objects = n,
            "adopted the index objects written before attribution as believed"
        );
    }
    Ok(n)
}

/// The index objects at `locations` the controller does not believe
/// (written outside a job it checked — planted by an agent, or left by a
/// job that failed or is still running), as `location: index/<name>: …`
/// lines. They are left in place: Trireme deletes nothing it did not write.
///
/// # Errors
/// None: a location that cannot be listed is reported as a line too.
pub async fn unbelieved_index_objects(
    catalog: &Catalog,
    locations: &[(String, DynBackend)],
) -> Vec<String> {
    let mut out = Vec::new();
    for (name, b) in locations {
        match b.list(ObjectKind::Index).await {
            Ok(listed) => {
                for o in listed {
                    if !believed(catalog, &o.key.name) {
                        out.push(format!(
                            "{name}: {}: not attributed to a job the controller checked (planted, or left by a failed or running job): not believed by prune, restores or backups; left in place",
                            o.key.path()
                        ));
                    }
                }
            }
            Err(e) => out.push(format!("{name}: cannot list index objects: {e}")),
        }
    }
    out
}

/// The ledger of generated data keys (catalog tree `issued_keys`).
pub struct Ledger<'a> {
    catalog: &'a Catalog,
}

/// The ledger's key for a wrapped key: its SHA-256, hex.
pub fn key_name(w: &WrappedKey) -> String {
    hex::encode(trireme_common::crypto::sha256(&w.0))
}

impl<'a> Ledger<'a> {
    /// The ledger in `catalog`.
    pub fn new(catalog: &'a Catalog) -> Self {
        Ledger { catalog }
    }

    /// Record that `w` was generated for job `job` of `agent` (a catalog
    /// rebuild, from attributed objects).
    ///
    /// # Errors
    /// Catalog errors.
    pub fn record_found(
        &self,
        w: &WrappedKey,
        job: JobId,
        agent: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.catalog.issued_keys().insert(
            &key_name(w),
            &IssuedKey {
                job,
                agent: agent.to_string(),
                source: None,
                at: now,
            },
        )
    }

    /// Record that `w` was generated for `job`.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn record(&self, w: &WrappedKey, job: &Job, now: DateTime<Utc>) -> Result<()> {
        self.catalog.issued_keys().insert(
            &key_name(w),
            &IssuedKey {
                job: job.id,
                agent: job.agent().to_string(),
                source: Some(job.source.clone()),
                at: now,
            },
        )
    }

    /// What `w` was generated for, if the key service generated it.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn get(&self, w: &WrappedKey) -> Result<Option<IssuedKey>> {
        self.catalog.issued_keys().get(&key_name(w))
    }

    /// Whether `w` was generated for a job of `agent` (a catalog error
    /// counts as no).
    pub fn issued_to_agent(&self, w: &WrappedKey, agent: &str) -> bool {
        matches!(self.get(w), Ok(Some(k)) if k.agent == agent)
    }
}

/// Why a backup result was not believed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The result is false or unsafe to record: the job fails with this
    /// reason (audited).
    Refused(String),
    /// The check could not be made now (location unreachable): the result
    /// is not acknowledged, so the agent reports it again.
    Later(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Refused(r) | Refusal::Later(r) => f.write_str(r),
        }
    }
}

/// A backup result that passed [`check_backup`].
#[derive(Debug, Clone)]
pub struct Checked {
    /// The catalog record to store.
    pub record: SnapshotRecord,
    /// The index objects the job wrote (to record as believed).
    pub index_objects: Vec<String>,
}

/// Where and against what a result is checked.
pub struct CheckSite<'a> {
    /// The location's name.
    pub name: &'a str,
    /// Its storage.
    pub backend: &'a DynBackend,
    /// Its index, up to date, believing the job's own attributed objects.
    pub index: &'a KeyedIndex,
    /// The controller key (attribution keys).
    pub custody: &'a Custody,
}

/// What is wrong with pack `id` at the site, when the index says it is
/// `size` bytes: missing, another size, or (where the store keeps one)
/// another SHA-256 than its name.
///
/// # Errors
/// [`Refusal::Later`] when the location cannot be asked.
async fn pack_problem(
    site: &CheckSite<'_>,
    id: &Id,
    size: u64,
) -> std::result::Result<Option<String>, Refusal> {
    match site
        .backend
        .head(&ObjectKey::new(ObjectKind::Pack, id.to_hex()))
        .await
    {
        Ok(Some(meta)) if meta.size == size && meta.sha256.is_none_or(|s| s == id.0) => Ok(None),
        Ok(Some(meta)) => Ok(Some(format!(
            "is {} bytes at the location (SHA-256 {}); the index says {size} bytes (SHA-256 = its name)",
            meta.size,
            meta.sha256.map_or("not stored".into(), hex::encode)
        ))),
        Ok(None) => Ok(Some("is not at the location".into())),
        Err(e) => Err(Refusal::Later(format!(
            "cannot check pack {} at {}: {e}",
            id.short(),
            site.name
        ))),
    }
}

/// Check a backup result against the location and the ledger; on success,
/// the catalog record to store (built from the manifest, not from what the
/// agent said).
///
/// # Errors
/// [`Refusal::Refused`] naming the first check that failed;
/// [`Refusal::Later`] when the location could not be read.
pub async fn check_backup(
    catalog: &Catalog,
    site: &CheckSite<'_>,
    job: &Job,
    agent: &str,
    snap: Id,
    now: DateTime<Utc>,
) -> std::result::Result<Checked, Refusal> {
    let refuse = |why: String| {
        Refusal::Refused(format!(
            "the result of job {} (snapshot {} at {}) was not recorded: {why}",
            job.id,
            snap.short(),
            site.name
        ))
    };
    let internal = |e: crate::Error| Refusal::Later(format!("catalog: {e}"));
    let ledger = Ledger::new(catalog);
    let refs = match site
        .index
        .snapshot_refs(&snap, |k| ledger.issued_to_agent(k, agent))
        .await
    {
        Ok(r) => r,
        Err(trireme_common::Error::NotFound { key, .. }) => {
            return Err(refuse(format!("{key} is not at the location")))
        }
        Err(e @ (trireme_common::Error::Storage { .. } | trireme_common::Error::Io { .. }))
        | Err(e @ trireme_common::Error::KeyUnavailable(_)) => {
            return Err(Refusal::Later(format!(
                "cannot read snapshot {} at {}: {e}",
                snap.short(),
                site.name
            )))
        }
        Err(e) => return Err(refuse(format!("its manifest cannot be used: {e}"))),
    };
    match ledger.get(&refs.key).map_err(internal)? {
        Some(k) if k.job == job.id => {}
        Some(k) => {
            return Err(refuse(format!(
                "its manifest is sealed with a key generated for job {} of {}, not for this job",
                k.job,
                k.source
                    .map_or_else(|| format!("agent {}", k.agent), |s| s.to_string())
            )))
        }
        None => {
            return Err(refuse(
                "its manifest is sealed with a key the key service never generated for this job"
                    .into(),
            ))
        }
    }
    let m = &refs.snapshot.manifest;
    let me = trireme_common::attribution::Writer {
        job: *job.id.0.as_bytes(),
        agent: agent.to_string(),
    };
    let key_of = |j: &[u8; 16], a: &str| site.custody.job_mac_key(j, a);
    if m.attributed(key_of).as_ref() != Some(&me) {
        return Err(refuse(
            "its manifest does not carry this job's attribution (no MAC under the job's attribution key)".into(),
        ));
    }
    if m.source != job.source.name {
        return Err(refuse(format!(
            "its manifest is of source {:?}, the job backs up {}",
            m.source, job.source
        )));
    }
    if let Some(rec) = catalog.agents().get(&agent.to_string()).map_err(internal)? {
        if !rec.hostname.is_empty() && m.host != rec.hostname {
            return Err(refuse(format!(
                "its manifest names host {:?}, agent {agent} runs on {:?}",
                m.host, rec.hostname
            )));
        }
    }
    let started = DateTime::from_timestamp_nanos(m.started_ns);
    let finished = DateTime::from_timestamp_nanos(m.finished_ns);
    if started < job.created - CLOCK_SKEW || finished > now + CLOCK_SKEW || started > finished {
        return Err(refuse(format!(
            "its manifest says it ran from {started} to {finished}, outside the job's run ({} to {now}, give or take {} minutes of clock skew)",
            job.created,
            CLOCK_SKEW.num_minutes()
        )));
    }
    if !refs.unpreferred.is_empty() {
        let (chunk, pack) = refs.unpreferred[0];
        return Err(refuse(format!(
            "it references {} chunks stored only in packs no job of agent {agent} wrote (e.g. chunk {} in pack {})",
            refs.unpreferred.len(),
            chunk.short(),
            pack.short()
        )));
    }
    for p in refs.packs.values() {
        if let Some(why) = pack_problem(site, &p.id, p.size).await? {
            return Err(refuse(format!("pack {} it references {why}", p.id.short())));
        }
    }
    // The index objects this job wrote: each attributed to it, listing only
    // packs sealed with keys generated for it, each present with the size
    // it claims.
    let mut own = Vec::new();
    for (name, f) in site.index.readable_objects() {
        if believed(catalog, name) || f.attributed(key_of).as_ref() != Some(&me) {
            continue;
        }
        for p in &f.packs {
            match ledger.get(&WrappedKey(p.key.clone())).map_err(internal)? {
                Some(k) if k.job == job.id => {}
                _ => {
                    return Err(refuse(format!(
                        "its index object {} lists pack {}, which is not sealed with a key generated for this job",
                        &name[..12.min(name.len())],
                        p.id.short()
                    )))
                }
            }
            if let Some(why) = pack_problem(site, &p.id, p.size).await? {
                return Err(refuse(format!(
                    "its index object {} lists pack {}, which {why}",
                    &name[..12.min(name.len())],
                    p.id.short()
                )));
            }
        }
        own.push(name.clone());
    }
    let mut copies = BTreeMap::new();
    copies.insert(site.name.to_string(), CopyState::Copied { at: now });
    let record = SnapshotRecord {
        id: snap,
        source: job.source.clone(),
        agent: agent.to_string(),
        time: started,
        size: m.summary.bytes,
        summary: m.summary.clone(),
        job: Some(job.id),
        copies,
        position: m.position.clone(),
        depends_on: Vec::new(),
    };
    let mut record = record;
    record.derive_dependencies();
    Ok(Checked {
        record,
        index_objects: own,
    })
}

/// Data keys the key service generated, by the SHA-256 of the wrapped key: which job (and agent) each was for.
pub const ISSUED_KEYS: crate::catalog::TableDef<String, IssuedKey> =
    crate::catalog::TableDef::new("issued_keys");

/// The index objects the controller believes, by name.
pub const INDEX_OBJECTS: crate::catalog::TableDef<String, IndexRecord> =
    crate::catalog::TableDef::new("index_objects");

impl crate::catalog::Catalog {
    /// Data keys the key service generated, by the SHA-256 of the wrapped key: which job (and agent) each was for.
    pub fn issued_keys(&self) -> crate::catalog::Tree<String, IssuedKey> {
        self.table(&ISSUED_KEYS)
    }

    /// The index objects the controller believes, by name.
    pub fn index_objects(&self) -> crate::catalog::Tree<String, IndexRecord> {
        self.table(&INDEX_OBJECTS)
    }
}
