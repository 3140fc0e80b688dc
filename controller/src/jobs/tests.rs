use std::collections::HashSet;

use chrono::{DateTime, Utc};
use trireme_common::Id;

use super::*;
use crate::lifecycle::*;
use crate::policy::{apply_policies, parse_policies};
use crate::scheduler::FollowUp;
use crate::sources::SourceRecord;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn src() -> SourceId {
    "host-a/redis".parse().unwrap()
}

fn job() -> Job {
    Job::new(
        src(),
        BackupMode::Incremental,
        Trigger::Schedule {
            slot: t("2025-03-01T02:00:00Z"),
            missed: 0,
        },
        1,
        t("2025-03-01T02:00:01Z"),
    )
}

fn assign() -> JobEvent {
    JobEvent::Assign {
        agent: "host-a".into(),
    }
}

fn start() -> JobEvent {
    JobEvent::Start {
        agent: "host-a".into(),
    }
}

fn succeed() -> JobEvent {
    JobEvent::Succeed {
        agent: "host-a".into(),
        snapshot: Id([1; 32]),
    }
}

fn fail(reason: &str) -> JobEvent {
    JobEvent::Fail {
        agent: Some("host-a".into()),
        reason: reason.into(),
    }
}

#[test]
fn the_happy_path() {
    let now = t("2025-03-01T02:00:02Z");
    let mut j = job();
    j.apply(&assign(), now).unwrap();
    assert_eq!(j.state.name(), "assigned");
    j.apply(&start(), now).unwrap();
    let progress = Progress {
        bytes_done: 10,
        bytes_total: Some(100),
        files_done: 1,
        bytes_uploaded: 5,
    };
    j.apply(
        &JobEvent::Progress {
            agent: "host-a".into(),
            progress: progress.clone(),
        },
        now,
    )
    .unwrap();
    assert!(matches!(&j.state, JobState::Running { progress: p, .. } if *p == progress));
    j.apply(&succeed(), now).unwrap();
    assert_eq!(
        j.state,
        JobState::Succeeded {
            snapshot: Id([1; 32]),
            finished: now
        }
    );
}

#[test]
fn illegal_transitions_are_errors_and_change_nothing() {
    let now = t("2025-03-01T02:00:02Z");
    let queued = job();
    let mut running = job();
    running.apply(&assign(), now).unwrap();
    running.apply(&start(), now).unwrap();
    let mut done = running.clone();
    done.apply(&succeed(), now).unwrap();
    let cases = [
        (&queued, start(), "queued; it cannot become running"),
        (&queued, succeed(), "queued; it cannot become succeeded"),
        (&running, assign(), "running; it cannot become assigned"),
        (&done, fail("x"), "succeeded; it cannot become failed"),
        (
            &done,
            JobEvent::Cancel {
                reason: "op".into(),
            },
            "succeeded; it cannot become cancelled",
        ),
        (&done, succeed(), "succeeded; it cannot become succeeded"),
    ];
    for (j, event, want) in cases {
        let mut copy = j.clone();
        let e = copy.apply(&event, now).unwrap_err().to_string();
        assert!(e.contains(want), "{event:?}: {e}");
        assert_eq!(&copy, j);
    }
}

#[test]
fn only_the_sources_agent_may_report() {
    let now = t("2025-03-01T02:00:02Z");
    let mut j = job();
    let e = j
        .apply(
            &JobEvent::Assign {
                agent: "host-b".into(),
            },
            now,
        )
        .unwrap_err();
    assert!(matches!(e, Error::WrongAgent { .. }), "{e}");
    j.apply(&assign(), now).unwrap();
    j.apply(&start(), now).unwrap();
    let e = j
        .apply(
            &JobEvent::Fail {
                agent: Some("host-b".into()),
                reason: "x".into(),
            },
            now,
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("belongs to agent host-a, not host-b"), "{e}");
    // The controller itself may fail it.
    j.apply(
        &JobEvent::Fail {
            agent: None,
            reason: "timeout".into(),
        },
        now,
    )
    .unwrap();
}

fn catalog_with_policy(dir: &std::path::Path, now: DateTime<Utc>) -> Catalog {
    let c = Catalog::open(dir).unwrap();
    c.register_agent(
        "host-a",
        "host-a",
        "1",
        &[(
            "redis".into(),
            SourceRecord {
                kind: "redis".into(),
                details: Default::default(),
                last_seen: now,
                drill_rank: None,
            },
        )],
        now,
    )
    .unwrap();
    let ps = parse_policies(
        "p",
        "[[policy]]\nsource = \"host-a/redis\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nmax_retries = 1\nretry_backoff = \"5m\"\n",
    )
    .unwrap();
    apply_policies(&c, &ps, "p", now).unwrap();
    c
}

#[test]
fn one_unfinished_job_per_source() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let c = catalog_with_policy(dir.path(), now);
    let j1 = enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap();
    let e = enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap_err();
    assert!(matches!(e, Error::SourceBusy { .. }), "{e}");
    assert!(e.to_string().contains(&j1.id.to_string()), "{e}");
    assert_eq!(
        queued_for_agent(&c, "host-a").unwrap(),
        std::slice::from_ref(&j1)
    );
    update_job(
        &c,
        &j1.id,
        &JobEvent::Cancel {
            reason: "op".into(),
        },
        now,
    )
    .unwrap();
    assert!(c.active().is_empty(), "a finished job frees its source");
    enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap();
    let unknown = "host-z/x".parse().unwrap();
    let e = enqueue_manual(&c, &unknown, BackupMode::Full, "op", now).unwrap_err();
    assert!(e.to_string().contains("no source host-z/x"), "{e}");
}

#[test]
fn failures_schedule_retries_then_give_up() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let c = catalog_with_policy(dir.path(), now);
    let mut j = job();
    c.transaction(|tx| create_in(tx, &j)).unwrap();
    for e in [assign(), start()] {
        update_job(&c, &j.id, &e, now).unwrap();
    }
    let u = update_job(&c, &j.id, &fail("disk full"), now).unwrap();
    assert_eq!(
        u.follow_up,
        FollowUp::Retry {
            attempt: 2,
            at: now + chrono::Duration::minutes(5)
        }
    );
    let state = c.schedule().get(&src()).unwrap().unwrap();
    assert_eq!(state.last_failure.unwrap().reason, "disk full");
    // Attempt 2 is the last (max_retries = 1).
    j = Job::new(
        src(),
        j.mode,
        Trigger::Retry {
            slot: j.slot(),
            previous: j.id,
        },
        2,
        now,
    );
    c.transaction(|tx| create_in(tx, &j)).unwrap();
    update_job(&c, &j.id, &assign(), now).unwrap();
    let u = update_job(&c, &j.id, &fail("disk full"), now).unwrap();
    assert_eq!(u.follow_up, FollowUp::GaveUp { attempts: 2 });
    let state = c.schedule().get(&src()).unwrap().unwrap();
    assert!(state.retry.is_none());
    assert_eq!(state.gave_up.unwrap().attempts, 2);
}

#[test]
fn reconcile_resumes_confirmed_jobs_and_fails_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let c = Catalog::open(dir.path()).unwrap();
    let mk = |name: &str| {
        Job::new(
            format!("host-a/{name}").parse().unwrap(),
            BackupMode::Full,
            Trigger::Manual { by: "op".into() },
            1,
            now,
        )
    };
    let (running_ok, running_lost, assigned_ok, queued, queued_ok) =
        (mk("a"), mk("b"), mk("c"), mk("d"), mk("e"));
    for j in [
        &running_ok,
        &running_lost,
        &assigned_ok,
        &queued,
        &queued_ok,
    ] {
        c.transaction(|tx| create_in(tx, j)).unwrap();
    }
    for j in [&running_ok, &running_lost, &assigned_ok] {
        update_job(&c, &j.id, &assign(), now).unwrap();
    }
    for j in [&running_ok, &running_lost] {
        update_job(&c, &j.id, &start(), now).unwrap();
    }
    let finished = mk("f");
    c.transaction(|tx| create_in(tx, &finished)).unwrap();
    update_job(
        &c,
        &finished.id,
        &JobEvent::Cancel { reason: "x".into() },
        now,
    )
    .unwrap();
    let stranger = JobId::new(now);
    drop(c);

    // Restart.
    let c = Catalog::open(dir.path()).unwrap();
    let reported: HashSet<JobId> = [
        running_ok.id,
        assigned_ok.id,
        queued_ok.id,
        finished.id,
        stranger,
    ]
    .into();
    let later = now + chrono::Duration::minutes(2);
    let r = reconcile_after_restart(&c, &reported, later).unwrap();
    let mut resumed = vec![running_ok.id, assigned_ok.id, queued_ok.id];
    resumed.sort();
    let mut got = r.resumed.clone();
    got.sort();
    assert_eq!(got, resumed);
    assert_eq!(r.failed, [running_lost.id]);
    let mut stray = vec![finished.id, stranger];
    stray.sort();
    assert_eq!(r.stray, stray);
    for id in &resumed {
        assert_eq!(c.jobs().get(id).unwrap().unwrap().state.name(), "running");
    }
    assert_eq!(
        c.jobs().get(&running_lost.id).unwrap().unwrap().state,
        JobState::Failed {
            reason: RESTART_REASON.into(),
            finished: later
        }
    );
    assert_eq!(
        c.jobs().get(&queued.id).unwrap().unwrap().state,
        JobState::Queued
    );
    assert_eq!(c.active().len(), 4, "only the failed job freed its source");
}

#[test]
fn job_ids_round_trip_as_text() {
    let id = JobId::new(t("2025-03-01T10:00:00Z"));
    assert_eq!(id.to_string().parse::<JobId>().unwrap(), id);
    let e = "nope".parse::<JobId>().unwrap_err().to_string();
    assert!(e.contains("\"nope\""), "{e}");
}

#[test]
fn completing_records_the_snapshot_with_the_job() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let c = catalog_with_policy(dir.path(), now);
    let j = enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap();
    for e in [assign(), start()] {
        update_job(&c, &j.id, &e, now).unwrap();
    }
    let mut snap = crate::snapshots::SnapshotRecord {
        id: Id([3; 32]),
        source: "host-a/other".parse().unwrap(),
        agent: "host-a".into(),
        time: now,
        size: 1,
        summary: Default::default(),
        job: None,
        copies: Default::default(),
        position: Default::default(),
        depends_on: Vec::new(),
    };
    let e = complete_job(&c, &j.id, "host-a", &snap, now).unwrap_err();
    assert!(e.to_string().contains("backs up host-a/redis"), "{e}");
    assert_eq!(
        c.jobs().get(&j.id).unwrap().unwrap().state.name(),
        "running"
    );
    assert!(c.snapshots().is_empty());
    snap.source = src();
    complete_job(&c, &j.id, "host-a", &snap, now).unwrap();
    assert_eq!(
        c.snapshots().get(&snap.id).unwrap().unwrap().job,
        Some(j.id)
    );
    let state = c.schedule().get(&src()).unwrap().unwrap();
    assert_eq!(state.last_success, Some(now));
}

/// The per-state counts the metrics read follow every change, agree with
/// a scan of the jobs, and are rebuilt from a scan once for a catalog that
/// predates them.
#[test]
fn job_counts_follow_every_state_change() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let c = catalog_with_policy(dir.path(), now);
    let scanned = |c: &Catalog| -> std::collections::BTreeMap<String, u64> {
        let mut m = std::collections::BTreeMap::new();
        for j in c.jobs().values().unwrap() {
            *m.entry(j.state.name().to_string()).or_default() += 1;
        }
        m
    };
    let kept = |c: &Catalog| -> std::collections::BTreeMap<String, u64> {
        c.job_counts()
            .entries()
            .unwrap()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect()
    };
    let j1 = enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap();
    assert_eq!(kept(&c), scanned(&c));
    assert_eq!(kept(&c).get("queued"), Some(&1));
    for e in [assign(), start(), succeed()] {
        update_job(&c, &j1.id, &e, now).unwrap();
        assert_eq!(kept(&c), scanned(&c), "after {e:?}");
    }
    let j2 = enqueue_manual(&c, &src(), BackupMode::Full, "op", now).unwrap();
    update_job(&c, &j2.id, &assign(), now).unwrap();
    update_job(&c, &j2.id, &fail("disk full"), now).unwrap();
    // A refused transition changes no count.
    assert!(update_job(&c, &j2.id, &start(), now).is_err());
    assert_eq!(kept(&c), scanned(&c));
    assert_eq!(kept(&c).get("succeeded"), Some(&1));
    assert_eq!(kept(&c).get("failed"), Some(&1));

    // At open the counts are checked once against a scan (a catalog from
    // before the counts), then never again.
    assert!(count_jobs(&c).unwrap());
    assert_eq!(kept(&c), scanned(&c));
    assert!(!count_jobs(&c).unwrap(), "already counted");
    c.meta().remove(&JOBS_COUNTED.to_string()).unwrap();
    c.job_counts().insert(&"queued".to_string(), &7).unwrap();
    assert!(count_jobs(&c).unwrap());
    assert_eq!(kept(&c), scanned(&c));
}
