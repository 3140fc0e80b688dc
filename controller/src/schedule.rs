//! The scheduler's state for each source, as stored: what it fired, what
//! failed, what it retries, what it skipped, and the source's newest
//! snapshot. [`crate::scheduler`] decides with it; policies reset it when
//! their schedule changes.
//!
//! Table (see [`crate::catalog`] for the layout): `schedule`
//! (`agent/source` → [`SourceSchedule`]), transactional.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::Id;

use crate::catalog::{Catalog, TableDef, Tree, Tx, TxResult, TxTree};
use crate::jobs::{BackupMode, JobId};
use crate::snapshots::SnapshotRecord;
use crate::sources::SourceId;

/// Scheduler state by source.
pub const SCHEDULE: TableDef<SourceId, SourceSchedule> = TableDef::new("schedule");

/// A retry waiting for its time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRetry {
    /// The slot of the run being retried.
    pub slot: DateTime<Utc>,
    /// The attempt number the retry will have (2 for the first retry).
    pub attempt: u32,
    /// When it is due.
    pub due: DateTime<Utc>,
    /// The mode of the failed attempt, kept for the retry.
    pub mode: BackupMode,
    /// The failed attempt.
    pub previous: JobId,
}

/// A failed job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The job.
    pub job: JobId,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// Why.
    pub reason: String,
    /// Its attempt number.
    pub attempt: u32,
}

/// A run given up after its retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GaveUp {
    /// The run's slot.
    pub slot: DateTime<Utc>,
    /// When the last attempt failed.
    pub at: DateTime<Utc>,
    /// How many attempts were made.
    pub attempts: u32,
}

/// Slots skipped because the source's previous job had not finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skip {
    /// The latest slot skipped.
    pub slot: DateTime<Utc>,
    /// When the scheduler skipped it.
    pub at: DateTime<Utc>,
    /// How many slots this skip covered.
    pub slots: u64,
    /// The unfinished job.
    pub blocked_by: JobId,
}

/// The scheduler's state for one source, stored in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSchedule {
    /// Slots at or before this time are handled (fired, caught up or
    /// skipped). Set to the apply time when a policy is new or its
    /// schedule changes.
    #[serde(default)]
    pub handled_until: Option<DateTime<Utc>>,
    /// When the scheduler last queued a job for the source.
    #[serde(default)]
    pub last_fired: Option<DateTime<Utc>>,
    /// The last job the scheduler queued.
    #[serde(default)]
    pub last_job: Option<JobId>,
    /// When a job of the source last succeeded.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// The slot of the last successful full backup.
    #[serde(default)]
    pub last_full_slot: Option<DateTime<Utc>>,
    /// The last failed job.
    #[serde(default)]
    pub last_failure: Option<Failure>,
    /// A retry waiting for its time.
    #[serde(default)]
    pub retry: Option<PendingRetry>,
    /// The last run given up after its retries.
    #[serde(default)]
    pub gave_up: Option<GaveUp>,
    /// Slots skipped so far because a job was still unfinished.
    #[serde(default)]
    pub skipped: u64,
    /// The last skip.
    #[serde(default)]
    pub last_skip: Option<Skip>,
    /// The source's newest snapshot (its time and id): the parent of the
    /// next incremental backup, found without scanning every snapshot.
    #[serde(default)]
    pub last_snapshot: Option<(DateTime<Utc>, Id)>,
}

impl Catalog {
    /// Scheduler state by source.
    pub fn schedule(&self) -> Tree<SourceId, SourceSchedule> {
        self.table(&SCHEDULE)
    }
}

impl<'a> Tx<'a> {
    /// Scheduler state by source, in this transaction.
    pub fn schedule(&self) -> TxTree<'a, SourceId, SourceSchedule> {
        self.table(&SCHEDULE)
    }
}

/// Keep the source's newest snapshot in its schedule state.
///
/// # Errors
/// Conflicts and storage errors.
pub fn remember_latest_in(tx: &Tx<'_>, record: &SnapshotRecord) -> TxResult<()> {
    let mut state = tx.schedule().get(&record.source)?.unwrap_or_default();
    if state
        .last_snapshot
        .is_none_or(|(t, id)| (record.time, record.id) > (t, id))
    {
        state.last_snapshot = Some((record.time, record.id));
        tx.schedule().insert(&record.source, &state)?;
    }
    Ok(())
}
