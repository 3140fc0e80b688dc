//! The repository engine against a real S3 server (Garage, started by the
//! test): round trips, dedup, and damage at the location caught and named.

use std::sync::Arc;

use bytes::Bytes;
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, DynBackend, LocalKeyFile, Location, ObjectKey,
    ObjectKind, Repository, RestoreOptions,
};
use trireme_testkit::garage::Garage;
use trireme_testkit::{noise, tree};

/// One Garage for the whole scenario (starting one costs seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_on_garage() {
    let garage = Garage::start(1);
    let dir = tempfile::tempdir().unwrap();
    let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
    let location = Location::parse(&garage.location_url(1, "engine")).unwrap();
    let backend: DynBackend = location.open().await.unwrap();
    let params = ChunkerParams {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };
    let repo = Arc::new(
        Repository::init(backend.clone(), key.clone(), params)
            .await
            .unwrap(),
    );

    // A tree with empty, tiny, boundary-sized and multi-pack files.
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    std::fs::create_dir_all(src.join("d")).unwrap();
    for (i, n) in [0usize, 1, 16 * 1024, 256 * 1024, 256 * 1024 + 1, 3_000_000]
        .iter()
        .enumerate()
    {
        std::fs::write(src.join(format!("d/f{i}")), noise(i as u64 + 1, *n)).unwrap();
    }
    std::os::unix::fs::symlink("d/f1", src.join("link")).unwrap();
    let mut opts = BackupOptions::new("vol", "volume", "host-a");
    opts.pack_size = 1024 * 1024;
    let ix = repo.load_index().await.unwrap();
    let snap = ix
        .backup(BackupInput::Tree(src.clone()), opts.clone())
        .await
        .unwrap();
    assert!(
        snap.manifest.summary.packs >= 3,
        "{:?}",
        snap.manifest.summary
    );

    let out = dir.path().join("out");
    repo.load_index()
        .await
        .unwrap()
        .restore_to_dir(&snap, &out, &RestoreOptions::default())
        .await
        .unwrap();
    assert_eq!(tree(&src), tree(&out));
    assert_eq!(
        std::fs::read_link(out.join("link")).unwrap().to_str(),
        Some("d/f1")
    );

    // Stored checksums come back from HEAD and match the names.
    for o in backend.list(ObjectKind::Pack).await.unwrap() {
        let meta = backend.head(&o.key).await.unwrap().unwrap();
        assert_eq!(meta.sha256.map(hex::encode), Some(o.key.name.clone()));
    }
    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);

    // Same data again, from another host, without a parent: nothing uploaded.
    let packs_before = backend.list(ObjectKind::Pack).await.unwrap().len();
    let mut opts_b = opts.clone();
    opts_b.host = "host-b".into();
    let again = repo
        .load_index()
        .await
        .unwrap()
        .backup(BackupInput::Tree(src.clone()), opts_b)
        .await
        .unwrap();
    assert_eq!(again.manifest.summary.packs, 0);
    assert_eq!(
        backend.list(ObjectKind::Pack).await.unwrap().len(),
        packs_before
    );

    // A stream.
    let stream = noise(77, 2_000_000);
    let s = repo
        .load_index()
        .await
        .unwrap()
        .backup(
            BackupInput::Stream {
                name: "dump".into(),
                reader: Box::new(std::io::Cursor::new(stream.clone())),
            },
            BackupOptions::new("db", "command", "host-a"),
        )
        .await
        .unwrap();
    let restored = dir.path().join("stream-out");
    repo.load_index()
        .await
        .unwrap()
        .restore_to_dir(&s, &restored, &RestoreOptions::default())
        .await
        .unwrap();
    assert!(std::fs::read(restored.join("dump")).unwrap() == stream);

    // Damage at the location: one pack rewritten with a flipped byte, one
    // truncated, one index object deleted. Checks name each of them.
    let mut packs = backend.list(ObjectKind::Pack).await.unwrap();
    packs.sort_by(|a, b| a.key.cmp(&b.key));
    let flipped = packs[0].key.clone();
    let truncated = packs[1].key.clone();
    let mut bytes = backend.get(&flipped).await.unwrap().to_vec();
    bytes[100] ^= 0x20;
    let sum = trireme_common::crypto::sha256(&bytes);
    backend
        .put(&flipped, Bytes::from(bytes), sum)
        .await
        .unwrap();
    let bytes = backend.get(&truncated).await.unwrap();
    let cut = bytes.slice(..bytes.len() - 10);
    let sum = trireme_common::crypto::sha256(&cut);
    backend.put(&truncated, cut, sum).await.unwrap();

    let quick = repo.check(false).await.unwrap();
    let names = |r: &trireme_common::CheckReport, k: &ObjectKey| {
        r.problems.iter().any(|p| p.contains(&k.name))
    };
    assert!(
        names(&quick, &truncated),
        "quick check names the truncated pack: {:?}",
        quick.problems
    );
    assert!(
        names(&quick, &flipped),
        "quick check sees the stored checksum change: {:?}",
        quick.problems
    );
    let deep = repo.check(true).await.unwrap();
    assert!(
        names(&deep, &flipped) && names(&deep, &truncated),
        "{:?}",
        deep.problems
    );

    let index = backend.list(ObjectKind::Index).await.unwrap();
    backend.delete(&index[0].key).await.unwrap();
    let after = repo.check(false).await.unwrap();
    assert!(
        after.problems.iter().any(|p| p.contains("in no index")),
        "a snapshot whose chunks lost their index is reported: {:?}",
        after.problems
    );
}
