//! Backup jobs and their state machine.
//!
//! ```text
//! queued ──▶ assigned(agent) ──▶ running(progress) ──▶ succeeded(snapshot)
//!    │              │                 │           └──▶ failed(reason)
//!    └──────────────┴─────────────────┴──────────────▶ failed | cancelled
//! ```
//!
//! [`Job::apply`] is the pure state machine: any other change is an
//! [`Error::IllegalTransition`]. [`update_job`] applies an event in the
//! catalog, and when the job finishes it frees the source and tells the
//! scheduler (retry with backoff, or give up) in the same transaction.
//! [`reconcile_after_restart`] settles jobs that were assigned or running
//! when the controller stopped.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::Id;
use uuid::{ContextV7, Timestamp, Uuid};

use crate::catalog::{abort, Catalog, SnapshotRecord, SourceId, Tx, TxResult};
use crate::error::{Error, Result};
use crate::policy::BackupMode;
use crate::scheduler::{self, FollowUp};

/// The reason given to jobs no agent confirmed after a controller restart.
pub const RESTART_REASON: &str = "controller restarted; the agent did not confirm the job";

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
    },
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
    if let Some(busy) = tx.active.get(&key)? {
        return Err(abort(Error::SourceBusy {
            source_id: job.source.to_string(),
            job: busy.to_string(),
        }));
    }
    tx.active.insert(&key, &job.id)?;
    tx.jobs.insert(&job.id, job)
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
    let job = Job::new(
        source.clone(),
        mode,
        Trigger::Manual { by: by.to_string() },
        1,
        now,
    );
    catalog.transaction_durable(|tx| {
        if tx.sources.get(source)?.is_none() {
            return Err(abort(Error::not_found("source", source)));
        }
        create_in(tx, &job)?;
        Ok(job.clone())
    })
}

/// A job after an update, and what the scheduler will do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Updated {
    /// The job as stored.
    pub job: Job,
    /// For a job that just finished: retry, give up, or nothing.
    pub follow_up: FollowUp,
}

/// Apply `event` to job `id` in the catalog. A job that finishes frees its
/// source and records the outcome in the source's schedule state (retry
/// with backoff, or give up after `max_retries`), atomically; finishing and
/// assigning are flushed to disk before this returns.
///
/// # Errors
/// [`Error::NotFound`], [`Error::IllegalTransition`], [`Error::WrongAgent`];
/// catalog errors.
pub fn update_job(
    catalog: &Catalog,
    id: &JobId,
    event: &JobEvent,
    now: DateTime<Utc>,
) -> Result<Updated> {
    let step = |tx: &Tx<'_>| update_in(tx, id, event, now);
    if matches!(event, JobEvent::Progress { .. }) {
        catalog.transaction(step)
    } else {
        catalog.transaction_durable(step)
    }
}

/// Finish job `id` as succeeded and record its snapshot (with the
/// dependencies its position names), in one durable transaction: the
/// catalog never has the one without the other.
///
/// # Errors
/// As [`update_job`]; [`Error::InvalidValue`] when the snapshot is of
/// another source than the job.
pub fn complete_job(
    catalog: &Catalog,
    id: &JobId,
    agent: &str,
    snapshot: &SnapshotRecord,
    now: DateTime<Utc>,
) -> Result<Updated> {
    let event = JobEvent::Succeed {
        agent: agent.to_string(),
        snapshot: snapshot.id,
    };
    catalog.transaction_durable(|tx| {
        let updated = update_in(tx, id, &event, now)?;
        if updated.job.source != snapshot.source {
            return Err(abort(Error::invalid(
                "snapshot source",
                snapshot.source.to_string(),
                format!("job {id} backs up {}", updated.job.source),
            )));
        }
        let mut record = snapshot.clone();
        record.job = Some(*id);
        record.derive_dependencies();
        tx.snapshots.insert(&record.id, &record)?;
        remember_latest_in(tx, &record)?;
        Ok(updated)
    })
}

/// Keep the source's newest snapshot in its schedule state.
pub fn remember_latest_in(tx: &Tx<'_>, record: &SnapshotRecord) -> TxResult<()> {
    let mut state = tx.schedule.get(&record.source)?.unwrap_or_default();
    if state
        .last_snapshot
        .is_none_or(|(t, id)| (record.time, record.id) > (t, id))
    {
        state.last_snapshot = Some((record.time, record.id));
        tx.schedule.insert(&record.source, &state)?;
    }
    Ok(())
}

fn update_in(tx: &Tx<'_>, id: &JobId, event: &JobEvent, now: DateTime<Utc>) -> TxResult<Updated> {
    let mut job = tx
        .jobs
        .get(id)?
        .ok_or_else(|| abort(Error::not_found("job", id)))?;
    job.apply(event, now).map_err(abort)?;
    let follow_up = finish_in(tx, &job, now)?;
    tx.jobs.insert(id, &job)?;
    Ok(Updated { job, follow_up })
}

/// For a job that just reached a terminal state: free its source and record
/// the outcome with the scheduler.
fn finish_in(tx: &Tx<'_>, job: &Job, now: DateTime<Utc>) -> TxResult<FollowUp> {
    if !job.state.is_terminal() {
        return Ok(FollowUp::None);
    }
    let key = job.active_key();
    if tx.active.get(&key)? == Some(job.id) {
        tx.active.remove(&key)?;
    }
    if !job.is_backup() {
        return Ok(FollowUp::None);
    }
    let policy = tx.policies.get(&job.source)?.map(|r| r.policy);
    let mut state = tx.schedule.get(&job.source)?.unwrap_or_default();
    let follow_up = scheduler::record_outcome(&mut state, job, policy.as_ref(), now);
    tx.schedule.insert(&job.source, &state)?;
    Ok(follow_up)
}

/// What [`reconcile_after_restart`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Jobs an agent still runs: now (or still) `running`.
    pub resumed: Vec<JobId>,
    /// Jobs that were assigned or running and no agent confirmed: failed
    /// with [`RESTART_REASON`] (and retried as their policy says).
    pub failed: Vec<JobId>,
    /// Ids agents report running that the catalog has as finished or does
    /// not know: tell those agents to stop them.
    pub stray: Vec<JobId>,
}

/// After a controller restart, settle every unfinished job: the ones in
/// `reported_running` (the job ids agents say they are running) resume as
/// `running`; the others that were assigned or running fail cleanly with
/// [`RESTART_REASON`], which schedules their retry. Queued jobs stay
/// queued. Call it once the agents have had time to reconnect.
///
/// # Errors
/// Catalog errors.
pub fn reconcile_after_restart(
    catalog: &Catalog,
    reported_running: &HashSet<JobId>,
    now: DateTime<Utc>,
) -> Result<Reconciled> {
    let mut out = Reconciled::default();
    for (_, id) in catalog.active().entries()? {
        let Some(job) = catalog.jobs().get(&id)? else {
            continue;
        };
        let agent = job.agent().to_string();
        let reported = reported_running.contains(&id);
        let events = match (&job.state, reported) {
            (JobState::Running { .. }, true) => vec![],
            (JobState::Assigned { .. }, true) => vec![JobEvent::Start { agent }],
            // The assignment was sent but its write lost: the agent has it.
            (JobState::Queued, true) => vec![
                JobEvent::Assign {
                    agent: agent.clone(),
                },
                JobEvent::Start { agent },
            ],
            (JobState::Assigned { .. } | JobState::Running { .. }, false) => {
                vec![JobEvent::Fail {
                    agent: None,
                    reason: RESTART_REASON.to_string(),
                }]
            }
            (_, _) => continue,
        };
        for e in &events {
            update_job(catalog, &id, e, now)?;
        }
        if reported {
            out.resumed.push(id);
        } else {
            out.failed.push(id);
        }
    }
    for id in reported_running {
        let known_unfinished = catalog
            .jobs()
            .get(id)?
            .is_some_and(|j| !j.state.is_terminal());
        if !known_unfinished {
            out.stray.push(*id);
        }
    }
    out.stray.sort();
    Ok(out)
}

/// What [`settle_agent`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Jobs the agent confirmed it runs (now `running`).
    pub resumed: Vec<JobId>,
    /// Jobs assigned to or running on the agent that it no longer runs:
    /// failed (and retried as their policy says).
    pub failed: Vec<JobId>,
    /// Ids the agent runs that the catalog has as finished or does not
    /// know, or as another agent's: tell the agent to stop them.
    pub stray: Vec<JobId>,
}

/// Why [`settle_agent`] fails a job.
pub const AGENT_LOST_JOB_REASON: &str =
    "the agent reconnected without this job: it was restarted (or never received the job)";

/// When agent `agent` (re)connects and says which jobs it runs: its
/// unfinished jobs it confirms become `running`; its assigned or running
/// jobs it does not confirm fail with [`AGENT_LOST_JOB_REASON`]; queued
/// jobs stay queued.
///
/// # Errors
/// Catalog errors.
pub fn settle_agent(
    catalog: &Catalog,
    agent: &str,
    running: &HashSet<JobId>,
    now: DateTime<Utc>,
) -> Result<Settled> {
    let mut out = Settled::default();
    let mut mine = HashSet::new();
    for (_, id) in catalog
        .active()
        .scan_prefix(format!("{agent}/").as_bytes())?
    {
        let Some(job) = catalog.jobs().get(&id)? else {
            continue;
        };
        if job.agent() != agent {
            continue;
        }
        let confirmed = running.contains(&id);
        if confirmed {
            mine.insert(id);
        }
        let who = agent.to_string();
        let events = match (&job.state, confirmed) {
            (JobState::Running { .. }, true) => vec![],
            (JobState::Assigned { .. }, true) => vec![JobEvent::Start { agent: who }],
            (JobState::Queued, true) => vec![
                JobEvent::Assign { agent: who.clone() },
                JobEvent::Start { agent: who },
            ],
            (JobState::Assigned { .. } | JobState::Running { .. }, false) => {
                vec![JobEvent::Fail {
                    agent: None,
                    reason: AGENT_LOST_JOB_REASON.to_string(),
                }]
            }
            _ => continue,
        };
        for e in &events {
            update_job(catalog, &id, e, now)?;
        }
        if confirmed {
            out.resumed.push(id);
        } else {
            out.failed.push(id);
        }
    }
    out.stray = running.difference(&mine).copied().collect();
    out.stray.sort();
    Ok(out)
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
