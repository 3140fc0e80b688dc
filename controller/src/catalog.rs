//! The controller's catalog: one sled database with typed trees.
//!
//! [`Catalog::open`] is the only way in. Each tree maps a typed key to a
//! CBOR-encoded value (see [`Key`]); multi-tree updates go through
//! [`Catalog::transaction`], which sees every tree through a [`Tx`] and
//! commits all or nothing. Writes that must survive a `kill -9` (a finished
//! job, a fired schedule slot, a recorded snapshot) use
//! [`Catalog::transaction_durable`], which flushes before returning.
//!
//! Key layout (all keys are byte strings; `agent/source` is UTF-8):
//!
//! | tree        | key                          | value                      |
//! |-------------|------------------------------|----------------------------|
//! | `meta`      | `format`                     | catalog format version     |
//! | `meta`      | `dependencies`               | 1 once older snapshot records got their `depends_on` |
//! | `agents`    | agent name                   | [`AgentRecord`]            |
//! | `sources`   | `agent/source`               | [`SourceRecord`]           |
//! | `policies`  | `agent/source`               | [`PolicyRecord`]           |
//! | `schedule`  | `agent/source`               | [`SourceSchedule`]         |
//! | `active`    | `agent/source`               | [`JobId`] of the source's one unfinished job |
//! | `jobs`      | job id, 16 bytes (UUIDv7, so time-ordered) | [`Job`]      |
//! | `snapshots` | snapshot id, 32 bytes        | [`SnapshotRecord`]         |
//! | `audit`     | sequence number, 8 bytes big-endian | [`crate::audit::AuditEntry`] |
//! | `audit_mirror` | location name             | last sequence number mirrored there |
//! | `mfa`       | operator certificate name    | [`crate::mfa::MfaRecord`]  |
//! | `retention` | class name                   | [`RetentionClass`](crate::retention::RetentionClass) |
//! | `pruning`   | snapshot id, 32 bytes        | [`PendingPrune`](crate::prune::PendingPrune): removed, still at skipped locations |
//! | `tombstones`| object path                  | when prune deleted it (replication must not copy it back) |
//! | `issued_keys` | SHA-256 of a wrapped data key, hex | [`IssuedKey`](crate::attribution::IssuedKey): the backup job it was generated for |
//! | `index_objects` | index object name (64 hex) | [`IndexRecord`](crate::attribution::IndexRecord): the checked job (or the controller) that wrote it; only these are believed |
//! | `custody`   | `controller_key`, `config`, `held/<location>` | hex of the wrapped controller key and of the authentic repository config; when a location was last seen holding it ([`crate::custody`]) |
//! | `key_tables`| key table name (`table-<key id>`) | [`StoredKeyTable`](crate::rotation::StoredKeyTable): a master-key rotation's table, as at the locations |

mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
};
use trireme_common::{Dependency, Id, Summary};

use crate::error::{Error, Result};
use crate::jobs::{Job, JobId};
use crate::policy::PolicyRecord;
use crate::scheduler::SourceSchedule;

pub use tree::{Key, Tree, TxTree};

/// The catalog format this build reads and writes.
pub const CATALOG_FORMAT: u32 = 1;

/// Result of a step inside a catalog transaction: `?` works on both catalog
/// reads and domain errors turned into aborts with [`abort`].
pub type TxResult<T> = ConflictableTransactionResult<T, Error>;

/// Abort the current transaction with a domain error.
pub fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

/// A source's identity: the agent that reported it and its name there,
/// written `agent/name` (e.g. `host-a/redis-main`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SourceId {
    /// The agent (host) name.
    pub agent: String,
    /// The source's name on that agent.
    pub name: String,
}

/// Longest agent or source name.
pub const MAX_NAME_LEN: usize = 128;

/// Check an agent or source name: 1–128 letters, digits, `.`, `-`, `_`,
/// not starting with `.`.
///
/// # Errors
/// [`Error::InvalidValue`] naming `what` and the rule.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            what,
            name,
            format!(
                "use 1-{MAX_NAME_LEN} letters, digits, '.', '-' or '_' (not starting with '.')"
            ),
        ))
    }
}

impl SourceId {
    /// A source id from its parts.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] when a part is not a valid name.
    pub fn new(agent: impl Into<String>, name: impl Into<String>) -> Result<Self> {
        let (agent, name) = (agent.into(), name.into());
        validate_name("agent name", &agent)?;
        validate_name("source name", &name)?;
        Ok(SourceId { agent, name })
    }
}

impl FromStr for SourceId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::invalid(
                "source",
                s,
                format!("{reason}; write agent/source, e.g. \"host-a/redis-main\""),
            )
        };
        let (agent, name) = s.split_once('/').ok_or_else(|| bad("there is no '/'"))?;
        SourceId::new(agent, name).map_err(|e| match e {
            Error::InvalidValue { field, reason, .. } => bad(&format!("the {field} {reason}")),
            e => e,
        })
    }
}

impl TryFrom<String> for SourceId {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<SourceId> for String {
    fn from(s: SourceId) -> String {
        s.to_string()
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.agent, self.name)
    }
}

/// What the catalog knows about an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// The host name the agent reported.
    pub hostname: String,
    /// The agent's version.
    pub version: String,
    /// When the agent first registered.
    pub first_seen: DateTime<Utc>,
    /// When the agent last registered or reported.
    pub last_seen: DateTime<Utc>,
    /// Names of the sources it reported at its last registration.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// A source an agent reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Source kind: `volume`, `redis`, `tidb-br`, `kafka`, `mongodump`, `command`.
    pub kind: String,
    /// Kind-specific details as the agent reported them (paths, addresses;
    /// never secrets).
    #[serde(default)]
    pub details: BTreeMap<String, String>,
    /// When the agent last reported this source.
    pub last_seen: DateTime<Utc>,
    /// Where a DR drill restores it, lower first, as the agent's integration
    /// describes its kind (see `recovery::drill_rank`). None when the agent
    /// did not say (agents older than this field, sources rebuilt from the
    /// repository): the drill restores those last.
    #[serde(default)]
    pub drill_rank: Option<u32>,
}

/// The state of a snapshot's copy at one location.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum CopyState {
    /// Not copied yet.
    Pending,
    /// Every object copied; not read back yet.
    Copied {
        /// When the copy finished.
        at: DateTime<Utc>,
    },
    /// Objects being copied to this location.
    Copying {
        /// Since when.
        since: DateTime<Utc>,
    },
    /// Every object's checksum read back and matching.
    Verified {
        /// When the verification finished.
        at: DateTime<Utc>,
    },
    /// Objects missing or corrupt at this location.
    Damaged {
        /// When it was found.
        at: DateTime<Utc>,
        /// What was found.
        reason: String,
    },
    /// Objects the snapshot needs (its manifest, a pack it references) are
    /// at no location, or the index lists none holding one of its chunks:
    /// the copy cannot be completed, and the snapshot does not restore from
    /// here. Checked again at every pass.
    Incomplete {
        /// When it was found.
        at: DateTime<Utc>,
        /// What is missing.
        reason: String,
    },
}

/// A snapshot the catalog knows about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The snapshot id (its manifest object's SHA-256).
    pub id: Id,
    /// The source it is a backup of.
    pub source: SourceId,
    /// The agent that made it.
    pub agent: String,
    /// Backup start.
    pub time: DateTime<Utc>,
    /// Plaintext bytes of the backup.
    pub size: u64,
    /// The manifest's counters.
    pub summary: Summary,
    /// The job that made it, if it came from the scheduler.
    #[serde(default)]
    pub job: Option<JobId>,
    /// Copy state per location name.
    #[serde(default)]
    pub copies: BTreeMap<String, CopyState>,
    /// The datastore position the agent recorded (e.g. BR's backup TS).
    #[serde(default)]
    pub position: BTreeMap<String, String>,
    /// The snapshots its restore needs first (a TiDB incremental's chain),
    /// from `position` ([`trireme_common::manifest::dependencies`]): set
    /// when the snapshot is recorded, recomputed by a catalog rebuild, and
    /// filled in for catalogs written before the field existed. Retention
    /// keeps them as long as this snapshot stays. A tree snapshot's parent
    /// is not one.
    #[serde(default)]
    pub depends_on: Vec<Dependency>,
}

impl SnapshotRecord {
    /// Set [`SnapshotRecord::depends_on`] from the position.
    pub fn derive_dependencies(&mut self) {
        self.depends_on = trireme_common::manifest::dependencies(&self.position);
    }
}

/// The controller's catalog. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
    path: PathBuf,
    meta: Tree<String, u32>,
    agents: Tree<String, AgentRecord>,
    sources: Tree<SourceId, SourceRecord>,
    policies: Tree<SourceId, PolicyRecord>,
    schedule: Tree<SourceId, SourceSchedule>,
    active: Tree<SourceId, JobId>,
    jobs: Tree<JobId, Job>,
    snapshots: Tree<Id, SnapshotRecord>,
    locations: Tree<String, crate::replication::LocationState>,
    audit: crate::audit::AuditLog,
    mfa: Tree<String, crate::mfa::MfaRecord>,
    restore_tests: Tree<JobId, crate::recovery::RestoreTestRecord>,
    restore_test_slots: Tree<SourceId, DateTime<Utc>>,
    drills: Tree<String, crate::recovery::DrillRecord>,
    retention: Tree<String, crate::retention::RetentionClass>,
    pruning: Tree<Id, crate::prune::PendingPrune>,
    tombstones: Tree<String, DateTime<Utc>>,
    key_tables: Tree<String, crate::rotation::StoredKeyTable>,
    issued_keys: Tree<String, crate::attribution::IssuedKey>,
    custody: Tree<String, String>,
    index_objects: Tree<String, crate::attribution::IndexRecord>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

/// Every tree of the catalog inside one transaction.
pub struct Tx<'a> {
    /// Agents by name.
    pub agents: TxTree<'a, String, AgentRecord>,
    /// Sources by `agent/source`.
    pub sources: TxTree<'a, SourceId, SourceRecord>,
    /// Policies by source.
    pub policies: TxTree<'a, SourceId, PolicyRecord>,
    /// Scheduler state by source.
    pub schedule: TxTree<'a, SourceId, SourceSchedule>,
    /// The one unfinished job of each busy source.
    pub active: TxTree<'a, SourceId, JobId>,
    /// Jobs by id.
    pub jobs: TxTree<'a, JobId, Job>,
    /// Snapshots by id.
    pub snapshots: TxTree<'a, Id, SnapshotRecord>,
    /// Retention classes by name.
    pub retention: TxTree<'a, String, crate::retention::RetentionClass>,
}

impl Catalog {
    /// Open (or create) the catalog in directory `path`.
    ///
    /// # Errors
    /// [`Error::CatalogOpen`] when the database cannot be opened (another
    /// controller holds it, permissions), [`Error::CatalogVersion`] when a
    /// newer controller wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| Error::CatalogOpen {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let open = |name: &'static str| db.open_tree(name).map_err(open_err);
        let catalog = Catalog {
            meta: Tree::new(open("meta")?, "meta"),
            agents: Tree::new(open("agents")?, "agents"),
            sources: Tree::new(open("sources")?, "sources"),
            policies: Tree::new(open("policies")?, "policies"),
            schedule: Tree::new(open("schedule")?, "schedule"),
            active: Tree::new(open("active")?, "active"),
            jobs: Tree::new(open("jobs")?, "jobs"),
            snapshots: Tree::new(open("snapshots")?, "snapshots"),
            locations: Tree::new(open("locations")?, "locations"),
            audit: crate::audit::AuditLog::new(
                Tree::new(open("audit")?, "audit"),
                Tree::new(open("audit_mirror")?, "audit_mirror"),
                db.clone(),
            ),
            mfa: Tree::new(open("mfa")?, "mfa"),
            restore_tests: Tree::new(open("restore_tests")?, "restore_tests"),
            restore_test_slots: Tree::new(open("restore_test_slots")?, "restore_test_slots"),
            drills: Tree::new(open("drills")?, "drills"),
            retention: Tree::new(open("retention")?, "retention"),
            pruning: Tree::new(open("pruning")?, "pruning"),
            tombstones: Tree::new(open("tombstones")?, "tombstones"),
            key_tables: Tree::new(open("key_tables")?, "key_tables"),
            issued_keys: Tree::new(open("issued_keys")?, "issued_keys"),
            custody: Tree::new(open("custody")?, "custody"),
            index_objects: Tree::new(open("index_objects")?, "index_objects"),
            path: path.clone(),
            db,
        };
        let key = "format".to_string();
        let format = catalog.meta.get(&key)?;
        if let Some(v) = format.filter(|v| *v > CATALOG_FORMAT) {
            return Err(Error::CatalogVersion {
                path,
                found: v,
                supported: CATALOG_FORMAT,
            });
        }
        let mut wrote = catalog.fill_dependencies()?;
        if format.is_none() {
            catalog.meta.insert(&key, &CATALOG_FORMAT)?;
            wrote = true;
        }
        if wrote {
            catalog.flush()?;
        }
        Ok(catalog)
    }

    /// Snapshots recorded before [`SnapshotRecord::depends_on`] existed get
    /// it from their position, once (the `meta` key `dependencies` marks it
    /// done). Whether it wrote anything (not flushed).
    fn fill_dependencies(&self) -> Result<bool> {
        let done = "dependencies".to_string();
        if self.meta.get(&done)?.is_some() {
            return Ok(false);
        }
        for mut s in self.snapshots.values()? {
            if s.depends_on.is_empty() {
                s.derive_dependencies();
                if !s.depends_on.is_empty() {
                    self.snapshots.insert(&s.id, &s)?;
                }
            }
        }
        self.meta.insert(&done, &1)?;
        Ok(true)
    }

    /// The catalog directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write everything to disk now.
    ///
    /// # Errors
    /// [`Error::Catalog`] on I/O errors.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| Error::catalog("flush", e))
    }

    /// Agents by name.
    pub fn agents(&self) -> &Tree<String, AgentRecord> {
        &self.agents
    }

    /// Sources by `agent/source`.
    pub fn sources(&self) -> &Tree<SourceId, SourceRecord> {
        &self.sources
    }

    /// Policies by source.
    pub fn policies(&self) -> &Tree<SourceId, PolicyRecord> {
        &self.policies
    }

    /// Scheduler state by source.
    pub fn schedule(&self) -> &Tree<SourceId, SourceSchedule> {
        &self.schedule
    }

    /// The one unfinished job of each busy source.
    pub fn active(&self) -> &Tree<SourceId, JobId> {
        &self.active
    }

    /// Jobs by id (oldest first when iterated).
    pub fn jobs(&self) -> &Tree<JobId, Job> {
        &self.jobs
    }

    /// Snapshots by id.
    pub fn snapshots(&self) -> &Tree<Id, SnapshotRecord> {
        &self.snapshots
    }

    /// Replication and verification state by location name.
    pub fn locations(&self) -> &Tree<String, crate::replication::LocationState> {
        &self.locations
    }

    /// The hash-chained audit log.
    pub fn audit(&self) -> &crate::audit::AuditLog {
        &self.audit
    }

    /// MFA enrollments by operator certificate name.
    pub fn mfa(&self) -> &Tree<String, crate::mfa::MfaRecord> {
        &self.mfa
    }

    /// Restore tests and drill steps by job id (oldest first), pending and finished.
    pub fn restore_tests(&self) -> &Tree<JobId, crate::recovery::RestoreTestRecord> {
        &self.restore_tests
    }

    /// The last restore-test schedule slot handled, per source.
    pub fn restore_test_slots(&self) -> &Tree<SourceId, DateTime<Utc>> {
        &self.restore_test_slots
    }

    /// DR drills and their reports, by id (oldest first).
    pub fn drills(&self) -> &Tree<String, crate::recovery::DrillRecord> {
        &self.drills
    }

    /// Retention classes by name.
    pub fn retention(&self) -> &Tree<String, crate::retention::RetentionClass> {
        &self.retention
    }

    /// Snapshots removed from the catalog by prune that skipped locations
    /// still hold.
    pub fn pruning(&self) -> &Tree<Id, crate::prune::PendingPrune> {
        &self.pruning
    }

    /// Objects prune deleted (by path): replication does not copy them back.
    pub fn tombstones(&self) -> &Tree<String, DateTime<Utc>> {
        &self.tombstones
    }

    /// Data keys the key service generated, by the SHA-256 of the wrapped
    /// key: which job (and agent) each was for.
    pub fn issued_keys(&self) -> &Tree<String, crate::attribution::IssuedKey> {
        &self.issued_keys
    }

    /// The index objects the controller believes, by name.
    pub fn index_objects(&self) -> &Tree<String, crate::attribution::IndexRecord> {
        &self.index_objects
    }

    /// The controller key and the authentic config ([`crate::custody`]).
    pub fn custody(&self) -> &Tree<String, String> {
        &self.custody
    }

    /// Key tables of master-key rotations, by object name.
    pub fn key_tables(&self) -> &Tree<String, crate::rotation::StoredKeyTable> {
        &self.key_tables
    }

    /// Run `f` as one serializable transaction over every tree: all its
    /// writes happen, or none. `f` may run more than once (on conflicts), so
    /// it must have no other side effects. Not flushed: durable within
    /// sled's flush interval (0.5 s), or at the next [`Catalog::flush`].
    ///
    /// # Errors
    /// The error `f` aborted with, or [`Error::Catalog`].
    pub fn transaction<T>(&self, f: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        let trees = (
            self.agents.sled(),
            self.sources.sled(),
            self.policies.sled(),
            self.schedule.sled(),
            self.active.sled(),
            self.jobs.sled(),
            self.snapshots.sled(),
            self.retention.sled(),
        );
        let r = trees.transaction(
            |(agents, sources, policies, schedule, active, jobs, snaps, retention)| {
                let tx = Tx {
                    agents: TxTree::new(agents, "agents"),
                    sources: TxTree::new(sources, "sources"),
                    policies: TxTree::new(policies, "policies"),
                    schedule: TxTree::new(schedule, "schedule"),
                    active: TxTree::new(active, "active"),
                    jobs: TxTree::new(jobs, "jobs"),
                    snapshots: TxTree::new(snaps, "snapshots"),
                    retention: TxTree::new(retention, "retention"),
                };
                f(&tx)
            },
        );
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(Error::catalog("transaction", e)),
        }
    }

    /// [`Catalog::transaction`], then flush to disk before returning: use it
    /// for writes a crash must not lose.
    ///
    /// # Errors
    /// As [`Catalog::transaction`] and [`Catalog::flush`].
    pub fn transaction_durable<T>(&self, f: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        let v = self.transaction(f)?;
        self.flush()?;
        Ok(v)
    }

    /// Record an agent's registration and the sources it reports, in one
    /// transaction. Sources it no longer reports stay in the catalog (their
    /// policies and snapshots still refer to them) but leave the agent's
    /// `sources` list.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for a bad agent or source name; catalog errors.
    pub fn register_agent(
        &self,
        name: &str,
        hostname: &str,
        version: &str,
        sources: &[(String, SourceRecord)],
        now: DateTime<Utc>,
    ) -> Result<AgentRecord> {
        validate_name("agent name", name)?;
        let ids = sources
            .iter()
            .map(|(n, _)| SourceId::new(name, n.clone()))
            .collect::<Result<Vec<_>>>()?;
        let key = name.to_string();
        self.transaction_durable(|tx| {
            let first_seen = tx.agents.get(&key)?.map_or(now, |a| a.first_seen);
            let record = AgentRecord {
                hostname: hostname.to_string(),
                version: version.to_string(),
                first_seen,
                last_seen: now,
                sources: sources.iter().map(|(n, _)| n.clone()).collect(),
            };
            tx.agents.insert(&key, &record)?;
            for (id, (_, src)) in ids.iter().zip(sources) {
                tx.sources.insert(id, src)?;
            }
            Ok(record)
        })
    }

    /// Every source of one agent, by name.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn sources_of(&self, agent: &str) -> Result<Vec<(SourceId, SourceRecord)>> {
        self.sources.scan_prefix(format!("{agent}/").as_bytes())
    }

    /// Record a snapshot (durably), with the dependencies its position
    /// names.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn record_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let mut s = s.clone();
        s.derive_dependencies();
        self.transaction_durable(|tx| {
            tx.snapshots.insert(&s.id, &s)?;
            crate::jobs::remember_latest_in(tx, &s)
        })
    }

    /// Set the copy state of a snapshot at one location (durably).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown snapshot; catalog errors.
    pub fn set_copy_state(&self, id: &Id, location: &str, state: CopyState) -> Result<()> {
        self.transaction_durable(|tx| {
            let mut s = tx
                .snapshots
                .get(id)?
                .ok_or_else(|| abort(Error::not_found("snapshot", id)))?;
            s.copies.insert(location.to_string(), state.clone());
            tx.snapshots.insert(id, &s)
        })
    }

    /// Snapshots of one source, oldest first.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn snapshots_of(&self, source: &SourceId) -> Result<Vec<SnapshotRecord>> {
        let mut v: Vec<SnapshotRecord> = self
            .snapshots
            .values()?
            .into_iter()
            .filter(|s| &s.source == source)
            .collect();
        v.sort_by_key(|s| (s.time, s.id));
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
