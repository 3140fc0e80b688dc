//! What operators read: jobs, snapshots, agents, sources, policies, restore
//! tests and drills as the operator API lists and shows them, found by id
//! or unique id prefix, filtered and paged. Read-only over the catalog.

use chrono::{DateTime, Utc};
use trireme_common::Id;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobId, JobState};
use crate::policy::Policy;
use crate::recovery::{DrillRecord, RestoreTestRecord};
use crate::snapshots::SnapshotRecord;
use crate::sources::{AgentRecord, SourceRecord};
use crate::SourceId;

/// Default page of job, snapshot and audit lists.
const DEFAULT_LIMIT: usize = 50;
/// Largest page.
const MAX_LIMIT: usize = 10_000;
/// Shortest prefix accepted for an id.
const MIN_PREFIX: usize = 4;

/// The page size for a requested `limit` (0: the default).
pub fn page(limit: u32) -> usize {
    match limit as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

fn check_prefix(what: &str, t: &str) -> Result<()> {
    if t.len() < MIN_PREFIX || !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Error::BadRequest(format!(
            "{what} {t:?}: give the full id or at least {MIN_PREFIX} of its first hex digits"
        )));
    }
    Ok(())
}

fn one_of<T>(what: &'static str, text: &str, found: &mut Vec<T>) -> Result<T> {
    match found.len() {
        0 => Err(Error::not_found(what, text)),
        1 => Ok(found.remove(0)),
        n => Err(Error::BadRequest(format!(
            "{what} id prefix {text:?} matches {n} {what}s; give more digits"
        ))),
    }
}

/// The job with id `text`, or the one whose id starts with it.
///
/// # Errors
/// No such job, a too short or ambiguous prefix, catalog errors.
pub fn find_job(catalog: &Catalog, text: &str) -> Result<Job> {
    if let Ok(id) = text.parse::<JobId>() {
        return catalog
            .jobs()
            .get(&id)?
            .ok_or_else(|| Error::not_found("job", id));
    }
    let t = text.to_ascii_lowercase();
    check_prefix("job id", &t)?;
    let mut found: Vec<Job> = catalog
        .jobs()
        .values()?
        .into_iter()
        .filter(|j| j.id.to_string().starts_with(&t))
        .collect();
    one_of("job", text, &mut found)
}

/// The snapshot with id `text`, or the one whose id starts with it.
///
/// # Errors
/// No such snapshot, a too short or ambiguous prefix, catalog errors.
pub fn find_snapshot(catalog: &Catalog, text: &str) -> Result<SnapshotRecord> {
    let t = text.to_ascii_lowercase();
    if let Some(id) = Id::from_hex(&t) {
        return catalog
            .snapshots()
            .get(&id)?
            .ok_or_else(|| Error::not_found("snapshot", &t));
    }
    check_prefix("snapshot id", &t)?;
    let mut found: Vec<SnapshotRecord> = catalog
        .snapshots()
        .values()?
        .into_iter()
        .filter(|s| s.id.to_hex().starts_with(&t))
        .collect();
    one_of("snapshot", text, &mut found)
}

/// A job with the snapshot it made (a succeeded backup's).
#[derive(Debug, Clone)]
pub struct JobView {
    /// The job.
    pub job: Job,
    /// Its snapshot, when it made one the catalog has.
    pub snapshot: Option<SnapshotRecord>,
}

/// `job` with its snapshot.
pub fn job_view(catalog: &Catalog, job: Job) -> JobView {
    let made = match &job.state {
        JobState::Succeeded { snapshot, .. } => *snapshot,
        _ => Id([0; 32]),
    };
    let snapshot = catalog.snapshots().get(&made).ok().flatten();
    JobView { job, snapshot }
}

/// A job state to list: `Running` covers jobs sent to their agent too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFilter {
    /// Waiting for its agent.
    Queued,
    /// Sent to or running on its agent.
    Running,
    /// Ended well.
    Succeeded,
    /// Ended badly.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl StateFilter {
    /// Whether `state` is one this filter lists.
    pub fn matches(self, state: &JobState) -> bool {
        match self {
            StateFilter::Queued => matches!(state, JobState::Queued),
            StateFilter::Running => {
                matches!(state, JobState::Assigned { .. } | JobState::Running { .. })
            }
            StateFilter::Succeeded => matches!(state, JobState::Succeeded { .. }),
            StateFilter::Failed => matches!(state, JobState::Failed { .. }),
            StateFilter::Cancelled => matches!(state, JobState::Cancelled { .. }),
        }
    }
}

/// Which jobs to list; empty strings and `None` match all.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// The agent that runs the job or whose source it is.
    pub agent: String,
    /// The source, by name or as `agent/name`.
    pub source: String,
    /// The state.
    pub state: Option<StateFilter>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The jobs `filter` selects, newest first, with their snapshots.
///
/// # Errors
/// Catalog errors.
pub fn jobs(catalog: &Catalog, filter: &JobFilter) -> Result<Vec<JobView>> {
    let f = filter;
    let mut jobs: Vec<Job> = catalog
        .jobs()
        .values()?
        .into_iter()
        .filter(|j| f.agent.is_empty() || j.agent() == f.agent || j.source.agent == f.agent)
        .filter(|j| {
            f.source.is_empty() || j.source.name == f.source || j.source.to_string() == f.source
        })
        .filter(|j| f.state.is_none_or(|s| s.matches(&j.state)))
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
    jobs.truncate(f.limit);
    Ok(jobs.into_iter().map(|j| job_view(catalog, j)).collect())
}

/// Which snapshots to list; empty strings and `None` match all.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// The agent whose source it is.
    pub agent: String,
    /// The source's name.
    pub source: String,
    /// Only snapshots carrying every one of these tags.
    pub tags: Vec<String>,
    /// Only snapshots taken at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only snapshots taken at or before this time.
    pub until: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// A snapshot with its holds and tags.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    /// The record.
    pub record: SnapshotRecord,
    /// Its hold and tags.
    pub marks: crate::holds::Marks,
}

/// Snapshot `record` with its marks.
///
/// # Errors
/// Catalog errors.
pub fn snapshot_view(catalog: &Catalog, record: SnapshotRecord) -> Result<SnapshotView> {
    let marks = catalog.marks_of(&record.id)?;
    Ok(SnapshotView { record, marks })
}

/// The snapshots `filter` selects, newest first, with their marks.
///
/// # Errors
/// An invalid source name (when both names are given), catalog errors.
pub fn snapshots(catalog: &Catalog, filter: &SnapshotFilter) -> Result<Vec<SnapshotView>> {
    let f = filter;
    let snaps = if f.agent.is_empty() && f.source.is_empty() {
        catalog.snapshots().values()?
    } else if !f.agent.is_empty() && !f.source.is_empty() {
        catalog.snapshots_of(&SourceId::new(f.agent.clone(), f.source.clone())?)?
    } else {
        catalog
            .snapshots()
            .values()?
            .into_iter()
            .filter(|x| {
                (f.agent.is_empty() || x.source.agent == f.agent)
                    && (f.source.is_empty() || x.source.name == f.source)
            })
            .collect()
    };
    let mut out = Vec::new();
    for s in snaps {
        // Whole seconds, as the filters are given.
        let t = s.time.timestamp();
        if f.since.is_some_and(|x| t < x.timestamp()) || f.until.is_some_and(|x| t > x.timestamp())
        {
            continue;
        }
        let v = snapshot_view(catalog, s)?;
        if f.tags.iter().all(|t| v.marks.tags.contains(t)) {
            out.push(v);
        }
    }
    out.sort_by(|a, b| {
        b.record
            .time
            .cmp(&a.record.time)
            .then(b.record.id.cmp(&a.record.id))
    });
    out.truncate(f.limit);
    Ok(out)
}

/// An agent as operators see it.
#[derive(Debug, Clone)]
pub struct AgentView {
    /// Its name.
    pub name: String,
    /// What it reported at its last registration.
    pub record: AgentRecord,
    /// Whether it has a session now.
    pub connected: bool,
    /// Its session's last message, else its last registration.
    pub last_seen: DateTime<Utc>,
    /// The sources it reported at its last registration.
    pub sources: Vec<(SourceId, SourceRecord)>,
}

/// Every agent in the catalog; `session_seen` gives a connected agent's
/// last message.
///
/// # Errors
/// Catalog errors.
pub fn agents(
    catalog: &Catalog,
    session_seen: &dyn Fn(&str) -> Option<DateTime<Utc>>,
) -> Result<Vec<AgentView>> {
    let mut agents = Vec::new();
    for (name, a) in catalog.agents().entries()? {
        let name: String = name;
        let seen = session_seen(&name);
        let sources = catalog
            .sources_of(&name)?
            .into_iter()
            .filter(|(id, _)| a.sources.contains(&id.name))
            .collect();
        agents.push(AgentView {
            connected: seen.is_some(),
            last_seen: seen.unwrap_or(a.last_seen),
            name,
            record: a,
            sources,
        });
    }
    Ok(agents)
}

/// A source with its policy's schedule.
#[derive(Debug, Clone)]
pub struct SourceView {
    /// The source.
    pub id: SourceId,
    /// What its agent reported.
    pub record: SourceRecord,
    /// Its policy's schedule, empty without a policy.
    pub schedule: String,
}

/// The sources of `agent` (every source when empty).
///
/// # Errors
/// Catalog errors.
pub fn sources(catalog: &Catalog, agent: &str) -> Result<Vec<SourceView>> {
    let all = if agent.is_empty() {
        catalog.sources().entries()?
    } else {
        catalog.sources_of(agent)?
    };
    let mut sources = Vec::new();
    for (id, record) in all {
        let schedule = catalog
            .policies()
            .get(&id)?
            .map(|p| p.policy.schedule.as_str().to_string())
            .unwrap_or_default();
        sources.push(SourceView {
            id,
            record,
            schedule,
        });
    }
    Ok(sources)
}

/// A policy as operators see it.
#[derive(Debug, Clone)]
pub struct PolicyView {
    /// Its source.
    pub source: SourceId,
    /// The policy in the policy file's syntax.
    pub toml: String,
    /// When its next run is due (a retry's, else the next slot).
    pub next_run: Option<DateTime<Utc>>,
}

/// Every policy with its next run.
///
/// # Errors
/// Catalog errors.
pub fn policies(catalog: &Catalog, now: DateTime<Utc>) -> Result<Vec<PolicyView>> {
    let mut policies = Vec::new();
    for (source, rec) in catalog.policies().entries()? {
        let state = catalog.schedule().get(&source)?.unwrap_or_default();
        let from = state.handled_until.map_or(now, |t| t.max(now));
        let next_run = state
            .retry
            .as_ref()
            .map(|r| r.due)
            .or_else(|| rec.policy.next_slot_after(from));
        policies.push(PolicyView {
            toml: policy_toml(&rec.policy),
            source,
            next_run,
        });
    }
    Ok(policies)
}

/// A policy in the policy file's syntax.
fn policy_toml(p: &Policy) -> String {
    let mut t = format!(
        "[[policy]]\nsource = {:?}\nschedule = {:?}\nmode = {:?}\n",
        p.source.to_string(),
        p.schedule.as_str(),
        p.mode.to_string()
    );
    if let Some(f) = p.full_every {
        t.push_str(&format!(
            "full_every = {:?}\n",
            humantime::format_duration(f).to_string()
        ));
    }
    t.push_str(&format!(
        "retention = {:?}\ntimezone = {:?}\nmax_retries = {}\nretry_backoff = {:?}\n",
        p.retention,
        p.timezone.to_string(),
        p.max_retries,
        humantime::format_duration(p.retry_backoff).to_string()
    ));
    t
}

/// Restore tests, newest first, of `only` (every source when `None`); at
/// most `limit` (0: all).
///
/// # Errors
/// Catalog errors.
pub fn restore_tests(
    catalog: &Catalog,
    only: Option<&SourceId>,
    limit: u32,
) -> Result<Vec<RestoreTestRecord>> {
    let mut tests: Vec<RestoreTestRecord> = catalog
        .restore_tests()
        .values()?
        .into_iter()
        .rev()
        .filter(|t| only.is_none_or(|s| &t.source == s))
        .collect();
    if limit > 0 {
        tests.truncate(limit as usize);
    }
    Ok(tests)
}

/// Every drill, newest first.
///
/// # Errors
/// Catalog errors.
pub fn drills(catalog: &Catalog) -> Result<Vec<DrillRecord>> {
    let mut drills = catalog.drills().values()?;
    drills.reverse();
    Ok(drills)
}

/// The drill with id `want`, or the one whose id starts with it (8
/// characters or more).
///
/// # Errors
/// No such drill, an ambiguous prefix, catalog errors.
pub fn find_drill(catalog: &Catalog, want: &str) -> Result<DrillRecord> {
    let mut found: Vec<DrillRecord> = catalog
        .drills()
        .values()?
        .into_iter()
        .filter(|d| d.id == want || (want.len() >= 8 && d.id.starts_with(want)))
        .collect();
    one_of("drill", want, &mut found)
}

/// The steps of a drill that failed: ended badly, or could not start.
pub fn drill_steps_failed(d: &DrillRecord) -> usize {
    d.steps
        .iter()
        .filter(|s| {
            !s.ok()
                && (s.result.as_ref().is_some_and(|r| r.finished.is_some()) || !s.error.is_empty())
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::Trigger;
    use crate::policy::BackupMode;

    fn catalog_with_jobs(n: usize) -> (tempfile::TempDir, Catalog, Vec<Job>) {
        let dir = tempfile::tempdir().unwrap();
        let catalog = Catalog::open(dir.path().join("catalog")).unwrap();
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let jobs: Vec<Job> = (0..n)
            .map(|i| {
                let job = Job::new(
                    format!("web-{i}/redis").parse().unwrap(),
                    BackupMode::Full,
                    Trigger::Manual { by: "ops".into() },
                    1,
                    now + chrono::Duration::seconds(i as i64),
                );
                catalog.jobs().insert(&job.id, &job).unwrap();
                job
            })
            .collect();
        (dir, catalog, jobs)
    }

    #[test]
    fn jobs_are_found_by_id_or_unique_prefix() {
        let (_dir, catalog, jobs) = catalog_with_jobs(2);
        let id = jobs[1].id.to_string();
        assert_eq!(find_job(&catalog, &id).unwrap().id, jobs[1].id);
        // Both ids start with the same time: a short prefix matches both.
        let err = find_job(&catalog, &id[..4]).unwrap_err();
        assert!(matches!(err, Error::BadRequest(_)), "{err}");
        assert!(err.to_string().contains("matches 2 jobs"), "{err}");
        let err = find_job(&catalog, "ab").unwrap_err();
        assert_eq!(
            err.to_string(),
            "job id \"ab\": give the full id or at least 4 of its first hex digits"
        );
        let err = find_job(&catalog, "ffffffff").unwrap_err();
        assert!(matches!(err, Error::NotFound { what: "job", .. }), "{err}");
    }

    #[test]
    fn job_lists_filter_by_state_agent_and_page() {
        let (_dir, catalog, jobs) = catalog_with_jobs(3);
        let all = |f: JobFilter| -> Vec<JobId> {
            super::jobs(&catalog, &f)
                .unwrap()
                .into_iter()
                .map(|v| v.job.id)
                .collect()
        };
        let page = JobFilter {
            limit: page(0),
            ..Default::default()
        };
        assert_eq!(all(page.clone()), vec![jobs[2].id, jobs[1].id, jobs[0].id]);
        let queued = JobFilter {
            state: Some(StateFilter::Queued),
            limit: 2,
            ..page.clone()
        };
        assert_eq!(all(queued), vec![jobs[2].id, jobs[1].id]);
        let failed = JobFilter {
            state: Some(StateFilter::Failed),
            ..page.clone()
        };
        assert!(all(failed).is_empty());
        let one = JobFilter {
            agent: "web-1".into(),
            ..page
        };
        assert_eq!(all(one), vec![jobs[1].id]);
        assert_eq!(super::page(0), 50);
        assert_eq!(super::page(u32::MAX), 10_000);
    }
}
