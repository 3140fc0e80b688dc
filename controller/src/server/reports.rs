//! What agents report, checked and recorded: their registration (who
//! they are, their sources), running jobs' progress, and job results. A
//! backup's result is believed only after the location confirms it. The
//! session handler in [`super::agents`] decodes the messages
//! ([`super::convert`]) and calls these.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use trireme_common::Id;
use trireme_net::Identity;

use super::{blocking, Shared};
use crate::attribution::{CheckSite, Refusal};
use crate::error::{Error, Result};
use crate::jobs::{Job, JobEvent, JobId, JobKind, JobState, Progress};
use crate::policy::BackupMode;
use crate::sources::SourceRecord;

/// A job's outcome as its agent reported it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobReport {
    /// The job's id, as sent.
    pub job_id: String,
    /// Whether the job succeeded.
    pub ok: bool,
    /// Why it failed.
    pub error_message: String,
    /// The snapshot a backup made, as sent (hex).
    pub snapshot_id: String,
    /// The location the backup wrote to.
    pub location: String,
    /// What a restore checked after restoring (key counts, checksums, ...).
    pub checks: Vec<String>,
    /// How long the job took, as the agent measured (milliseconds).
    pub took_ms: Option<u64>,
}

/// The snapshot an incremental backup job compares against: its source's
/// latest (none for a full backup or a first one).
///
/// # Errors
/// Catalog errors.
pub fn backup_parent(shared: &Shared, job: &Job) -> Result<Option<trireme_common::Id>> {
    if job.mode == BackupMode::Full || !job.is_backup() {
        return Ok(None);
    }
    Ok(shared
        .catalog
        .schedule()
        .get(&job.source)?
        .and_then(|s| s.last_snapshot)
        .map(|(_, id)| id))
}

/// What an agent reports about itself when it registers or opens a
/// session.
pub struct AgentReport<'a> {
    /// The host name it reports.
    pub hostname: &'a str,
    /// Its version.
    pub version: &'a str,
    /// Its sources, as seen at the registration.
    pub sources: &'a [(String, SourceRecord)],
    /// When the client certificate it connected with expires (Unix
    /// seconds), read from the mTLS session.
    pub certificate_not_after: Option<i64>,
}

/// Record what an agent reports about itself and its sources at `now`.
///
/// # Errors
/// Invalid agent or source names; catalog errors.
pub fn register(
    shared: &Shared,
    agent: &str,
    r: &AgentReport<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let not_after = r
        .certificate_not_after
        .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0));
    blocking(|| {
        shared.catalog.register_agent_with_certificate(
            agent, r.hostname, r.version, r.sources, not_after, now,
        )
    })?;
    Ok(())
}

/// Store a job result an agent reports. A backup's result is believed only
/// after [`crate::attribution::check_backup`] confirmed it at the location;
/// a refused one fails the job (audited) and nothing of it is recorded.
/// Results for jobs that already ended (cancelled, or failed while the agent
/// was away) go through the same check and are kept when it passes: the
/// data is in the repository and valid. A result for a job the catalog does
/// not know is ignored, and one from an agent that does not hold the job is
/// refused (audited) and the job left as it is: both are acknowledged, as
/// nothing would make them acceptable later.
///
/// # Errors
/// A result that cannot be checked now (location unreachable, catalog
/// errors): it is not acknowledged, so the agent reports it again.
pub async fn handle_result(
    shared: &Shared,
    agent: &Identity,
    peer: Option<std::net::SocketAddr>,
    r: &JobReport,
) -> Result<()> {
    let name = agent.name.as_str();
    let Ok(id) = r.job_id.parse::<JobId>() else {
        // No job can ever have this id: acknowledged (returning Ok), so an
        // agent's spool does not send it forever; logged, not audited, like
        // a result for an unknown job.
        tracing::warn!(agent = %name, job = %r.job_id, "result with a malformed job id; ignored");
        return Ok(());
    };
    let Some(job) = shared.catalog.jobs().get(&id)? else {
        tracing::warn!(agent = %name, job = %r.job_id, "result for a job the catalog does not know; ignored");
        return Ok(());
    };
    if job.agent() != name {
        // Refused and audited, and acknowledged like any refused result:
        // it can never be accepted, so the sender must not keep it.
        let why = Error::WrongAgent {
            job: id.to_string(),
            expected: job.agent().to_string(),
            got: name.to_string(),
        }
        .to_string();
        tracing::warn!(target: "trireme::audit", job = %id, agent = %name, reason = %why, "job result refused");
        shared.record(
            crate::audit::Event::by(
                agent,
                "job result",
                format!("job {id} source {}", job.source),
            )
            .refused(why)
            .from_peer(peer),
        );
        return Ok(());
    }
    let now = shared.now();
    if r.ok && matches!(job.state, JobState::Assigned { .. }) {
        // Finished before its first progress report: it did start.
        start(shared, &id, name, now)?;
    }
    if r.ok {
        let outcome = match &job.kind {
            JobKind::Backup => match check_result(shared, &job, name, r).await {
                Ok(checked) => {
                    blocking(|| {
                        crate::attribution::believe(
                            &shared.catalog,
                            checked.index_objects.clone(),
                            Some(id),
                            now,
                        )
                    })?;
                    let record = checked.record;
                    let snapshot = record.id;
                    match blocking(|| {
                        crate::lifecycle::complete_job(&shared.catalog, &id, name, &record, now)
                    }) {
                        Err(Error::IllegalTransition { from, .. }) => {
                            if shared.catalog.snapshots().get(&snapshot)?.is_none() {
                                blocking(|| shared.catalog.record_snapshot(&record))?;
                            }
                            tracing::warn!(job = %id, agent = %name, state = %from, snapshot = %snapshot,
                                "late result: the job had already ended; its snapshot was checked at the location and is kept in the catalog");
                            Ok(snapshot)
                        }
                        other => other.map(|_| snapshot),
                    }
                }
                Err(Refusal::Later(why)) => {
                    return Err(Error::Unavailable(format!(
                        "cannot check the result of job {id} now: {why}"
                    )))
                }
                Err(Refusal::Refused(why)) => {
                    tracing::warn!(target: "trireme::audit", job = %id, agent = %name, reason = %why, "backup result refused");
                    shared.record(
                        crate::audit::Event::by(
                            agent,
                            "backup result",
                            format!("job {id} source {}", job.source),
                        )
                        .refused(why.clone())
                        .from_peer(peer),
                    );
                    let event = JobEvent::Fail {
                        agent: Some(name.to_string()),
                        reason: why,
                    };
                    match blocking(|| {
                        crate::lifecycle::update_job(&shared.catalog, &id, &event, now)
                    }) {
                        Ok(_) | Err(Error::IllegalTransition { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    shared.job_changed(id);
                    shared.scheduler.wake();
                    return Ok(());
                }
            },
            JobKind::Restore { snapshot, .. } => {
                let snapshot = *snapshot;
                blocking(|| {
                    crate::lifecycle::update_job(
                        &shared.catalog,
                        &id,
                        &JobEvent::Succeed {
                            agent: name.to_string(),
                            snapshot,
                        },
                        now,
                    )?;
                    // What the agent checked after restoring (key counts, row checksums, ...).
                    if let Some(mut j) = shared.catalog.jobs().get(&id)? {
                        j.checks.clone_from(&r.checks);
                        j.took_ms = r.took_ms;
                        shared.catalog.jobs().insert(&id, &j)?;
                    }
                    Ok(snapshot)
                })
            }
        };
        match outcome {
            Ok(snapshot) => {
                tracing::info!(job = %id, agent = %name, snapshot = %snapshot.short(), "job succeeded");
            }
            Err(Error::IllegalTransition { from, .. }) => {
                tracing::info!(job = %id, agent = %name, state = %from, "result for a job that had already ended; ignored");
            }
            Err(e) => return Err(e),
        }
    } else {
        let event = JobEvent::Fail {
            agent: Some(name.to_string()),
            reason: r.error_message.clone(),
        };
        match blocking(|| crate::lifecycle::update_job(&shared.catalog, &id, &event, now)) {
            Ok(u) => {
                tracing::warn!(job = %id, agent = %name, reason = %r.error_message, follow_up = ?u.follow_up, "job failed");
            }
            Err(Error::IllegalTransition { from, .. }) => {
                tracing::info!(job = %id, agent = %name, state = %from, "failure report for a job that had already ended; ignored");
            }
            Err(e) => return Err(e),
        }
    }
    shared.job_changed(id);
    shared.scheduler.wake();
    if r.ok && job.is_backup() {
        shared.replicate_now.notify_one();
    }
    Ok(())
}

/// Check a backup result at the location the agent names (see
/// [`crate::attribution::check_backup`]).
async fn check_result(
    shared: &Shared,
    job: &Job,
    agent: &str,
    r: &JobReport,
) -> std::result::Result<crate::attribution::Checked, Refusal> {
    let refused = |why: String| {
        Refusal::Refused(format!(
            "the result of job {} was not recorded: {why}",
            job.id
        ))
    };
    let snapshot = Id::from_hex(&r.snapshot_id).ok_or_else(|| {
        refused(format!(
            "the agent reported success without a valid snapshot id ({:?})",
            r.snapshot_id
        ))
    })?;
    let Some((name, backend)) = shared.audit_mirrors.iter().find(|(n, _)| *n == r.location) else {
        return Err(refused(format!(
            "the agent names location {:?}, which is not one of this controller's",
            r.location
        )));
    };
    let writer = trireme_common::attribution::Writer {
        job: *job.id.0.as_bytes(),
        agent: agent.to_string(),
    };
    let index = shared
        .keyed_index(name, Some(writer))
        .await
        .map_err(|e| Refusal::Later(format!("cannot read the index at {name}: {e}")))?;
    let site = CheckSite {
        name,
        backend,
        index: &index,
        custody: &shared.custody,
    };
    crate::attribution::check_backup(&shared.catalog, &site, job, agent, snapshot, shared.now())
        .await
}

/// Mark an assigned job as started by `agent`.
fn start(shared: &Shared, id: &JobId, agent: &str, now: DateTime<Utc>) -> Result<()> {
    let event = JobEvent::Start {
        agent: agent.to_string(),
    };
    blocking(|| crate::lifecycle::update_job(&shared.catalog, id, &event, now)).map(|_| ())
}

/// Record a running job's progress (the first report also marks it
/// started).
///
/// # Errors
/// A malformed job id; catalog errors.
pub fn handle_progress(
    shared: &Shared,
    agent: &str,
    job_id: &str,
    progress: Progress,
) -> Result<()> {
    let id: JobId = job_id.parse()?;
    let event = JobEvent::Progress {
        agent: agent.to_string(),
        progress,
    };
    let now = shared.now();
    match crate::lifecycle::update_job(&shared.catalog, &id, &event, now) {
        Ok(_) => {}
        // The first progress report is the agent's "started".
        Err(Error::IllegalTransition { from, .. }) if from == "assigned" => {
            start(shared, &id, agent, now)?;
            crate::lifecycle::update_job(&shared.catalog, &id, &event, now)?;
        }
        // Cancelled or failed meanwhile: the cancel is on its way.
        Err(Error::IllegalTransition { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    shared.job_changed(id);
    Ok(())
}

/// Settle what `agent` says it runs (`running`, job ids as sent) when it
/// connects: jobs it lost fail (and are retried as their policies say),
/// jobs it confirms resume; the others it runs are stray (to cancel).
/// Returns how many valid ids it sent, and the outcome.
///
/// # Errors
/// Catalog errors.
pub fn settle(
    shared: &Shared,
    agent: &str,
    running: &[String],
) -> Result<(usize, crate::lifecycle::Settled)> {
    let mut ids = HashSet::new();
    for j in running {
        match j.parse::<JobId>() {
            Ok(id) => {
                ids.insert(id);
            }
            Err(_) => tracing::warn!(%agent, job = %j, "agent runs a job with a malformed id"),
        }
    }
    let settled =
        blocking(|| crate::lifecycle::settle_agent(&shared.catalog, agent, &ids, shared.now()))?;
    for id in &settled.failed {
        tracing::warn!(%agent, job = %id, "{}", crate::lifecycle::AGENT_LOST_JOB_REASON);
        shared.job_changed(*id);
    }
    if !settled.failed.is_empty() {
        shared.scheduler.wake();
    }
    Ok((ids.len(), settled))
}
