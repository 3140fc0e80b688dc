//! Proving recoverability: restore tests (scheduled and on demand), DR
//! drills from one location, and each source's RPO and RTO state.
//!
//! A restore test restores the newest protected snapshot (its verified
//! copies meet the `[protection]` rule) to the staging target its policy
//! names, where the agent runs the source's integrity checks and smoke
//! test, then cleans up; its duration is
//! measured against the source's RTO. A drill does the same for every
//! source with a staging target, in dependency order (TiDB, MongoDB,
//! Kafka, Redis, then the rest), reading from one chosen location only, and
//! writes a report that walks the DR checklist.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::Id;

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::jobs::{self, Job, JobId, JobKind, JobState, RestorePurpose};
use crate::policy::Policy;
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::sources::{SourceId, SourceRecord};

/// One restore test or drill step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreTestRecord {
    /// The restore job.
    pub job: JobId,
    /// The source tested.
    pub source: SourceId,
    /// The snapshot restored.
    pub snapshot: Id,
    /// `agent:target`.
    pub target: String,
    /// The drill it belongs to, if any.
    #[serde(default)]
    pub drill: Option<String>,
    /// The only location read (drills).
    #[serde(default)]
    pub location: Option<String>,
    /// When it was started.
    pub started: DateTime<Utc>,
    /// When it ended (none: still running).
    pub finished: Option<DateTime<Utc>>,
    /// How long the restore took (the agent's measure when it has one).
    pub duration_secs: f64,
    /// The source's RTO when it ran.
    pub rto: Option<Duration>,
    /// Restored, checked, and within the RTO.
    pub ok: bool,
    /// The checks that passed.
    #[serde(default)]
    pub checks: Vec<String>,
    /// What failed (the restore, a check, or the RTO).
    #[serde(default)]
    pub error: String,
}

impl RestoreTestRecord {
    /// Finished, restored and checked, but over the RTO.
    pub fn over_rto(&self) -> bool {
        self.rto
            .is_some_and(|r| self.duration_secs > r.as_secs_f64())
    }
}

/// A source's recovery state.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceHealth {
    /// The source.
    pub source: SourceId,
    /// Its RPO.
    pub rpo: Option<Duration>,
    /// The newest protected snapshot.
    pub newest_full: Option<SnapshotRecord>,
    /// Age of `newest_full`.
    pub age: Option<Duration>,
    /// Whether the RPO holds (none: no RPO set).
    pub rpo_ok: Option<bool>,
    /// Its RTO.
    pub rto: Option<Duration>,
    /// The last finished restore test (drill steps included).
    pub last_test: Option<RestoreTestRecord>,
    /// Whether the last test passed within the RTO (none: nothing to judge).
    pub rto_ok: Option<bool>,
    /// Why it is red.
    pub problems: Vec<String>,
}

impl SourceHealth {
    /// Red when an objective is missed or the last restore test failed.
    pub fn red(&self) -> bool {
        !self.problems.is_empty()
    }
}

/// RPO and RTO state of every source with a policy or snapshots.
///
/// # Errors
/// Catalog errors.
pub fn health(
    catalog: &Catalog,
    rule: &crate::protection::ProtectionRule,
    now: DateTime<Utc>,
) -> Result<Vec<SourceHealth>> {
    let policies: BTreeMap<SourceId, Policy> = catalog
        .policies()
        .values()?
        .into_iter()
        .map(|r| (r.policy.source.clone(), r.policy))
        .collect();
    let mut full: BTreeMap<SourceId, Option<SnapshotRecord>> =
        policies.keys().map(|s| (s.clone(), None)).collect();
    for p in crate::replication::protection(catalog, rule)? {
        full.insert(p.source, p.full);
    }
    let mut last_test: BTreeMap<SourceId, RestoreTestRecord> = BTreeMap::new();
    for t in catalog.restore_tests().values()? {
        if t.finished.is_some() {
            last_test.insert(t.source.clone(), t);
        }
    }
    let mut out = Vec::new();
    for (source, newest_full) in full {
        let policy = policies.get(&source);
        let rpo = policy.and_then(|p| p.rpo);
        let rto = policy.and_then(|p| p.rto);
        let age = newest_full
            .as_ref()
            .map(|s| (now - s.time).to_std().unwrap_or_default());
        let mut problems = Vec::new();
        let rpo_ok = rpo.map(|rpo| match age {
            Some(a) if a <= rpo => true,
            Some(a) => {
                problems.push(format!(
                    "RPO missed: the newest protected snapshot ({rule}) is {} old (RPO {})",
                    human(a),
                    human(rpo)
                ));
                false
            }
            None => {
                problems.push(format!(
                    "RPO missed: no snapshot is protected ({rule}) (RPO {})",
                    human(rpo)
                ));
                false
            }
        });
        let test = last_test.remove(&source);
        let rto_ok = match &test {
            Some(t) if !t.ok => {
                problems.push(format!(
                    "the last restore test ({}) failed: {}",
                    t.finished.map(|f| f.to_rfc3339()).unwrap_or_default(),
                    t.error
                ));
                Some(false)
            }
            Some(t) => rto.map(|r| t.duration_secs <= r.as_secs_f64()),
            None if rto.is_some() => {
                problems.push(format!(
                    "RTO {} not proven: no restore test has run",
                    human(rto.expect("some"))
                ));
                Some(false)
            }
            None => None,
        };
        out.push(SourceHealth {
            source,
            rpo,
            newest_full,
            age,
            rpo_ok,
            rto,
            last_test: test,
            rto_ok,
            problems,
        });
    }
    Ok(out)
}

/// A duration for people: `2h 5m`, `40s` (seconds dropped past an hour).
pub fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let secs = if secs >= 3600 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The snapshot a test or drill restores: the newest protected one, or,
/// with `location`, the newest verified there; with `before`, the newest
/// such taken at or before it.
///
/// # Errors
/// Catalog errors.
pub fn pick_snapshot(
    catalog: &Catalog,
    source: &SourceId,
    rule: &crate::protection::ProtectionRule,
    location: Option<&str>,
    before: Option<DateTime<Utc>>,
) -> Result<Option<SnapshotRecord>> {
    let mut snaps = catalog.snapshots_of(source)?;
    snaps.sort_by_key(|s| (s.time, s.id));
    Ok(snaps.into_iter().rev().find(|s| {
        before.is_none_or(|b| s.time <= b)
            && match location {
                Some(l) => matches!(s.copies.get(l), Some(CopyState::Verified { .. })),
                None => rule.met_by(s.verified_locations()),
            }
    }))
}

/// Where a platform restore writes each source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlatformTarget {
    /// Each source's staging target (its policy's `restore_test` target);
    /// the data stays there.
    Staging,
    /// Each source itself (`AGENT:source:NAME`): a production restore.
    InPlace,
}

impl PlatformTarget {
    /// `staging` or `in-place`.
    pub fn name(self) -> &'static str {
        match self {
            PlatformTarget::Staging => "staging",
            PlatformTarget::InPlace => "in-place",
        }
    }

    /// Parse `staging` or `in-place`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "staging" => Ok(PlatformTarget::Staging),
            "in-place" => Ok(PlatformTarget::InPlace),
            _ => Err(Error::invalid(
                "platform restore target",
                s,
                "write --to staging (every source's staging target) or --to in-place (every source itself)",
            )),
        }
    }

    /// The agent and target `policy`'s source is restored to, if it has one.
    pub fn of(self, policy: &Policy) -> Option<(String, String)> {
        match self {
            PlatformTarget::Staging => policy
                .restore_test
                .as_ref()
                .map(|t| (t.agent.clone(), t.target.clone())),
            PlatformTarget::InPlace => Some((
                policy.source.agent.clone(),
                format!("source:{}", policy.source.name),
            )),
        }
    }
}

/// One restore step: what it restores, from where, and why.
pub struct Step<'a> {
    /// The drill (or platform restore) it belongs to.
    pub drill: Option<&'a str>,
    /// The only location read.
    pub location: Option<&'a str>,
    /// The newest snapshot at or before this time.
    pub before: Option<DateTime<Utc>>,
    /// Agent and target (none: the policy's staging target).
    pub to: Option<(String, String)>,
    /// Test or drill (restore, check, clean up) or a plain restore.
    pub purpose: RestorePurpose,
}

/// Create (and record as pending) a restore-test or drill restore job for
/// `source`, whose policy names the target.
///
/// # Errors
/// [`Error::InvalidValue`] when the policy has no `restore_test`, or no
/// snapshot qualifies; [`Error::SourceBusy`] when the target is busy.
pub fn start_test(
    catalog: &Catalog,
    policy: &Policy,
    rule: &crate::protection::ProtectionRule,
    drill: Option<&str>,
    location: Option<&str>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Job> {
    let purpose = match drill {
        Some(d) => RestorePurpose::Drill {
            drill: d.to_string(),
        },
        None => RestorePurpose::Test,
    };
    start_step(
        catalog,
        policy,
        rule,
        &Step {
            drill,
            location,
            before: None,
            to: None,
            purpose,
        },
        by,
        now,
    )
}

/// Create (and record as pending) the restore job of one step: a restore
/// test, a drill's, or a platform restore's. Its record is settled like a
/// restore test's (checks, duration against the RTO).
///
/// # Errors
/// [`Error::InvalidValue`] when there is no target, or no snapshot
/// qualifies; [`Error::SourceBusy`] when the target is busy.
pub fn start_step(
    catalog: &Catalog,
    policy: &Policy,
    rule: &crate::protection::ProtectionRule,
    step: &Step<'_>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Job> {
    let (agent, target) = match &step.to {
        Some(t) => t.clone(),
        None => {
            let t = policy.restore_test.as_ref().ok_or_else(|| {
                Error::invalid(
                    "restore test",
                    policy.source.to_string(),
                    "the source's policy has no restore_test = { target = \"AGENT:source:NAME\" }; add one and `trireme policy apply` it",
                )
            })?;
            (t.agent.clone(), t.target.clone())
        }
    };
    let location = step.location;
    let snap =
        pick_snapshot(catalog, &policy.source, rule, location, step.before)?.ok_or_else(|| {
            let when = step
                .before
                .map(|b| format!(" taken at or before {}", b.to_rfc3339()))
                .unwrap_or_default();
            Error::invalid(
                "restore",
                policy.source.to_string(),
                match location {
                    Some(l) => format!("no snapshot of it{when} is verified at location {l}"),
                    None => format!("no snapshot of it{when} is protected yet ({rule})"),
                },
            )
        })?;
    let mut job = Job::restore(
        policy.source.clone(),
        snap.id,
        agent.clone(),
        target.clone(),
        by,
        now,
    );
    if let JobKind::Restore {
        purpose,
        only_location,
        ..
    } = &mut job.kind
    {
        *purpose = step.purpose.clone();
        *only_location = location.map(str::to_string);
    }
    let record = RestoreTestRecord {
        job: job.id,
        source: policy.source.clone(),
        snapshot: snap.id,
        target: format!("{agent}:{target}"),
        drill: step.drill.map(str::to_string),
        location: location.map(str::to_string),
        started: now,
        finished: None,
        duration_secs: 0.0,
        rto: policy.rto,
        ok: false,
        checks: Vec::new(),
        error: String::new(),
    };
    catalog.transaction_durable(|tx| jobs::create_in(tx, &job))?;
    catalog.restore_tests().insert(&job.id, &record)?;
    Ok(job)
}

/// Finish the records of restore tests whose jobs have ended; returns them.
///
/// # Errors
/// Catalog errors.
pub fn settle(catalog: &Catalog) -> Result<Vec<RestoreTestRecord>> {
    let mut done = Vec::new();
    for (id, mut r) in catalog.restore_tests().entries()? {
        if r.finished.is_some() {
            continue;
        }
        let Some(job) = catalog.jobs().get(&id)? else {
            continue;
        };
        let (finished, error) = match &job.state {
            JobState::Succeeded { finished, .. } => (*finished, String::new()),
            JobState::Failed { finished, reason } | JobState::Cancelled { finished, reason } => {
                (*finished, reason.clone())
            }
            _ => continue,
        };
        r.finished = Some(finished);
        r.duration_secs = job
            .took_ms
            .filter(|ms| *ms > 0)
            .map(|ms| ms as f64 / 1000.0)
            .unwrap_or_else(|| (finished - r.started).num_milliseconds().max(0) as f64 / 1000.0);
        r.checks.clone_from(&job.checks);
        r.ok = error.is_empty();
        r.error = error;
        if r.ok && r.over_rto() {
            r.ok = false;
            r.error = format!(
                "the restore took {:.1}s, over the RTO of {}",
                r.duration_secs,
                human(r.rto.expect("over_rto"))
            );
        }
        catalog.restore_tests().insert(&id, &r)?;
        done.push(r);
    }
    Ok(done)
}

/// Sources whose restore-test schedule has a slot due: the newest slot at
/// or before `now` is after the last one handled. A policy seen for the
/// first time only sets the baseline (no test for slots before it).
///
/// # Errors
/// Catalog errors.
pub fn due_tests(catalog: &Catalog, now: DateTime<Utc>) -> Result<Vec<Policy>> {
    let mut due = Vec::new();
    for rec in catalog.policies().values()? {
        let p = rec.policy;
        let Some(t) = &p.restore_test else { continue };
        let Some(slot) = t.schedule.last_at_or_before(now, &p.timezone.0) else {
            continue;
        };
        match catalog.restore_test_slots().get(&p.source)? {
            Some(prev) if prev >= slot => {}
            None => catalog.restore_test_slots().insert(&p.source, &slot)?,
            Some(_) => {
                catalog.restore_test_slots().insert(&p.source, &slot)?;
                due.push(p);
            }
        }
    }
    Ok(due)
}

// ---------------------------------------------------------------- drills

/// One source of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillStep {
    /// The source.
    pub source: SourceId,
    /// Its kind, as its agent reported it (shown in the report).
    pub kind: String,
    /// The restore job (none when it could not start).
    pub job: Option<JobId>,
    /// The snapshot restored.
    pub snapshot: Option<Id>,
    /// Its time.
    pub snapshot_time: Option<DateTime<Utc>>,
    /// The outcome, once finished.
    pub result: Option<RestoreTestRecord>,
    /// Why it did not run or failed to start.
    #[serde(default)]
    pub error: String,
}

impl DrillStep {
    /// Restored, checked, within the RTO.
    pub fn ok(&self) -> bool {
        self.error.is_empty() && self.result.as_ref().is_some_and(|r| r.ok)
    }
}

/// A location as the drill found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationCheck {
    /// Its name.
    pub name: String,
    /// Reachable at the last replication pass.
    pub reachable: bool,
    /// The last error there.
    pub last_error: String,
    /// Of the sources' newest snapshots, how many are verified there.
    pub verified: usize,
    /// Of how many.
    pub of: usize,
}

/// Who runs a drill and how they talk: recorded with it, in its report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillPeople {
    /// Role → who (e.g. `incident_commander` → `alice`).
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    /// Where the team talks during the drill.
    #[serde(default)]
    pub channel: String,
    /// Who took part.
    #[serde(default)]
    pub participants: Vec<String>,
    /// The failover steps the checklist lists.
    #[serde(default)]
    pub failover: Vec<String>,
    /// The rollback steps the checklist lists.
    #[serde(default)]
    pub rollback: Vec<String>,
}

impl DrillPeople {
    /// `self`, with what `over` sets replacing it (roles merge).
    pub fn overridden_by(&self, over: &DrillPeople) -> DrillPeople {
        let mut out = self.clone();
        out.roles
            .extend(over.roles.iter().map(|(k, v)| (k.clone(), v.clone())));
        if !over.channel.is_empty() {
            out.channel.clone_from(&over.channel);
        }
        if !over.participants.is_empty() {
            out.participants.clone_from(&over.participants);
        }
        if !over.failover.is_empty() {
            out.failover.clone_from(&over.failover);
        }
        if !over.rollback.is_empty() {
            out.rollback.clone_from(&over.rollback);
        }
        out
    }
}

/// A lesson recorded after a drill (`trireme drill annotate`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lesson {
    /// When.
    pub at: DateTime<Utc>,
    /// Who.
    pub by: String,
    /// What was learned.
    pub text: String,
}

/// A DR drill and its report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    /// Its id.
    pub id: String,
    /// The only location read (none: the usual order).
    pub location: Option<String>,
    /// Who started it.
    pub by: String,
    /// When.
    pub started: DateTime<Utc>,
    /// When it ended (none: running).
    pub finished: Option<DateTime<Utc>>,
    /// The locations at the start.
    pub locations: Vec<LocationCheck>,
    /// The sources, in the order restored.
    pub steps: Vec<DrillStep>,
    /// Started by the `[drills] schedule`.
    #[serde(default)]
    pub scheduled: bool,
    /// Roles, channel, participants, failover and rollback steps.
    #[serde(default)]
    pub people: DrillPeople,
    /// Lessons learned, recorded after it (`trireme drill annotate`).
    #[serde(default)]
    pub lessons: Vec<Lesson>,
    /// A platform restore (`trireme restore --platform`), not a drill:
    /// where it wrote; it stops at the first failure and cleans nothing up.
    #[serde(default)]
    pub platform: Option<PlatformTarget>,
    /// The point in time asked for: each source's newest snapshot at or
    /// before it.
    #[serde(default)]
    pub at: Option<DateTime<Utc>>,
}

impl DrillRecord {
    /// Every step passed and every location was reachable with every copy verified.
    pub fn ok(&self) -> bool {
        self.finished.is_some()
            && !self.steps.is_empty()
            && self.steps.iter().all(DrillStep::ok)
            && self
                .locations
                .iter()
                .all(|l| l.reachable && l.verified == l.of)
    }
}

/// Where a source comes in a drill, lower first: the rank its agent gave
/// its kind (the database of record first, caches last; the controller
/// knows no kinds itself). A source whose agent gave none (an agent older
/// than `SourceKindInfo`, a source rebuilt from the repository, or one no
/// longer registered) comes after all others, as a kind nothing depends
/// on; ties go by source name.
pub fn drill_rank(source: Option<&SourceRecord>) -> u32 {
    source.and_then(|s| s.drill_rank).unwrap_or(u32::MAX)
}

fn mark(ok: bool) -> &'static str {
    if ok {
        "[x]"
    } else {
        "[ ]"
    }
}

/// The report as Markdown: the DR checklist, then the details.
pub fn report_markdown(d: &DrillRecord) -> String {
    let mut m = String::new();
    match d.platform {
        Some(p) => {
            let _ = writeln!(m, "# Platform restore {} ({})", d.id, p.name());
        }
        None => {
            let _ = writeln!(m, "# DR drill {}", d.id);
        }
    }
    if let Some(at) = d.at {
        let _ = writeln!(m);
        let _ = writeln!(
            m,
            "Each source's newest snapshot taken at or before {}.",
            at.to_rfc3339()
        );
    }
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "Started {} by {}; {}; read from {}.",
        d.started.to_rfc3339(),
        d.by,
        match d.finished {
            Some(f) => format!("finished {}", f.to_rfc3339()),
            None => "still running".to_string(),
        },
        d.location
            .as_deref()
            .map_or("the usual locations".to_string(), |l| format!(
                "location **{l}** only"
            ))
    );
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "**Result: {}**",
        if d.ok() {
            "PASSED"
        } else if d.finished.is_none() {
            "RUNNING"
        } else {
            "FAILED"
        }
    );
    let _ = writeln!(m);
    let reach = d
        .locations
        .iter()
        .all(|l| l.reachable && l.verified == l.of);
    let restored = !d.steps.is_empty()
        && d.steps.iter().all(|s| {
            s.result
                .as_ref()
                .is_some_and(|r| r.error.is_empty() || r.over_rto())
                && s.error.is_empty()
        });
    let checked = !d.steps.is_empty()
        && d.steps.iter().all(|s| {
            s.result
                .as_ref()
                .is_some_and(|r| !r.checks.is_empty() && (r.error.is_empty() || r.over_rto()))
        });
    let in_rto = !d.steps.is_empty()
        && d.steps.iter().all(|s| {
            s.result
                .as_ref()
                .is_some_and(|r| r.finished.is_some() && !r.over_rto())
        });
    let _ = writeln!(m, "## Checklist");
    let _ = writeln!(m);
    let _ = writeln!(m, "- {} Backups reachable at every location", mark(reach));
    let _ = writeln!(
        m,
        "- {} Restore steps completed ({} of {})",
        mark(restored),
        d.steps
            .iter()
            .filter(|s| s
                .result
                .as_ref()
                .is_some_and(|r| r.error.is_empty() || r.over_rto()))
            .count(),
        d.steps.len()
    );
    let _ = writeln!(m, "- {} Data integrity validated", mark(checked));
    let _ = writeln!(
        m,
        "- {} Application verified (smoke tests passed)",
        mark(checked)
    );
    let _ = writeln!(m, "- {} Restore times within RTO", mark(in_rto));
    let failed: Vec<&DrillStep> = d.steps.iter().filter(|s| !s.ok()).collect();
    let _ = writeln!(m, "- {} Nothing failed", mark(failed.is_empty() && reach));
    let p = &d.people;
    let _ = writeln!(
        m,
        "- {} Roles and communication channel known",
        mark(!p.roles.is_empty() && !p.channel.is_empty())
    );
    let _ = writeln!(
        m,
        "- {} Failover and rollback steps written down",
        mark(!p.failover.is_empty() && !p.rollback.is_empty())
    );
    let _ = writeln!(
        m,
        "- {} Lessons learned recorded",
        mark(!d.lessons.is_empty())
    );
    let _ = writeln!(m);
    let _ = writeln!(m, "## People");
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "Started {}; communication channel: {}; participants: {}.",
        if d.scheduled {
            "by the drill schedule"
        } else {
            "by hand"
        },
        if p.channel.is_empty() {
            "**not set**"
        } else {
            p.channel.as_str()
        },
        if p.participants.is_empty() {
            "**none recorded**".to_string()
        } else {
            p.participants.join(", ")
        }
    );
    if !p.roles.is_empty() {
        let _ = writeln!(m);
        let _ = writeln!(m, "| role | who |");
        let _ = writeln!(m, "|---|---|");
        for (role, who) in &p.roles {
            let _ = writeln!(m, "| {} | {} |", cell(&role.replace('_', " ")), cell(who));
        }
    }
    for (title, steps) in [
        ("Failover steps", &p.failover),
        ("Rollback steps", &p.rollback),
    ] {
        let _ = writeln!(m);
        let _ = writeln!(m, "## {title}");
        let _ = writeln!(m);
        if steps.is_empty() {
            let _ = writeln!(
                m,
                "None written down: set them in [drills] of the controller's config."
            );
        }
        for (i, s) in steps.iter().enumerate() {
            let _ = writeln!(m, "- {}. {}", i + 1, s);
        }
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "## Locations");
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "| location | reachable | newest snapshots verified | last error |"
    );
    let _ = writeln!(m, "|---|---|---|---|");
    for l in &d.locations {
        let _ = writeln!(
            m,
            "| {} | {} | {}/{} | {} |",
            l.name,
            if l.reachable { "yes" } else { "**no**" },
            l.verified,
            l.of,
            cell(&l.last_error)
        );
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "## Restores (in order)");
    let _ = writeln!(m);
    let _ = writeln!(
        m,
        "| # | source | kind | snapshot | took | RTO | result | checks |"
    );
    let _ = writeln!(m, "|---|---|---|---|---|---|---|---|");
    for (i, s) in d.steps.iter().enumerate() {
        let (took, rto, result, checks) = match &s.result {
            Some(r) if r.finished.is_some() => (
                format!("{:.1}s", r.duration_secs),
                r.rto.map_or("-".to_string(), human),
                if r.ok {
                    "passed".to_string()
                } else {
                    format!("**FAILED**: {}", r.error)
                },
                r.checks.join("; "),
            ),
            Some(_) => ("-".into(), "-".into(), "running".into(), String::new()),
            None => (
                "-".into(),
                "-".into(),
                format!("**FAILED**: {}", s.error),
                String::new(),
            ),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            s.source,
            s.kind,
            s.snapshot.map_or("-".to_string(), |i| i.short()),
            took,
            rto,
            cell(&result),
            cell(&checks)
        );
    }
    if !failed.is_empty() || !reach {
        let _ = writeln!(m);
        let _ = writeln!(m, "## What failed");
        let _ = writeln!(m);
        for l in d
            .locations
            .iter()
            .filter(|l| !l.reachable || l.verified != l.of)
        {
            let _ = writeln!(
                m,
                "- location {}: {}",
                l.name,
                if l.reachable {
                    format!(
                        "{} of {} newest snapshots not verified there",
                        l.of - l.verified,
                        l.of
                    )
                } else {
                    format!("unreachable: {}", l.last_error)
                }
            );
        }
        for s in failed {
            let why = match &s.result {
                Some(r) if r.finished.is_none() => "still running".to_string(),
                Some(r) => r.error.clone(),
                None => s.error.clone(),
            };
            let _ = writeln!(m, "- {}: {why}", s.source);
        }
    }
    let _ = writeln!(m);
    let _ = writeln!(m, "## Lessons learned");
    let _ = writeln!(m);
    if d.lessons.is_empty() {
        let _ = writeln!(
            m,
            "None recorded yet: `trireme drill annotate {} --lessons TEXT`.",
            d.id
        );
    }
    for l in &d.lessons {
        let _ = writeln!(
            m,
            "- {} ({}, {})",
            l.text,
            l.by,
            l.at.format("%Y-%m-%d %H:%M UTC")
        );
    }
    m
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The report as a standalone HTML page (the Markdown's content).
pub fn report_html(d: &DrillRecord) -> String {
    let md = report_markdown(d);
    let mut body = String::new();
    let mut in_list = false;
    let mut in_table = false;
    for line in md.lines() {
        let esc = html_escape(line);
        // `code` and **bold**, the only inline marks the report uses.
        let bold = |s: &str| -> String {
            let mut code = String::new();
            for (i, part) in s.split('`').enumerate() {
                if i % 2 == 1 {
                    let _ = write!(code, "<code>{part}</code>");
                } else {
                    code.push_str(part);
                }
            }
            let mut out = String::new();
            for (i, part) in code.split("**").enumerate() {
                if i % 2 == 1 {
                    let _ = write!(out, "<strong>{part}</strong>");
                } else {
                    out.push_str(part);
                }
            }
            out
        };
        if !line.starts_with("- ") && in_list {
            body.push_str("</ul>\n");
            in_list = false;
        }
        if !line.starts_with('|') && in_table {
            body.push_str("</table>\n");
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("## ") {
            let _ = writeln!(body, "<h2>{}</h2>", html_escape(h));
        } else if let Some(h) = line.strip_prefix("# ") {
            let _ = writeln!(body, "<h1>{}</h1>", html_escape(h));
        } else if let Some(item) = esc.strip_prefix("- ") {
            if !in_list {
                body.push_str("<ul>\n");
                in_list = true;
            }
            let item = item
                .replacen("[x]", "<span class=\"ok\">&#10004;</span>", 1)
                .replacen("[ ]", "<span class=\"bad\">&#10008;</span>", 1);
            let _ = writeln!(body, "<li>{}</li>", bold(&item));
        } else if line.starts_with("|---") {
        } else if line.starts_with('|') {
            let header = !in_table;
            if !in_table {
                body.push_str("<table>\n");
                in_table = true;
            }
            let cells: Vec<String> = line
                .trim_matches('|')
                .split(" | ")
                .map(|c| bold(&html_escape(c.trim()).replace("\\|", "|")))
                .collect();
            let tag = if header { "th" } else { "td" };
            let _ = writeln!(
                body,
                "<tr>{}</tr>",
                cells
                    .iter()
                    .map(|c| format!("<{tag}>{c}</{tag}>"))
                    .collect::<String>()
            );
        } else if !line.is_empty() {
            let _ = writeln!(body, "<p>{}</p>", bold(&esc));
        }
    }
    if in_list {
        body.push_str("</ul>\n");
    }
    if in_table {
        body.push_str("</table>\n");
    }
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{} {}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.ok{{color:#080}}.bad{{color:#c00}}</style></head><body>\n{body}</body></html>\n",
        if d.platform.is_some() {
            "Platform restore"
        } else {
            "DR drill"
        },
        html_escape(&d.id)
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Restore tests and drill steps by job id (oldest first), pending and finished.
pub const RESTORE_TESTS: crate::catalog::TableDef<crate::jobs::JobId, RestoreTestRecord> =
    crate::catalog::TableDef::new("restore_tests");

/// The last restore-test schedule slot handled, per source.
pub const RESTORE_TEST_SLOTS: crate::catalog::TableDef<
    crate::sources::SourceId,
    chrono::DateTime<chrono::Utc>,
> = crate::catalog::TableDef::new("restore_test_slots");

/// DR drills and their reports, by id (oldest first).
pub const DRILLS: crate::catalog::TableDef<String, DrillRecord> =
    crate::catalog::TableDef::new("drills");

impl crate::catalog::Catalog {
    /// Restore tests and drill steps by job id (oldest first), pending and finished.
    pub fn restore_tests(&self) -> crate::catalog::Tree<crate::jobs::JobId, RestoreTestRecord> {
        self.table(&RESTORE_TESTS)
    }

    /// The last restore-test schedule slot handled, per source.
    pub fn restore_test_slots(
        &self,
    ) -> crate::catalog::Tree<crate::sources::SourceId, chrono::DateTime<chrono::Utc>> {
        self.table(&RESTORE_TEST_SLOTS)
    }

    /// DR drills and their reports, by id (oldest first).
    pub fn drills(&self) -> crate::catalog::Tree<String, DrillRecord> {
        self.table(&DRILLS)
    }
}

#[cfg(test)]
mod tests;
