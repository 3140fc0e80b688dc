//! A replicator over three in-memory locations (they keep S3-style stored
//! checksums): a snapshot's copy is verified only where its manifest and
//! every pack it references are present and checked.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::TimeZone;
use trireme_common::backend::MemoryBackend;
use trireme_common::replicate::list_all;
use trireme_common::{
    Backend, BackupInput, BackupOptions, ChunkerParams, ListedObject, LocalKeyFile, ObjectMeta,
    Snapshot, Summary,
};

use super::*;
use crate::snapshots::SnapshotRecord;

const LOCS: [&str; 3] = ["loc1", "loc2", "loc3"];

fn at(m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, m, 0).unwrap()
}

/// A memory backend that can be made unreachable.
#[derive(Debug, Default)]
struct Switch {
    inner: MemoryBackend,
    down: AtomicBool,
}

impl Switch {
    fn check(&self) -> trireme_common::Result<()> {
        if self.down.load(Ordering::SeqCst) {
            return Err(trireme_common::Error::Storage {
                location: "memory://".into(),
                key: String::new(),
                message: "connection refused".into(),
                temporary: true,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl Backend for Switch {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(&self, k: &ObjectKey, d: Bytes, s: [u8; 32]) -> trireme_common::Result<()> {
        self.check()?;
        self.inner.put(k, d, s).await
    }
    async fn get(&self, k: &ObjectKey) -> trireme_common::Result<Bytes> {
        self.check()?;
        self.inner.get(k).await
    }
    async fn get_range(&self, k: &ObjectKey, o: u64, l: u64) -> trireme_common::Result<Bytes> {
        self.check()?;
        self.inner.get_range(k, o, l).await
    }
    async fn head(&self, k: &ObjectKey) -> trireme_common::Result<Option<ObjectMeta>> {
        self.check()?;
        self.inner.head(k).await
    }
    async fn list(&self, kind: ObjectKind) -> trireme_common::Result<Vec<ListedObject>> {
        self.check()?;
        self.inner.list(kind).await
    }
    async fn delete(&self, k: &ObjectKey) -> trireme_common::Result<()> {
        self.check()?;
        self.inner.delete(k).await
    }
}

struct World {
    dir: tempfile::TempDir,
    locs: Vec<Arc<Switch>>,
    repo: Arc<Repository>,
    catalog: Catalog,
    rep: Replicator,
}

impl World {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
        let locs: Vec<Arc<Switch>> = (0..3).map(|_| Arc::new(Switch::default())).collect();
        let primary: DynBackend = locs[0].clone();
        let repo = Arc::new(
            Repository::init(primary, key.clone(), ChunkerParams::default())
                .await
                .unwrap(),
        );
        let catalog = Catalog::open(dir.path().join("catalog")).unwrap();
        let sites = LOCS
            .iter()
            .zip(&locs)
            .map(|(n, b)| Site {
                name: n.to_string(),
                backend: b.clone(),
                pacer: None,
            })
            .collect();
        let rep = Replicator::new(catalog.clone(), sites, ReplicationSettings::default(), key)
            .believing_every_index_object();
        World {
            dir,
            locs,
            repo,
            catalog,
            rep,
        }
    }

    /// Back up new data (only this snapshot holds it) at the primary and
    /// record it; the snapshot and the packs it added.
    async fn backup(&self, seed: u64) -> (Snapshot, Vec<ObjectKey>) {
        let primary: DynBackend = self.locs[0].clone();
        let before = list_all(&primary).await.unwrap();
        let src = self.dir.path().join(format!("src-{seed}"));
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("data"), trireme_testkit::noise(seed, 1_500_000)).unwrap();
        let s = self
            .repo
            .load_index()
            .await
            .unwrap()
            .backup(
                BackupInput::Tree(src),
                BackupOptions::new("db", "volume", "h"),
            )
            .await
            .unwrap();
        self.catalog
            .record_snapshot(&SnapshotRecord {
                id: s.id,
                source: "h/db".parse().unwrap(),
                agent: "h".into(),
                time: at(seed as u32),
                size: 1,
                summary: Summary::default(),
                job: None,
                copies: BTreeMap::from([(
                    "loc1".to_string(),
                    CopyState::Copied {
                        at: at(seed as u32),
                    },
                )]),
                position: BTreeMap::new(),
                depends_on: Vec::new(),
            })
            .unwrap();
        let added = list_all(&primary)
            .await
            .unwrap()
            .into_keys()
            .filter(|k| k.kind == ObjectKind::Pack && !before.contains_key(k))
            .collect();
        (s, added)
    }

    fn copies(&self, id: &Id) -> BTreeMap<String, CopyState> {
        self.catalog.snapshots().get(id).unwrap().unwrap().copies
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_gone_before_replication_leaves_the_snapshot_unverified_everywhere() {
    let w = World::new().await;
    let (good, _) = w.backup(1).await;
    let (broken, added) = w.backup(2).await;
    assert!(!added.is_empty());
    // A pack only the second snapshot uses is deleted at the primary before
    // any copy was made: no location holds it.
    let gone = &added[0];
    w.locs[0].inner.delete(gone).await.unwrap();

    w.rep.pass(at(10)).await.unwrap();
    for loc in LOCS {
        assert!(
            matches!(w.copies(&good.id)[loc], CopyState::Verified { .. }),
            "{loc}: {:?}",
            w.copies(&good.id)
        );
        match &w.copies(&broken.id)[loc] {
            CopyState::Incomplete { reason, .. } => {
                assert!(reason.contains(&gone.name), "{loc}: {reason}");
            }
            other => panic!("{loc}: {other:?}"),
        }
    }
    // Everything else was copied: the locations hold the same objects.
    let l1 = list_all(&(w.locs[0].clone() as DynBackend)).await.unwrap();
    for b in &w.locs[1..] {
        assert_eq!(list_all(&(b.clone() as DynBackend)).await.unwrap(), l1);
    }
    // Reported once per location: an incident and an audit entry.
    let states = w.rep.states();
    for loc in LOCS {
        let incidents = &states[loc].incidents;
        assert!(
            incidents
                .iter()
                .any(|i| i.contains("is incomplete") && i.contains(&gone.name)),
            "{loc}: {incidents:?}"
        );
    }
    let audited = |w: &World| {
        w.catalog
            .audit()
            .entries()
            .values()
            .unwrap()
            .into_iter()
            .filter(|e| e.action == "copy incomplete")
            .count()
    };
    assert_eq!(audited(&w), 3);
    // Later passes do not make it verified, nor report it again.
    w.rep.pass(at(11)).await.unwrap();
    assert!(w
        .copies(&broken.id)
        .values()
        .all(|c| matches!(c, CopyState::Incomplete { .. })));
    assert_eq!(audited(&w), 3);
    assert_eq!(
        verified_copies(&w.catalog.snapshots().get(&broken.id).unwrap().unwrap()),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_are_not_verified_where_the_snapshot_is_not_yet() {
    let w = World::new().await;
    let (first, _) = w.backup(1).await;
    w.rep.pass(at(10)).await.unwrap();
    assert_eq!(
        verified_copies(&w.catalog.snapshots().get(&first.id).unwrap().unwrap()),
        3
    );

    // The primary, the only location holding the new snapshot, cannot be
    // reached: the others hold nothing of it, and are not called verified.
    let (second, _) = w.backup(2).await;
    w.locs[0].down.store(true, Ordering::SeqCst);
    w.rep.pass(at(11)).await.unwrap();
    let c = w.copies(&second.id);
    assert!(
        c.values().all(|s| !matches!(s, CopyState::Verified { .. })),
        "{c:?}"
    );
    // Back: copied and verified everywhere.
    w.locs[0].down.store(false, Ordering::SeqCst);
    w.rep.pass(at(12)).await.unwrap();
    let c = w.copies(&second.id);
    assert!(
        c.values().all(|s| matches!(s, CopyState::Verified { .. })) && c.len() == 3,
        "{c:?}"
    );
}
