//! Snapshots the catalog knows about, and the state of their copies at
//! each location.
//!
//! Table (see [`crate::catalog`] for the layout): `snapshots` (snapshot id
//! → [`SnapshotRecord`]), transactional.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::{Dependency, Id, Summary};

use crate::catalog::{abort, Catalog, TableDef, Tree, Tx, TxTree};
use crate::error::{Error, Result};
use crate::jobs::JobId;
use crate::sources::SourceId;

/// Snapshots by id.
pub const SNAPSHOTS: TableDef<Id, SnapshotRecord> = TableDef::new("snapshots");

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
    /// The locations where its copy is verified.
    pub fn verified_locations(&self) -> impl Iterator<Item = &str> {
        self.copies
            .iter()
            .filter(|(_, c)| matches!(c, CopyState::Verified { .. }))
            .map(|(l, _)| l.as_str())
    }

    /// Set [`SnapshotRecord::depends_on`] from the position.
    pub fn derive_dependencies(&mut self) {
        self.depends_on = trireme_common::manifest::dependencies(&self.position);
    }
}

impl Catalog {
    /// Snapshots by id.
    pub fn snapshots(&self) -> Tree<Id, SnapshotRecord> {
        self.table(&SNAPSHOTS)
    }

    /// Set the copy state of a snapshot at one location (durably).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown snapshot; catalog errors.
    pub fn set_copy_state(&self, id: &Id, location: &str, state: CopyState) -> Result<()> {
        self.transaction_durable(|tx| {
            let mut s = tx
                .snapshots()
                .get(id)?
                .ok_or_else(|| abort(Error::not_found("snapshot", id)))?;
            s.copies.insert(location.to_string(), state.clone());
            tx.snapshots().insert(id, &s)
        })
    }

    /// Snapshots of one source, oldest first.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn snapshots_of(&self, source: &SourceId) -> Result<Vec<SnapshotRecord>> {
        let mut v: Vec<SnapshotRecord> = self
            .snapshots()
            .values()?
            .into_iter()
            .filter(|s| &s.source == source)
            .collect();
        v.sort_by_key(|s| (s.time, s.id));
        Ok(v)
    }
}

impl<'a> Tx<'a> {
    /// Snapshots by id, in this transaction.
    pub fn snapshots(&self) -> TxTree<'a, Id, SnapshotRecord> {
        self.table(&SNAPSHOTS)
    }
}

/// The `meta` mark of [`fill_dependencies`].
const DEPENDENCIES_FILLED: &str = "dependencies";

/// Snapshots recorded before [`SnapshotRecord::depends_on`] existed get it
/// from their position, once (the `meta` key `dependencies` marks it done).
/// The controller runs it when it opens its catalog. Whether it wrote
/// anything (flushed if so).
///
/// # Errors
/// Catalog errors.
pub fn fill_dependencies(catalog: &Catalog) -> Result<bool> {
    let meta = catalog.meta();
    let done = DEPENDENCIES_FILLED.to_string();
    if meta.get(&done)?.is_some() {
        return Ok(false);
    }
    let snapshots = catalog.snapshots();
    for mut s in snapshots.values()? {
        if s.depends_on.is_empty() {
            s.derive_dependencies();
            if !s.depends_on.is_empty() {
                snapshots.insert(&s.id, &s)?;
            }
        }
    }
    meta.insert(&done, &1)?;
    catalog.flush()?;
    Ok(true)
}
