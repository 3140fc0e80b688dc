//! Backup jobs and their state machine.
//!
//! ```text
//! queued ──▶ assigned(agent) ──▶ running(progress) ──▶ succeeded(snapshot)
//!    │              │                 │           └──▶ failed(reason)
//!    └──────────────┴─────────────────┴──────────────▶ failed | cancelled
//! ```
//!
//! [`Job::apply`] is the pure state machine: any other change is an
//! [`Error::IllegalTransition`]. [`create_in`] queues a job and claims its
//! source; applying events in the catalog (and telling the scheduler when
//! a job finishes) is [`crate::lifecycle`]'s.
//!
//! Tables (see [`crate::catalog`] for the layout): `jobs` (job id →
//! [`Job`]) and `active` (`agent/source` → the [`JobId`] of its one
//! unfinished job), both transactional.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::Id;
use uuid::{ContextV7, Timestamp, Uuid};

use crate::catalog::{abort, Catalog, Key, TableDef, Tree, Tx, TxResult, TxTree};
use crate::error::{Error, Result};
use crate::sources::SourceId;

/// Jobs by id (oldest first when iterated).
pub const JOBS: TableDef<JobId, Job> = TableDef::new("jobs");
/// The one unfinished job of each busy source (or restore target).
pub const ACTIVE: TableDef<SourceId, JobId> = TableDef::new("active");

/// Full or incremental backups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackupMode {
    /// Read only what changed since the source's last snapshot.
    #[default]
    Incremental,
    /// Read everything.
    Full,
}

impl fmt::Display for BackupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackupMode::Incremental => "incremental",
            BackupMode::Full => "full",
        })
    }
}

impl Key for JobId {
    fn to_key(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        Uuid::from_slice(bytes).ok().map(JobId)
    }
    fn display_key(bytes: &[u8]) -> String {
        Self::from_key(bytes).map_or_else(|| hex::encode(bytes), |id| id.to_string())
    }
}

/// How many jobs are in each state (the metrics' `trireme_jobs{state}`),
/// kept with every state change so nothing scans the jobs to count them.
pub const JOB_COUNTS: TableDef<String, u64> = TableDef::new("job_counts");

/// The `meta` mark of [`count_jobs`].
const JOBS_COUNTED: &str = "job_counts";

impl Catalog {
    /// Jobs by id (oldest first when iterated).
    pub fn jobs(&self) -> Tree<JobId, Job> {
        self.table(&JOBS)
    }

    /// Jobs per state name (see [`JOB_COUNTS`]).
    pub fn job_counts(&self) -> Tree<String, u64> {
        self.table(&JOB_COUNTS)
    }

    /// The one unfinished job of each busy source.
    pub fn active(&self) -> Tree<SourceId, JobId> {
        self.table(&ACTIVE)
    }
}

impl<'a> Tx<'a> {
    /// Jobs by id, in this transaction.
    pub fn jobs(&self) -> TxTree<'a, JobId, Job> {
        self.table(&JOBS)
    }

    /// The one unfinished job of each busy source, in this transaction.
    pub fn active(&self) -> TxTree<'a, SourceId, JobId> {
        self.table(&ACTIVE)
    }

    /// Jobs per state name, in this transaction.
    pub fn job_counts(&self) -> TxTree<'a, String, u64> {
        self.table(&JOB_COUNTS)
    }

    /// Count a job leaving state `from` (none: a new job) for `to`.
    pub fn count_job_state(&self, from: Option<&JobState>, to: &JobState) -> TxResult<()> {
        if from.map(JobState::name) == Some(to.name()) {
            return Ok(());
        }
        let counts = self.job_counts();
        if let Some(from) = from {
            let k = from.name().to_string();
            let n = counts.get(&k)?.unwrap_or(0);
            counts.insert(&k, &n.saturating_sub(1))?;
        }
        let k = to.name().to_string();
        let n = counts.get(&k)?.unwrap_or(0);
        counts.insert(&k, &(n + 1))
    }
}

/// Jobs recorded before [`JOB_COUNTS`] existed are counted once, when the
/// controller opens its catalog (the `meta` key `job_counts` marks it
/// done). Whether it counted (flushed if so).
///
/// # Errors
/// Catalog errors.
pub fn count_jobs(catalog: &Catalog) -> Result<bool> {
    let meta = catalog.meta();
    let done = JOBS_COUNTED.to_string();
    if meta.get(&done)?.is_some() {
        return Ok(false);
    }
    let mut counts: std::collections::BTreeMap<&'static str, u64> = Default::default();
    for j in catalog.jobs().values()? {
        *counts.entry(j.state.name()).or_default() += 1;
    }
    let table = catalog.job_counts();
    for stale in table.keys()? {
        table.insert(&stale, &0)?;
    }
    for (state, n) in counts {
        table.insert(&state.to_string(), &n)?;
    }
    meta.insert(&done, &1)?;
    catalog.flush()?;
    Ok(true)
}

/// A job id: a UUIDv7, so ids (and the `jobs` tree) sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub Uuid);

/// Keeps ids made in the same millisecond in creation order.
static ID_CONTEXT: Mutex<ContextV7> = Mutex::new(ContextV7::new());

impl JobId {
    /// A new id for a job created at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        let ctx = ID_CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
        let secs = u64::try_from(now.timestamp()).unwrap_or(0);
        JobId(Uuid::new_v7(Timestamp::from_unix(
            &*ctx,
            secs,
            now.timestamp_subsec_nanos(),
        )))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for JobId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Uuid::parse_str(s).map(JobId).map_err(|e| {
            Error::invalid(
                "job id",
                s,
                format!("{e}; give the full id as listed by `trireme job list`"),
            )
        })
    }
}

/// Why a job exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The schedule's slot `slot` came. `missed` counts the earlier slots
    /// that passed unhandled (controller down): they are caught up by this
    /// one run, not one run each.
    Schedule {
        /// The cron slot.
        slot: DateTime<Utc>,
        /// Earlier slots covered by this run.
        missed: u64,
    },
    /// A retry of the run for `slot` after `previous` failed.
    Retry {
        /// The cron slot of the original run.
        slot: DateTime<Utc>,
        /// The failed attempt.
        previous: JobId,
    },
    /// An operator asked for it.
    Manual {
        /// Who asked (certificate name).
        by: String,
    },
}

/// How far a running job is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Bytes read from the source so far.
    pub bytes_done: u64,
    /// Bytes expected, when the agent knows.
    pub bytes_total: Option<u64>,
    /// Files read so far.
    pub files_done: u64,
    /// Bytes uploaded so far.
    pub bytes_uploaded: u64,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its agent.
    Queued,
    /// Sent to `agent`, not started yet.
    Assigned {
        /// The agent.
        agent: String,
        /// When it was sent.
        at: DateTime<Utc>,
    },
    /// The agent is running it.
    Running {
        /// The agent.
        agent: String,
        /// When the agent started it.
        started: DateTime<Utc>,
        /// Its last progress report.
        progress: Progress,
    },
    /// Finished with a snapshot.
    Succeeded {
        /// The snapshot made.
        snapshot: Id,
        /// When it finished.
        finished: DateTime<Utc>,
    },
    /// Finished without a snapshot.
    Failed {
        /// What went wrong.
        reason: String,
        /// When it failed.
        finished: DateTime<Utc>,
    },
    /// Stopped by an operator.
    Cancelled {
        /// Who cancelled it and why.
        reason: String,
        /// When.
        finished: DateTime<Utc>,
    },
}

impl JobState {
    /// Whether the job is over.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            JobState::Succeeded { .. } | JobState::Failed { .. } | JobState::Cancelled { .. }
        )
    }

    /// The state's name: `queued`, `assigned`, `running`, `succeeded`,
    /// `failed`, `cancelled`.
    pub fn name(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Assigned { .. } => "assigned",
            JobState::Running { .. } => "running",
            JobState::Succeeded { .. } => "succeeded",
            JobState::Failed { .. } => "failed",
            JobState::Cancelled { .. } => "cancelled",
        }
    }
}

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// The controller sends it to `agent` (queued → assigned).
    Assign {
        /// The agent; must be the source's.
        agent: String,
    },
    /// The agent starts it (assigned → running).
    Start {
        /// The reporting agent.
        agent: String,
    },
    /// The agent reports progress (running → running).
    Progress {
        /// The reporting agent.
        agent: String,
        /// The progress.
        progress: Progress,
    },
    /// The agent finished it with a snapshot (running → succeeded).
    Succeed {
        /// The reporting agent.
        agent: String,
        /// The snapshot made.
        snapshot: Id,
    },
    /// It failed (any unfinished state → failed). `agent` is the reporting
    /// agent, or `None` when the controller decides (timeout, restart).
    Fail {
        /// The reporting agent, if any.
        agent: Option<String>,
        /// What went wrong.
        reason: String,
    },
    /// An operator cancels it (any unfinished state → cancelled).
    Cancel {
        /// Who and why.
        reason: String,
    },
}

impl JobEvent {
    fn target(&self) -> &'static str {
        match self {
            JobEvent::Assign { .. } => "assigned",
            JobEvent::Start { .. } => "running",
            JobEvent::Progress { .. } => "running (progress)",
            JobEvent::Succeed { .. } => "succeeded",
            JobEvent::Fail { .. } => "failed",
            JobEvent::Cancel { .. } => "cancelled",
        }
    }
}

/// What a job does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum JobKind {
    /// Back up the job's source on its agent.
    #[default]
    Backup,
    /// Restore a snapshot of the job's source on `agent` (any agent) into
    /// `target`.
    Restore {
        /// The snapshot.
        snapshot: Id,
        /// The agent that restores.
        agent: String,
        /// Where, on that agent.
        target: String,
        /// Why: an operator's restore, a restore test, or a step of a drill.
        #[serde(default)]
        purpose: RestorePurpose,
        /// Read only from this location (drills); none: the usual order.
        #[serde(default)]
        only_location: Option<String>,
        /// Which part of the snapshot, and over what; default: all of it
        /// into a new or empty target.
        #[serde(default)]
        selection: Box<RestoreSelection>,
    },
}

/// Which part of a tree snapshot a restore writes, and what it does with
/// files already in the target (`trireme restore --path --include --exclude
/// --overwrite`). Kept as asked, checked when asked: the agent applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreSelection {
    /// Only this subtree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Only entries matching one of these globs (none: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// No entry matching one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `never`, `if-changed` or `always`; none: the target must be new or
    /// empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overwrite: Option<trireme_common::Overwrite>,
}

impl RestoreSelection {
    /// From what an operator asked (empty strings: not given).
    ///
    /// # Errors
    /// [`Error::BadRequest`] naming a bad glob, path or overwrite mode.
    pub fn new(
        path: &str,
        include: Vec<String>,
        exclude: Vec<String>,
        overwrite: &str,
    ) -> Result<Self> {
        let bad = |e: trireme_common::Error| Error::BadRequest(e.to_string());
        let path = (!path.is_empty()).then(|| path.to_string());
        trireme_common::Selection::new(path.as_deref(), &include, &exclude).map_err(bad)?;
        let overwrite = match overwrite {
            "" => None,
            mode => Some(mode.parse().map_err(bad)?),
        };
        Ok(RestoreSelection {
            path,
            include,
            exclude,
            overwrite,
        })
    }

    /// The whole snapshot into a new or empty target.
    pub fn is_all(&self) -> bool {
        *self == RestoreSelection::default()
    }

    /// As flags, e.g. `--path a --include "*.db" --overwrite never`; empty
    /// for the whole snapshot.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.path {
            parts.push(format!("--path {p}"));
        }
        parts.extend(self.include.iter().map(|i| format!("--include {i:?}")));
        parts.extend(self.exclude.iter().map(|e| format!("--exclude {e:?}")));
        if let Some(o) = self.overwrite {
            parts.push(format!("--overwrite {o}"));
        }
        parts.join(" ")
    }
}

/// Why a restore runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "purpose")]
pub enum RestorePurpose {
    /// An operator asked for it.
    #[default]
    Restore,
    /// A restore test (scheduled or on demand): restore, check, measure, clean up.
    Test,
    /// One source of a DR drill.
    Drill {
        /// The drill's id.
        drill: String,
    },
}

/// A job: a backup of one source, or a restore of one of its snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// The id.
    pub id: JobId,
    /// The source backed up (or whose snapshot is restored).
    pub source: SourceId,
    /// Backup or restore.
    #[serde(default)]
    pub kind: JobKind,
    /// Full or incremental.
    pub mode: BackupMode,
    /// Why it exists.
    pub trigger: Trigger,
    /// 1 for the first try of a run, 2 for its first retry, …
    pub attempt: u32,
    /// When it was queued.
    pub created: DateTime<Utc>,
    /// When its state last changed.
    pub updated: DateTime<Utc>,
    /// Its state.
    pub state: JobState,
    /// Restore: the integrity checks the agent ran and passed.
    #[serde(default)]
    pub checks: Vec<String>,
    /// Restore: how long the agent took, as it measured (milliseconds).
    #[serde(default)]
    pub took_ms: Option<u64>,
    /// Backup: tags for the snapshot it makes ([`crate::holds::Marks`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

impl Job {
    /// A queued job.
    pub fn new(
        source: SourceId,
        mode: BackupMode,
        trigger: Trigger,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Self {
        Job {
            id: JobId::new(now),
            source,
            kind: JobKind::Backup,
            mode,
            trigger,
            attempt,
            created: now,
            updated: now,
            state: JobState::Queued,
            checks: Vec::new(),
            took_ms: None,
            tags: Vec::new(),
        }
    }

    /// A queued restore of `snapshot` (of `source`) on `agent` into `target`.
    pub fn restore(
        source: SourceId,
        snapshot: Id,
        agent: String,
        target: String,
        by: &str,
        now: DateTime<Utc>,
    ) -> Self {
        let mut job = Job::new(
            source,
            BackupMode::Full,
            Trigger::Manual { by: by.to_string() },
            1,
            now,
        );
        job.kind = JobKind::Restore {
            snapshot,
            agent,
            target,
            purpose: RestorePurpose::Restore,
            only_location: None,
            selection: Box::default(),
        };
        job
    }

    /// The agent that runs the job: the source's for a backup, the chosen
    /// one for a restore.
    pub fn agent(&self) -> &str {
        match &self.kind {
            JobKind::Backup => &self.source.agent,
            JobKind::Restore { agent, .. } => agent,
        }
    }

    /// The key this job holds in the catalog's `active` tree while it is
    /// unfinished: its source for a backup (one backup per source at a
    /// time), `<agent>/_restore.<id>` for a restore (restores run beside
    /// backups; `_restore.` and a UUID cannot be guessed by a source name). Both start with the running agent's name, which is how
    /// [`queued_for_agent`] finds them.
    pub fn active_key(&self) -> SourceId {
        match &self.kind {
            JobKind::Backup => self.source.clone(),
            JobKind::Restore { agent, .. } => SourceId {
                agent: agent.clone(),
                name: format!("_restore.{}", self.id),
            },
        }
    }

    /// Whether this is a backup job.
    pub fn is_backup(&self) -> bool {
        self.kind == JobKind::Backup
    }

    /// The schedule slot this job runs for; its creation time for manual
    /// jobs.
    pub fn slot(&self) -> DateTime<Utc> {
        match &self.trigger {
            Trigger::Schedule { slot, .. } | Trigger::Retry { slot, .. } => *slot,
            Trigger::Manual { .. } => self.created,
        }
    }

    fn illegal(&self, event: &JobEvent) -> Error {
        Error::IllegalTransition {
            job: self.id.to_string(),
            from: self.state.name().to_string(),
            to: event.target().to_string(),
        }
    }

    fn check_agent(&self, expected: &str, got: &str) -> Result<()> {
        if expected == got {
            Ok(())
        } else {
            Err(Error::WrongAgent {
                job: self.id.to_string(),
                expected: expected.to_string(),
                got: got.to_string(),
            })
        }
    }

    /// Apply `event` at `now`.
    ///
    /// # Errors
    /// [`Error::IllegalTransition`] for a change the state machine does not
    /// allow (the job is unchanged); [`Error::WrongAgent`] when an agent
    /// reports on a job that is not its own.
    pub fn apply(&mut self, event: &JobEvent, now: DateTime<Utc>) -> Result<()> {
        use JobEvent as E;
        use JobState as S;
        let next = match (&self.state, event) {
            (S::Queued, E::Assign { agent }) => {
                self.check_agent(self.agent(), agent)?;
                S::Assigned {
                    agent: agent.clone(),
                    at: now,
                }
            }
            (S::Assigned { agent: a, .. }, E::Start { agent }) => {
                self.check_agent(a, agent)?;
                S::Running {
                    agent: agent.clone(),
                    started: now,
                    progress: Progress::default(),
                }
            }
            (
                S::Running {
                    agent: a, started, ..
                },
                E::Progress { agent, progress },
            ) => {
                self.check_agent(a, agent)?;
                S::Running {
                    agent: agent.clone(),
                    started: *started,
                    progress: progress.clone(),
                }
            }
            (S::Running { agent: a, .. }, E::Succeed { agent, snapshot }) => {
                self.check_agent(a, agent)?;
                S::Succeeded {
                    snapshot: *snapshot,
                    finished: now,
                }
            }
            (s, E::Fail { agent, reason }) if !s.is_terminal() => {
                if let (Some(got), S::Assigned { agent: a, .. } | S::Running { agent: a, .. }) =
                    (agent, s)
                {
                    self.check_agent(a, got)?;
                }
                S::Failed {
                    reason: reason.clone(),
                    finished: now,
                }
            }
            (s, E::Cancel { reason }) if !s.is_terminal() => S::Cancelled {
                reason: reason.clone(),
                finished: now,
            },
            _ => return Err(self.illegal(event)),
        };
        self.state = next;
        self.updated = now;
        Ok(())
    }
}

/// Queue a job inside a catalog transaction, claiming its source.
///
/// # Errors
/// Aborts with [`Error::SourceBusy`] when the source already has an
/// unfinished job.
pub fn create_in(tx: &Tx<'_>, job: &Job) -> TxResult<()> {
    let key = job.active_key();
    if let Some(busy) = tx.active().get(&key)? {
        return Err(abort(Error::SourceBusy {
            source_id: job.source.to_string(),
            job: busy.to_string(),
        }));
    }
    tx.active().insert(&key, &job.id)?;
    tx.count_job_state(None, &job.state)?;
    tx.jobs().insert(&job.id, job)
}

/// Queue a backup an operator asked for now.
///
/// # Errors
/// [`Error::SourceBusy`] when the source already has an unfinished job;
/// [`Error::NotFound`] when no agent reported the source; catalog errors.
pub fn enqueue_manual(
    catalog: &Catalog,
    source: &SourceId,
    mode: BackupMode,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Job> {
    enqueue_manual_tagged(catalog, source, mode, by, &[], now)
}

/// Queue a backup an operator asked for now; its snapshot gets `tags`.
///
/// # Errors
/// As [`enqueue_manual`]; an invalid tag.
pub fn enqueue_manual_tagged(
    catalog: &Catalog,
    source: &SourceId,
    mode: BackupMode,
    by: &str,
    tags: &[String],
    now: DateTime<Utc>,
) -> Result<Job> {
    for t in tags {
        crate::holds::check_tag(t)?;
    }
    let mut job = Job::new(
        source.clone(),
        mode,
        Trigger::Manual { by: by.to_string() },
        1,
        now,
    );
    job.tags = tags.to_vec();
    job.tags.sort();
    job.tags.dedup();
    catalog.transaction_durable(|tx| {
        if tx.sources().get(source)?.is_none() {
            return Err(abort(Error::not_found("source", source)));
        }
        create_in(tx, &job)?;
        Ok(job.clone())
    })
}

/// The jobs of one agent that wait to be sent to it, oldest first.
///
/// # Errors
/// Catalog errors.
pub fn queued_for_agent(catalog: &Catalog, agent: &str) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for (_, id) in catalog
        .active()
        .scan_prefix(format!("{agent}/").as_bytes())?
    {
        if let Some(job) = catalog.jobs().get(&id)? {
            if job.state == JobState::Queued {
                jobs.push(job);
            }
        }
    }
    jobs.sort_by_key(|j| j.id);
    Ok(jobs)
}

/// Every job of one source, oldest first.
///
/// # Errors
/// Catalog errors.
pub fn jobs_of(catalog: &Catalog, source: &SourceId) -> Result<Vec<Job>> {
    Ok(catalog
        .jobs()
        .values()?
        .into_iter()
        .filter(|j| &j.source == source)
        .collect())
}

#[cfg(test)]
mod tests;
