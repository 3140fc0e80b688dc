use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trireme_common::{Id, Summary};

use super::*;
use crate::jobs::JobEvent;
use crate::policy::{apply_policies, parse_policies};
use crate::protection::ProtectionRule;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// An on-demand restore test by alice, the rule "verified at 3 locations".
fn test_now(c: &Catalog, policy: &Policy, now: DateTime<Utc>) -> Result<Job> {
    start_test(
        c,
        policy,
        &ProtectionRule::count(3),
        None,
        None,
        "alice",
        now,
    )
}

fn catalog() -> (tempfile::TempDir, Catalog) {
    let d = tempfile::tempdir().unwrap();
    let c = Catalog::open(d.path().join("catalog")).unwrap();
    (d, c)
}

const POLICY: &str = "[[policy]]\nsource = \"cache-1/redis\"\nschedule = \"0 * * * *\"\nretention = \"r\"\nrpo = \"2h\"\nrto = \"10m\"\nrestore_test = { target = \"cache-1:source:redis-staging\", schedule = \"0 4 * * *\" }\n";

fn apply(c: &Catalog, text: &str, now: DateTime<Utc>) {
    apply_policies(c, &parse_policies("p.toml", text).unwrap(), "p.toml", now).unwrap();
}

fn snapshot(c: &Catalog, id: u8, time: DateTime<Utc>, verified: &[&str]) {
    let copies = ["a", "b", "c"]
        .iter()
        .map(|l| {
            let state = if verified.contains(l) {
                CopyState::Verified { at: time }
            } else {
                CopyState::Copied { at: time }
            };
            (l.to_string(), state)
        })
        .collect();
    c.record_snapshot(&SnapshotRecord {
        id: Id([id; 32]),
        source: "cache-1/redis".parse().unwrap(),
        agent: "cache-1".into(),
        time,
        size: 10,
        summary: Summary::default(),
        job: None,
        copies,
        position: BTreeMap::new(),
        depends_on: Vec::new(),
    })
    .unwrap();
}

#[test]
fn rpo_turns_red_when_the_newest_full_copy_is_too_old() {
    let (_d, c) = catalog();
    let now = t("2026-01-10T12:00:00Z");
    apply(&c, POLICY, now);
    let h = &health(&c, &ProtectionRule::count(3), now).unwrap()[0];
    assert_eq!(h.rpo_ok, Some(false));
    assert!(
        h.problems[0].contains("no snapshot is protected (verified at 3 locations)"),
        "{:?}",
        h.problems
    );

    // Verified everywhere an hour ago: green for the RPO (the RTO is unproven).
    snapshot(&c, 1, t("2026-01-10T11:00:00Z"), &["a", "b", "c"]);
    // A newer one only at two locations does not count.
    snapshot(&c, 2, t("2026-01-10T11:50:00Z"), &["a", "b"]);
    let h = &health(&c, &ProtectionRule::count(3), now).unwrap()[0];
    assert_eq!(h.rpo_ok, Some(true));
    assert_eq!(h.newest_full.as_ref().unwrap().id, Id([1; 32]));
    assert_eq!(h.age, Some(Duration::from_secs(3600)));
    assert!(h.problems.iter().any(|p| p.contains("RTO 10m not proven")));

    // Two hours and a minute later the RPO is missed.
    let later = t("2026-01-10T13:01:00Z");
    let h = &health(&c, &ProtectionRule::count(3), later).unwrap()[0];
    assert_eq!(h.rpo_ok, Some(false));
    assert!(
        h.problems[0].contains("is 2h 1m old (RPO 2h)"),
        "{:?}",
        h.problems
    );
}

#[test]
fn restore_tests_are_settled_against_the_rto() {
    let (_d, c) = catalog();
    let now = t("2026-01-10T12:00:00Z");
    apply(&c, POLICY, now);
    let policy = c.policies().values().unwrap().remove(0).policy;
    let e = test_now(&c, &policy, now).unwrap_err();
    assert!(
        e.to_string()
            .contains("no snapshot of it is protected yet (verified at 3 locations)"),
        "{e}"
    );
    snapshot(&c, 1, t("2026-01-10T11:00:00Z"), &["a", "b", "c"]);
    snapshot(&c, 2, t("2026-01-10T11:30:00Z"), &["a"]);
    let job = test_now(&c, &policy, now).unwrap();
    assert!(
        matches!(&job.kind, JobKind::Restore { snapshot, purpose: RestorePurpose::Test, target, .. }
        if *snapshot == Id([1; 32]) && target == "source:redis-staging")
    );
    // Only location "a": the newer snapshot verified there.
    let (_d2, c2) = catalog();
    apply(&c2, POLICY, now);
    snapshot(&c2, 1, t("2026-01-10T11:00:00Z"), &["a", "b", "c"]);
    snapshot(&c2, 2, t("2026-01-10T11:30:00Z"), &["a"]);
    let drill = start_test(
        &c2,
        &policy,
        &ProtectionRule::count(3),
        Some("d1"),
        Some("a"),
        "alice",
        now,
    )
    .unwrap();
    assert!(
        matches!(&drill.kind, JobKind::Restore { snapshot, only_location: Some(l), .. } if *snapshot == Id([2; 32]) && l == "a")
    );

    assert!(settle(&c).unwrap().is_empty(), "still queued");
    let finish = |c: &Catalog, id: JobId, secs: f64, at: &str| {
        for e in [
            JobEvent::Assign {
                agent: "cache-1".into(),
            },
            JobEvent::Start {
                agent: "cache-1".into(),
            },
            JobEvent::Succeed {
                agent: "cache-1".into(),
                snapshot: Id([1; 32]),
            },
        ] {
            crate::lifecycle::update_job(c, &id, &e, t(at)).unwrap();
        }
        let mut j = c.jobs().get(&id).unwrap().unwrap();
        j.took_ms = Some((secs * 1000.0) as u64);
        j.checks = vec!["205 keys (backup: 205)".into()];
        c.jobs().insert(&id, &j).unwrap();
    };
    finish(&c, job.id, 42.0, "2026-01-10T12:01:00Z");
    let done = settle(&c).unwrap();
    assert_eq!(done.len(), 1);
    assert!(done[0].ok && done[0].duration_secs == 42.0, "{:?}", done[0]);
    let h = &health(&c, &ProtectionRule::count(3), now).unwrap()[0];
    assert_eq!(h.rto_ok, Some(true));
    assert!(h.problems.is_empty(), "{:?}", h.problems);

    // Over the RTO: failed, and red.
    let job = test_now(&c, &policy, now).unwrap();
    finish(&c, job.id, 700.0, "2026-01-10T12:20:00Z");
    let done = settle(&c).unwrap();
    assert!(
        !done[0].ok && done[0].error.contains("over the RTO of 10m"),
        "{:?}",
        done[0]
    );
    let h = &health(&c, &ProtectionRule::count(3), now).unwrap()[0];
    assert_eq!(h.rto_ok, Some(false));
    assert!(h.red());
}

#[test]
fn scheduled_tests_fire_on_new_slots_only() {
    let (_d, c) = catalog();
    let now = t("2026-01-10T12:00:00Z");
    apply(&c, POLICY, now);
    assert!(
        due_tests(&c, now).unwrap().is_empty(),
        "the first look sets the baseline"
    );
    assert!(due_tests(&c, t("2026-01-11T03:59:00Z")).unwrap().is_empty());
    assert_eq!(due_tests(&c, t("2026-01-11T04:00:00Z")).unwrap().len(), 1);
    assert!(
        due_tests(&c, t("2026-01-11T04:30:00Z")).unwrap().is_empty(),
        "once per slot"
    );
}

#[test]
fn drill_report_walks_the_checklist_and_names_failures() {
    let rec = |ok: bool, error: &str, checks: &[&str]| RestoreTestRecord {
        job: JobId::new(t("2026-01-10T12:00:00Z")),
        source: "db-1/tidb".parse().unwrap(),
        snapshot: Id([1; 32]),
        target: "db-1:source:tidb-staging".into(),
        drill: Some("d".into()),
        location: Some("b".into()),
        started: t("2026-01-10T12:00:00Z"),
        finished: Some(t("2026-01-10T12:05:00Z")),
        duration_secs: 300.0,
        rto: Some(Duration::from_secs(3600)),
        ok,
        checks: checks.iter().map(|s| s.to_string()).collect(),
        error: error.into(),
    };
    let mut d = DrillRecord {
        id: "d".into(),
        location: Some("b".into()),
        by: "alice".into(),
        started: t("2026-01-10T12:00:00Z"),
        finished: Some(t("2026-01-10T12:10:00Z")),
        locations: vec![LocationCheck {
            name: "b".into(),
            reachable: true,
            last_error: String::new(),
            verified: 2,
            of: 2,
        }],
        scheduled: false,
        people: crate::drills::DrillPeople::default(),
        lessons: Vec::new(),
        platform: None,
        at: None,
        steps: vec![
            DrillStep {
                source: "db-1/tidb".parse().unwrap(),
                kind: "tidb".into(),
                job: None,
                snapshot: Some(Id([1; 32])),
                snapshot_time: None,
                result: Some(rec(true, "", &["br restore full ok"])),
                error: String::new(),
            },
            DrillStep {
                source: "cache-1/redis".parse().unwrap(),
                kind: "redis".into(),
                job: None,
                snapshot: Some(Id([2; 32])),
                snapshot_time: None,
                result: Some(rec(true, "", &["205 keys"])),
                error: String::new(),
            },
        ],
    };
    assert!(d.ok());
    let md = report_markdown(&d);
    assert!(
        md.contains("**Result: PASSED**") && md.contains("- [x] Data integrity validated"),
        "{md}"
    );
    assert!(!md.contains("## What failed"));
    d.steps[1].result = Some(rec(false, "corrupt pack 5eed (sha-256 mismatch)", &[]));
    let md = report_markdown(&d);
    assert!(md.contains("**Result: FAILED**"), "{md}");
    assert!(
        md.contains("- [ ] Restore steps completed (1 of 2)"),
        "{md}"
    );
    assert!(md.contains("- [ ] Data integrity validated"), "{md}");
    assert!(md.contains("- cache-1/redis: corrupt pack 5eed"), "{md}");
    let html = report_html(&d);
    assert!(
        html.starts_with("<!doctype html>")
            && html.contains("<h2>Checklist</h2>")
            && html.contains("corrupt pack 5eed"),
        "{html}"
    );
}

#[test]
fn drill_rank_is_the_agents_and_last_without_one() {
    let source = |drill_rank| SourceRecord {
        kind: "anything".into(),
        details: BTreeMap::new(),
        last_seen: t("2024-05-01T00:00:00Z"),
        drill_rank,
    };
    assert_eq!(drill_rank(Some(&source(Some(10)))), 10);
    assert!(drill_rank(Some(&source(Some(50)))) < drill_rank(Some(&source(None))));
    assert_eq!(drill_rank(Some(&source(None))), drill_rank(None));
}
