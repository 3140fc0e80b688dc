use std::collections::BTreeMap;

use chrono::TimeZone;
use trireme_common::Summary;

use super::*;
use crate::jobs::JobId;
use crate::policy::{apply_policy_file, parse_policy_file};

/// The three locations of these tests' snapshots (also used by `holds`'s tests).
pub(crate) const LOCS: [&str; 3] = ["loc1", "loc2", "loc3"];

/// Hour `h` of a fixed day.
pub(crate) fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, h, 0, 0).unwrap()
}

/// Snapshot `n` of `source` at hour `n`, verified at the first `verified`
/// locations.
pub(crate) fn snap(n: u8, source: &str, verified: usize) -> SnapshotRecord {
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
        depends_on: Vec::new(),
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

/// A TiDB snapshot resting on snapshot `previous` (of any source).
fn incremental(n: u8, source: &str, previous: u8) -> SnapshotRecord {
    let mut s = snap(n, source, 3);
    s.position = BTreeMap::from([(
        "tidb.previous_snapshot".to_string(),
        Id([previous; 32]).to_hex(),
    )]);
    s.derive_dependencies();
    s
}

#[test]
fn a_kept_incremental_keeps_its_chain_and_says_why() {
    let (_d, c) = catalog(KEEP_ONE);
    // 1: an old full backup; 2: a full backup; 3, 4: incrementals on it.
    // The tree snapshot 5 of another source names 2 only as its parent
    // (change detection): that is no dependency.
    let mut tree = snap(5, "h/files", 3);
    tree.position = BTreeMap::from([("parent".to_string(), Id([2; 32]).to_hex())]);
    for s in [
        snap(1, "h/db", 3),
        snap(2, "h/db", 3),
        incremental(3, "h/db", 2),
        incremental(4, "h/db", 3),
        tree,
    ] {
        c.record_snapshot(&s).unwrap();
    }
    let (removed, kept, notes) = decide(&c, None, 3, at(12)).unwrap();
    assert_eq!(
        removed.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![Id([1; 32])],
        "{removed:?}"
    );
    assert_eq!(reason_of(&kept, 4).unwrap(), "newest, last 1");
    let by = Id([4; 32]).short();
    for n in [2, 3] {
        assert_eq!(
            reason_of(&kept, n).unwrap(),
            format!("needed by {by} (tidb chain)")
        );
        let v = kept.iter().find(|v| v.id == Id([n; 32])).unwrap();
        let needed = v.needed_by.as_ref().unwrap();
        assert_eq!(
            (needed.snapshot, needed.chain.as_str()),
            (Id([4; 32]), "tidb")
        );
    }
    assert!(
        kept.iter()
            .filter(|v| v.id != Id([2; 32]) && v.id != Id([3; 32]))
            .all(|v| v.needed_by.is_none()),
        "{kept:?}"
    );
    assert!(
        notes.iter().all(|n| !n.contains("not in the catalog")),
        "{notes:?}"
    );
}

#[test]
fn chains_are_followed_across_sources_and_a_missing_link_is_reported() {
    let (_d, c) = catalog(KEEP_ONE);
    // h/db: 1, 2 (newest). h/other (no policy, so kept whole) rests on 1.
    // h/db's 3 is gone from the catalog, and h/db's 9 still names it.
    for s in [
        snap(1, "h/db", 3),
        snap(2, "h/db", 3),
        incremental(4, "h/other", 1),
    ] {
        c.record_snapshot(&s).unwrap();
    }
    // Pruning only h/db: h/other's snapshot still needs 1.
    let only: SourceId = "h/db".parse().unwrap();
    let (removed, kept, _) = decide(&c, Some(&only), 3, at(12)).unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    assert_eq!(
        reason_of(&kept, 1).unwrap(),
        format!("needed by {} of h/other (tidb chain)", Id([4; 32]).short())
    );
    c.record_snapshot(&incremental(9, "h/db", 3)).unwrap();
    let (_, kept, notes) = decide(&c, Some(&only), 3, at(12)).unwrap();
    assert_eq!(reason_of(&kept, 9).unwrap(), "newest, last 1");
    assert!(
        notes.iter().any(|n| n
            == &format!(
                "snapshot {} of h/db needs {} (tidb chain), which is not in the catalog: it does not restore (make a full backup)",
                Id([9; 32]).short(),
                Id([3; 32]).short()
            )),
        "{notes:?}"
    );
}

#[test]
fn a_snapshot_incomplete_everywhere_makes_no_location_behind() {
    let sites: Vec<crate::replication::Site> = LOCS
        .iter()
        .map(|n| crate::replication::Site {
            name: n.to_string(),
            backend: Arc::new(trireme_common::backend::MemoryBackend::new()),
            pacer: None,
        })
        .collect();
    let incomplete = CopyState::Incomplete {
        at: at(1),
        reason: "1 object(s) it needs are at no location".into(),
    };
    let mut s = snap(1, "h/db", 0);
    for l in LOCS {
        s.copies.insert(l.to_string(), incomplete.clone());
    }
    let here: BTreeSet<Id> = [Id([1; 32])].into();
    let listed: Vec<std::result::Result<BTreeSet<Id>, String>> =
        vec![Ok(here.clone()), Ok(here.clone()), Ok(here.clone())];
    let none = BTreeSet::new();
    assert_eq!(
        behind(
            "loc1",
            &here,
            std::slice::from_ref(&s),
            &none,
            &listed,
            &sites
        ),
        None
    );
    // Verified somewhere: the others lag behind it.
    s.copies
        .insert("loc2".into(), CopyState::Verified { at: at(1) });
    let why = behind("loc1", &here, &[s], &none, &listed, &sites).unwrap();
    assert!(why.contains("incomplete: 1 object(s)"), "{why}");
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

// ---- prune() in process: three file:// locations, a real replicator ----

mod across_locations {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use trireme_common::backend::FileBackend;
    use trireme_common::replicate::list_all;
    use trireme_common::{
        Backend, BackupInput, BackupOptions, ChunkerParams, DynBackend, ListedObject, LocalKeyFile,
        ObjectMeta, RestoreOptions,
    };

    use super::*;
    use crate::replication::{ReplicationSettings, Site};

    /// A file backend whose deletes can be made to fail (an outage).
    #[derive(Debug)]
    struct Flaky {
        inner: FileBackend,
        fail_deletes: AtomicBool,
    }

    #[async_trait]
    impl Backend for Flaky {
        fn location(&self) -> &str {
            self.inner.location()
        }
        async fn put(&self, k: &ObjectKey, d: Bytes, s: [u8; 32]) -> trireme_common::Result<()> {
            self.inner.put(k, d, s).await
        }
        async fn get(&self, k: &ObjectKey) -> trireme_common::Result<Bytes> {
            self.inner.get(k).await
        }
        async fn get_range(&self, k: &ObjectKey, o: u64, l: u64) -> trireme_common::Result<Bytes> {
            self.inner.get_range(k, o, l).await
        }
        async fn head(&self, k: &ObjectKey) -> trireme_common::Result<Option<ObjectMeta>> {
            self.inner.head(k).await
        }
        async fn list(&self, kind: ObjectKind) -> trireme_common::Result<Vec<ListedObject>> {
            self.inner.list(kind).await
        }
        async fn delete(&self, k: &ObjectKey) -> trireme_common::Result<()> {
            if self.fail_deletes.load(Ordering::SeqCst) {
                return Err(trireme_common::Error::Storage {
                    location: self.location().into(),
                    key: k.path(),
                    message: "connection reset by peer".into(),
                    temporary: true,
                });
            }
            self.inner.delete(k).await
        }
    }

    fn write_data(dir: &Path, seed: u64) {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("base"), vec![7u8; 100_000]).unwrap();
        std::fs::write(
            dir.join(format!("only-{seed}")),
            trireme_testkit::noise(seed, 200_000),
        )
        .unwrap();
    }

    async fn snapshot_names(b: &DynBackend) -> BTreeSet<String> {
        b.list(ObjectKind::Snapshot)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.name)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_location_failing_part_way_is_finished_later_and_nothing_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
        let flaky = Arc::new(Flaky {
            inner: FileBackend::new(dir.path().join("loc2")),
            fail_deletes: AtomicBool::new(false),
        });
        let backends: Vec<DynBackend> = vec![
            Arc::new(FileBackend::new(dir.path().join("loc1"))),
            flaky.clone(),
            Arc::new(FileBackend::new(dir.path().join("loc3"))),
        ];
        let repo = Arc::new(
            Repository::init(backends[0].clone(), key.clone(), ChunkerParams::default())
                .await
                .unwrap(),
        );
        let c = Catalog::open(dir.path().join("catalog")).unwrap();
        let sites = LOCS
            .iter()
            .zip(&backends)
            .map(|(n, b)| Site {
                name: n.to_string(),
                backend: b.clone(),
                pacer: None,
            })
            .collect();
        let rep = Replicator::new(
            c.clone(),
            sites,
            ReplicationSettings::default(),
            key.clone(),
        )
        .believing_every_index_object();
        let file = parse_policy_file("p.toml", KEEP_ONE).unwrap();
        apply_policy_file(&c, &file, "test", at(0)).unwrap();

        let src = dir.path().join("src");
        let mut ids = Vec::new();
        for seed in 1..=3u64 {
            write_data(&src, seed);
            let s = repo
                .load_index()
                .await
                .unwrap()
                .backup(
                    BackupInput::Tree(src.clone()),
                    BackupOptions::new("db", "volume", "h"),
                )
                .await
                .unwrap();
            c.record_snapshot(&SnapshotRecord {
                id: s.id,
                source: "h/db".parse().unwrap(),
                agent: "h".into(),
                time: at(seed as u32),
                size: 1,
                summary: s.manifest.summary.clone(),
                job: None,
                copies: BTreeMap::new(),
                position: BTreeMap::new(),
                depends_on: Vec::new(),
            })
            .unwrap();
            ids.push(s.id);
        }
        rep.pass(at(5)).await.unwrap();
        assert!(c
            .snapshots()
            .values()
            .unwrap()
            .iter()
            .all(|s| verified_copies(s) == 3));

        // loc2 fails every delete: loc1 and loc3 are pruned, loc2 not.
        flaky.fail_deletes.store(true, Ordering::SeqCst);
        let keys: DynKeyProvider = key.clone();
        let o = prune(
            &c,
            &rep,
            keys.clone(),
            &PruneTrust::everything(),
            &PruneRequest::default(),
            at(6),
        )
        .await
        .unwrap();
        assert_eq!(o.removed.len(), 2);
        assert!(o.locations[1]
            .error
            .as_deref()
            .unwrap()
            .contains("connection reset"));
        assert!(o.locations[0].error.is_none() && o.locations[2].error.is_none());
        let newest: BTreeSet<String> = [ids[2].to_hex()].into();
        assert_eq!(snapshot_names(&backends[0]).await, newest);
        assert_eq!(snapshot_names(&backends[2]).await, newest);
        assert_eq!(snapshot_names(&backends[1]).await.len(), 3);
        // The catalog forgot them; loc2 is remembered.
        assert_eq!(c.snapshots().keys().unwrap(), vec![ids[2]]);
        for id in &ids[..2] {
            let p = c.pruning().get(id).unwrap().unwrap();
            assert_eq!(p.locations, BTreeSet::from(["loc2".to_string()]));
        }
        assert!(!c.tombstones().keys().unwrap().is_empty());
        // A prune of another source meanwhile: loc2's leftovers of h/db do
        // not make loc1 and loc3 look behind, and are left for later.
        let other = PruneRequest {
            dry_run: false,
            source: Some("h/other".parse().unwrap()),
        };
        let o = prune(
            &c,
            &rep,
            keys.clone(),
            &PruneTrust::everything(),
            &other,
            at(6),
        )
        .await
        .unwrap();
        assert!(
            o.locations
                .iter()
                .all(|l| l.skipped.is_none() && l.error.is_none()),
            "{o:?}"
        );
        assert_eq!(snapshot_names(&backends[1]).await.len(), 3);
        assert_eq!(c.pruning().keys().unwrap().len(), 2);

        // Replication does not bring the pruned objects back from loc2.
        rep.pass(at(7)).await.unwrap();
        assert_eq!(snapshot_names(&backends[0]).await, newest);
        let l1 = list_all(&backends[0]).await.unwrap();
        assert_eq!(l1, list_all(&backends[2]).await.unwrap());

        // loc2 works again: the next prune finishes it.
        flaky.fail_deletes.store(false, Ordering::SeqCst);
        let o = prune(
            &c,
            &rep,
            keys.clone(),
            &PruneTrust::everything(),
            &PruneRequest::default(),
            at(8),
        )
        .await
        .unwrap();
        assert!(o.removed.is_empty());
        assert!(
            o.locations
                .iter()
                .all(|l| l.skipped.is_none() && l.error.is_none()),
            "{o:?}"
        );
        assert_eq!(o.locations[1].snapshots_removed.len(), 2);
        assert!(c.pruning().keys().unwrap().is_empty());
        assert!(
            c.tombstones().keys().unwrap().is_empty(),
            "no location holds them"
        );
        for b in &backends {
            assert_eq!(list_all(b).await.unwrap(), l1, "{}", b.location());
        }
        // The kept snapshot restores from loc2 alone.
        let r2 = Arc::new(Repository::open(backends[1].clone(), keys).await.unwrap());
        let out = dir.path().join("restore");
        let snap = r2.read_snapshot(&ids[2]).await.unwrap();
        r2.load_index()
            .await
            .unwrap()
            .restore_to_dir(&snap, &out, &RestoreOptions::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read(out.join("only-3")).unwrap(),
            std::fs::read(src.join("only-3")).unwrap()
        );
    }
}
