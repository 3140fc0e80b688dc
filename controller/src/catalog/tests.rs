use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trireme_common::{Id, Summary};

use super::*;
use crate::error::Error;
use crate::jobs::{BackupMode, Job, JobId, Trigger};
use crate::snapshots::{fill_dependencies, CopyState, SnapshotRecord};
use crate::sources::{SourceId, SourceRecord};

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn src(s: &str) -> SourceId {
    s.parse().unwrap()
}

fn source_record(kind: &str, now: DateTime<Utc>) -> SourceRecord {
    SourceRecord {
        kind: kind.into(),
        details: BTreeMap::from([("path".to_string(), "/data".to_string())]),
        last_seen: now,
        drill_rank: None,
    }
}

fn snapshot(id: u8, source: &str, time: DateTime<Utc>) -> SnapshotRecord {
    let source = src(source);
    SnapshotRecord {
        id: Id([id; 32]),
        agent: source.agent.clone(),
        source,
        time,
        size: 1234,
        summary: Summary {
            files: 3,
            bytes: 1234,
            ..Summary::default()
        },
        job: None,
        copies: BTreeMap::new(),
        position: BTreeMap::new(),
        depends_on: Vec::new(),
    }
}

#[test]
fn source_ids_parse_and_print() {
    let s = src("host-a/redis-main");
    assert_eq!(
        (s.agent.as_str(), s.name.as_str()),
        ("host-a", "redis-main")
    );
    assert_eq!(s.to_string(), "host-a/redis-main");
    for bad in [
        "redis-main",
        "host-a/",
        "/x",
        "a/b/c",
        "host a/x",
        ".hidden/x",
    ] {
        let e = bad.parse::<SourceId>().unwrap_err().to_string();
        assert!(
            e.contains(bad) && e.contains("host-a/redis-main"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn typed_trees_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let job = Job::new(
        src("host-a/redis"),
        BackupMode::Full,
        Trigger::Manual { by: "op".into() },
        1,
        now,
    );
    {
        let c = Catalog::open(dir.path()).unwrap();
        c.register_agent(
            "host-a",
            "host-a.example",
            "0.1.0",
            &[
                ("redis".into(), source_record("redis", now)),
                ("vol".into(), source_record("volume", now)),
            ],
            now,
        )
        .unwrap();
        c.jobs().insert(&job.id, &job).unwrap();
        c.record_snapshot(&snapshot(1, "host-a/redis", now))
            .unwrap();
        c.flush().unwrap();
    }
    let c = Catalog::open(dir.path()).unwrap();
    let agent = c.agents().get(&"host-a".to_string()).unwrap().unwrap();
    assert_eq!(agent.hostname, "host-a.example");
    assert_eq!(agent.sources, ["redis", "vol"]);
    let sources = c.sources_of("host-a").unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[0].0, src("host-a/redis"));
    assert_eq!(sources[0].1.kind, "redis");
    assert_eq!(c.jobs().get(&job.id).unwrap(), Some(job));
    assert_eq!(c.snapshots().len(), 1);
    assert_eq!(
        c.snapshots_of(&src("host-a/redis")).unwrap()[0]
            .summary
            .files,
        3
    );
}

#[test]
fn reregistration_keeps_first_seen() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let (t1, t2) = (t("2025-03-01T10:00:00Z"), t("2025-03-02T10:00:00Z"));
    c.register_agent(
        "a",
        "a",
        "1",
        &[("x".into(), source_record("volume", t1))],
        t1,
    )
    .unwrap();
    let r = c.register_agent("a", "a", "2", &[], t2).unwrap();
    assert_eq!(
        (r.first_seen, r.last_seen, r.version.as_str()),
        (t1, t2, "2")
    );
    assert!(r.sources.is_empty());
    assert_eq!(c.sources_of("a").unwrap().len(), 1, "old sources are kept");
    let e = c.register_agent("bad name", "h", "1", &[], t2).unwrap_err();
    assert!(e.to_string().contains("bad name"), "{e}");
}

#[test]
fn transactions_are_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let s = snapshot(7, "h/x", now);
    let e = c
        .transaction(|tx| {
            tx.snapshots().insert(&s.id, &s)?;
            tx.active().insert(&s.source, &JobId::new(now))?;
            Err::<(), _>(abort(Error::not_found("thing", "x")))
        })
        .unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    assert!(c.snapshots().is_empty());
    assert!(c.active().is_empty());
    c.transaction_durable(|tx| {
        tx.snapshots().insert(&s.id, &s)?;
        tx.active().insert(&s.source, &JobId::new(now))
    })
    .unwrap();
    assert_eq!(c.snapshots().len(), 1);
    assert_eq!(c.active().len(), 1);
}

#[test]
fn copy_states_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let now = t("2025-03-01T10:00:00Z");
    let s = snapshot(2, "h/x", now);
    c.record_snapshot(&s).unwrap();
    c.set_copy_state(&s.id, "loc-2", CopyState::Verified { at: now })
        .unwrap();
    let got = c.snapshots().get(&s.id).unwrap().unwrap();
    assert_eq!(got.copies["loc-2"], CopyState::Verified { at: now });
    let e = c
        .set_copy_state(&Id([9; 32]), "loc-2", CopyState::Pending)
        .unwrap_err();
    assert!(e.to_string().contains("no snapshot 0909"), "{e}");
}

#[test]
fn jobs_iterate_in_creation_order() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let base = t("2025-03-01T10:00:00Z");
    let mut ids = Vec::new();
    for i in 0..50 {
        // Several in the same millisecond, then later ones.
        let now = base + chrono::Duration::milliseconds(i / 10);
        let job = Job::new(
            src("h/x"),
            BackupMode::Full,
            Trigger::Manual { by: "t".into() },
            1,
            now,
        );
        c.jobs().insert(&job.id, &job).unwrap();
        ids.push(job.id);
    }
    assert_eq!(c.jobs().keys().unwrap(), ids);
}

#[test]
fn damaged_entries_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    c.db()
        .open_tree("jobs")
        .unwrap()
        .insert(JobId::new(Utc::now()).0.as_bytes(), &b"\xff\x00junk"[..])
        .unwrap();
    let e = c.jobs().values().unwrap_err().to_string();
    assert!(e.starts_with("catalog entry jobs/"), "{e}");
}

#[test]
fn a_second_open_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let first = Catalog::open(dir.path()).unwrap();
    let e = Catalog::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains("another trireme-controller"), "{e}");
    drop(first);
    Catalog::open(dir.path()).unwrap();
}

#[test]
fn a_newer_catalog_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Catalog::open(dir.path()).unwrap();
        c.meta()
            .insert(&"format".to_string(), &(CATALOG_FORMAT + 1))
            .unwrap();
        c.flush().unwrap();
    }
    let e = Catalog::open(dir.path()).unwrap_err().to_string();
    assert!(
        e.contains("format version 2") && e.contains("upgrade"),
        "{e}"
    );
}

fn chained(id: u8, previous: u8, time: DateTime<Utc>) -> SnapshotRecord {
    let mut s = snapshot(id, "host-a/tidb", time);
    s.position = BTreeMap::from([
        ("tidb.mode".to_string(), "incremental".to_string()),
        (
            "tidb.previous_snapshot".to_string(),
            Id([previous; 32]).to_hex(),
        ),
    ]);
    s
}

#[test]
fn recorded_snapshots_carry_their_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let now = t("2025-03-01T10:00:00Z");
    c.record_snapshot(&snapshot(1, "host-a/tidb", now)).unwrap();
    // Whatever the caller put in `depends_on`, the position decides.
    c.record_snapshot(&chained(2, 1, now)).unwrap();
    let two = c.snapshots().get(&Id([2; 32])).unwrap().unwrap();
    assert_eq!(
        two.depends_on,
        vec![trireme_common::Dependency {
            snapshot: Id([1; 32]),
            chain: "tidb".into()
        }]
    );
    assert!(c
        .snapshots()
        .get(&Id([1; 32]))
        .unwrap()
        .unwrap()
        .depends_on
        .is_empty());
}

#[test]
fn older_snapshot_records_load_and_get_their_dependencies_once() {
    // A record as written before `depends_on` existed.
    #[derive(serde::Serialize)]
    struct Old {
        id: Id,
        source: SourceId,
        agent: String,
        time: DateTime<Utc>,
        size: u64,
        summary: Summary,
        job: Option<JobId>,
        copies: BTreeMap<String, CopyState>,
        position: BTreeMap<String, String>,
    }
    let now = t("2025-03-01T10:00:00Z");
    let new = chained(2, 1, now);
    let old = Old {
        id: new.id,
        source: new.source.clone(),
        agent: new.agent.clone(),
        time: new.time,
        size: new.size,
        summary: new.summary.clone(),
        job: None,
        copies: BTreeMap::new(),
        position: new.position.clone(),
    };
    let mut cbor = Vec::new();
    ciborium::into_writer(&old, &mut cbor).unwrap();
    let decoded: SnapshotRecord = ciborium::from_reader(&cbor[..]).unwrap();
    assert!(decoded.depends_on.is_empty());
    assert_eq!(decoded.position, new.position);

    let dir = tempfile::tempdir().unwrap();
    {
        let c = Catalog::open(dir.path()).unwrap();
        // As an older controller left it: no dependencies, not filled yet.
        c.snapshots().insert(&decoded.id, &decoded).unwrap();
        c.meta().remove(&"dependencies".to_string()).unwrap();
        c.flush().unwrap();
    }
    let c = Catalog::open(dir.path()).unwrap();
    assert!(fill_dependencies(&c).unwrap());
    let filled = c.snapshots().get(&new.id).unwrap().unwrap();
    assert_eq!(filled.depends_on.len(), 1);
    assert_eq!(filled.depends_on[0].snapshot, Id([1; 32]));
    // Done once: a record changed afterwards is left as it is.
    c.snapshots().insert(&decoded.id, &decoded).unwrap();
    c.flush().unwrap();
    drop(c);
    let c = Catalog::open(dir.path()).unwrap();
    assert!(!fill_dependencies(&c).unwrap());
    assert!(c
        .snapshots()
        .get(&new.id)
        .unwrap()
        .unwrap()
        .depends_on
        .is_empty());
}
