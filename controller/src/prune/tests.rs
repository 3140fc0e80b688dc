use std::collections::BTreeMap;

use chrono::TimeZone;
use trireme_common::Summary;

use super::*;
use crate::jobs::JobId;
use crate::policy::{apply_policy_file, parse_policy_file};

const LOCS: [&str; 3] = ["loc1", "loc2", "loc3"];

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
}

/// A snapshot verified at the first `verified` locations.
fn snap(n: u8, source: &str, verified: usize) -> SnapshotRecord {
    let source: SourceId = source.parse().unwrap();
    SnapshotRecord {
        id: Id([n; 32]),
        agent: source.agent.clone(),
        source,
        time: at(u32::from(n)),
        size: 1,
        summary: Summary::default(),
        job: None,
        copies: LOCS
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let state = if i < verified {
                    CopyState::Verified { at: at(0) }
                } else {
                    CopyState::Pending
                };
                (l.to_string(), state)
            })
            .collect::<BTreeMap<_, _>>(),
        position: BTreeMap::new(),
    }
}

fn catalog(policy: &str) -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    let file = parse_policy_file("p.toml", policy).unwrap();
    apply_policy_file(&c, &file, "test", at(0)).unwrap();
    (dir, c)
}

fn reason_of(v: &[Verdict], n: u8) -> Option<String> {
    v.iter()
        .find(|x| x.id == Id([n; 32]))
        .map(|x| x.reason.clone())
}

const KEEP_ONE: &str = "[[policy]]\nsource = \"h/db\"\nschedule = \"@daily\"\nretention = \"one\"\n[retention.one]\nkeep_last = 1\n";

#[test]
fn the_newest_verified_copies_are_kept_whatever_the_class_says() {
    let (_d, c) = catalog(KEEP_ONE);
    // 1, 2: verified everywhere; 3: at one location; 4 (newest): nowhere.
    for s in [
        snap(1, "h/db", 3),
        snap(2, "h/db", 3),
        snap(3, "h/db", 1),
        snap(4, "h/db", 0),
    ] {
        c.record_snapshot(&s).unwrap();
    }
    let (removed, kept, notes) = decide(&c, None, 3, at(12)).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(reason_of(&kept, 4).unwrap(), "newest, last 1");
    assert_eq!(
        reason_of(&kept, 3).unwrap(),
        "newest snapshot verified at any location"
    );
    assert_eq!(
        reason_of(&kept, 2).unwrap(),
        "newest snapshot verified at every location"
    );
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0].id, Id([1; 32]));
    assert!(
        removed[0].reason.contains("outside every window"),
        "{removed:?}"
    );
}

#[test]
fn sources_without_a_policy_or_class_keep_everything() {
    let (_d, c) = catalog(
        "[[policy]]\nsource = \"h/db\"\nschedule = \"@daily\"\nretention = \"undefined\"\n",
    );
    for s in [
        snap(1, "h/db", 3),
        snap(2, "h/db", 3),
        snap(3, "h/other", 3),
        snap(4, "h/other", 3),
    ] {
        c.record_snapshot(&s).unwrap();
    }
    let (removed, kept, notes) = decide(&c, None, 3, at(12)).unwrap();
    assert!(removed.is_empty());
    assert_eq!(kept.len(), 4);
    assert!(
        notes
            .iter()
            .any(|n| n.starts_with("h/db: retention class \"undefined\" is not defined")),
        "{notes:?}"
    );
    assert!(
        notes.iter().any(|n| n.starts_with("h/other: no policy")),
        "{notes:?}"
    );
    // Only one source when asked.
    let only: SourceId = "h/other".parse().unwrap();
    let (_, kept, notes) = decide(&c, Some(&only), 3, at(12)).unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(notes.len(), 1);
}

#[test]
fn classes_are_stored_with_the_policies_and_replaced_by_name() {
    let (_d, c) = catalog(KEEP_ONE);
    assert_eq!(
        c.retention()
            .get(&"one".to_string())
            .unwrap()
            .unwrap()
            .keep_last,
        Some(1)
    );
    let file = parse_policy_file(
        "p.toml",
        "[[policy]]\nsource = \"h/db\"\nschedule = \"@daily\"\nretention = \"one\"\n[retention.one]\nkeep_last = 4\n",
    )
    .unwrap();
    let report = apply_policy_file(&c, &file, "test", at(1)).unwrap();
    assert_eq!(
        report.unchanged.len(),
        1,
        "the policy itself did not change"
    );
    assert_eq!(
        c.retention()
            .get(&"one".to_string())
            .unwrap()
            .unwrap()
            .keep_last,
        Some(4)
    );
}

#[test]
fn prune_is_refused_while_a_job_is_unfinished() {
    let (_d, c) = catalog(KEEP_ONE);
    check_idle(&c).unwrap();
    let source: SourceId = "h/db".parse().unwrap();
    let job = JobId::new(at(1));
    c.active().insert(&source, &job).unwrap();
    let e = check_idle(&c).unwrap_err().to_string();
    assert!(
        e.starts_with("prune refused: 1 job(s) are queued or running"),
        "{e}"
    );
    assert!(e.contains("h/db"), "{e}");
}
