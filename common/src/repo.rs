//! The repository: a location's objects read and written through the format.
//!
//! [`Repository`] is an opened repository (config read, id key unwrapped);
//! [`IndexedRepo`] adds the loaded index, and only it can read chunks, back
//! up, restore or check.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::attribution::{Attributable, Attribution};
use crate::backend::{DynBackend, ObjectKey, ObjectKind};
use crate::crypto::{sha256, ChunkHasher, DataKey, Id};
use crate::error::{Error, Result};
use crate::format::{
    open_blob, open_object, seal_object, sealed_object_key, ChunkerParams, RepoConfig,
    FORMAT_VERSION, INDEX_MAGIC, SNAPSHOT_MAGIC,
};
use crate::index::{Index, IndexFile};
use crate::keys::{DynKeyProvider, KeyCache, WrappedKey};
use crate::manifest::SnapshotManifest;

/// How many objects are fetched at once when loading the index or snapshots.
const LOAD_CONCURRENCY: usize = 16;

/// An opened repository.
#[derive(Debug)]
pub struct Repository {
    backend: DynBackend,
    keys: KeyCache,
    config: RepoConfig,
    hasher: ChunkHasher,
    /// Fleet mode: the job whose index objects and manifests this process
    /// writes, and its attribution key.
    attribution: std::sync::OnceLock<Attribution>,
}

/// A snapshot: its id (the manifest object's SHA-256) and manifest.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Id, also the manifest object's name.
    pub id: Id,
    /// The manifest.
    pub manifest: SnapshotManifest,
}

/// A data key for one write session: used now, stored wrapped.
#[derive(Debug, Clone)]
pub struct SessionKey {
    /// The plaintext key.
    pub key: Arc<DataKey>,
    /// The same key wrapped by the master key.
    pub wrapped: WrappedKey,
}

impl Repository {
    /// Create a repository at an empty location.
    ///
    /// # Errors
    /// [`Error::RepositoryExists`] if there is one; storage and key errors.
    pub async fn init(
        backend: DynBackend,
        keys: DynKeyProvider,
        chunker: ChunkerParams,
    ) -> Result<Self> {
        Self::init_controlled(backend, keys, chunker, None).await
    }

    /// Create a repository at an empty location; with `controller` (the
    /// controller key, plaintext and wrapped), the config carries it and a
    /// controller MAC (fleet mode, `docs/format.md` §4).
    ///
    /// # Errors
    /// As [`Repository::init`].
    pub async fn init_controlled(
        backend: DynBackend,
        keys: DynKeyProvider,
        chunker: ChunkerParams,
        controller: Option<(&DataKey, &WrappedKey)>,
    ) -> Result<Self> {
        if backend.head(&ObjectKey::config()).await?.is_some() {
            return Err(Error::RepositoryExists(backend.location().to_string()));
        }
        chunker.validate()?;
        let (id_key, wrapped) = keys.generate().await?;
        let mut config = RepoConfig {
            version: FORMAT_VERSION,
            id: uuid::Uuid::new_v4(),
            created: now_ns() / 1_000_000_000,
            chunker,
            id_key: wrapped.0,
            mac: Vec::new(),
            controller_key: None,
            controller_mac: None,
        };
        match controller {
            Some((k, w)) => config.seal_controlled(id_key.as_bytes(), k.as_bytes(), w),
            None => config.mac = config.compute_mac(id_key.as_bytes()),
        }
        let bytes = config.encode();
        let sum = sha256(&bytes);
        backend
            .put(&ObjectKey::config(), Bytes::from(bytes), sum)
            .await?;
        Ok(Repository {
            hasher: ChunkHasher::new(*id_key.as_bytes()),
            backend,
            keys: KeyCache::new(keys),
            config,
            attribution: std::sync::OnceLock::new(),
        })
    }

    /// Open the repository at a location.
    ///
    /// # Errors
    /// [`Error::NoRepository`] when there is none, [`Error::WrongKey`] when the
    /// key provider's master key is not this repository's.
    pub async fn open(backend: DynBackend, keys: DynKeyProvider) -> Result<Self> {
        let raw = match backend.get(&ObjectKey::config()).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NoRepository(backend.location().to_string()))
            }
            Err(e) => return Err(e),
        };
        Self::from_config(backend, keys, &raw).await
    }

    /// Open the repository at a location, requiring its config to be the
    /// one whose SHA-256 is `expected` (the controller tells its agents):
    /// a config altered at the location is refused before it is used.
    ///
    /// # Errors
    /// As [`Repository::open`]; [`Error::Corrupt`] naming the config when
    /// its hash differs.
    pub async fn open_expecting(
        backend: DynBackend,
        keys: DynKeyProvider,
        expected: Option<[u8; 32]>,
    ) -> Result<Self> {
        let raw = match backend.get(&ObjectKey::config()).await {
            Ok(b) => b,
            Err(Error::NotFound { .. }) => {
                return Err(Error::NoRepository(backend.location().to_string()))
            }
            Err(e) => return Err(e),
        };
        if let Some(want) = expected {
            if sha256(&raw) != want {
                return Err(Error::corrupt(
                    format!("config at {}", backend.location()),
                    "it is not the repository config the controller holds (its SHA-256 differs): it was altered at the location; the controller restores it at its next check",
                ));
            }
        }
        Self::from_config(backend, keys, &raw).await
    }

    /// Open the repository at a location with the config bytes `raw` (the
    /// controller's own copy), without reading the location's.
    ///
    /// # Errors
    /// As [`Repository::open`].
    pub async fn from_config(
        backend: DynBackend,
        keys: DynKeyProvider,
        raw: &[u8],
    ) -> Result<Self> {
        let config = RepoConfig::decode(raw)?;
        let keys = KeyCache::new(keys);
        let id_key = keys.unwrap(&config.wrapped_id_key()).await?;
        config.verify_mac(id_key.as_bytes())?;
        Ok(Repository {
            hasher: ChunkHasher::new(*id_key.as_bytes()),
            backend,
            keys,
            config,
            attribution: std::sync::OnceLock::new(),
        })
    }

    /// Attribute every index object and manifest written from now on to
    /// `a`'s job (fleet mode; see [`crate::attribution`]). Set once; a
    /// second call is ignored.
    pub fn set_attribution(&self, a: Attribution) {
        let _ = self.attribution.set(a);
    }

    /// `value` with this process's attribution, if it has one.
    pub fn attributed<'a, T: Attributable>(&self, value: &'a T) -> std::borrow::Cow<'a, T> {
        match self.attribution.get() {
            Some(a) => {
                let mut v = value.clone();
                v.attribute(a);
                std::borrow::Cow::Owned(v)
            }
            None => std::borrow::Cow::Borrowed(value),
        }
    }

    /// The storage backend.
    pub fn backend(&self) -> &DynBackend {
        &self.backend
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The chunk id function.
    pub fn hasher(&self) -> &ChunkHasher {
        &self.hasher
    }

    /// The key cache (unwrapped keys of this process).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// A fresh data key for a write session.
    ///
    /// # Errors
    /// When the key provider fails.
    pub async fn new_session_key(&self) -> Result<SessionKey> {
        let (key, wrapped) = self.keys.provider().generate().await?;
        let key = Arc::new(key);
        self.keys.insert(wrapped.clone(), key.clone());
        Ok(SessionKey { key, wrapped })
    }

    /// Store bytes under their SHA-256; returns the id.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put_content(&self, kind: ObjectKind, bytes: Vec<u8>) -> Result<Id> {
        let sum = sha256(&bytes);
        let id = Id(sum);
        self.backend
            .put(&ObjectKey::new(kind, id.to_hex()), Bytes::from(bytes), sum)
            .await?;
        Ok(id)
    }

    /// Read a content-addressed object and check its bytes hash to its name.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`] naming the object, storage errors.
    pub async fn get_verified(&self, key: &ObjectKey) -> Result<Bytes> {
        let bytes = self.backend.get(key).await?;
        if key.is_content_addressed() && hex::encode(sha256(&bytes)) != key.name {
            return Err(Error::corrupt(
                key.path(),
                format!(
                    "content does not match its SHA-256 name ({} bytes read)",
                    bytes.len()
                ),
            ));
        }
        Ok(bytes)
    }

    async fn open_sealed<T: serde::de::DeserializeOwned>(
        &self,
        key: &ObjectKey,
        magic: [u8; 4],
    ) -> Result<T> {
        let opened = self.open_sealed_where(key, magic, |_| true).await?;
        Ok(opened.expect("every key admitted").1)
    }

    /// Open a sealed object if `admit` accepts the wrapped key its header
    /// carries (read before anything is unwrapped); `None` when it does not.
    async fn open_sealed_where<T: serde::de::DeserializeOwned>(
        &self,
        key: &ObjectKey,
        magic: [u8; 4],
        admit: impl Fn(&WrappedKey) -> bool,
    ) -> Result<Option<(WrappedKey, T)>> {
        let bytes = self.get_verified(key).await?;
        let name = key.path();
        let (wrapped, header_len) = sealed_object_key(&name, &bytes, magic)?;
        if !admit(&wrapped) {
            return Ok(None);
        }
        let dek = self.keys.unwrap(&wrapped).await?;
        let payload = open_object(&name, &bytes, header_len, &dek)?;
        Ok(Some((wrapped, payload)))
    }

    /// Write an index object.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn write_index(&self, session: &SessionKey, index: &IndexFile) -> Result<(Id, u64)> {
        let index = self.attributed(index);
        let bytes = seal_object(INDEX_MAGIC, &session.key, &session.wrapped, &*index);
        let len = bytes.len() as u64;
        Ok((self.put_content(ObjectKind::Index, bytes).await?, len))
    }

    /// Read one index object.
    ///
    /// # Errors
    /// Storage, key and corruption errors naming the object.
    pub async fn read_index(&self, key: &ObjectKey) -> Result<IndexFile> {
        self.open_sealed(key, INDEX_MAGIC).await
    }

    /// Read one index object with the wrapped key its header carries.
    ///
    /// # Errors
    /// As [`Repository::read_index`].
    pub async fn read_index_keyed(&self, key: &ObjectKey) -> Result<(WrappedKey, IndexFile)> {
        let opened = self.open_sealed_where(key, INDEX_MAGIC, |_| true).await?;
        Ok(opened.expect("every key admitted"))
    }

    /// The wrapped key in the header of snapshot `id`'s manifest (its
    /// backup's data key), read without unwrapping it.
    ///
    /// # Errors
    /// Storage and corruption errors naming the manifest.
    pub async fn snapshot_key(&self, id: &Id) -> Result<WrappedKey> {
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
        let bytes = self.get_verified(&key).await?;
        Ok(sealed_object_key(&key.path(), &bytes, SNAPSHOT_MAGIC)?.0)
    }

    /// Load the index objects whose key is in `granted` (a job's key scope,
    /// see [`crate::scope`]); the others are skipped without asking for
    /// their key. Packs sealed with a granted key come first, so a chunk
    /// stored more than once resolves to a pack the job may open; the other
    /// packs are still listed (a backup dedups against them).
    ///
    /// # Errors
    /// As [`Repository::load_index`].
    pub async fn load_index_scoped(
        self: &Arc<Self>,
        granted: &std::collections::HashSet<WrappedKey>,
    ) -> Result<IndexedRepo> {
        self.load_index_where(Some(granted), &IndexLimits::default())
            .await
    }

    /// As [`Repository::load_index_scoped`], within `limits`: only the
    /// index objects the controller names (planted ones are never read),
    /// and for a backup only the packs it allows (its own agent's), so
    /// chunks stored elsewhere are uploaded again rather than deduplicated.
    ///
    /// # Errors
    /// As [`Repository::load_index`].
    pub async fn load_index_limited(
        self: &Arc<Self>,
        granted: &std::collections::HashSet<WrappedKey>,
        limits: &IndexLimits,
    ) -> Result<IndexedRepo> {
        self.load_index_where(Some(granted), limits).await
    }

    /// Load every index object into memory.
    ///
    /// # Errors
    /// As [`Repository::read_index`]; a damaged index object fails the load.
    pub async fn load_index(self: &Arc<Self>) -> Result<IndexedRepo> {
        self.load_index_where(None, &IndexLimits::default()).await
    }

    /// The index from the objects whose key is in `granted` (all when
    /// `None`), packs under granted keys first.
    async fn load_index_where(
        self: &Arc<Self>,
        granted: Option<&std::collections::HashSet<WrappedKey>>,
        limits: &IndexLimits,
    ) -> Result<IndexedRepo> {
        let admitted = |w: &WrappedKey| granted.is_none_or(|g| g.contains(w));
        let packs = limits.packs.as_ref();
        let listed: Vec<_> = self
            .backend
            .list(ObjectKind::Index)
            .await?
            .into_iter()
            .filter(|o| {
                limits
                    .objects
                    .as_ref()
                    .is_none_or(|n| n.contains(&o.key.name))
            })
            .collect();
        let files: Vec<(ObjectKey, Option<Option<IndexFile>>)> = futures::stream::iter(listed)
            .map(|o| async move {
                let read = self.open_sealed_where(&o.key, INDEX_MAGIC, admitted).await;
                let f = skip_corrupt(&o.key, read)?.map(|f| f.map(|(_, f)| f));
                Ok::<_, Error>((o.key, f))
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let damaged: Vec<String> = files
            .iter()
            .filter(|(_, f)| f.is_none())
            .map(|(k, _)| k.path())
            .collect();
        let files: Vec<IndexFile> = files.into_iter().filter_map(|(_, f)| f.flatten()).collect();
        let mut index = Index::new();
        for first in [true, false] {
            for f in &files {
                for p in &f.packs {
                    if admitted(&WrappedKey(p.key.clone())) == first
                        && packs.is_none_or(|allowed| allowed.contains(&p.id))
                    {
                        index.add_pack(p);
                    }
                }
            }
        }
        Ok(IndexedRepo {
            repo: self.clone(),
            index: Arc::new(index),
            damaged: Arc::new(damaged),
        })
    }

    /// Write a snapshot manifest; returns its id.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn write_snapshot(
        &self,
        session: &SessionKey,
        m: &SnapshotManifest,
    ) -> Result<(Id, u64)> {
        let m = self.attributed(m);
        let bytes = seal_object(SNAPSHOT_MAGIC, &session.key, &session.wrapped, &*m);
        let len = bytes.len() as u64;
        Ok((self.put_content(ObjectKind::Snapshot, bytes).await?, len))
    }

    /// Read one snapshot manifest.
    ///
    /// # Errors
    /// Storage, key and corruption errors naming the object.
    pub async fn read_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
        let manifest = self.open_sealed(&key, SNAPSHOT_MAGIC).await?;
        Ok(Snapshot { id: *id, manifest })
    }

    /// Read one snapshot manifest with the wrapped key its header carries
    /// (its backup's data key).
    ///
    /// # Errors
    /// As [`Repository::read_snapshot`].
    pub async fn read_snapshot_keyed(&self, id: &Id) -> Result<(WrappedKey, Snapshot)> {
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
        let (wrapped, manifest) = self
            .open_sealed_where(&key, SNAPSHOT_MAGIC, |_| true)
            .await?
            .expect("every key admitted");
        Ok((wrapped, Snapshot { id: *id, manifest }))
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// As [`Repository::read_snapshot`].
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let listed = self.backend.list(ObjectKind::Snapshot).await?;
        let snaps: Vec<Option<Snapshot>> = futures::stream::iter(listed)
            .map(|o| async move {
                let r = match Id::from_hex(&o.key.name) {
                    Some(id) => self.read_snapshot(&id).await,
                    None => Err(Error::corrupt(o.key.path(), "name is not a SHA-256")),
                };
                skip_corrupt(&o.key, r)
            })
            .buffer_unordered(LOAD_CONCURRENCY)
            .try_collect()
            .await?;
        let mut snaps: Vec<Snapshot> = snaps.into_iter().flatten().collect();
        snaps.sort_by_key(|s| (s.manifest.started_ns, s.id));
        Ok(snaps)
    }

    /// Find a snapshot by id prefix (at least 4 hex digits), or `latest`
    /// (optionally restricted to one source).
    ///
    /// # Errors
    /// [`Error::Snapshot`] when nothing or more than one snapshot matches.
    pub async fn find_snapshot(&self, spec: &str, source: Option<&str>) -> Result<Snapshot> {
        if spec == "latest" {
            let snaps = self.snapshots().await?;
            let of_source = |s: &&Snapshot| source.is_none_or(|src| s.manifest.source == src);
            return snaps.iter().rev().find(of_source).cloned().ok_or_else(|| {
                Error::Snapshot(match source {
                    Some(s) => format!("latest: no snapshot of source {s:?} in this repository"),
                    None => "latest: the repository has no snapshots".into(),
                })
            });
        }
        let spec = spec.to_ascii_lowercase();
        if spec.len() < 4 || !spec.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(Error::Snapshot(format!(
                "{spec:?}: give `latest` or at least 4 hex digits of a snapshot id"
            )));
        }
        // Match names, then read: a damaged manifest is reported, not hidden.
        let names: Vec<Id> = self
            .backend
            .list(ObjectKind::Snapshot)
            .await?
            .into_iter()
            .filter(|o| o.key.name.starts_with(&spec))
            .filter_map(|o| Id::from_hex(&o.key.name))
            .collect();
        match names.as_slice() {
            [one] => {
                let s = self.read_snapshot(one).await?;
                if source.is_some_and(|src| s.manifest.source != src) {
                    return Err(Error::Snapshot(format!(
                        "{spec}: snapshot {} is of source {:?}",
                        one.short(),
                        s.manifest.source
                    )));
                }
                Ok(s)
            }
            [] => Err(Error::Snapshot(format!(
                "{spec}: no such snapshot (see `snapshots`)"
            ))),
            many => Err(Error::Snapshot(format!(
                "{spec}: matches {} snapshots; give more digits",
                many.len()
            ))),
        }
    }
}

/// What a job may load of the index (fleet mode: the controller says).
#[derive(Debug, Clone, Default)]
pub struct IndexLimits {
    /// Only these index objects (by name), when set.
    pub objects: Option<std::collections::HashSet<String>>,
    /// Only these packs, when set.
    pub packs: Option<std::collections::HashSet<Id>>,
}

/// A repository with its index loaded: it can read chunks.
#[derive(Debug, Clone)]
pub struct IndexedRepo {
    /// The repository.
    pub repo: Arc<Repository>,
    /// Its index at load time.
    pub index: Arc<Index>,
    /// Index objects skipped as damaged while loading.
    pub damaged: Arc<Vec<String>>,
}

impl IndexedRepo {
    /// The error for a chunk that no loaded index lists, naming any index
    /// objects that were skipped as damaged (the likely cause).
    pub fn not_indexed(&self, context: &str, id: &Id) -> Error {
        let mut reason = format!("chunk {} is in no index", id.to_hex());
        if self.damaged.is_empty() {
            reason.push_str(" (missing pack or index object)");
        } else {
            reason.push_str(&format!(
                "; damaged index objects were skipped: {}",
                self.damaged.join(", ")
            ));
        }
        Error::corrupt(context, reason)
    }

    /// Read, authenticate, decompress and verify one chunk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the pack (or the snapshot when the chunk is
    /// not in the index), storage and key errors.
    pub async fn read_chunk(&self, id: &Id) -> Result<Vec<u8>> {
        let (pack, entry) = self
            .index
            .get(id)
            .ok_or_else(|| self.not_indexed("snapshot tree", id))?;
        let key = ObjectKey::new(ObjectKind::Pack, pack.id.to_hex());
        let dek = self.repo.keys.unwrap(&pack.key).await?;
        let sealed = self
            .repo
            .backend
            .get_range(&key, entry.offset as u64, entry.length as u64)
            .await?;
        let hasher = self.repo.hasher.clone();
        let name = key.path();
        tokio::task::spawn_blocking(move || open_blob(&name, &entry, &sealed, &dek, &hasher))
            .await
            .map_err(|e| Error::Pipeline(format!("decrypt task: {e}")))?
    }
}

/// A damaged index or snapshot object must not make the whole repository
/// unusable: it is skipped with a warning (its chunks then count as absent,
/// so new backups store them again), and `check` reports it. Errors that are
/// not about the object itself (storage, keys) still fail.
fn skip_corrupt<T>(key: &ObjectKey, r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e @ (Error::Corrupt { .. } | Error::UnsupportedFormat { .. })) => {
            tracing::warn!(object = %key, error = %e, "skipping a damaged object; run `check --deep`");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Now, as Unix nanoseconds.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl IndexedRepo {
    /// A reader over the concatenated plaintext of `ids`, fetching a few
    /// chunks ahead. Use it from a plain thread (e.g. `spawn_blocking`).
    pub fn chunk_reader(&self, handle: tokio::runtime::Handle, ids: Vec<Id>) -> ChunkReader {
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let this = self.clone();
        handle.spawn(async move {
            let mut fetches = futures::stream::iter(ids)
                .map(|id| {
                    let this = this.clone();
                    async move { this.read_chunk(&id).await }
                })
                .buffered(READ_AHEAD);
            while let Some(r) = fetches.next().await {
                let stop = r.is_err();
                // The receiver may have gone; then stop fetching.
                if tx.send(r).await.is_err() || stop {
                    break;
                }
            }
        });
        ChunkReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

/// Chunks fetched ahead by a [`ChunkReader`].
const READ_AHEAD: usize = 4;

/// Reads the plaintext of a list of chunks in order (see
/// [`IndexedRepo::chunk_reader`]). Errors surface as `io::Error`s wrapping
/// the crate's [`Error`].
#[derive(Debug)]
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
