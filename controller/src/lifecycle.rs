//! A job's life in the catalog: events applied, completion together with
//! its snapshot, and settling after a controller or agent restart. When a
//! job finishes, its source is freed and the scheduler records the outcome
//! (retry with backoff, or give up) in the same transaction.

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::catalog::{abort, Catalog, Tx, TxResult};
use crate::error::{Error, Result};
use crate::jobs::{Job, JobEvent, JobId, JobState};
use crate::schedule::remember_latest_in;
use crate::scheduler::{self, FollowUp};
use crate::snapshots::SnapshotRecord;

/// The reason given to jobs no agent confirmed after a controller restart.
pub const RESTART_REASON: &str = "controller restarted; the agent did not confirm the job";

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
        record_snapshot_in(tx, &record)?;
        if !updated.job.tags.is_empty() {
            let mut marks = tx.marks().get(&record.id)?.unwrap_or_default();
            marks.tags.extend(updated.job.tags.iter().cloned());
            tx.marks().insert(&record.id, &marks)?;
        }
        Ok(updated)
    })
}

fn update_in(tx: &Tx<'_>, id: &JobId, event: &JobEvent, now: DateTime<Utc>) -> TxResult<Updated> {
    let mut job = tx
        .jobs()
        .get(id)?
        .ok_or_else(|| abort(Error::not_found("job", id)))?;
    let before = job.state.clone();
    job.apply(event, now).map_err(abort)?;
    tx.count_job_state(Some(&before), &job.state)?;
    let follow_up = finish_in(tx, &job, now)?;
    tx.jobs().insert(id, &job)?;
    Ok(Updated { job, follow_up })
}

/// For a job that just reached a terminal state: free its source and record
/// the outcome with the scheduler.
fn finish_in(tx: &Tx<'_>, job: &Job, now: DateTime<Utc>) -> TxResult<FollowUp> {
    if !job.state.is_terminal() {
        return Ok(FollowUp::None);
    }
    let key = job.active_key();
    if tx.active().get(&key)? == Some(job.id) {
        tx.active().remove(&key)?;
    }
    if !job.is_backup() {
        return Ok(FollowUp::None);
    }
    let policy = tx.policies().get(&job.source)?.map(|r| r.policy);
    let mut state = tx.schedule().get(&job.source)?.unwrap_or_default();
    let follow_up = scheduler::record_outcome(&mut state, job, policy.as_ref(), now);
    tx.schedule().insert(&job.source, &state)?;
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

impl Catalog {
    /// Record a snapshot (durably), with the dependencies its position
    /// names, as the newest of its source when it is.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn record_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        let mut s = s.clone();
        s.derive_dependencies();
        self.transaction_durable(|tx| record_snapshot_in(tx, &s))
    }
}

/// Store a snapshot record (its dependencies already derived) and keep it
/// as its source's newest when it is.
fn record_snapshot_in(tx: &Tx<'_>, s: &SnapshotRecord) -> TxResult<()> {
    tx.snapshots().insert(&s.id, s)?;
    remember_latest_in(tx, s)
}
