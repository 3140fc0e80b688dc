//! The controller's side of restore tests and drills: the loop that starts
//! scheduled tests and settles finished ones, and the drill runner.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::jobs::{Job, JobId};
use crate::recovery::{self, DrillRecord, DrillStep, LocationCheck, RestoreTestRecord};
use crate::snapshots::CopyState;

use super::agents::dispatch_soon;
use super::blocking;
use super::Shared;

/// How often the loop looks for due tests and finished ones.
const TICK: Duration = Duration::from_secs(2);

/// Start a restore test of `job`'s kind and send it to its agent.
fn launch(shared: &Arc<Shared>, job: &Job) {
    shared.job_changed(job.id);
    dispatch_soon(shared, job.agent().to_string());
}

/// Start scheduled restore tests and settle finished ones, until `stop`.
pub async fn run_loop(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = tick(&shared) {
            tracing::error!(error = %e, "restore tests: catalog error");
        }
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            () = tokio::time::sleep(TICK) => {}
        }
    }
}

fn tick(shared: &Arc<Shared>) -> Result<()> {
    for r in blocking(|| recovery::settle(&shared.catalog))? {
        log_result(&r);
    }
    let now = shared.now();
    if blocking(|| crate::drills::due(&shared.catalog, &shared.drills, now))? {
        let drills = shared.catalog.drills().values()?;
        let names: Vec<String> = shared.locations.iter().map(|l| l.name.clone()).collect();
        let location = crate::drills::next_location(&drills, &names);
        match start_drill(
            shared,
            location.clone(),
            "drill schedule",
            &crate::drills::DrillPeople::default(),
            true,
        ) {
            Ok(d) => {
                tracing::info!(target: "trireme::audit", drill = %d.id, location = ?location, "scheduled drill started");
                shared.record(crate::audit::Event::actor(
                    "drill schedule",
                    "controller",
                    "drill run",
                    format!(
                        "{} from {} ({} sources)",
                        d.id,
                        location.as_deref().unwrap_or("the usual locations"),
                        d.steps.len()
                    ),
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, location = ?location, "scheduled drill not started");
                shared.record(
                    crate::audit::Event::actor(
                        "drill schedule",
                        "controller",
                        "drill run",
                        location.unwrap_or_default(),
                    )
                    .problem(e.to_string()),
                );
            }
        }
    }
    for policy in blocking(|| recovery::due_tests(&shared.catalog, now))? {
        match blocking(|| {
            recovery::start_test(
                &shared.catalog,
                &policy,
                &shared.protection,
                None,
                None,
                "restore-test schedule",
                now,
            )
        }) {
            Ok(job) => {
                tracing::info!(target: "trireme::audit", source = %policy.source, job = %job.id, "scheduled restore test started");
                launch(shared, &job);
            }
            Err(e) => {
                tracing::error!(source = %policy.source, error = %e, "scheduled restore test could not start");
                // Recorded as a failed test so the source turns red.
                let failed = RestoreTestRecord {
                    job: JobId::new(now),
                    source: policy.source.clone(),
                    snapshot: trireme_common::Id([0; 32]),
                    target: policy
                        .restore_test
                        .as_ref()
                        .map(|t| format!("{}:{}", t.agent, t.target))
                        .unwrap_or_default(),
                    drill: None,
                    location: None,
                    started: now,
                    finished: Some(now),
                    duration_secs: 0.0,
                    rto: policy.rto,
                    ok: false,
                    checks: Vec::new(),
                    error: format!("could not start: {e}"),
                };
                blocking(|| shared.catalog.restore_tests().insert(&failed.job, &failed))?;
            }
        }
    }
    Ok(())
}

fn log_result(r: &RestoreTestRecord) {
    if r.ok {
        tracing::info!(target: "trireme::audit", source = %r.source, job = %r.job, snapshot = %r.snapshot.short(),
            secs = r.duration_secs, checks = ?r.checks, "restore test passed");
    } else {
        tracing::warn!(target: "trireme::audit", source = %r.source, job = %r.job, snapshot = %r.snapshot.short(),
            secs = r.duration_secs, error = %r.error, "restore test FAILED");
    }
}

/// Start a restore test of `source` now (an operator asked).
///
/// # Errors
/// No policy, no staging target, no snapshot verified everywhere, target busy.
pub fn run_test_now(
    shared: &Arc<Shared>,
    source: &crate::sources::SourceId,
    by: &str,
) -> Result<Job> {
    let policy = shared
        .catalog
        .policies()
        .get(source)?
        .ok_or_else(|| Error::not_found("policy", source.to_string()))?
        .policy;
    let job = blocking(|| {
        recovery::start_test(
            &shared.catalog,
            &policy,
            &shared.protection,
            None,
            None,
            by,
            shared.now(),
        )
    })?;
    launch(shared, &job);
    Ok(job)
}

/// Plan a drill (every source whose policy has a staging target, in
/// dependency order), store it, and run it in the background.
///
/// # Errors
/// An unknown location; no source with a staging target; catalog errors.
pub fn start_drill(
    shared: &Arc<Shared>,
    location: Option<String>,
    by: &str,
    people: &crate::drills::DrillPeople,
    scheduled: bool,
) -> Result<DrillRecord> {
    start(shared, location, by, people, scheduled, None, None)
}

/// Plan a platform restore (every source with a target `to`, in
/// dependency order; the newest snapshot at or before `at`), store it, and
/// run it in the background: it stops at the first failure.
///
/// # Errors
/// An unknown location; no source with a target; catalog errors.
pub fn start_platform(
    shared: &Arc<Shared>,
    to: recovery::PlatformTarget,
    location: Option<String>,
    at: Option<DateTime<Utc>>,
    by: &str,
) -> Result<DrillRecord> {
    start(
        shared,
        location,
        by,
        &crate::drills::DrillPeople::default(),
        false,
        Some(to),
        at,
    )
}

fn start(
    shared: &Arc<Shared>,
    location: Option<String>,
    by: &str,
    people: &crate::drills::DrillPeople,
    scheduled: bool,
    platform: Option<recovery::PlatformTarget>,
    at: Option<DateTime<Utc>>,
) -> Result<DrillRecord> {
    if let Some(l) = &location {
        if !shared.locations.iter().any(|x| &x.name == l) {
            return Err(Error::not_found("location", l.clone()));
        }
    }
    let now = shared.now();
    let mut steps = Vec::new();
    for rec in shared.catalog.policies().values()? {
        let has_target = match platform {
            Some(to) => to.of(&rec.policy).is_some(),
            None => rec.policy.restore_test.is_some(),
        };
        if !has_target {
            continue;
        }
        let source = shared.catalog.sources().get(&rec.policy.source)?;
        let rank = recovery::drill_rank(source.as_ref());
        steps.push((
            rank,
            DrillStep {
                source: rec.policy.source.clone(),
                kind: source.map(|s| s.kind).unwrap_or_default(),
                job: None,
                snapshot: None,
                snapshot_time: None,
                result: None,
                error: String::new(),
            },
        ));
    }
    if steps.is_empty() {
        return Err(Error::invalid(
            "drill",
            location.clone().unwrap_or_default(),
            "no source has a staging target: give policies restore_test = { target = \"AGENT:source:NAME\" }",
        ));
    }
    steps.sort_by(|(ra, a), (rb, b)| (ra, &a.source).cmp(&(rb, &b.source)));
    let steps: Vec<DrillStep> = steps.into_iter().map(|(_, s)| s).collect();
    // The checklist's first item: every location reachable, each source's
    // newest snapshot verified there.
    let mut newest = Vec::new();
    for s in &steps {
        let mut snaps = shared.catalog.snapshots_of(&s.source)?;
        snaps.sort_by_key(|x| (x.time, x.id));
        if let Some(n) = snaps.pop() {
            newest.push(n);
        }
    }
    let locations = shared
        .replicator
        .states()
        .into_iter()
        .map(|(name, st)| LocationCheck {
            verified: newest
                .iter()
                .filter(|n| matches!(n.copies.get(&name), Some(CopyState::Verified { .. })))
                .count(),
            of: steps.len(),
            name,
            reachable: st.reachable,
            last_error: st.last_error,
        })
        .collect();
    let drill = DrillRecord {
        id: format!(
            "{}-{}",
            if platform.is_some() {
                "platform"
            } else {
                "drill"
            },
            JobId::new(now)
        ),
        location,
        by: by.to_string(),
        started: now,
        finished: None,
        locations,
        steps,
        scheduled,
        people: shared.drills.people.overridden_by(people),
        lessons: Vec::new(),
        platform,
        at,
    };
    blocking(|| shared.catalog.drills().insert(&drill.id, &drill))?;
    let s = shared.clone();
    let id = drill.id.clone();
    tokio::spawn(async move {
        if let Err(e) = run_drill(&s, &id).await {
            tracing::error!(drill = %id, error = %e, "drill stopped");
        }
    });
    Ok(drill)
}

/// Mark every step after `i` as not run, naming the step that failed.
fn stop_after(drill: &mut DrillRecord, i: usize) {
    let failed = drill.steps[i].source.to_string();
    for s in &mut drill.steps[i + 1..] {
        s.error = format!("not run: the platform restore stopped after {failed} failed");
    }
}

async fn run_drill(shared: &Arc<Shared>, id: &str) -> Result<()> {
    let mut drill = shared
        .catalog
        .drills()
        .get(&id.to_string())?
        .ok_or_else(|| Error::not_found("drill", id.to_string()))?;
    tracing::info!(target: "trireme::audit", drill = %id, by = %drill.by, location = ?drill.location, sources = drill.steps.len(), "drill started");
    for i in 0..drill.steps.len() {
        let source = drill.steps[i].source.clone();
        let started = shared
            .catalog
            .policies()
            .get(&source)?
            .ok_or_else(|| Error::not_found("policy", source.to_string()))
            .and_then(|rec| {
                blocking(|| match drill.platform {
                    None => recovery::start_test(
                        &shared.catalog,
                        &rec.policy,
                        &shared.protection,
                        Some(id),
                        drill.location.as_deref(),
                        &drill.by,
                        shared.now(),
                    ),
                    Some(to) => recovery::start_step(
                        &shared.catalog,
                        &rec.policy,
                        &shared.protection,
                        &recovery::Step {
                            drill: Some(id),
                            location: drill.location.as_deref(),
                            before: drill.at,
                            to: to.of(&rec.policy),
                            purpose: crate::jobs::RestorePurpose::Restore,
                        },
                        &drill.by,
                        shared.now(),
                    ),
                })
            });
        let job = match started {
            Ok(job) => job,
            Err(e) => {
                drill.steps[i].error = format!("could not start: {e}");
                shared.catalog.drills().insert(&id.to_string(), &drill)?;
                if drill.platform.is_some() {
                    stop_after(&mut drill, i);
                    break;
                }
                continue;
            }
        };
        let record = shared.catalog.restore_tests().get(&job.id)?;
        drill.steps[i].job = Some(job.id);
        drill.steps[i].snapshot = record.as_ref().map(|r| r.snapshot);
        drill.steps[i].snapshot_time = record
            .as_ref()
            .and_then(|r| shared.catalog.snapshots().get(&r.snapshot).ok().flatten())
            .map(|s| s.time);
        drill.steps[i].result = record;
        shared.catalog.drills().insert(&id.to_string(), &drill)?;
        launch(shared, &job);
        // One at a time, in order: the next source may depend on this one.
        let result = loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for r in blocking(|| recovery::settle(&shared.catalog))? {
                log_result(&r);
            }
            match shared.catalog.restore_tests().get(&job.id)? {
                Some(r) if r.finished.is_some() => break r,
                _ => {}
            }
        };
        let failed = !result.ok;
        drill.steps[i].result = Some(result);
        shared.catalog.drills().insert(&id.to_string(), &drill)?;
        // A platform restore stops at the first failure: what depends on
        // it is not restored over a broken base.
        if failed && drill.platform.is_some() {
            stop_after(&mut drill, i);
            break;
        }
    }
    drill.finished = Some(shared.now());
    shared.catalog.drills().insert(&id.to_string(), &drill)?;
    let ok = drill.ok();
    if ok {
        tracing::info!(target: "trireme::audit", drill = %id, "drill PASSED");
    } else {
        tracing::warn!(target: "trireme::audit", drill = %id, "drill FAILED");
    }
    Ok(())
}
