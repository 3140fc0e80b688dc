//! End-to-end tests of the repository engine on a real `file://` location:
//! round trips, metadata, dedup, incremental change, corruption and wrong keys.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trireme_common::backend::FileBackend;
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, DynBackend, Error, IndexedRepo, LocalKeyFile,
    ObjectKind, Repository, RestoreOptions, Snapshot,
};

/// Small chunks and packs, so small test data crosses many boundaries.
pub const SMALL: ChunkerParams = ChunkerParams {
    min: 4 * 1024,
    avg: 16 * 1024,
    max: 64 * 1024,
};

struct Fixture {
    dir: tempfile::TempDir,
    backend: DynBackend,
    repo: Arc<Repository>,
}

impl Fixture {
    async fn new(params: ChunkerParams) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = LocalKeyFile::create(&dir.path().join("key")).unwrap();
        let backend: DynBackend = Arc::new(FileBackend::new(dir.path().join("repo")));
        let repo = Repository::init(backend.clone(), Arc::new(key), params)
            .await
            .unwrap();
        Fixture {
            dir,
            backend,
            repo: Arc::new(repo),
        }
    }

    fn repo_path(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    async fn indexed(&self) -> IndexedRepo {
        self.repo.load_index().await.unwrap()
    }

    fn opts(&self, source: &str) -> BackupOptions {
        let mut o = BackupOptions::new(source, "volume", "test-host");
        o.pack_size = 256 * 1024;
        o
    }

    async fn backup_dir(&self, src: &Path, parent: Option<&Snapshot>) -> Snapshot {
        let mut o = self.opts("src");
        o.parent = parent.map(|p| p.id);
        self.indexed()
            .await
            .backup(BackupInput::Tree(src.to_path_buf()), o)
            .await
            .unwrap()
    }

    async fn restore(&self, snap: &Snapshot) -> Result<PathBuf, Error> {
        let out = self.dir.path().join(format!("restore-{}", snap.id.short()));
        let _ = std::fs::remove_dir_all(&out);
        self.indexed()
            .await
            .restore_to_dir(snap, &out, &RestoreOptions::default())
            .await?;
        Ok(out)
    }

    async fn count(&self, kind: ObjectKind) -> usize {
        self.backend.list(kind).await.unwrap().len()
    }
}

/// Deterministic pseudo-random bytes (xorshift), compressible when `text`.
fn data(seed: u64, len: usize, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            v.extend_from_slice(format!("line {} value {}\n", x % 1000, x % 7).as_bytes());
        } else {
            v.extend_from_slice(&x.to_le_bytes());
        }
    }
    v.truncate(len);
    v
}

/// Everything a restore must reproduce, keyed by relative path.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let m = e.path().symlink_metadata().unwrap();
        let what = if m.file_type().is_symlink() {
            format!("link {}", std::fs::read_link(e.path()).unwrap().display())
        } else if m.is_dir() {
            format!("dir {:o} {}", m.mode() & 0o7777, m.mtime())
        } else {
            let bytes = std::fs::read(e.path()).unwrap();
            format!(
                "file {:o} {}.{} {} {}",
                m.mode() & 0o7777,
                m.mtime(),
                m.mtime_nsec(),
                bytes.len(),
                blake3::hash(&bytes)
            )
        };
        out.insert(rel, what);
    }
    out
}

fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 123_456_789);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tree_round_trip_keeps_data_and_metadata() {
    let f = Fixture::new(SMALL).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(src.join("a/b/c")).unwrap();
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();
    let sizes = [
        0usize, 1, 4095, 4096, 4097, 65535, 65536, 65537, 300_000, 1_000_003,
    ];
    for (i, n) in sizes.iter().enumerate() {
        std::fs::write(src.join(format!("a/f{i}")), data(i as u64, *n, i % 2 == 0)).unwrap();
    }
    std::fs::write(src.join("a/b/c/deep.txt"), b"deep").unwrap();
    std::fs::write(src.join("a/b/exec.sh"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("a/b/exec.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::set_permissions(src.join("a/f1"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(src.join("a/b/c"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("f1", src.join("a/link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", src.join("dangling")).unwrap();
    std::fs::write(src.join("name with spaces & ünïcode"), b"x").unwrap();
    for (i, e) in walkdir::WalkDir::new(&src)
        .contents_first(true)
        .into_iter()
        .enumerate()
    {
        set_mtime(e.unwrap().path(), 1_600_000_000 + i as i64 * 1000);
    }

    let snap = f.backup_dir(&src, None).await;
    assert_eq!(snap.manifest.summary.files, sizes.len() as u64 + 3);
    assert_eq!(snap.manifest.summary.errors, 0);
    let out = f.restore(&snap).await.unwrap();
    assert_eq!(describe(&src), describe(&out));
    let report = f.repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.packs > 1, "small packs: several of them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_round_trip() {
    let f = Fixture::new(SMALL).await;
    let input = data(7, 3_000_001, false);
    let snap = f
        .indexed()
        .await
        .backup(
            BackupInput::Stream {
                name: "dump.sql".into(),
                reader: Box::new(std::io::Cursor::new(input.clone())),
            },
            f.opts("db"),
        )
        .await
        .unwrap();
    assert_eq!(snap.manifest.summary.bytes, input.len() as u64);
    let (w, buf) = shared_buf();
    let n = f.indexed().await.restore_stream(&snap, w).await.unwrap();
    assert_eq!(n, input.len() as u64);
    assert!(buf.lock().unwrap().as_slice() == input.as_slice());
    // A stream snapshot restores to a directory as one file too.
    let out = f.restore(&snap).await.unwrap();
    assert_eq!(std::fs::read(out.join("dump.sql")).unwrap(), input);
}

fn shared_buf() -> (SharedWriter, Arc<std::sync::Mutex<Vec<u8>>>) {
    let b = Arc::new(std::sync::Mutex::new(Vec::new()));
    (SharedWriter(b.clone()), b)
}

struct SharedWriter(Arc<std::sync::Mutex<Vec<u8>>>);
impl std::io::Write for SharedWriter {
    fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(d);
        Ok(d.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_data_twice_uploads_no_new_packs() {
    let f = Fixture::new(SMALL).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..5 {
        std::fs::write(src.join(format!("f{i}")), data(i, 200_000, i % 2 == 0)).unwrap();
    }
    let first = f.backup_dir(&src, None).await;
    let packs = f.count(ObjectKind::Pack).await;
    // Without a parent every file is read again, and still nothing is new.
    let second = f.backup_dir(&src, None).await;
    assert_eq!(second.manifest.summary.new_chunks, 0);
    assert_eq!(second.manifest.summary.packs, 0);
    assert_eq!(second.manifest.summary.bytes_read, 1_000_000);
    assert_eq!(f.count(ObjectKind::Pack).await, packs);
    // With the parent, unchanged files are not even read.
    let third = f.backup_dir(&src, Some(&second)).await;
    assert_eq!(third.manifest.summary.files_unchanged, 5);
    assert_eq!(third.manifest.summary.bytes_read, 0);
    assert_eq!(f.count(ObjectKind::Pack).await, packs);
    assert_eq!(f.count(ObjectKind::Snapshot).await, 3);
    assert_eq!(describe(&f.restore(&third).await.unwrap()), describe(&src));
    let _ = first;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_after_small_change_uploads_little_more_than_the_change() {
    let f = Fixture::new(SMALL).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..10 {
        std::fs::write(src.join(format!("f{i}")), data(i, 2_000_000, false)).unwrap();
    }
    let first = f.backup_dir(&src, None).await;
    // Change ~5%: rewrite 1 MB in the middle of one file (same size, new mtime).
    let mut v = std::fs::read(src.join("f3")).unwrap();
    v[500_000..1_500_000].copy_from_slice(&data(99, 1_000_000, false));
    std::fs::write(src.join("f3"), &v).unwrap();
    let second = f.backup_dir(&src, Some(&first)).await;
    let s = &second.manifest.summary;
    assert_eq!(s.files_unchanged, 9);
    assert_eq!(s.bytes_read, 2_000_000, "only the changed file is read");
    assert!(s.new_bytes >= 1_000_000, "{s:?}");
    assert!(
        s.new_bytes <= 1_000_000 + 2 * SMALL.max as u64,
        "new data {} should be the change plus at most two boundary chunks",
        s.new_bytes
    );
    assert_eq!(describe(&f.restore(&second).await.unwrap()), describe(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_and_large_files_round_trip() {
    let f = Fixture::new(ChunkerParams::default()).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let sparse = std::fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(64 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"header", 0).unwrap();
    sparse
        .write_all_at(&data(3, 1 << 20, false), 40 * 1024 * 1024)
        .unwrap();
    drop(sparse);
    std::fs::write(src.join("large.bin"), data(4, 40 * 1024 * 1024 + 17, false)).unwrap();
    let snap = f.backup_dir(&src, None).await;
    let out = f.restore(&snap).await.unwrap();
    assert_eq!(describe(&src), describe(&out));
    // Zero runs come back as holes, not written blocks.
    let blocks = std::fs::metadata(out.join("sparse.img")).unwrap().blocks() * 512;
    assert!(
        blocks < 16 * 1024 * 1024,
        "restored sparse file uses {blocks} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_small_files() {
    let f = Fixture::new(ChunkerParams::default()).await;
    let src = f.dir.path().join("src");
    for d in 0..100 {
        let dir = src.join(format!("d{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..1000 {
            std::fs::write(dir.join(format!("{i}")), format!("file {d}/{i}\n")).unwrap();
        }
    }
    let snap = f.backup_dir(&src, None).await;
    assert_eq!(snap.manifest.summary.files, 100_000);
    let again = f.backup_dir(&src, Some(&snap)).await;
    assert_eq!(again.manifest.summary.files_unchanged, 100_000);
    assert_eq!(again.manifest.summary.packs, 0);
    let out = f.restore(&again).await.unwrap();
    assert_eq!(describe(&src), describe(&out));
}

fn flip_byte(path: &Path, at: usize) {
    let mut v = std::fs::read(path).unwrap();
    let i = at.min(v.len() - 1);
    v[i] ^= 0x01;
    std::fs::write(path, v).unwrap();
}

fn objects(dir: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .filter(|p| p.is_file())
        .collect()
}

async fn corrupted_fixture() -> (Fixture, PathBuf, Snapshot) {
    let f = Fixture::new(SMALL).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), data(1, 600_000, false)).unwrap();
    let snap = f.backup_dir(&src, None).await;
    (f, src, snap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_anywhere_is_caught_and_named() {
    for kind in ["packs", "index", "snapshots"] {
        // Flip a byte at several places: start (magic), middle, end (trailer / tag).
        for at in [0usize, 7, 50, 5000, usize::MAX] {
            let (f, _src, snap) = corrupted_fixture().await;
            let victim = objects(&f.repo_path().join(kind)).pop().unwrap();
            let name = victim.file_name().unwrap().to_string_lossy().into_owned();
            flip_byte(&victim, at);
            let report = f.repo.check(true).await.unwrap();
            assert!(
                report.problems.iter().any(|p| p.contains(&name)),
                "{kind} byte {at}: deep check must name {name}: {:?}",
                report.problems
            );
            // Restore fails, naming the damaged object.
            let err = match f.repo.load_index().await {
                Err(e) => e,
                Ok(ix) => {
                    let out = f.dir.path().join("out");
                    match f.repo.read_snapshot(&snap.id).await {
                        Err(e) => e,
                        Ok(s) => ix
                            .restore_to_dir(&s, &out, &RestoreOptions::default())
                            .await
                            .expect_err("restore of damaged data must fail"),
                    }
                }
            };
            assert!(err.to_string().contains(&name), "{kind} byte {at}: {err}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_truncated_packs_are_reported() {
    let (f, _src, snap) = corrupted_fixture().await;
    let mut packs = objects(&f.repo_path().join("packs"));
    packs.sort();
    assert!(packs.len() >= 2, "need two packs");
    let missing = packs[0].clone();
    let truncated = packs[1].clone();
    std::fs::remove_file(&missing).unwrap();
    let v = std::fs::read(&truncated).unwrap();
    std::fs::write(&truncated, &v[..v.len() / 2]).unwrap();
    let report = f.repo.check(false).await.unwrap();
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&name(&missing)) && p.contains("missing")),
        "{:?}",
        report.problems
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&name(&truncated)) && p.contains("size")),
        "{:?}",
        report.problems
    );
    let err = f.restore(&snap).await.unwrap_err().to_string();
    assert!(
        err.contains(&name(&missing)) || err.contains(&name(&truncated)),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_clear_error() {
    let (f, _src, _snap) = corrupted_fixture().await;
    let other = LocalKeyFile::create(&f.dir.path().join("other-key")).unwrap();
    let err = Repository::open(f.backend.clone(), Arc::new(other))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::WrongKey(_)), "{err}");
    assert!(err.to_string().starts_with("wrong key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_repository_and_existing_repository_errors() {
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKeyFile::create(&dir.path().join("k")).unwrap());
    let backend: DynBackend = Arc::new(FileBackend::new(dir.path().join("none")));
    let err = Repository::open(backend.clone(), key.clone())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no Trireme repository"), "{err}");
    Repository::init(backend.clone(), key.clone(), SMALL)
        .await
        .unwrap();
    let err = Repository::init(backend, key, SMALL).await.unwrap_err();
    assert!(matches!(err, Error::RepositoryExists(_)), "{err}");
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn contents() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(Vec::new()),
            any::<u8>().prop_map(|b| vec![b]),
            (0usize..200_000, any::<u64>(), any::<bool>()).prop_map(|(n, s, t)| data(s, n, t)),
            // Exact chunker boundaries.
            prop::sample::select(vec![
                SMALL.min as usize,
                SMALL.avg as usize,
                SMALL.max as usize,
                SMALL.max as usize + 1
            ])
            .prop_map(|n| data(5, n, false)),
            (1usize..100_000).prop_map(|n| vec![0u8; n]),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
        #[test]
        fn any_files_round_trip(files in prop::collection::vec(contents(), 1..6)) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async {
                let f = Fixture::new(SMALL).await;
                let src = f.dir.path().join("src");
                std::fs::create_dir_all(&src).unwrap();
                for (i, c) in files.iter().enumerate() {
                    std::fs::write(src.join(format!("f{i}")), c).unwrap();
                }
                let snap = f.backup_dir(&src, None).await;
                let out = f.restore(&snap).await.unwrap();
                prop_assert_eq!(describe(&src), describe(&out));
                // And as a stream of the concatenation.
                let all: Vec<u8> = files.concat();
                let s = f.indexed().await.backup(
                    BackupInput::Stream { name: "s".into(), reader: Box::new(std::io::Cursor::new(all.clone())) },
                    f.opts("s"),
                ).await.unwrap();
                let (w, buf) = shared_buf();
                f.indexed().await.restore_stream(&s, w).await.unwrap();
                prop_assert!(*buf.lock().unwrap() == all);
                Ok(())
            })?;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_paths_are_left_out_and_late_positions_recorded() {
    let f = Fixture::new(SMALL).await;
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(src.join("keep/skipdir/deeper")).unwrap();
    std::fs::write(src.join("keep/a.log"), b"kept").unwrap();
    std::fs::write(src.join("keep/b.active"), b"left out").unwrap();
    std::fs::write(src.join("keep/skipdir/deeper/x"), b"left out").unwrap();
    let mut o = f.opts("src");
    o.exclude = Some(trireme_common::PathFilter(Arc::new(|p: &Path| {
        p.extension().is_some_and(|e| e == "active") || p.ends_with("skipdir")
    })));
    let late: trireme_common::LatePosition = Arc::default();
    o.late_position = Some(late.clone());
    o.position.insert("early".into(), "1".into());
    // Filled "while reading": before backup() returns, as a dump tool's exit would.
    late.lock().unwrap().insert("late".into(), "2".into());
    let snap = f
        .indexed()
        .await
        .backup(BackupInput::Tree(src.clone()), o)
        .await
        .unwrap();
    assert_eq!(snap.manifest.summary.files, 1);
    assert_eq!(
        snap.manifest.position.get("early").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        snap.manifest.position.get("late").map(String::as_str),
        Some("2")
    );
    let out = f.restore(&snap).await.unwrap();
    assert_eq!(std::fs::read(out.join("keep/a.log")).unwrap(), b"kept");
    assert!(!out.join("keep/b.active").exists());
    assert!(!out.join("keep/skipdir").exists());
}

/// A stream whose producer fails after some output (a dump tool exiting
/// non-zero) fails the backup and writes no snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_stream_leaves_no_snapshot() {
    struct Failing(usize);
    impl std::io::Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("pg_dump exited with status 1: boom"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }
    let f = Fixture::new(SMALL).await;
    let err = f
        .indexed()
        .await
        .backup(
            BackupInput::Stream {
                name: "db.dump".into(),
                reader: Box::new(Failing(2_000_000)),
            },
            f.opts("db"),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("pg_dump exited with status 1: boom"),
        "{err}"
    );
    assert_eq!(f.count(ObjectKind::Snapshot).await, 0);
}

/// Keys known up front and nothing else: what an agent holds for one job.
#[derive(Debug)]
struct GrantedOnly(std::collections::HashMap<trireme_common::WrappedKey, [u8; 32]>);

#[async_trait::async_trait]
impl trireme_common::KeyProvider for GrantedOnly {
    async fn generate(
        &self,
    ) -> trireme_common::Result<(trireme_common::crypto::DataKey, trireme_common::WrappedKey)> {
        Err(Error::Key("read-only".into()))
    }
    async fn unwrap(
        &self,
        w: &trireme_common::WrappedKey,
    ) -> trireme_common::Result<trireme_common::crypto::DataKey> {
        self.0
            .get(w)
            .map(|k| trireme_common::crypto::DataKey::from_bytes(*k))
            .ok_or_else(|| Error::Key("outside the scope".into()))
    }
    async fn wrap(
        &self,
        _: &trireme_common::crypto::DataKey,
    ) -> trireme_common::Result<trireme_common::WrappedKey> {
        Err(Error::Key("read-only".into()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_scope_is_enough_and_excludes_other_snapshots() {
    use trireme_common::scope::{believe_all, KeyedIndex};
    let f = Fixture::new(SMALL).await;
    let a = f.dir.path().join("a");
    let b = f.dir.path().join("b");
    for (dir, seed) in [(&a, 1), (&b, 2)] {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("one"), data(seed, 300_000, false)).unwrap();
        std::fs::write(dir.join("sub/two"), data(seed + 10, 200_000, true)).unwrap();
    }
    let s1 = f.backup_dir(&a, None).await;
    let s2 = f.backup_dir(&b, None).await;
    let first = KeyedIndex::load(&f.repo).await.unwrap();
    let scope = first.restore_scope(&s1.id, &|_| true).await.unwrap();
    let key1 = f.repo.snapshot_key(&s1.id).await.unwrap();
    let key2 = f.repo.snapshot_key(&s2.id).await.unwrap();
    assert!(scope.contains(&key1));
    assert!(!scope.contains(&key2), "another snapshot's data key");
    assert_eq!(scope.snapshots, vec![s1.id]);

    // An agent with exactly these keys restores s1 byte for byte.
    let mut granted = std::collections::HashMap::new();
    for w in &scope.keys {
        let k = f.repo.keys().unwrap(w).await.unwrap();
        granted.insert(w.clone(), *k.as_bytes());
    }
    let agent = Arc::new(
        Repository::open(f.backend.clone(), Arc::new(GrantedOnly(granted)))
            .await
            .unwrap(),
    );
    let indexed = agent.load_index_scoped(&scope.keys).await.unwrap();
    let snap = agent.read_snapshot(&s1.id).await.unwrap();
    let out = f.dir.path().join("restored");
    indexed
        .restore_to_dir(&snap, &out, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(describe(&a), describe(&out));
    // ... and cannot read the other one.
    let e = agent.read_snapshot(&s2.id).await.unwrap_err();
    assert!(e.to_string().contains("outside the scope"), "{e}");

    // A backup's scope holds index keys but no pack (data) key.
    let backup = first.backup_scope(None).await.unwrap();
    assert!(!backup.contains(&key1) && !backup.contains(&key2));
    let indexed = f.indexed().await;
    for p in indexed.index.packs() {
        assert!(!backup.contains(&p.key), "pack {} key granted", p.id);
    }
    assert!(backup.keys.len() > 1, "index keys and the id key");

    // A refresh reads only the index objects written since: the old ones
    // are reused (here one is damaged on disk after the first load, and
    // only a full load trips over it).
    let old = f.backend.list(ObjectKind::Index).await.unwrap()[0]
        .key
        .clone();
    std::fs::write(a.join("three"), data(3, 100_000, false)).unwrap();
    let s3 = f.backup_dir(&a, Some(&s1)).await;
    let path = f.repo_path().join(old.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let refreshed = KeyedIndex::refresh(&f.repo, Some(&first), &believe_all)
        .await
        .unwrap();
    assert!(refreshed.objects() > first.objects());
    let scope3 = refreshed.restore_scope(&s3.id, &|_| true).await.unwrap();
    assert!(scope3.contains(&f.repo.snapshot_key(&s3.id).await.unwrap()));
    // A full load reads it: it cannot be opened, so it is not believed and
    // is reported; a reader that requires it (the controller, for an object
    // it recorded) gets an error naming it.
    let full = KeyedIndex::load(&f.repo).await.unwrap();
    assert_eq!(full.unreadable(), vec![old.name.clone()]);
    assert!(!full.believed_names().contains(&old.name));
    let err = KeyedIndex::refresh(&f.repo, None, &|_, _| true)
        .await
        .err()
        .expect("a required object that cannot be opened");
    assert!(err.to_string().contains(&old.name), "{err}");
}

// ------------------------------------------------------------ restore safety

/// A backend that runs `hook` before every read, to change the file system
/// while a restore runs.
struct Hooked {
    inner: DynBackend,
    hook: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

#[async_trait::async_trait]
impl trireme_common::Backend for Hooked {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(
        &self,
        key: &trireme_common::ObjectKey,
        data: bytes::Bytes,
        sha256: [u8; 32],
    ) -> trireme_common::Result<()> {
        self.inner.put(key, data, sha256).await
    }
    async fn get(&self, key: &trireme_common::ObjectKey) -> trireme_common::Result<bytes::Bytes> {
        (self.hook)();
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &trireme_common::ObjectKey,
        offset: u64,
        length: u64,
    ) -> trireme_common::Result<bytes::Bytes> {
        (self.hook)();
        self.inner.get_range(key, offset, length).await
    }
    async fn head(
        &self,
        key: &trireme_common::ObjectKey,
    ) -> trireme_common::Result<Option<trireme_common::ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(
        &self,
        kind: ObjectKind,
    ) -> trireme_common::Result<Vec<trireme_common::ListedObject>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, key: &trireme_common::ObjectKey) -> trireme_common::Result<()> {
        self.inner.delete(key).await
    }
}

/// A snapshot of `src/sub/data.bin` (300 kB over several packs) and
/// `src/top.txt`, and the data file's bytes.
async fn small_tree(f: &Fixture) -> (PathBuf, Snapshot, Vec<u8>) {
    let src = f.dir.path().join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let payload = data(1, 300_000, false);
    std::fs::write(src.join("sub/data.bin"), &payload).unwrap();
    std::fs::write(src.join("top.txt"), b"top").unwrap();
    let snap = f.backup_dir(&src, None).await;
    (src, snap, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_at_the_restore_target_is_refused_and_never_followed() {
    let f = Fixture::new(SMALL).await;
    let (_src, snap, _) = small_tree(&f).await;
    let restore = |target: PathBuf| {
        let f = &f;
        let snap = snap.clone();
        async move {
            f.indexed()
                .await
                .restore_to_dir(&snap, &target, &RestoreOptions::default())
                .await
                .unwrap_err()
        }
    };
    // A link to an empty directory: following it would restore there.
    let empty = f.dir.path().join("empty-victim");
    std::fs::create_dir_all(&empty).unwrap();
    let link = f.dir.path().join("link");
    std::os::unix::fs::symlink(&empty, &link).unwrap();
    let err = restore(link.clone()).await;
    let msg = err.to_string();
    assert!(matches!(err, Error::RestoreTarget { .. }), "{msg}");
    assert!(
        msg.contains(&link.display().to_string()) && msg.contains("symbolic link"),
        "{msg}"
    );
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0, "{msg}");
    // A dangling link: its target is not created.
    let nowhere = f.dir.path().join("nowhere");
    let dangling = f.dir.path().join("dangling");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    let msg = restore(dangling.clone()).await.to_string();
    assert!(msg.contains("symbolic link"), "{msg}");
    assert!(!nowhere.exists() && dangling.symlink_metadata().is_ok());
    // A file where the directory should be.
    let file = f.dir.path().join("a-file");
    std::fs::write(&file, b"keep").unwrap();
    let msg = restore(file.clone()).await.to_string();
    assert!(msg.contains("not a directory"), "{msg}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep");
}

/// A directory of the restore (one inside it, then the target itself)
/// swapped for a symlink to another directory between creating its files
/// and writing them: nothing is written through the link (the victim keeps
/// its bytes, modes and times), the data lands in the file the restore
/// created, and the restore fails naming the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_swapped_for_a_symlink_mid_restore_is_never_written_through() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = Fixture::new(SMALL).await;
    let (_src, snap, payload) = small_tree(&f).await;
    let key = LocalKeyFile::load(&f.dir.path().join("key")).unwrap();
    let key = Arc::new(key);
    // (name, directory swapped, where the victim's file sits in it)
    for (case, swap, victim_sub) in [("inside", "sub", ""), ("target", "", "sub")] {
        let out = f.dir.path().join(format!("out-{case}"));
        let victim = f.dir.path().join(format!("victim-{case}"));
        std::fs::create_dir_all(victim.join(victim_sub)).unwrap();
        std::fs::write(
            victim.join(victim_sub).join("data.bin"),
            vec![0xAA; 300_000],
        )
        .unwrap();
        set_mtime(&victim.join(victim_sub).join("data.bin"), 1_500_000_000);
        let before = describe(&victim);
        let at = if swap.is_empty() {
            out.clone()
        } else {
            out.join(swap)
        };
        let moved = at.with_extension("moved");
        let swapped = Arc::new(AtomicBool::new(false));
        let hook = {
            let (out, at, moved, victim, swapped) = (
                out.clone(),
                at.clone(),
                moved.clone(),
                victim.clone(),
                swapped.clone(),
            );
            move || {
                // Once the restore has created sub/data.bin, before its data.
                if out.join("sub/data.bin").exists()
                    && swapped
                        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                        .is_ok()
                {
                    std::fs::rename(&at, &moved).unwrap();
                    std::os::unix::fs::symlink(&victim, &at).unwrap();
                }
            }
        };
        let hooked: DynBackend = Arc::new(Hooked {
            inner: f.backend.clone(),
            hook: Box::new(hook),
        });
        let repo = Arc::new(Repository::open(hooked, key.clone()).await.unwrap());
        let err = repo
            .load_index()
            .await
            .unwrap()
            .restore_to_dir(&snap, &out, &RestoreOptions::default())
            .await
            .unwrap_err();
        assert!(
            swapped.load(Ordering::SeqCst),
            "{case}: swapped mid-restore"
        );
        let msg = err.to_string();
        assert!(matches!(err, Error::RestoreTarget { .. }), "{case}: {msg}");
        assert!(
            msg.contains(&format!("{}: ", at.display())) && msg.contains("symbolic link"),
            "{case}: {msg}"
        );
        assert_eq!(describe(&victim), before, "{case}: the victim is unchanged");
        let written = if swap.is_empty() {
            moved.join("sub/data.bin")
        } else {
            moved.join("data.bin")
        };
        assert_eq!(
            std::fs::read(written).unwrap(),
            payload,
            "{case}: written through the descriptor the restore created"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_removes_what_the_restore_created_and_nothing_else() {
    use trireme_common::RestoreLedger;
    let f = Fixture::new(SMALL).await;
    let (src, _, _) = small_tree(&f).await;
    // A read-only directory with a file, and a symlink, too.
    std::fs::create_dir_all(src.join("ro")).unwrap();
    std::fs::write(src.join("ro/inside"), b"x").unwrap();
    std::fs::set_permissions(src.join("ro"), std::fs::Permissions::from_mode(0o555)).unwrap();
    std::os::unix::fs::symlink("top.txt", src.join("link")).unwrap();
    let snap = f.backup_dir(&src, None).await;
    let restore = |target: PathBuf, ledger: Arc<RestoreLedger>| {
        let f = &f;
        let snap = snap.clone();
        async move {
            let opts = RestoreOptions {
                ledger: Some(ledger),
                ..RestoreOptions::default()
            };
            f.indexed()
                .await
                .restore_to_dir(&snap, &target, &opts)
                .await
        }
    };

    // Into an existing empty directory (a staging mount point, say).
    let staging = f.dir.path().join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o750)).unwrap();
    let ledger = Arc::new(RestoreLedger::default());
    restore(staging.clone(), ledger.clone()).await.unwrap();
    assert_eq!(describe(&src), describe(&staging));
    // Someone else writes into the restored tree meanwhile.
    std::fs::write(staging.join("sub/theirs.txt"), b"theirs").unwrap();
    std::fs::write(staging.join("theirs-too.txt"), b"theirs too").unwrap();
    let removed = ledger.remove().unwrap();
    assert_eq!(
        (removed.files, removed.dirs),
        (4, 1),
        "sub/data.bin, top.txt, link, ro/inside; ro (sub holds theirs): {removed:?}"
    );
    let left: Vec<String> = describe(&staging).into_keys().collect();
    assert_eq!(left, ["", "sub", "sub/theirs.txt", "theirs-too.txt"]);
    assert_eq!(
        std::fs::read(staging.join("sub/theirs.txt")).unwrap(),
        b"theirs"
    );
    assert_eq!(
        std::fs::metadata(&staging).unwrap().mode() & 0o7777,
        0o750,
        "the staging directory gets its mode back"
    );
    assert!(removed.kept.contains(&staging.join("sub/theirs.txt")));
    // Closed: it refuses to record a new restore.
    let again = f.dir.path().join("again");
    let e = restore(again.clone(), ledger).await.unwrap_err();
    assert!(e.to_string().contains("the restore was stopped"), "{e}");
    assert!(!again.exists());

    // Into a new directory whose parents are new too: all of it goes.
    let fresh = Arc::new(RestoreLedger::default());
    let deep = f.dir.path().join("new/deeper/target");
    restore(deep.clone(), fresh.clone()).await.unwrap();
    fresh.remove().unwrap();
    assert!(!f.dir.path().join("new").exists());
}
