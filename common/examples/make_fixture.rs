//! Writes the frozen format fixture: a small repository made by today's code
//! with fixed master keys, its `expected.json` and the known-answer
//! `vectors.json`. Run by hand, once per format version (see
//! `common/tests/fixtures/README.md`):
//!
//! ```text
//! cargo run -p trireme-common --example make_fixture -- common/tests/fixtures/v1
//! ```
//!
//! The output directory must not exist yet: a fixture is never regenerated
//! in place (`common/tests/format_fixture.rs` reads the checked-in one).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Value};
use trireme_common::attribution::{job_key, Attribution};
use trireme_common::backend::FileBackend;
use trireme_common::crypto::{sha256, ChunkHasher};
use trireme_common::format::{pack_tail, sealed_object_key, SNAPSHOT_MAGIC};
use trireme_common::keys::{entry_hash, generate_controller_key, KeyTable};
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, DynBackend, DynKeyProvider, LocalKeyFile, ObjectKey,
    ObjectKind, Repository, WrappedKey,
};
use trireme_testkit::noise;

/// The master key that wrote the repository (a test key, checked in).
const MASTER_A: &str = "a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0";
/// The master key the repository was rotated to (its key table).
const MASTER_B: &str = "b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0";

/// Small chunks, so a small tree crosses many chunk boundaries.
const CHUNKER: ChunkerParams = ChunkerParams {
    min: 1024,
    avg: 4096,
    max: 16384,
};
/// Small packs, so the repository has several packs and index objects.
const PACK_SIZE: usize = 16 * 1024;
const CHECKPOINT_PACKS: usize = 4;

/// The stream snapshot's bytes (also the FastCDC vector's input).
const STREAM_NOISE: (u64, usize) = (11, 48_000);
/// The FastCDC vector at the default chunker parameters.
const DEFAULT_NOISE: (u64, usize) = (1, 6 * 1024 * 1024);
/// Fixed mtime of the source tree's entries, Unix nanoseconds.
const MTIME_NS: i64 = 1_700_000_000_123_456_789;
/// The key table's creation time, Unix seconds.
const TABLE_CREATED: i64 = 1_700_000_500;
/// The job and agent the stream snapshot is attributed to.
const JOB: [u8; 16] = *b"fixture-job-0001";
const AGENT: &str = "fixture-agent";

#[tokio::main]
async fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: make_fixture <output dir>"),
    );
    assert!(
        !out.exists(),
        "{} exists: a fixture is never regenerated in place",
        out.display()
    );
    std::fs::create_dir_all(&out).unwrap();
    let work = tempfile::tempdir().unwrap();

    let key_a = write_key(&out.join("key-a"), MASTER_A);
    let key_b = write_key(&out.join("key-b"), MASTER_B);
    let a: DynKeyProvider = Arc::new(key_a);
    let b: DynKeyProvider = Arc::new(key_b);

    // A controlled (fleet-mode) config: controller key and controller MAC.
    let backend: DynBackend = Arc::new(FileBackend::new(out.join("repo")));
    let (ck, ck_wrapped) = generate_controller_key(a.as_ref()).await.unwrap();
    let repo = Repository::init_controlled(
        backend.clone(),
        a.clone(),
        CHUNKER,
        Some((&ck, &ck_wrapped)),
    )
    .await
    .unwrap();
    let id_key = *repo
        .keys()
        .unwrap(&repo.config().wrapped_id_key())
        .await
        .unwrap()
        .as_bytes();
    drop(repo);

    // 1. A tree snapshot, unattributed (local mode).
    let src = work.path().join("src");
    let skipped = make_tree(&src);
    let repo = Arc::new(Repository::open(backend.clone(), a.clone()).await.unwrap());
    let mut opts = options("fixture-tree", "volume");
    opts.tags = vec!["fixture".into(), "v1".into()];
    opts.position = BTreeMap::from([("fixture.position".into(), "42".into())]);
    let tree_snap = repo
        .load_index()
        .await
        .unwrap()
        .backup(BackupInput::Tree(src.clone()), opts)
        .await
        .unwrap();

    // 2. A stream snapshot, attributed to a job (fleet mode).
    let repo = Arc::new(Repository::open(backend.clone(), a.clone()).await.unwrap());
    repo.set_attribution(Attribution {
        job: JOB,
        agent: AGENT.into(),
        key: job_key(ck.as_bytes(), &JOB, AGENT),
    });
    let stream = noise(STREAM_NOISE.0, STREAM_NOISE.1);
    let stream_snap = repo
        .load_index()
        .await
        .unwrap()
        .backup(
            BackupInput::Stream {
                name: "dump.bin".into(),
                reader: Box::new(std::io::Cursor::new(stream.clone())),
            },
            options("fixture-stream", "command"),
        )
        .await
        .unwrap();

    // 3. A master-key rotation A → B: every stored wrapped key, re-wrapped.
    let repo = Arc::new(Repository::open(backend.clone(), a.clone()).await.unwrap());
    let mut stored: Vec<WrappedKey> = vec![repo.config().wrapped_id_key()];
    stored.extend(repo.config().wrapped_controller_key());
    for o in backend.list(ObjectKind::Index).await.unwrap() {
        let (w, f) = repo.read_index_keyed(&o.key).await.unwrap();
        stored.push(w);
        stored.extend(f.packs.iter().map(|p| WrappedKey(p.key.clone())));
    }
    for s in [&tree_snap, &stream_snap] {
        stored.push(repo.snapshot_key(&s.id).await.unwrap());
    }
    let mut entries = BTreeMap::new();
    for w in &stored {
        let k = a.unwrap(w).await.unwrap();
        entries.insert(entry_hash(w), b.wrap(&k).await.unwrap());
    }
    let table = KeyTable::seal(b.as_ref(), TABLE_CREATED, Vec::new(), entries)
        .await
        .unwrap();
    backend
        .put(
            &table.object_key(),
            table.bytes().clone(),
            sha256(table.bytes()),
        )
        .await
        .unwrap();

    // expected.json: what a reader must find.
    let indexed = repo.load_index().await.unwrap();
    let packs = backend.list(ObjectKind::Pack).await.unwrap();
    let indexes = backend.list(ObjectKind::Index).await.unwrap();
    let config = backend.get(&ObjectKey::config()).await.unwrap();
    let expected = json!({
        "format_version": 1,
        "repository": "repo",
        "key_file": "key-a",
        "rotated_key_file": "key-b",
        "master_key_id": a.master_key_id(),
        "rotated_master_key_id": b.master_key_id(),
        "config_sha256": hex::encode(sha256(&config)),
        "chunker": { "min": CHUNKER.min, "avg": CHUNKER.avg, "max": CHUNKER.max },
        "packs": packs.len(),
        "index_objects": indexes.len(),
        "chunks": indexed.index.len(),
        "key_table": {
            "object": table.object_key().path(),
            "entries": table.len(),
            "created": TABLE_CREATED,
        },
        "tree_snapshot": {
            "id": tree_snap.id.to_hex(),
            "source": "fixture-tree",
            "source_kind": "volume",
            "host": "fixture-host",
            "tags": ["fixture", "v1"],
            "position": { "fixture.position": "42" },
            "summary": serde_json::to_value(summary(&tree_snap.manifest.summary)).unwrap(),
            "entries": describe_tree(&src),
            "skipped": skipped,
        },
        "stream_snapshot": {
            "id": stream_snap.id.to_hex(),
            "source": "fixture-stream",
            "source_kind": "command",
            "name": "dump.bin",
            "size": stream.len(),
            "sha256": hex::encode(sha256(&stream)),
            "noise": [STREAM_NOISE.0, STREAM_NOISE.1],
            "job_hex": hex::encode(JOB),
            "agent": AGENT,
        },
    });
    write_json(&out.join("expected.json"), &expected);

    // vectors.json: known answers.
    let hasher = ChunkHasher::new(id_key);
    let seed_id = hasher.id(b"trireme chunker seed v1");
    let seed = u64::from_le_bytes(seed_id.0[..8].try_into().unwrap());
    let stream_cuts: Vec<(usize, usize)> = {
        // The engine's own cuts: the stream's chunks, from the index.
        let raw = stream_chunks(&indexed, &stream_snap).await;
        let mut off = 0;
        raw.iter()
            .map(|len| {
                let c = (off, *len);
                off += len;
                c
            })
            .collect()
    };
    let default_input = noise(DEFAULT_NOISE.0, DEFAULT_NOISE.1);
    let d = ChunkerParams::default();
    let default_cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::with_level_and_seed(
        &default_input,
        d.min as usize,
        d.avg as usize,
        d.max as usize,
        fastcdc::v2020::Normalization::Level1,
        seed,
    )
    .map(|c| (c.offset, c.length))
    .collect();
    let stream_key = ObjectKey::new(ObjectKind::Snapshot, stream_snap.id.to_hex());
    let stream_obj = backend.get(&stream_key).await.unwrap();
    let (wrapped, header_len) =
        sealed_object_key(&stream_key.path(), &stream_obj, SNAPSHOT_MAGIC).unwrap();
    let dek = a.unwrap(&wrapped).await.unwrap();
    let pack0 = &packs[0].key;
    let pack_bytes = backend.get(pack0).await.unwrap();
    let tail = pack_tail(&pack0.path(), &pack_bytes).unwrap();
    let trailer = &pack_bytes[pack_bytes.len() - 10..];
    let table_entry = table
        .get(&wrapped)
        .expect("the table re-wraps the manifest's key");
    let vectors = json!({
        "id_key": hex::encode(id_key),
        "controller_key": hex::encode(ck.as_bytes()),
        "chunker_seed": seed.to_string(),
        "chunk_ids": [
            { "input": "", "id": hasher.id(b"").to_hex() },
            { "input": "abc", "id": hasher.id(b"abc").to_hex() },
            { "noise": [3, 5000], "id": hasher.id(&noise(3, 5000)).to_hex() },
        ],
        "fastcdc": [
            {
                "params": { "min": CHUNKER.min, "avg": CHUNKER.avg, "max": CHUNKER.max },
                "noise": [STREAM_NOISE.0, STREAM_NOISE.1],
                "cuts": stream_cuts,
            },
            {
                "params": { "min": d.min, "avg": d.avg, "max": d.max },
                "noise": [DEFAULT_NOISE.0, DEFAULT_NOISE.1],
                "cuts": default_cuts,
            },
        ],
        "sealed_object": {
            "object": stream_key.path(),
            "header": hex::encode(&stream_obj[..header_len]),
        },
        "wrapped_key": {
            "master": "key-a",
            "master_key_id": a.master_key_id(),
            "wrapped": hex::encode(&wrapped.0),
            "data_key": hex::encode(dek.as_bytes()),
            "rewrapped": hex::encode(&table_entry.0),
        },
        "pack_trailer": {
            "object": pack0.path(),
            "header_offset": tail.header_offset,
            "header_len": tail.header_len,
            "trailer": hex::encode(trailer),
        },
    });
    write_json(&out.join("vectors.json"), &vectors);
    println!("fixture written to {}", out.display());
}

fn write_key(path: &Path, hex_key: &str) -> LocalKeyFile {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "trireme-master-key-v1:{hex_key}").unwrap();
    LocalKeyFile::load(path).unwrap()
}

fn options(source: &str, kind: &str) -> BackupOptions {
    let mut o = BackupOptions::new(source, kind, "fixture-host");
    o.pack_size = PACK_SIZE;
    o.checkpoint_packs = CHECKPOINT_PACKS;
    o.workers = 1;
    o.uploads = 1;
    o
}

/// A source tree with every kind of entry the format stores (directories,
/// regular files — empty, small, multi-chunk, compressible, hard-linked —,
/// symlinks) and the special files it skips. Returns the skipped paths.
fn make_tree(src: &Path) -> Vec<String> {
    let p = |s: &str| src.join(s);
    for d in [
        "",
        "docs",
        "docs/deep",
        "docs/deep/deeper",
        "empty-dir",
        "shared",
    ] {
        std::fs::create_dir_all(p(d)).unwrap();
    }
    std::fs::write(p("empty"), b"").unwrap();
    std::fs::write(p("small.txt"), b"a small file, one chunk\n").unwrap();
    std::fs::write(p("big.bin"), noise(7, 70_000)).unwrap();
    let log: String = (0..600)
        .map(|i| {
            format!(
                "2024-01-01T00:00:{:02}Z INFO request {i} served in {}ms\n",
                i % 60,
                i % 17
            )
        })
        .collect();
    std::fs::write(p("docs/app.log"), &log).unwrap();
    std::fs::write(p("docs/deep/deeper/leaf.txt"), b"leaf\n").unwrap();
    std::fs::write(p("run.sh"), b"#!/bin/sh\necho fixture\n").unwrap();
    std::fs::set_permissions(p("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(p("secret"), b"0600 bytes\n").unwrap();
    std::fs::set_permissions(p("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(p("shared"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // Same content as big.bin: every chunk dedupes.
    std::fs::write(p("shared/copy.bin"), noise(7, 70_000)).unwrap();
    // A hard link: stored as an independent file.
    std::fs::hard_link(p("docs/app.log"), p("docs/app-hardlink.log")).unwrap();
    // A non-UTF-8 name.
    let raw = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    std::fs::write(src.join(raw), b"latin-1 name\n").unwrap();
    symlink("small.txt", p("link-to-file")).unwrap();
    symlink("docs/deep", p("link-to-dir")).unwrap();
    symlink("../nowhere/at/all", p("docs/dangling")).unwrap();
    // Special files: skipped by the backup.
    let fifo = p("pipe");
    let ok = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
    let sock = std::os::unix::net::UnixListener::bind(p("socket")).unwrap();
    std::mem::forget(sock);
    // Fixed times, deepest first, so the directories keep theirs.
    let t = filetime::FileTime::from_unix_time(
        MTIME_NS.div_euclid(1_000_000_000),
        MTIME_NS.rem_euclid(1_000_000_000) as u32,
    );
    let mut all: Vec<PathBuf> = walkdir::WalkDir::new(src)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect();
    all.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for path in all {
        filetime::set_symlink_file_times(&path, t, t).unwrap();
    }
    vec!["pipe".into(), "socket".into()]
}

/// Every entry of the source tree (as the backup stores it), in walk order.
fn describe_tree(src: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(src).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(src).unwrap();
        let raw = rel.as_os_str().as_bytes();
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
            continue;
        };
        out.push(json!({
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

fn summary(s: &trireme_common::Summary) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("files", s.files),
        ("dirs", s.dirs),
        ("others", s.others),
        ("bytes", s.bytes),
        ("new_chunks", s.new_chunks),
        ("new_bytes", s.new_bytes),
        ("packs", s.packs),
        ("errors", s.errors),
    ])
}

/// The raw lengths of a stream snapshot's data chunks, in order.
async fn stream_chunks(
    indexed: &trireme_common::IndexedRepo,
    snap: &trireme_common::Snapshot,
) -> Vec<usize> {
    let mut tree = Vec::new();
    for id in &snap.manifest.tree {
        tree.extend(indexed.read_chunk(id).await.unwrap());
    }
    let mut r = trireme_common::manifest::EntryReader::new(&tree[..], "tree");
    let entry = r.next_entry().unwrap().unwrap();
    entry
        .chunks
        .iter()
        .map(|id| indexed.index.get(id).unwrap().1.raw_len as usize)
        .collect()
}

fn write_json(path: &Path, v: &Value) {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    std::fs::write(path, s).unwrap();
}
