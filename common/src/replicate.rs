//! Copies between locations and verification of each copy.
//!
//! Every object but the config is named by the SHA-256 of its bytes, so a
//! copy is correct exactly when the bytes at the target hash to the name.
//! [`sync_to`] makes one location hold every object the others hold: it
//! skips what is already there (same size, and checksum already verified),
//! copies what is missing, refuses a source copy whose bytes do not match
//! its name (and tries another location), and reads the checksum back at
//! the target after each write. [`verify`] checks objects at one location,
//! quickly (HEAD: present, size, stored SHA-256) or deeply (re-read and
//! re-hash). Memory is bounded: at most `concurrency` objects (packs are
//! ~16 MiB) are in flight. [`snapshot_objects`] names the objects one
//! snapshot needs at a location (its manifest and the packs holding its
//! chunks), so that its copy there is called verified only when those are
//! present and checked.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use bytes::Bytes;
use futures::StreamExt;

use crate::backend::{DynBackend, ObjectKey, ObjectKind};
use crate::crypto::{sha256, Id};
use crate::error::{Error, Result};
use crate::manifest::EntryReader;
use crate::repo::IndexedRepo;

/// Every object at a location: key → size.
pub type Listing = BTreeMap<ObjectKey, u64>;

/// A bandwidth cap: writes reserve their bytes and wait their turn, so the
/// average rate stays at or under `bytes_per_sec`.
#[derive(Debug)]
pub struct Pacer {
    bytes_per_sec: u64,
    next: std::sync::Mutex<tokio::time::Instant>,
}

impl Pacer {
    /// A cap of `bytes_per_sec` (at least 1).
    pub fn new(bytes_per_sec: u64) -> Self {
        Pacer {
            bytes_per_sec: bytes_per_sec.max(1),
            next: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    /// Wait until `bytes` may be sent.
    pub async fn take(&self, bytes: u64) {
        let start = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let now = tokio::time::Instant::now();
            let start = (*next).max(now);
            *next = start
                + std::time::Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec as f64);
            start
        };
        tokio::time::sleep_until(start).await;
    }
}

/// List every object (config included) at a location.
///
/// # Errors
/// When the location cannot be listed.
pub async fn list_all(backend: &DynBackend) -> Result<Listing> {
    let mut out = Listing::new();
    for kind in ObjectKind::ALL {
        if kind == ObjectKind::Config {
            if let Some(m) = backend.head(&ObjectKey::config()).await? {
                out.insert(ObjectKey::config(), m.size);
            }
            continue;
        }
        for o in backend.list(kind).await? {
            out.insert(o.key, o.size);
        }
    }
    Ok(out)
}

/// The SHA-256 an object's bytes must have, from its name (`None` for the
/// config, which is not content-addressed).
pub fn expected_sha256(key: &ObjectKey) -> Option<[u8; 32]> {
    if key.kind == ObjectKind::Config {
        return None;
    }
    let raw = hex::decode(&key.name).ok()?;
    raw.try_into().ok()
}

/// The objects restoring one snapshot needs at a location.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotObjects {
    /// Its manifest and one pack holding each chunk it references (its tree
    /// stream and its files), with the sizes they must have.
    pub objects: Listing,
    /// Chunks it references that no index object lists: no location can
    /// hold a complete copy (the tree is not read further when one of its
    /// own chunks is among them).
    pub unindexed: Vec<Id>,
}

/// The objects `snapshot` needs, read from the location of `repo` (its
/// manifest and tree stream, and `repo`'s index). The manifest's size is
/// the one at that location.
///
/// # Errors
/// The manifest or the tree stream cannot be read there (missing,
/// corrupt, a key that does not open it, storage errors).
pub async fn snapshot_objects(repo: &IndexedRepo, snapshot: &Id) -> Result<SnapshotObjects> {
    let manifest = ObjectKey::new(ObjectKind::Snapshot, snapshot.to_hex());
    let backend = repo.repo.backend();
    let size = backend
        .head(&manifest)
        .await?
        .ok_or_else(|| Error::NotFound {
            key: manifest.path(),
            location: backend.location().to_string(),
        })?
        .size;
    let snap = repo.repo.read_snapshot(snapshot).await?;
    let mut out = SnapshotObjects::default();
    out.objects.insert(manifest, size);
    let mut chunks: HashSet<Id> = snap.manifest.tree.iter().copied().collect();
    let tree_readable = chunks.iter().all(|c| repo.index.contains(c));
    if tree_readable {
        let r = repo.clone();
        let handle = tokio::runtime::Handle::current();
        let files = tokio::task::spawn_blocking(move || -> Result<HashSet<Id>> {
            let name = format!("snapshots/{}", snap.id);
            let mut chunks = HashSet::new();
            let mut entries =
                EntryReader::new(r.chunk_reader(handle, snap.manifest.tree.clone()), &name);
            while let Some(e) = entries.next_entry()? {
                chunks.extend(e.chunks);
            }
            Ok(chunks)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("snapshot objects task: {e}")))??;
        chunks.extend(files);
    }
    for c in chunks {
        match repo.index.get(&c) {
            Some((pack, _)) => {
                out.objects.insert(
                    ObjectKey::new(ObjectKind::Pack, pack.id.to_hex()),
                    pack.size,
                );
            }
            None => out.unindexed.push(c),
        }
    }
    out.unindexed.sort();
    Ok(out)
}

/// What is wrong with one object at one location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Not there.
    Missing,
    /// Another size than the other copies.
    Size {
        /// Found.
        found: u64,
        /// Expected.
        expected: u64,
    },
    /// The stored checksum or the re-read bytes do not match the name.
    Checksum,
    /// It could not be read.
    Unreadable(String),
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Missing => f.write_str("missing"),
            Fault::Size { found, expected } => {
                write!(
                    f,
                    "{found} bytes instead of {expected} (truncated or replaced)"
                )
            }
            Fault::Checksum => f.write_str("checksum does not match (corrupt)"),
            Fault::Unreadable(e) => write!(f, "unreadable: {e}"),
        }
    }
}

/// A damaged object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The object.
    pub key: ObjectKey,
    /// What is wrong.
    pub fault: Fault,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.fault)
    }
}

/// What [`sync_to`] did.
#[derive(Debug, Default, Clone)]
pub struct SyncReport {
    /// Objects the target already had.
    pub present: u64,
    /// Objects copied (or re-copied over a damaged copy).
    pub copied: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Source copies found corrupt while copying: (source index, problem).
    pub bad_sources: Vec<(usize, Problem)>,
    /// Objects that could not be copied, with why.
    pub failed: Vec<(ObjectKey, String)>,
}

impl SyncReport {
    /// Whether the target now holds every object.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Make `target` hold every object in `sources` (given with their
/// listings). Objects listed at the target with the right size are kept;
/// those in `redo` (known damaged there) and those of the wrong size are
/// copied again. Each copy is read back: the stored checksum (S3), or the
/// bytes re-read and re-hashed (stores without checksums, e.g. `file://`).
///
/// # Errors
/// Only when the target cannot be listed; per-object failures are in the
/// report.
pub async fn sync_to(
    target: &DynBackend,
    sources: &[(DynBackend, Listing)],
    redo: &HashSet<ObjectKey>,
    concurrency: usize,
    pacer: Option<&Pacer>,
) -> Result<SyncReport> {
    let have = list_all(target).await?;
    let mut report = SyncReport::default();
    // Each wanted object, with the sources that list it.
    let mut wanted: BTreeMap<ObjectKey, (u64, Vec<usize>)> = BTreeMap::new();
    for (i, (_, listing)) in sources.iter().enumerate() {
        for (key, size) in listing {
            let e = wanted.entry(key.clone()).or_insert((*size, Vec::new()));
            if e.0 == *size {
                e.1.push(i);
            }
        }
    }
    let mut todo = Vec::new();
    for (key, (size, from)) in wanted {
        match have.get(&key) {
            Some(s) if *s == size && !redo.contains(&key) => report.present += 1,
            _ => todo.push((key, size, from)),
        }
    }
    // Packs are big and many; the config, indexes and snapshots are small.
    // Copy snapshots last, so a snapshot is never at a location before the
    // objects it refers to.
    todo.sort_by_key(|(k, _, _)| (k.kind == ObjectKind::Snapshot, k.clone()));
    let (first, last): (Vec<_>, Vec<_>) = todo
        .into_iter()
        .partition(|(k, _, _)| k.kind != ObjectKind::Snapshot);
    for batch in [first, last] {
        let results: Vec<(ObjectKey, CopyOutcome)> = futures::stream::iter(batch)
            .map(|(key, size, from)| async move {
                let out = copy_one(target, sources, &key, size, &from, pacer).await;
                (key, out)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        for (key, out) in results {
            report.bad_sources.extend(out.bad_sources);
            match out.result {
                Ok(n) => {
                    report.copied += 1;
                    report.bytes += n;
                }
                Err(e) => report.failed.push((key, e)),
            }
        }
    }
    Ok(report)
}

struct CopyOutcome {
    result: std::result::Result<u64, String>,
    bad_sources: Vec<(usize, Problem)>,
}

async fn copy_one(
    target: &DynBackend,
    sources: &[(DynBackend, Listing)],
    key: &ObjectKey,
    size: u64,
    from: &[usize],
    pacer: Option<&Pacer>,
) -> CopyOutcome {
    let mut bad = Vec::new();
    let mut errors = Vec::new();
    for &i in from {
        let (src, _) = &sources[i];
        let bytes = match src.get(key).await {
            Ok(b) => b,
            Err(e) => {
                errors.push(format!("{}: {e}", src.location()));
                continue;
            }
        };
        let sum = sha256(&bytes);
        if bytes.len() as u64 != size || expected_sha256(key).is_some_and(|want| want != sum) {
            bad.push((
                i,
                Problem {
                    key: key.clone(),
                    fault: if bytes.len() as u64 == size {
                        Fault::Checksum
                    } else {
                        Fault::Size {
                            found: bytes.len() as u64,
                            expected: size,
                        }
                    },
                },
            ));
            errors.push(format!("{}: corrupt copy", src.location()));
            continue;
        }
        if let Some(p) = pacer {
            p.take(size).await;
        }
        match put_verified(target, key, bytes, sum).await {
            Ok(()) => {
                return CopyOutcome {
                    result: Ok(size),
                    bad_sources: bad,
                }
            }
            Err(e) => {
                // The target is the problem; another source will not help.
                return CopyOutcome {
                    result: Err(e.to_string()),
                    bad_sources: bad,
                };
            }
        }
    }
    CopyOutcome {
        result: Err(if errors.is_empty() {
            "no location holds a good copy".to_string()
        } else {
            format!("no good copy could be read ({})", errors.join("; "))
        }),
        bad_sources: bad,
    }
}

/// Write an object and read its checksum back.
///
/// # Errors
/// Storage errors; [`Error::Corrupt`] when the read-back does not match.
pub async fn put_verified(
    target: &DynBackend,
    key: &ObjectKey,
    bytes: Bytes,
    sum: [u8; 32],
) -> Result<()> {
    let len = bytes.len() as u64;
    target.put(key, bytes, sum).await?;
    match check_one(target, key, len, Some(sum), false).await {
        None => Ok(()),
        Some(f) => Err(Error::Corrupt {
            key: format!("{} at {}", key, target.location()),
            reason: format!("read back after writing: {f}"),
        }),
    }
}

/// Check one object: `None` when good. Quick uses the stored checksum when
/// the store keeps one (S3) and the size otherwise; deep, or a store without
/// checksums when `sum` must be confirmed after a write, re-reads the bytes.
async fn check_one(
    backend: &DynBackend,
    key: &ObjectKey,
    size: u64,
    sum: Option<[u8; 32]>,
    deep: bool,
) -> Option<Fault> {
    let meta = match backend.head(key).await {
        Ok(None) => return Some(Fault::Missing),
        Ok(Some(m)) => m,
        Err(e) => return Some(Fault::Unreadable(e.to_string())),
    };
    if meta.size != size {
        return Some(Fault::Size {
            found: meta.size,
            expected: size,
        });
    }
    let want = sum.or_else(|| expected_sha256(key));
    if let (Some(stored), Some(want)) = (meta.sha256, want) {
        if stored != want {
            return Some(Fault::Checksum);
        }
    }
    let reread = deep || (meta.sha256.is_none() && sum.is_some());
    if reread {
        match backend.get(key).await {
            Ok(b) => {
                if b.len() as u64 != size {
                    return Some(Fault::Size {
                        found: b.len() as u64,
                        expected: size,
                    });
                }
                if want.is_some_and(|w| w != sha256(&b)) {
                    return Some(Fault::Checksum);
                }
            }
            Err(e) => return Some(Fault::Unreadable(e.to_string())),
        }
    }
    None
}

/// What [`verify`] found.
#[derive(Debug, Default, Clone)]
pub struct VerifyReport {
    /// Objects checked.
    pub objects: u64,
    /// Bytes re-read (deep).
    pub bytes_read: u64,
    /// Damaged objects.
    pub problems: Vec<Problem>,
}

/// Check `objects` (key → expected size) at `backend`: quick (HEAD) or
/// `deep` (re-read and re-hash).
pub async fn verify(
    backend: &DynBackend,
    objects: &[(ObjectKey, u64)],
    deep: bool,
    concurrency: usize,
) -> VerifyReport {
    let results: Vec<(ObjectKey, u64, Option<Fault>)> =
        futures::stream::iter(objects.iter().cloned())
            .map(|(key, size)| async move {
                let f = check_one(backend, &key, size, None, deep).await;
                (key, size, f)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
    let mut report = VerifyReport::default();
    for (key, size, fault) in results {
        report.objects += 1;
        if deep && !matches!(fault, Some(Fault::Missing | Fault::Unreadable(_))) {
            report.bytes_read += size;
        }
        if let Some(fault) = fault {
            report.problems.push(Problem { key, fault });
        }
    }
    report.problems.sort_by(|a, b| a.key.cmp(&b.key));
    report
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::MemoryBackend;

    fn mem() -> DynBackend {
        Arc::new(MemoryBackend::new())
    }

    async fn put(b: &DynBackend, data: &[u8]) -> ObjectKey {
        let sum = sha256(data);
        let key = ObjectKey::new(ObjectKind::Pack, hex::encode(sum));
        b.put(&key, Bytes::copy_from_slice(data), sum)
            .await
            .unwrap();
        key
    }

    #[tokio::test]
    async fn sync_copies_missing_skips_present_and_refuses_corrupt_sources() {
        let a = mem();
        let b = mem();
        let t = mem();
        let k1 = put(&a, b"one").await;
        let k2 = put(&a, b"two").await;
        put(&t, b"one").await;
        // b holds a corrupt copy of k2 under the right name and size.
        b.put(&k2, Bytes::from_static(b"twx"), sha256(b"twx"))
            .await
            .unwrap();
        let sources = vec![
            (b.clone(), list_all(&b).await.unwrap()),
            (a.clone(), list_all(&a).await.unwrap()),
        ];
        let r = sync_to(&t, &sources, &HashSet::new(), 4, None)
            .await
            .unwrap();
        assert_eq!((r.present, r.copied, r.bytes), (1, 1, 3));
        assert!(r.is_complete());
        assert_eq!(r.bad_sources.len(), 1, "the corrupt copy at b is reported");
        assert_eq!(r.bad_sources[0].0, 0);
        assert_eq!(&t.get(&k2).await.unwrap()[..], b"two");
        assert!(t.head(&k1).await.unwrap().is_some());
        // Again: nothing to copy.
        let r = sync_to(&t, &sources, &HashSet::new(), 4, None)
            .await
            .unwrap();
        assert_eq!((r.copied, r.bytes), (0, 0));
        // Repairing b from the others.
        let srcs = vec![(t.clone(), list_all(&t).await.unwrap())];
        let redo: HashSet<ObjectKey> = [k2.clone()].into();
        let r = sync_to(&b, &srcs, &redo, 4, None).await.unwrap();
        assert_eq!(r.copied, 2, "k1 was missing, k2 was damaged");
        assert_eq!(&b.get(&k2).await.unwrap()[..], b"two");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshot_objects_are_the_manifest_and_the_packs_of_every_chunk() {
        use crate::{BackupInput, BackupOptions, ChunkerParams, LocalKeyFile, Repository};
        let dir = tempfile::tempdir().unwrap();
        let keys = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
        let b = mem();
        let repo = Arc::new(
            Repository::init(b.clone(), keys, ChunkerParams::default())
                .await
                .unwrap(),
        );
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), trireme_testkit::noise(7, 3_000_000)).unwrap();
        let indexed = repo.load_index().await.unwrap();
        let snap = indexed
            .backup(
                BackupInput::Tree(src),
                BackupOptions::new("s", "volume", "h"),
            )
            .await
            .unwrap();
        let indexed = repo.load_index().await.unwrap();
        let got = snapshot_objects(&indexed, &snap.id).await.unwrap();
        assert!(got.unindexed.is_empty());
        // Everything at the location but the config and the index objects.
        let mut want = list_all(&b).await.unwrap();
        want.retain(|k, _| matches!(k.kind, ObjectKind::Snapshot | ObjectKind::Pack));
        assert_eq!(got.objects, want);
        assert!(want.keys().any(|k| k.kind == ObjectKind::Pack));

        // With an index that lists nothing, its tree cannot be followed:
        // the tree's chunks are reported, only the manifest is named.
        let empty = IndexedRepo {
            repo: repo.clone(),
            index: Arc::default(),
            damaged: Arc::default(),
        };
        let got = snapshot_objects(&empty, &snap.id).await.unwrap();
        assert_eq!(got.objects.len(), 1);
        let mut tree = snap.manifest.tree.clone();
        tree.sort();
        tree.dedup();
        assert_eq!(got.unindexed, tree);
        // A snapshot that is not there.
        let e = snapshot_objects(&indexed, &Id([9; 32])).await.unwrap_err();
        assert!(matches!(e, Error::NotFound { .. }), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_holds_the_average_rate() {
        let p = Pacer::new(1000);
        let t0 = tokio::time::Instant::now();
        for _ in 0..5 {
            p.take(500).await;
        }
        // 2500 bytes at 1000 B/s: the fifth write may start after 2 s.
        assert_eq!(t0.elapsed().as_secs(), 2);
    }

    #[tokio::test]
    async fn verify_quick_and_deep() {
        let a = mem();
        let k1 = put(&a, b"alpha").await;
        let k2 = put(&a, b"beta").await;
        let k3 = ObjectKey::new(ObjectKind::Pack, hex::encode(sha256(b"gone")));
        a.put(&k2, Bytes::from_static(b"bexa"), sha256(b"beta"))
            .await
            .unwrap();
        let objects = vec![(k1.clone(), 5), (k2.clone(), 4), (k3.clone(), 4)];
        let quick = verify(&a, &objects, false, 4).await;
        assert_eq!(quick.problems.len(), 1, "{:?}", quick.problems);
        assert_eq!(quick.problems[0].fault, Fault::Missing);
        let deep = verify(&a, &objects, true, 4).await;
        let faults: Vec<_> = deep
            .problems
            .iter()
            .map(|p| (p.key.clone(), p.fault.clone()))
            .collect();
        assert!(faults.contains(&(k2, Fault::Checksum)), "{faults:?}");
        assert!(faults.contains(&(k3, Fault::Missing)));
        assert_eq!(deep.bytes_read, 9);
    }
}
