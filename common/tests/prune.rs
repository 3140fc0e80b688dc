//! The prune engine on real `file://` repositories: what goes and what
//! stays, the crash-safe order of its writes and deletes, interrupted
//! prunes, locked objects, dry runs, and identical replacement indexes at
//! several locations.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use trireme_common::backend::FileBackend;
use trireme_common::prune::{self, IndexSealer};
use trireme_common::{
    Backend, BackupInput, BackupOptions, ChunkerParams, DynBackend, Error, Id, ListedObject,
    LocalKeyFile, ObjectKey, ObjectKind, ObjectMeta, Repository, RestoreOptions, Snapshot,
};
use trireme_testkit::{noise, tree};

const SMALL: ChunkerParams = ChunkerParams {
    min: 4 * 1024,
    avg: 16 * 1024,
    max: 64 * 1024,
};

/// A backend that records every put and delete, refuses deletes of chosen
/// objects as S3 Object Lock does (AccessDenied), and can fail the first
/// delete of one kind (a crash or an outage in the middle of a prune).
#[derive(Debug)]
struct Spy {
    inner: DynBackend,
    log: Mutex<Vec<(&'static str, ObjectKey)>>,
    locked: Mutex<HashSet<ObjectKey>>,
    fail_kind: Mutex<Option<ObjectKind>>,
}

impl Spy {
    fn new(inner: DynBackend) -> Arc<Self> {
        Arc::new(Spy {
            inner,
            log: Mutex::default(),
            locked: Mutex::default(),
            fail_kind: Mutex::default(),
        })
    }
    fn log(&self) -> Vec<(&'static str, ObjectKey)> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait]
impl Backend for Spy {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(
        &self,
        key: &ObjectKey,
        data: Bytes,
        sha256: [u8; 32],
    ) -> trireme_common::Result<()> {
        self.log.lock().unwrap().push(("put", key.clone()));
        self.inner.put(key, data, sha256).await
    }
    async fn get(&self, key: &ObjectKey) -> trireme_common::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &ObjectKey, o: u64, l: u64) -> trireme_common::Result<Bytes> {
        self.inner.get_range(key, o, l).await
    }
    async fn head(&self, key: &ObjectKey) -> trireme_common::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(&self, kind: ObjectKind) -> trireme_common::Result<Vec<ListedObject>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, key: &ObjectKey) -> trireme_common::Result<()> {
        if self.locked.lock().unwrap().contains(key) {
            return Err(Error::Storage {
                location: self.location().into(),
                key: key.path(),
                message:
                    "HTTP 403 AccessDenied: Access Denied because object protected by object lock"
                        .into(),
                temporary: false,
            });
        }
        if self
            .fail_kind
            .lock()
            .unwrap()
            .take_if(|k| *k == key.kind)
            .is_some()
        {
            return Err(Error::Storage {
                location: self.location().into(),
                key: key.path(),
                message: "connection reset (simulated crash)".into(),
                temporary: true,
            });
        }
        self.log.lock().unwrap().push(("delete", key.clone()));
        self.inner.delete(key).await
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    key: Arc<LocalKeyFile>,
    spy: Arc<Spy>,
    repo: Arc<Repository>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
        let file: DynBackend = Arc::new(FileBackend::new(dir.path().join("repo")));
        let spy = Spy::new(file);
        let repo = Repository::init(spy.clone(), key.clone(), SMALL)
            .await
            .unwrap();
        Fixture {
            dir,
            key,
            spy,
            repo: Arc::new(repo),
        }
    }

    /// The same repository through a fresh backend (as after a restart).
    async fn reopen(&self, root: &Path) -> Arc<Repository> {
        let b: DynBackend = Arc::new(FileBackend::new(root.to_path_buf()));
        Arc::new(Repository::open(b, self.key.clone()).await.unwrap())
    }

    async fn backup(&self, src: &Path) -> Snapshot {
        let mut o = BackupOptions::new("src", "volume", "test-host");
        o.pack_size = 64 * 1024;
        self.repo
            .load_index()
            .await
            .unwrap()
            .backup(BackupInput::Tree(src.to_path_buf()), o)
            .await
            .unwrap()
    }
}

fn files(dir: &Path, spec: &[(&str, u64)]) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, seed) in spec {
        std::fs::write(dir.join(name), noise(*seed, 300_000)).unwrap();
    }
}

/// Restore `snap` from `repo` and compare with `want`.
async fn assert_restores(
    repo: &Arc<Repository>,
    snap: &Id,
    want: &BTreeMap<PathBuf, Vec<u8>>,
    out: &Path,
) {
    let _ = std::fs::remove_dir_all(out);
    let indexed = repo.load_index().await.unwrap();
    assert!(indexed.damaged.is_empty());
    let s = repo.read_snapshot(snap).await.unwrap();
    indexed
        .restore_to_dir(&s, out, &RestoreOptions::default())
        .await
        .unwrap();
    assert!(
        &tree(out) == want,
        "snapshot {} restores differently",
        snap.short()
    );
}

async fn names(repo: &Repository, kind: ObjectKind) -> BTreeSet<String> {
    repo.backend()
        .list(kind)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key.name)
        .collect()
}

/// Three snapshots: A = {x, y}, B = {y, z}, C = {z}. Chunks of y are shared
/// by A and B; those of z by B and C.
async fn three(f: &Fixture) -> ([Snapshot; 3], [BTreeMap<PathBuf, Vec<u8>>; 3]) {
    let src = f.dir.path().join("src");
    files(&src, &[("x", 1), ("y", 2)]);
    let a = f.backup(&src).await;
    let wa = tree(&src);
    files(&src, &[("y", 2), ("z", 3)]);
    let b = f.backup(&src).await;
    let wb = tree(&src);
    files(&src, &[("z", 3)]);
    let c = f.backup(&src).await;
    let wc = tree(&src);
    ([a, b, c], [wa, wb, wc])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_keeps_shared_packs_and_kept_snapshots_restore() {
    let f = Fixture::new().await;
    let ([a, b, c], [_, wb, wc]) = three(&f).await;
    let indexed = f.repo.load_index().await.unwrap();
    // Packs holding a chunk of y (shared with B) must survive removing A.
    let src = f.dir.path().join("y-only");
    files(&src, &[("y", 2)]);
    let y_chunks: HashSet<Id> = {
        let s = f.backup(&src).await; // dedups completely: no new pack
        let mut ids = HashSet::new();
        let idx = f.repo.load_index().await.unwrap();
        let handle = tokio::runtime::Handle::current();
        let tree = s.manifest.tree.clone();
        let entries = tokio::task::spawn_blocking(move || {
            let mut r =
                trireme_common::manifest::EntryReader::new(idx.chunk_reader(handle, tree), "t");
            let mut out = Vec::new();
            while let Some(e) = r.next_entry().unwrap() {
                out.extend(e.chunks);
            }
            out
        })
        .await
        .unwrap();
        ids.extend(entries);
        // That helper snapshot goes too, with A.
        let remove = BTreeSet::from([a.id, s.id]);
        let plan = prune::plan(&f.repo, &remove).await.unwrap();
        assert_eq!(plan.remove.len(), 2);
        assert_eq!(plan.kept, {
            let mut v = vec![b.id, c.id];
            v.sort();
            v
        });
        assert!(!plan.delete_packs.is_empty(), "x's packs can go");
        for (pack, _) in &plan.delete_packs {
            let listed = indexed
                .index
                .iter()
                .filter(|(p, _)| p.id == *pack)
                .map(|(_, e)| e.id)
                .collect::<Vec<_>>();
            assert!(
                listed.iter().all(|c| !ids.contains(c)),
                "a pack with a chunk of y (kept by B) is planned for deletion"
            );
        }
        let report = prune::execute(&f.repo, plan.clone(), &IndexSealer::new())
            .await
            .unwrap();
        assert_eq!(report.snapshots_removed.len(), 2);
        assert_eq!(report.packs_deleted as usize, plan.delete_packs.len());
        assert!(report.bytes_freed >= plan.pack_bytes());
        assert!(report.locked.is_empty());
        ids
    };
    // Every chunk of y is still indexed and its pack is there.
    let after = f.repo.load_index().await.unwrap();
    let packs = names(&f.repo, ObjectKind::Pack).await;
    for c in &y_chunks {
        let (p, _) = after.index.get(c).expect("y's chunk still indexed");
        assert!(packs.contains(&p.id.to_hex()), "y's pack still stored");
    }
    let snaps = names(&f.repo, ObjectKind::Snapshot).await;
    assert_eq!(snaps, BTreeSet::from([b.id.to_hex(), c.id.to_hex()]));
    assert_restores(&f.repo, &b.id, &wb, &f.dir.path().join("rb")).await;
    assert_restores(&f.repo, &c.id, &wc, &f.dir.path().join("rc")).await;
    // The repository checks clean, with no pack left unlisted.
    let check = f.repo.check(true).await.unwrap();
    assert!(check.is_ok(), "{:?}", check.problems);
    assert!(
        check.unreferenced_packs.is_empty(),
        "{:?}",
        check.unreferenced_packs
    );
    // Pruning again with nothing to remove changes nothing.
    let again = prune::plan(&f.repo, &BTreeSet::new()).await.unwrap();
    assert!(again.delete_packs.is_empty() && again.replace_index.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_happen_in_crash_safe_order_and_dry_run_touches_nothing() {
    let f = Fixture::new().await;
    let ([a, b, _c], [_, wb, _]) = three(&f).await;
    let root = f.dir.path().join("repo");
    let before = tree(&root);
    f.spy.log.lock().unwrap().clear();
    let plan = prune::plan(&f.repo, &BTreeSet::from([a.id])).await.unwrap();
    assert!(!plan.delete_packs.is_empty() && !plan.replace_index.is_empty());
    // Planning is the dry run: nothing written, nothing deleted.
    assert!(f.spy.log().is_empty(), "{:?}", f.spy.log());
    assert!(tree(&root) == before);

    f.spy.log.lock().unwrap().clear();
    let report = prune::execute(&f.repo, plan, &IndexSealer::new())
        .await
        .unwrap();
    let log = f.spy.log();
    let pos = |pred: &dyn Fn(&(&str, ObjectKey)) -> bool| -> Vec<usize> {
        log.iter()
            .enumerate()
            .filter(|(_, e)| pred(e))
            .map(|(i, _)| i)
            .collect()
    };
    let snap_del = pos(&|(op, k)| *op == "delete" && k.kind == ObjectKind::Snapshot);
    let index_put = pos(&|(op, k)| *op == "put" && k.kind == ObjectKind::Index);
    let index_del = pos(&|(op, k)| *op == "delete" && k.kind == ObjectKind::Index);
    let pack_del = pos(&|(op, k)| *op == "delete" && k.kind == ObjectKind::Pack);
    assert_eq!(snap_del.len(), 1);
    assert!(!index_del.is_empty() && !pack_del.is_empty(), "{log:?}");
    let last = |v: &[usize]| *v.iter().max().unwrap();
    let first = |v: &[usize]| *v.iter().min().unwrap();
    assert!(
        last(&snap_del) < first(&index_del),
        "manifests go before index objects: {log:?}"
    );
    if let Some(put) = index_put.first() {
        assert!(
            last(&snap_del) < *put && *put < first(&index_del),
            "the new index is written before any old one is deleted: {log:?}"
        );
        assert!(report.index_written.is_some());
    }
    assert!(
        last(&index_del) < first(&pack_del),
        "index objects go before packs: {log:?}"
    );
    assert_restores(&f.repo, &b.id, &wb, &f.dir.path().join("rb")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_prune_leaves_a_readable_repository_and_can_be_redone() {
    for stop_at in [ObjectKind::Index, ObjectKind::Pack] {
        let f = Fixture::new().await;
        let ([a, b, c], [_, wb, wc]) = three(&f).await;
        *f.spy.fail_kind.lock().unwrap() = Some(stop_at);
        let plan = prune::plan(&f.repo, &BTreeSet::from([a.id])).await.unwrap();
        let err = prune::execute(&f.repo, plan, &IndexSealer::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("simulated crash"), "{err}");
        // After the "crash": a fresh reader sees a sound repository.
        let root = f.dir.path().join("repo");
        let repo = f.reopen(&root).await;
        let check = repo.check(false).await.unwrap();
        assert!(
            check.is_ok(),
            "stopped at {stop_at:?}: {:?}",
            check.problems
        );
        assert_restores(&repo, &b.id, &wb, &f.dir.path().join("rb")).await;
        assert_restores(&repo, &c.id, &wc, &f.dir.path().join("rc")).await;
        // A new backup still deduplicates only against chunks that exist.
        let src = f.dir.path().join("src2");
        files(&src, &[("y", 2), ("w", 9)]);
        let mut o = BackupOptions::new("src", "volume", "test-host");
        o.pack_size = 64 * 1024;
        let d = repo
            .load_index()
            .await
            .unwrap()
            .backup(BackupInput::Tree(src.clone()), o)
            .await
            .unwrap();
        assert_restores(&repo, &d.id, &tree(&src), &f.dir.path().join("rd")).await;
        // Pruning again finishes the job.
        let plan = prune::plan(&repo, &BTreeSet::from([a.id])).await.unwrap();
        prune::execute(&repo, plan, &IndexSealer::new())
            .await
            .unwrap();
        let check = repo.check(true).await.unwrap();
        assert!(check.is_ok(), "{:?}", check.problems);
        assert_restores(&repo, &b.id, &wb, &f.dir.path().join("rb2")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locked_objects_are_kept_and_keep_their_data() {
    let f = Fixture::new().await;
    let ([a, b, _], [wa, wb, _]) = three(&f).await;
    let manifest = ObjectKey::new(ObjectKind::Snapshot, a.id.to_hex());
    f.spy.locked.lock().unwrap().insert(manifest.clone());
    let plan = prune::plan(&f.repo, &BTreeSet::from([a.id])).await.unwrap();
    assert!(!plan.delete_packs.is_empty());
    let report = prune::execute(&f.repo, plan, &IndexSealer::new())
        .await
        .unwrap();
    assert_eq!(report.locked, vec![manifest]);
    assert_eq!(report.locked_snapshots, vec![a.id]);
    assert!(report.snapshots_removed.is_empty());
    assert_eq!(
        report.packs_deleted, 0,
        "A's data stays while its manifest is locked"
    );
    assert_restores(&f.repo, &a.id, &wa, &f.dir.path().join("ra")).await;
    assert_restores(&f.repo, &b.id, &wb, &f.dir.path().join("rb")).await;
    assert!(prune::is_locked_refusal(&Error::Storage {
        location: "s3://b".into(),
        key: "k".into(),
        message: "HTTP 403 AccessDenied: Access Denied".into(),
        temporary: false,
    }));
    assert!(!prune::is_locked_refusal(&Error::Storage {
        location: "s3://b".into(),
        key: "k".into(),
        message: "HTTP 503 SlowDown".into(),
        temporary: true,
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_locations_get_the_same_replacement_index() {
    let f = Fixture::new().await;
    let ([a, b, c], [_, wb, wc]) = three(&f).await;
    let root = f.dir.path().join("repo");
    let copy = f.dir.path().join("repo2");
    for (rel, bytes) in tree(&root) {
        let p = copy.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    let r1 = f.reopen(&root).await;
    let r2 = f.reopen(&copy).await;
    let sealer = IndexSealer::new();
    let remove = BTreeSet::from([a.id]);
    let p1 = prune::plan(&r1, &remove).await.unwrap();
    let p2 = prune::plan(&r2, &remove).await.unwrap();
    let x1 = prune::execute(&r1, p1, &sealer).await.unwrap();
    let x2 = prune::execute(&r2, p2, &sealer).await.unwrap();
    assert!(x1.index_written.is_some());
    assert_eq!(x1.index_written, x2.index_written);
    assert!(
        tree(&root) == tree(&copy),
        "both locations hold the same objects"
    );
    for r in [&r1, &r2] {
        assert_restores(r, &b.id, &wb, &f.dir.path().join("rb")).await;
        assert_restores(r, &c.id, &wc, &f.dir.path().join("rc")).await;
    }
}
