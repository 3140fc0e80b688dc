use std::collections::BTreeMap;
use std::sync::Arc;

use trireme_common::backend::FileBackend;
use trireme_common::{DynBackend, LocalKeyFile};

use super::*;
use crate::prune::tests::{at, snap, LOCS};
use crate::replication::{ReplicationSettings, Site};

/// A TiDB incremental resting on snapshot `previous`.
fn incremental(n: u8, source: &str, previous: u8) -> SnapshotRecord {
    let mut s = snap(n, source, 3);
    s.position = BTreeMap::from([(
        "tidb.previous_snapshot".to_string(),
        Id([previous; 32]).to_hex(),
    )]);
    s.derive_dependencies();
    s
}

fn catalog() -> (tempfile::TempDir, Catalog) {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    (dir, c)
}

#[test]
fn a_hold_expires_at_its_until_and_needs_a_reason_and_a_future_end() {
    let (_d, c) = catalog();
    c.record_snapshot(&snap(1, "h/db", 3)).unwrap();
    let id = Id([1; 32]);
    let e = hold(&c, &id, "  ", None, "op", at(5)).unwrap_err();
    assert!(e.to_string().contains("needs a reason"), "{e}");
    let e = hold(&c, &id, "case 7", Some(at(5)), "op", at(5)).unwrap_err();
    assert!(e.to_string().contains("in the future"), "{e}");
    let e = hold(&c, &Id([9; 32]), "case 7", None, "op", at(5)).unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");

    let m = hold(&c, &id, "case 7", Some(at(10)), "op", at(5)).unwrap();
    let h = m.hold.unwrap();
    assert!(h.active(at(9)));
    assert!(!h.active(at(10)), "a hold ends at its until");
    assert_eq!(c.active_holds(at(9)).unwrap().len(), 1);
    assert!(c.active_holds(at(10)).unwrap().is_empty());
    // The expired hold is still shown (inactive) until lifted.
    assert!(c.marks_of(&id).unwrap().hold.is_some());
    assert!(c.marks_of(&id).unwrap().active_hold(at(11)).is_none());

    // Survives reopening the catalog (controller state in sled).
    let path = c.path().to_path_buf();
    drop(c);
    let c = Catalog::open(&path).unwrap();
    assert_eq!(c.active_holds(at(9)).unwrap()[&id].reason, "case 7");

    let lifted = unhold(&c, &id).unwrap();
    assert_eq!(lifted.by, "op");
    assert!(c.marks_of(&id).unwrap().hold.is_none());
    let e = unhold(&c, &id).unwrap_err();
    assert!(e.to_string().contains("is not held"), "{e}");
}

#[test]
fn tags_are_checked_added_and_removed() {
    let (_d, c) = catalog();
    c.record_snapshot(&snap(1, "h/db", 3)).unwrap();
    let id = Id([1; 32]);
    assert!(tag(&c, &id, &["bad tag".into()], &[]).is_err());
    assert!(tag(&c, &id, &[], &[]).is_err());
    let m = tag(&c, &id, &["a".into(), "b".into()], &[]).unwrap();
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), ["a", "b"]);
    let m = tag(&c, &id, &["c".into()], &["a".into()]).unwrap();
    assert_eq!(m.tags.iter().collect::<Vec<_>>(), ["b", "c"]);
    let m = tag(&c, &id, &[], &["b".into(), "c".into()]).unwrap();
    assert!(m.tags.is_empty());
    assert!(
        c.marks().get(&id).unwrap().is_none(),
        "empty marks are dropped"
    );
}

const KEEP_ONE: &str = "[[policy]]\nsource = \"h/db\"\nschedule = \"@daily\"\nretention = \"one\"\n[retention.one]\nkeep_last = 1\n";

#[test]
fn prune_keeps_a_held_snapshot_and_its_chain_until_the_hold_expires() {
    let (_d, c) = catalog();
    let file = crate::policy::parse_policy_file("p.toml", KEEP_ONE).unwrap();
    crate::policy::apply_policy_file(&c, &file, "test", at(0)).unwrap();
    // 1: a full backup; 2: an incremental on it; 3: another full; 4: newest.
    for s in [
        snap(1, "h/db", 3),
        incremental(2, "h/db", 1),
        snap(3, "h/db", 3),
        snap(4, "h/db", 3),
    ] {
        c.record_snapshot(&s).unwrap();
    }
    let ids = |v: &[crate::prune::Verdict]| v.iter().map(|v| v.id.0[0]).collect::<Vec<_>>();

    // Without a hold, 1 to 3 go.
    let (removed, _, _) = crate::prune::decide(&c, None, 3, at(12)).unwrap();
    assert_eq!(ids(&removed), [1, 2, 3]);

    hold(&c, &Id([2; 32]), "case 7", Some(at(20)), "op", at(5)).unwrap();
    let (removed, kept, _) = crate::prune::decide(&c, None, 3, at(12)).unwrap();
    assert_eq!(ids(&removed), [3], "{kept:?}");
    let two = kept.iter().find(|v| v.id == Id([2; 32])).unwrap();
    assert!(two.held);
    assert!(two.reason.starts_with("held by op"), "{}", two.reason);
    assert!(two.reason.contains("case 7"), "{}", two.reason);
    let one = kept.iter().find(|v| v.id == Id([1; 32])).unwrap();
    assert!(!one.held);
    assert_eq!(one.needed_by.as_ref().unwrap().snapshot, Id([2; 32]));

    // A hold on a snapshot a rule keeps anyway says so too.
    hold(&c, &Id([4; 32]), "audit", None, "op", at(5)).unwrap();
    let (_, kept, _) = crate::prune::decide(&c, None, 3, at(12)).unwrap();
    let four = kept.iter().find(|v| v.id == Id([4; 32])).unwrap();
    assert!(four.held && four.reason.contains("newest") && four.reason.contains("held by op"));

    // Once expired, the hold keeps nothing.
    let (removed, _, _) = crate::prune::decide(&c, None, 3, at(21)).unwrap();
    assert_eq!(ids(&removed), [1, 2, 3]);
}

#[test]
fn forget_is_refused_for_held_needed_and_last_verified_snapshots() {
    let (_d, c) = catalog();
    // 1: full; 2: incremental on 1; 3: verified everywhere; 4: at one
    // location; 5 (newest): nowhere; 6: old, verified nowhere.
    for s in [
        snap(1, "h/db", 3),
        incremental(2, "h/db", 1),
        snap(3, "h/db", 3),
        snap(4, "h/db", 1),
        snap(5, "h/db", 0),
    ] {
        c.record_snapshot(&s).unwrap();
    }
    let refusal = |n: u8, now| {
        let s = c.snapshots().get(&Id([n; 32])).unwrap().unwrap();
        forget_refusal(&c, &s, 3, now).unwrap()
    };
    let why = refusal(1, at(12)).unwrap();
    assert!(why.contains("needs it to restore (tidb chain)"), "{why}");
    let why = refusal(3, at(12)).unwrap();
    assert!(why.contains("verified at every location"), "{why}");
    let why = refusal(4, at(12)).unwrap();
    assert!(why.contains("verified at any location"), "{why}");
    assert_eq!(refusal(2, at(12)), None);
    assert_eq!(refusal(5, at(12)), None);

    hold(&c, &Id([2; 32]), "case 7", Some(at(20)), "op", at(5)).unwrap();
    let why = refusal(2, at(12)).unwrap();
    assert!(
        why.contains("held by op") && why.contains("unhold"),
        "{why}"
    );
    assert_eq!(refusal(2, at(20)), None, "an expired hold refuses nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_deletes_the_manifest_everywhere_and_the_record_and_tombstones_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    let backends: Vec<DynBackend> = LOCS
        .iter()
        .map(|l| Arc::new(FileBackend::new(dir.path().join(l))) as DynBackend)
        .collect();
    let sites = LOCS
        .iter()
        .zip(&backends)
        .map(|(n, b)| Site {
            name: n.to_string(),
            backend: b.clone(),
            pacer: None,
        })
        .collect();
    let rep = Replicator::new(c.clone(), sites, ReplicationSettings::default(), key);
    for s in [snap(1, "h/db", 3), snap(2, "h/db", 3), snap(3, "h/db", 3)] {
        c.record_snapshot(&s).unwrap();
        for l in LOCS {
            let d = dir.path().join(l).join("snapshots");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(s.id.to_hex()), b"manifest").unwrap();
        }
    }
    tag(&c, &Id([2; 32]), &["x".into()], &[]).unwrap();
    let on_disk = |n: u8| {
        LOCS.iter()
            .filter(|l| {
                dir.path()
                    .join(l)
                    .join("snapshots")
                    .join(Id([n; 32]).to_hex())
                    .exists()
            })
            .count()
    };

    // Held: refused, nothing deleted.
    hold(&c, &Id([2; 32]), "case 7", None, "op", at(5)).unwrap();
    let e = forget(&c, &rep, &Id([2; 32]), at(12)).await.unwrap_err();
    assert!(e.to_string().contains("held by op"), "{e}");
    assert_eq!(on_disk(2), 3);
    // The newest verified: refused.
    let e = forget(&c, &rep, &Id([3; 32]), at(12)).await.unwrap_err();
    assert!(e.to_string().contains("verified at every location"), "{e}");
    assert_eq!(on_disk(3), 3);

    unhold(&c, &Id([2; 32])).unwrap();
    let done = forget(&c, &rep, &Id([2; 32]), at(12)).await.unwrap();
    assert_eq!(done.removed_at, LOCS);
    assert!(done.pending.is_empty());
    assert_eq!(on_disk(2), 0);
    assert_eq!(on_disk(1), 3, "only the one snapshot goes");
    assert!(c.snapshots().get(&Id([2; 32])).unwrap().is_none());
    assert!(c.marks().get(&Id([2; 32])).unwrap().is_none());
    let key = ObjectKey::new(ObjectKind::Snapshot, Id([2; 32]).to_hex());
    assert!(c.tombstones().get(&key.path()).unwrap().is_some());
    assert!(c.pruning().get(&Id([2; 32])).unwrap().is_none());
    assert!(backends[0].head(&key).await.unwrap().is_none());
}

/// A file backend that refuses every delete (an outage).
#[derive(Debug)]
struct NoDeletes(FileBackend);

#[async_trait::async_trait]
impl trireme_common::Backend for NoDeletes {
    fn location(&self) -> &str {
        self.0.location()
    }
    async fn put(&self, k: &ObjectKey, d: bytes::Bytes, s: [u8; 32]) -> trireme_common::Result<()> {
        self.0.put(k, d, s).await
    }
    async fn get(&self, k: &ObjectKey) -> trireme_common::Result<bytes::Bytes> {
        self.0.get(k).await
    }
    async fn get_range(
        &self,
        k: &ObjectKey,
        o: u64,
        l: u64,
    ) -> trireme_common::Result<bytes::Bytes> {
        self.0.get_range(k, o, l).await
    }
    async fn head(
        &self,
        k: &ObjectKey,
    ) -> trireme_common::Result<Option<trireme_common::ObjectMeta>> {
        self.0.head(k).await
    }
    async fn list(
        &self,
        kind: ObjectKind,
    ) -> trireme_common::Result<Vec<trireme_common::ListedObject>> {
        self.0.list(kind).await
    }
    async fn delete(&self, k: &ObjectKey) -> trireme_common::Result<()> {
        Err(trireme_common::Error::Storage {
            location: self.location().into(),
            key: k.path(),
            message: "connection reset by peer".into(),
            temporary: true,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_location_that_refuses_the_delete_is_left_to_the_next_prune() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
    let c = Catalog::open(dir.path().join("catalog")).unwrap();
    let backends: Vec<DynBackend> = vec![
        Arc::new(FileBackend::new(dir.path().join("loc1"))),
        Arc::new(NoDeletes(FileBackend::new(dir.path().join("loc2")))),
        Arc::new(FileBackend::new(dir.path().join("loc3"))),
    ];
    let sites = LOCS
        .iter()
        .zip(&backends)
        .map(|(n, b)| Site {
            name: n.to_string(),
            backend: b.clone(),
            pacer: None,
        })
        .collect();
    let rep = Replicator::new(c.clone(), sites, ReplicationSettings::default(), key);
    for s in [snap(1, "h/db", 3), snap(2, "h/db", 3)] {
        c.record_snapshot(&s).unwrap();
        for l in LOCS {
            let d = dir.path().join(l).join("snapshots");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join(s.id.to_hex()), b"manifest").unwrap();
        }
    }
    let done = forget(&c, &rep, &Id([1; 32]), at(12)).await.unwrap();
    assert_eq!(done.removed_at, ["loc1", "loc3"]);
    assert_eq!(done.pending.len(), 1);
    assert_eq!(done.pending[0].0, "loc2");
    assert!(
        done.pending[0].1.contains("connection reset"),
        "{:?}",
        done.pending
    );
    let name = Id([1; 32]).to_hex();
    assert!(dir.path().join("loc2/snapshots").join(&name).exists());
    assert!(!dir.path().join("loc1/snapshots").join(&name).exists());
    // The catalog forgets it; the prune table remembers where it still is,
    // and the tombstone keeps replication from copying it back.
    assert!(c.snapshots().get(&Id([1; 32])).unwrap().is_none());
    let pending = c.pruning().get(&Id([1; 32])).unwrap().unwrap();
    assert_eq!(pending.locations.iter().collect::<Vec<_>>(), ["loc2"]);
    let key = ObjectKey::new(ObjectKind::Snapshot, name);
    assert!(c.tombstones().get(&key.path()).unwrap().is_some());
}
