//! The frozen format fixture (`tests/fixtures/v1`, made once by
//! `examples/make_fixture.rs`): today's code must read the repository that
//! an earlier build wrote, and reproduce the known-answer vectors (chunk
//! boundaries, chunk ids, object headers, wrapped keys) exactly. A change
//! that alters the format fails here; see `tests/fixtures/README.md` and
//! `docs/format.md` §13.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use trireme_common::attribution::{job_key, Attributable, Writer};
use trireme_common::backend::FileBackend;
use trireme_common::crypto::{sha256, ChunkHasher, DataKey, Id};
use trireme_common::format::{
    open_object, pack_header, pack_tail, seal_object, sealed_object_key, RepoConfig, CONFIG_MAGIC,
    INDEX_MAGIC, PACK_MAGIC, SNAPSHOT_MAGIC,
};
use trireme_common::index::IndexFile;
use trireme_common::keys::{find_table, Rewrapped, TABLE_MAGIC, TABLE_VERSION};
use trireme_common::manifest::{write_entry, EntryReader, TreeEntry};
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, ContentKind, DynBackend, DynKeyProvider,
    IndexedRepo, KeyProvider, LocalKeyFile, ObjectKey, ObjectKind, Repository, RestoreOptions,
    SnapshotManifest, WrappedKey,
};
use trireme_testkit::noise;

/// The checked-in fixture of format version 1.
fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

/// A private copy of the fixture: the test never writes into the source tree.
struct Copy {
    dir: tempfile::TempDir,
    expected: Value,
    vectors: Value,
}

impl Copy {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let src = source();
        for e in walkdir::WalkDir::new(&src) {
            let e = e.unwrap();
            let to = dir.path().join(e.path().strip_prefix(&src).unwrap());
            if e.file_type().is_dir() {
                std::fs::create_dir_all(&to).unwrap();
            } else {
                std::fs::copy(e.path(), &to).unwrap();
            }
        }
        let json = |name: &str| -> Value {
            serde_json::from_slice(&std::fs::read(dir.path().join(name)).unwrap()).unwrap()
        };
        let (expected, vectors) = (json("expected.json"), json("vectors.json"));
        Copy {
            dir,
            expected,
            vectors,
        }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// A key file of the fixture (git keeps no 0600 mode: set it again).
    fn key(&self, name: &str) -> Arc<LocalKeyFile> {
        let p = self.path(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        Arc::new(LocalKeyFile::load(&p).unwrap())
    }

    fn backend(&self) -> DynBackend {
        Arc::new(FileBackend::new(self.path("repo")))
    }

    async fn open(&self, keys: DynKeyProvider) -> Arc<Repository> {
        Arc::new(Repository::open(self.backend(), keys).await.unwrap())
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(s(v)).unwrap()
}

fn id(v: &Value) -> Id {
    Id::from_hex(s(v)).unwrap()
}

fn params(v: &Value) -> ChunkerParams {
    ChunkerParams {
        min: u(&v["min"]) as u32,
        avg: u(&v["avg"]) as u32,
        max: u(&v["max"]) as u32,
    }
}

fn noise_of(v: &Value) -> Vec<u8> {
    noise(u(&v[0]), u(&v[1]) as usize)
}

/// The entries of a snapshot's tree stream, and the stream's bytes.
async fn tree_of(indexed: &IndexedRepo, snap: &SnapshotManifest) -> (Vec<TreeEntry>, Vec<u8>) {
    let mut stream = Vec::new();
    for c in &snap.tree {
        stream.extend(indexed.read_chunk(c).await.unwrap());
    }
    let mut r = EntryReader::new(&stream[..], "tree");
    let mut entries = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        entries.push(e);
    }
    (entries, stream)
}

/// The restored tree, described as `expected.json` describes the source.
fn describe(root: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name() {
        let e = e.unwrap();
        let raw = e.path().strip_prefix(root).unwrap().as_os_str().as_bytes();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let ft = meta.file_type();
        let (kind, size, sha, target) = if ft.is_dir() {
            ("dir", 0, None, None)
        } else if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            (
                "symlink",
                0,
                None,
                Some(hex::encode(t.as_os_str().as_bytes())),
            )
        } else if ft.is_file() {
            let data = std::fs::read(e.path()).unwrap();
            ("file", data.len(), Some(hex::encode(sha256(&data))), None)
        } else {
            panic!("{}: a special file was restored", e.path().display());
        };
        out.push(serde_json::json!({
            "path": String::from_utf8_lossy(raw),
            "path_hex": hex::encode(raw),
            "kind": kind,
            "mode": meta.mode() & 0o7777,
            "mtime_ns": meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            "size": size,
            "sha256": sha,
            "target_hex": target,
        }));
    }
    out
}

/// Decrypt a sealed index or manifest object by hand, as docs/format.md §5
/// describes it: the plaintext is zstd(CBOR).
fn open_by_hand(bytes: &[u8], header_len: usize, key: &DataKey) -> Vec<u8> {
    let plain = key
        .open(&bytes[..header_len], &bytes[header_len..])
        .unwrap();
    zstd::stream::decode_all(&plain[..]).unwrap()
}

fn cbor<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

/// (a) The repository: open, list, check, restore, key table, attribution.
#[tokio::test]
async fn reads_the_v1_repository() {
    let fx = Copy::new();
    let (exp, vec) = (&fx.expected, &fx.vectors);
    let a = fx.key(s(&exp["key_file"]));
    let b = fx.key(s(&exp["rotated_key_file"]));
    assert_eq!(a.key_id(), s(&exp["master_key_id"]));
    assert_eq!(b.key_id(), s(&exp["rotated_master_key_id"]));
    let backend = fx.backend();

    // The config: its bytes, chunker, id key, controller key and both MACs.
    let config_bytes = backend.get(&ObjectKey::config()).await.unwrap();
    assert_eq!(hex::encode(sha256(&config_bytes)), s(&exp["config_sha256"]));
    let repo = fx.open(a.clone()).await;
    let config = repo.config();
    assert_eq!(config.version as u64, u(&exp["format_version"]));
    assert_eq!(config_bytes[4] as u64, u(&exp["format_version"]));
    assert_eq!(config.chunker, params(&exp["chunker"]));
    let id_key = a.unwrap(&config.wrapped_id_key()).await.unwrap();
    assert_eq!(hex::encode(id_key.as_bytes()), s(&vec["id_key"]));
    let ck = a
        .unwrap(
            &config
                .wrapped_controller_key()
                .expect("a controlled config"),
        )
        .await
        .unwrap();
    assert_eq!(hex::encode(ck.as_bytes()), s(&vec["controller_key"]));
    assert!(
        trireme_common::keys::is_controller_key(&ck),
        "TRCTRL01 mark"
    );
    config.verify_controller_mac(ck.as_bytes()).unwrap();

    // Snapshots.
    let tree_exp = &exp["tree_snapshot"];
    let stream_exp = &exp["stream_snapshot"];
    let snaps = repo.snapshots().await.unwrap();
    let ids: BTreeSet<Id> = snaps.iter().map(|s| s.id).collect();
    assert_eq!(
        ids,
        BTreeSet::from([id(&tree_exp["id"]), id(&stream_exp["id"])])
    );
    let tree = repo.read_snapshot(&id(&tree_exp["id"])).await.unwrap();
    let stream = repo.read_snapshot(&id(&stream_exp["id"])).await.unwrap();
    for (snap, e, kind) in [
        (&tree, tree_exp, ContentKind::Tree),
        (&stream, stream_exp, ContentKind::Stream),
    ] {
        let m = &snap.manifest;
        assert_eq!(m.content, kind);
        assert_eq!(m.source, s(&e["source"]));
        assert_eq!(m.source_kind, s(&e["source_kind"]));
        assert_eq!(m.host, "fixture-host");
        assert_eq!(m.parent, None);
    }
    let m = &tree.manifest;
    assert_eq!(m.tags, vec!["fixture".to_string(), "v1".to_string()]);
    assert_eq!(
        m.position,
        BTreeMap::from([("fixture.position".to_string(), "42".to_string())])
    );
    let sum = &tree_exp["summary"];
    for (name, got) in [
        ("files", m.summary.files),
        ("dirs", m.summary.dirs),
        ("others", m.summary.others),
        ("bytes", m.summary.bytes),
        ("new_chunks", m.summary.new_chunks),
        ("new_bytes", m.summary.new_bytes),
        ("packs", m.summary.packs),
        ("errors", m.summary.errors),
    ] {
        assert_eq!(got, u(&sum[name]), "summary.{name}");
    }

    // Attribution: the stream (fleet mode) names its job, under the
    // controller key's job key; the tree (local mode) names none.
    let key_of = |job: &[u8; 16], agent: &str| job_key(ck.as_bytes(), job, agent);
    let writer = Writer {
        job: unhex(&stream_exp["job_hex"]).try_into().unwrap(),
        agent: s(&stream_exp["agent"]).into(),
    };
    assert_eq!(stream.manifest.attributed(key_of), Some(writer.clone()));
    assert_eq!(tree.manifest.job, None);
    let mut attributed = 0;
    for o in backend.list(ObjectKind::Index).await.unwrap() {
        let f: IndexFile = repo.read_index(&o.key).await.unwrap();
        match &f.job {
            Some(_) => {
                assert_eq!(f.attributed(key_of), Some(writer.clone()), "{}", o.key);
                attributed += 1;
            }
            None => assert_eq!(f.mac, None),
        }
    }
    assert!(attributed >= 1, "the stream's index object is attributed");

    // Index and check.
    let indexed = repo.load_index().await.unwrap();
    assert_eq!(indexed.index.len() as u64, u(&exp["chunks"]));
    assert_eq!(indexed.index.packs().len() as u64, u(&exp["packs"]));
    assert!(indexed.damaged.is_empty());
    let report = repo.check(true).await.unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(report.unreferenced_packs.is_empty());
    assert_eq!(report.indexes as u64, u(&exp["index_objects"]));
    assert_eq!(report.packs as u64, u(&exp["packs"]));
    assert_eq!(report.snapshots, 2);
    assert!(report.bytes_read > 0);

    // The key table of the rotation A → B, and the repository through it.
    let table_key = ObjectKey::from_path(s(&exp["key_table"]["object"])).unwrap();
    let listed: Vec<(ObjectKey, bytes::Bytes)> =
        vec![(table_key.clone(), backend.get(&table_key).await.unwrap())];
    let table = find_table(listed.clone(), b.as_ref())
        .await
        .unwrap()
        .expect("the table of master key B");
    assert_eq!(table.len() as u64, u(&exp["key_table"]["entries"]));
    assert_eq!(
        table.created(),
        exp["key_table"]["created"].as_i64().unwrap()
    );
    assert_eq!(table.key_id(), b.key_id());
    assert!(table.supersedes().is_empty());
    assert!(
        find_table(listed, a.as_ref()).await.unwrap().is_none(),
        "the table is not master key A's"
    );
    let rotated: DynKeyProvider = Arc::new(Rewrapped::new(b.clone(), Some(table)));
    let repo_b = fx.open(rotated).await;
    let report = repo_b.check(true).await.unwrap();
    assert!(
        report.is_ok(),
        "through the key table: {:?}",
        report.problems
    );
    let indexed_b = repo_b.load_index().await.unwrap();

    // Restore the tree (through the key table) and compare every entry.
    let target = fx.path("restored");
    let opts = RestoreOptions {
        owners: false,
        ..RestoreOptions::default()
    };
    let summary = indexed_b
        .restore_to_dir(&tree, &target, &opts)
        .await
        .unwrap();
    let want = tree_exp["entries"].as_array().unwrap();
    let got = describe(&target);
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w);
    }
    let count = |k: &str| want.iter().filter(|e| e["kind"] == k).count() as u64;
    assert_eq!(summary.files, count("file"));
    assert_eq!(summary.dirs, count("dir"));
    assert_eq!(summary.symlinks, count("symlink"));
    for skipped in tree_exp["skipped"].as_array().unwrap() {
        assert!(std::fs::symlink_metadata(target.join(s(skipped))).is_err());
    }
    // Every kind the format has is in the fixture.
    for k in ["dir", "file", "symlink"] {
        assert!(count(k) >= 1, "no {k}");
    }
    assert!(want.iter().any(|e| e["kind"] == "file" && e["size"] == 0));

    // The stored tree entries agree with the source's.
    let (entries, _) = tree_of(&indexed, &tree.manifest).await;
    assert_eq!(entries.len(), want.len());
    for (e, w) in entries.iter().zip(want) {
        assert_eq!(hex::encode(&e.path), s(&w["path_hex"]));
        assert_eq!(e.mode as u64, u(&w["mode"]));
        assert_eq!(e.mtime_ns, w["mtime_ns"].as_i64().unwrap());
        assert_eq!(e.size, u(&w["size"]));
    }

    // Restore the stream (with master key A directly).
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let n = indexed
        .restore_stream(&stream, Sink(out.clone()))
        .await
        .unwrap();
    let data = out.lock().unwrap().clone();
    assert_eq!(n, u(&stream_exp["size"]));
    assert_eq!(hex::encode(sha256(&data)), s(&stream_exp["sha256"]));
    assert_eq!(data, noise_of(&stream_exp["noise"]));
    let (entries, _) = tree_of(&indexed, &stream.manifest).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, s(&stream_exp["name"]).as_bytes());
    assert_eq!(entries[0].mode, 0o600);
}

/// (b) Every known answer, from scratch with today's code.
#[tokio::test]
async fn reproduces_the_v1_vectors() {
    let fx = Copy::new();
    let (exp, vec) = (&fx.expected, &fx.vectors);
    let a = fx.key(s(&exp["key_file"]));
    let b = fx.key(s(&exp["rotated_key_file"]));
    let id_key: [u8; 32] = unhex(&vec["id_key"]).try_into().unwrap();
    let hasher = ChunkHasher::new(id_key);

    // Master key ids: BLAKE3 derive_key, first 8 bytes (§3.1).
    for (file, key) in [("key-a", &a), ("key-b", &b)] {
        let text = std::fs::read_to_string(fx.path(file)).unwrap();
        let raw = hex::decode(text.trim().strip_prefix("trireme-master-key-v1:").unwrap()).unwrap();
        let fp = blake3::derive_key("trireme master key id v1", &raw);
        assert_eq!(hex::encode(&fp[..8]), key.key_id(), "{file}");
    }

    // Keyed chunk ids (§10).
    for v in vec["chunk_ids"].as_array().unwrap() {
        let input = match v.get("noise") {
            Some(n) => noise_of(n),
            None => s(&v["input"]).as_bytes().to_vec(),
        };
        assert_eq!(hasher.id(&input).to_hex(), s(&v["id"]), "{v}");
    }

    // The chunker seed and FastCDC boundaries (§10), computed as the
    // format describes them.
    let seed_id = hasher.id(b"trireme chunker seed v1");
    let seed = u64::from_le_bytes(seed_id.0[..8].try_into().unwrap());
    assert_eq!(seed.to_string(), s(&vec["chunker_seed"]));
    assert_eq!(
        ChunkerParams::default(),
        params(&vec["fastcdc"][1]["params"]),
        "init's default chunker parameters"
    );
    let cuts_of = |v: &Value| -> Vec<(usize, usize)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|c| (u(&c[0]) as usize, u(&c[1]) as usize))
            .collect()
    };
    for v in vec["fastcdc"].as_array().unwrap() {
        let p = params(&v["params"]);
        let input = noise_of(&v["noise"]);
        let cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::with_level_and_seed(
            &input,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            fastcdc::v2020::Normalization::Level1,
            seed,
        )
        .map(|c| (c.offset, c.length))
        .collect();
        assert_eq!(cuts, cuts_of(&v["cuts"]), "FastCDC at {p:?}");
    }

    // The engine's chunker: backing the stream up again into (a copy of)
    // the repository cuts it at the same points into the same chunk ids,
    // so nothing of its data is new.
    let repo = fx.open(a.clone()).await;
    let indexed = repo.load_index().await.unwrap();
    let stream = repo
        .read_snapshot(&id(&exp["stream_snapshot"]["id"]))
        .await
        .unwrap();
    let (old, _) = tree_of(&indexed, &stream.manifest).await;
    let mut opts = BackupOptions::new("again", "command", "fixture-host");
    opts.pack_size = 16 * 1024;
    let input = noise_of(&vec["fastcdc"][0]["noise"]);
    let again = indexed
        .backup(
            BackupInput::Stream {
                name: "dump.bin".into(),
                reader: Box::new(std::io::Cursor::new(input.clone())),
            },
            opts,
        )
        .await
        .unwrap();
    let indexed = repo.load_index().await.unwrap();
    let (new, _) = tree_of(&indexed, &again.manifest).await;
    assert_eq!(new[0].chunks, old[0].chunks, "the engine's chunk ids");
    let mut off = 0;
    let engine_cuts: Vec<(usize, usize)> = new[0]
        .chunks
        .iter()
        .map(|c| {
            let len = indexed.index.get(c).unwrap().1.raw_len as usize;
            off += len;
            (off - len, len)
        })
        .collect();
    assert_eq!(engine_cuts, cuts_of(&vec["fastcdc"][0]["cuts"]));
    let ids: Vec<Id> = engine_cuts
        .iter()
        .map(|(o, l)| hasher.id(&input[*o..o + l]))
        .collect();
    assert_eq!(ids, old[0].chunks);
    let (_, new_tree) = tree_of(&indexed, &again.manifest).await;
    assert_eq!(
        (
            again.manifest.summary.new_chunks,
            again.manifest.summary.new_bytes
        ),
        (again.manifest.tree.len() as u64, new_tree.len() as u64),
        "only the new tree stream is new"
    );

    // A wrapped key, scheme 1 (§3.2), and its re-wrapped form (§3.5).
    let wk = &vec["wrapped_key"];
    let wrapped = WrappedKey(unhex(&wk["wrapped"]));
    assert_eq!(wrapped.0.len(), 69);
    assert_eq!(wrapped.0[0], 0x01, "scheme byte");
    assert_eq!(hex::encode(&wrapped.0[1..9]), s(&wk["master_key_id"]));
    assert_eq!(hex::encode(&wrapped.0[1..9]), a.key_id());
    let dek = a.unwrap(&wrapped).await.unwrap();
    assert_eq!(hex::encode(dek.as_bytes()), s(&wk["data_key"]));
    let by_hand = DataKey::from_bytes(unhex(&vec["wrapped_key"]["data_key"]).try_into().unwrap());
    let master_a: [u8; 32] = {
        let text = std::fs::read_to_string(fx.path("key-a")).unwrap();
        hex::decode(text.trim().strip_prefix("trireme-master-key-v1:").unwrap())
            .unwrap()
            .try_into()
            .unwrap()
    };
    assert_eq!(
        DataKey::from_bytes(master_a)
            .open(b"trireme wrapped data key v1", &wrapped.0[9..])
            .unwrap(),
        by_hand.as_bytes(),
        "seal(master key, AAD = \"trireme wrapped data key v1\", data key)"
    );
    let rewrapped = WrappedKey(unhex(&wk["rewrapped"]));
    assert_eq!(
        b.unwrap(&rewrapped).await.unwrap().as_bytes(),
        dek.as_bytes()
    );

    // A sealed object's header (§5): magic, version, wrapped key length,
    // wrapped key; the checked-in object starts with it, and today's
    // sealing writes the same header.
    let so = &vec["sealed_object"];
    let key = ObjectKey::from_path(s(&so["object"])).unwrap();
    let bytes = repo.backend().get(&key).await.unwrap();
    let header = unhex(&so["header"]);
    assert_eq!(&header[..5], b"TRSN\x01");
    assert_eq!(&header[5..7], &69u16.to_le_bytes());
    assert_eq!(&header[7..], &wrapped.0[..]);
    assert_eq!(&bytes[..header.len()], &header[..]);
    let (w, header_len) = sealed_object_key(&key.path(), &bytes, SNAPSHOT_MAGIC).unwrap();
    assert_eq!((w, header_len), (wrapped.clone(), header.len()));
    let manifest: SnapshotManifest = open_object(&key.path(), &bytes, header_len, &dek).unwrap();
    let resealed = seal_object(SNAPSHOT_MAGIC, &dek, &wrapped, &manifest);
    assert_eq!(&resealed[..header_len], &header[..]);
    let back: SnapshotManifest = open_object("new", &resealed, header_len, &dek).unwrap();
    assert_eq!(back, manifest);

    // CBOR stability: every stored payload decodes and re-encodes to the
    // same bytes (a renamed, reordered or retyped field fails here).
    let cfg = RepoConfig::decode(&repo.backend().get(&ObjectKey::config()).await.unwrap()).unwrap();
    let raw_cfg = repo.backend().get(&ObjectKey::config()).await.unwrap();
    assert_eq!(&raw_cfg[..5], &[&CONFIG_MAGIC[..], &[1]].concat()[..]);
    assert_eq!(cfg.encode(), raw_cfg.to_vec(), "config");
    let plain = open_by_hand(&bytes, header_len, &dek);
    assert_eq!(cbor(&manifest), plain, "snapshot manifest");
    for o in repo.backend().list(ObjectKind::Snapshot).await.unwrap() {
        let bytes = repo.backend().get(&o.key).await.unwrap();
        let (w, hl) = sealed_object_key(&o.key.path(), &bytes, SNAPSHOT_MAGIC).unwrap();
        let k = a.unwrap(&w).await.unwrap();
        let plain = open_by_hand(&bytes, hl, &k);
        let m: SnapshotManifest = ciborium::from_reader(&plain[..]).unwrap();
        if o.key.name == again.id.to_hex() {
            continue;
        }
        assert_eq!(cbor(&m), plain, "{}", o.key);
        let (entries, stream) = tree_of(&indexed, &m).await;
        let mut re = Vec::new();
        for e in &entries {
            write_entry(&mut re, e).unwrap();
        }
        assert_eq!(re, stream, "the tree stream of {}", o.key);
    }
    for o in repo.backend().list(ObjectKind::Index).await.unwrap() {
        let bytes = repo.backend().get(&o.key).await.unwrap();
        assert_eq!(&bytes[..5], &[&INDEX_MAGIC[..], &[1]].concat()[..]);
        let (w, hl) = sealed_object_key(&o.key.path(), &bytes, INDEX_MAGIC).unwrap();
        let k = a.unwrap(&w).await.unwrap();
        let plain = open_by_hand(&bytes, hl, &k);
        let f: IndexFile = ciborium::from_reader(&plain[..]).unwrap();
        assert_eq!(cbor(&f), plain, "{}", o.key);
    }

    // Packs (§6): magic, trailer, and the sealed header under its AAD.
    let pt = &vec["pack_trailer"];
    let key = ObjectKey::from_path(s(&pt["object"])).unwrap();
    let pack = repo.backend().get(&key).await.unwrap();
    assert_eq!(&pack[..5], &[&PACK_MAGIC[..], &[1]].concat()[..]);
    let trailer = unhex(&pt["trailer"]);
    assert_eq!(&pack[pack.len() - 10..], &trailer[..]);
    let header_len = u32::from_le_bytes(trailer[..4].try_into().unwrap()) as usize;
    assert_eq!(&trailer[4..6], &69u16.to_le_bytes());
    assert_eq!(&trailer[6..], b"TRPK");
    let tail = pack_tail(&key.path(), &pack).unwrap();
    assert_eq!(tail.header_len, header_len);
    assert_eq!(tail.header_len as u64, u(&pt["header_len"]));
    assert_eq!(tail.header_offset as u64, u(&pt["header_offset"]));
    let pk = a.unwrap(&tail.wrapped).await.unwrap();
    let entries = pack_header(&key.path(), &pack, &tail, &pk).unwrap();
    let sealed = &pack[tail.header_offset..tail.header_offset + tail.header_len];
    let plain = pk.open(b"TRPK\x01 header", sealed).unwrap();
    assert_eq!(cbor(&entries), plain, "pack header");
    for e in &entries {
        let blob = &pack[e.offset as usize..(e.offset + e.length) as usize];
        let mut aad = e.id.0.to_vec();
        aad.push(e.zstd as u8);
        let data = pk.open(&aad, blob).unwrap();
        let data = if e.zstd {
            zstd::bulk::decompress(&data, e.raw_len as usize).unwrap()
        } else {
            data
        };
        assert_eq!(hasher.id(&data), e.id, "blob AAD = id || zstd (§6)");
    }

    // The key table's header (§3.5).
    let tk = ObjectKey::from_path(s(&exp["key_table"]["object"])).unwrap();
    let t = repo.backend().get(&tk).await.unwrap();
    assert_eq!(&t[..4], &TABLE_MAGIC);
    assert_eq!(t[4], TABLE_VERSION);
    assert_eq!(TABLE_VERSION, 1);
    let created = i64::from_le_bytes(t[5..13].try_into().unwrap());
    assert_eq!(created, exp["key_table"]["created"].as_i64().unwrap());
    assert_eq!(t[13] as usize, 16);
    assert_eq!(&t[14..30], b.key_id().as_bytes());
    assert_eq!(tk.name, format!("table-{}", b.key_id()));
}
