//! The backup pipeline: read → chunk → dedup → compress → encrypt → pack → upload.
//!
//! ```text
//!  reader thread ──chunks──▶ N seal workers ──blobs──▶ packer thread ──packs──▶ uploads (async, K at once)
//!  (walk, change detection,   (zstd, AES-GCM)          (packs of ~16 MiB,       (then index, then manifest)
//!   FastCDC, BLAKE3, dedup)                              SHA-256)
//! ```
//!
//! Every queue is bounded, so memory stays flat whatever the input size:
//! about `2·N` chunks in flight, plus `K + 1` packs. The index is written
//! only after its packs are stored, and the manifest last, so a backup killed
//! at any point leaves no snapshot that references missing data.

mod reader;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinSet;

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::{sha256, Id};
use crate::error::{Error, Result};
use crate::format::{BlobEntry, PackBuilder};
use crate::index::{IndexFile, IndexPack};
use crate::manifest::{ContentKind, SnapshotManifest};
use crate::repo::{now_ns, IndexedRepo, SessionKey, Snapshot};

/// Default zstd level. Level 2 keeps level 3's ratio within 0.2% on mixed
/// data (logs, dumps, media) at about 15% less CPU (bench/RESULTS.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

/// What to back up.
pub enum BackupInput {
    /// A directory tree.
    Tree(PathBuf),
    /// Several directories (absolute), each stored under its full path:
    /// `/srv/app` and `/etc/app` as `srv/app` and `etc/app`.
    Trees(Vec<PathBuf>),
    /// A byte stream (e.g. a dump command's stdout), stored as one file named `name`.
    Stream {
        /// The stream's name in the snapshot.
        name: String,
        /// Where to read it from.
        reader: Box<dyn Read + Send>,
    },
}

/// Decides which paths of a tree backup to leave out: called with each
/// entry's path relative to the root (e.g. `topic-0/00000000000000000000.log`);
/// `true` skips it (and everything below it, for a directory).
#[derive(Clone)]
pub struct PathFilter(pub Arc<dyn Fn(&std::path::Path) -> bool + Send + Sync>);

impl std::fmt::Debug for PathFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathFilter(..)")
    }
}

/// Datastore positions known only once the input is read (e.g. counts a
/// dump tool prints when it exits); merged into the manifest's `position`
/// just before the manifest is written.
pub type LatePosition = Arc<std::sync::Mutex<BTreeMap<String, String>>>;

/// Live counters a caller can watch while a backup runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Files (and the stream) visited.
    pub files: AtomicU64,
    /// Bytes read from the source.
    pub bytes_read: AtomicU64,
    /// Bytes of unchanged files skipped unread.
    pub bytes_skipped: AtomicU64,
    /// Bytes uploaded.
    pub bytes_uploaded: AtomicU64,
}

/// Settings of one backup.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    /// Source name, e.g. `redis-main`.
    pub source: String,
    /// Source kind, e.g. `volume`.
    pub source_kind: String,
    /// This host's name.
    pub host: String,
    /// Parent snapshot for change detection (trees only).
    pub parent: Option<Id>,
    /// Labels.
    pub tags: Vec<String>,
    /// Datastore position (e.g. a backup TS).
    pub position: BTreeMap<String, String>,
    /// Positions filled in while the input is read (see [`LatePosition`]).
    pub late_position: Option<LatePosition>,
    /// Paths of a tree to leave out.
    pub exclude: Option<PathFilter>,
    /// Leave out a directory (and all in it) that holds a file of one of
    /// these names, e.g. `.nobackup`.
    pub exclude_if_present: Vec<String>,
    /// Stay on the file system of the tree's root: a directory on another
    /// one (a mount point) is kept, empty.
    pub one_file_system: bool,
    /// zstd level (1–19).
    pub zstd_level: i32,
    /// Target pack size in bytes.
    pub pack_size: usize,
    /// Compression/encryption threads.
    pub workers: usize,
    /// Uploads in flight (each holds one pack in memory): 2 suit a local
    /// disk; object stores with more latency want 4 or more.
    pub uploads: usize,
    /// Packs per checkpoint index object (so an interrupted backup's data
    /// dedupes on the next run).
    pub checkpoint_packs: usize,
    /// Counters to watch.
    pub progress: Arc<Progress>,
}

impl BackupOptions {
    /// Defaults for a source: zstd 2, 16 MiB packs, one worker per core.
    pub fn new(
        source: impl Into<String>,
        source_kind: impl Into<String>,
        host: impl Into<String>,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        BackupOptions {
            source: source.into(),
            source_kind: source_kind.into(),
            host: host.into(),
            parent: None,
            tags: Vec::new(),
            position: BTreeMap::new(),
            late_position: None,
            exclude: None,
            exclude_if_present: Vec::new(),
            one_file_system: false,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            pack_size: 16 * 1024 * 1024,
            workers: cores,
            uploads: 2,
            checkpoint_packs: 64,
            progress: Arc::default(),
        }
    }
}

/// A chunk on its way to the seal workers.
struct RawChunk {
    id: Id,
    data: Vec<u8>,
}

/// A sealed chunk on its way to the packer.
struct SealedChunk {
    id: Id,
    sealed: Vec<u8>,
    raw_len: u32,
    zstd: bool,
}

/// A finished pack on its way to storage.
struct FinishedPack {
    id: Id,
    bytes: Bytes,
    blobs: Vec<BlobEntry>,
}

impl IndexedRepo {
    /// Back up `input` as a new snapshot.
    ///
    /// # Errors
    /// Storage, key and source I/O errors; on error no snapshot is written.
    pub async fn backup(&self, input: BackupInput, opts: BackupOptions) -> Result<Snapshot> {
        let started_ns = now_ns();
        let session = self.repo.new_session_key().await?;
        // Index objects get their own key: a job that only needs to know
        // which chunks exist (a backup's dedup) can be given the index keys
        // without the keys of the data they describe (docs/security.md §7).
        let index_session = self.repo.new_session_key().await?;
        let parent = match (&input, opts.parent) {
            (BackupInput::Tree(_) | BackupInput::Trees(_), Some(p)) => {
                Some(self.repo.read_snapshot(&p).await?)
            }
            _ => None,
        };
        let content = match input {
            BackupInput::Tree(_) | BackupInput::Trees(_) => ContentKind::Tree,
            BackupInput::Stream { .. } => ContentKind::Stream,
        };
        let workers = opts.workers.max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let (chunk_tx, chunk_rx) = crossbeam_channel::bounded::<RawChunk>(workers * 2);
        let (sealed_tx, sealed_rx) = crossbeam_channel::bounded::<SealedChunk>(workers * 2);
        let (pack_tx, mut pack_rx) = tokio::sync::mpsc::channel::<FinishedPack>(1);

        let reader = {
            let ctx = reader::ReaderCtx {
                repo: self.clone(),
                handle: tokio::runtime::Handle::current(),
                chunk_tx,
                progress: opts.progress.clone(),
                stop: stop.clone(),
                exclude: opts.exclude.clone(),
                exclude_if_present: opts.exclude_if_present.clone(),
                one_file_system: opts.one_file_system,
            };
            std::thread::Builder::new()
                .name("trireme-reader".into())
                .spawn(move || reader::run(ctx, input, parent))
                .map_err(|e| Error::Pipeline(format!("cannot start reader thread: {e}")))?
        };
        let mut sealers = Vec::new();
        for i in 0..workers {
            let rx = chunk_rx.clone();
            let tx = sealed_tx.clone();
            let key = session.key.clone();
            let level = opts.zstd_level;
            sealers.push(
                std::thread::Builder::new()
                    .name(format!("trireme-seal-{i}"))
                    .spawn(move || seal_worker(rx, tx, &key, level))
                    .map_err(|e| Error::Pipeline(format!("cannot start worker thread: {e}")))?,
            );
        }
        drop((chunk_rx, sealed_tx));
        let packer = {
            let session = session.clone();
            let pack_size = opts.pack_size;
            std::thread::Builder::new()
                .name("trireme-packer".into())
                .spawn(move || packer(sealed_rx, pack_tx, &session, pack_size))
                .map_err(|e| Error::Pipeline(format!("cannot start packer thread: {e}")))?
        };

        let uploaded = self
            .upload_packs(&mut pack_rx, &session, &index_session, &opts)
            .await
            .inspect_err(|_| stop.store(true, Ordering::Relaxed));
        drop(pack_rx);
        // Join off the runtime: a stopping reader may still wait on a
        // parent-tree fetch that needs a runtime thread.
        let (read, pipeline_err) = tokio::task::spawn_blocking(move || {
            let read = join(reader, "reader");
            let mut pipeline_err = None;
            for s in sealers {
                if let Err(e) = join(s, "seal worker") {
                    pipeline_err.get_or_insert(e);
                }
            }
            if let Err(e) = join(packer, "packer") {
                pipeline_err.get_or_insert(e);
            }
            (read, pipeline_err)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("joining the pipeline: {e}")))?;
        // The first cause wins: an upload error explains why the reader stopped.
        let mut uploaded = uploaded?;
        let read = read?;
        if let Some(e) = pipeline_err {
            return Err(e);
        }
        if !uploaded.pending.packs.is_empty() {
            uploaded.bytes += self
                .repo
                .write_index(&index_session, &uploaded.pending)
                .await?
                .1;
        }
        let mut position = opts.position.clone();
        if let Some(late) = &opts.late_position {
            position.extend(late.lock().unwrap_or_else(|e| e.into_inner()).clone());
        }
        let mut summary = read.summary;
        summary.packs = uploaded.packs;
        summary.uploaded_bytes = uploaded.bytes;
        let manifest = SnapshotManifest {
            source: opts.source.clone(),
            source_kind: opts.source_kind.clone(),
            host: opts.host.clone(),
            started_ns,
            finished_ns: now_ns(),
            parent: read.parent,
            content,
            tree: read.tree,
            position,
            tags: opts.tags.clone(),
            summary,
            job: None,
            mac: None,
        };
        let (id, _) = self.repo.write_snapshot(&session, &manifest).await?;
        Ok(Snapshot { id, manifest })
    }

    /// Store packs as they come, `opts.uploads` at a time, writing a
    /// checkpoint index object every `opts.checkpoint_packs` packs.
    async fn upload_packs(
        &self,
        packs: &mut tokio::sync::mpsc::Receiver<FinishedPack>,
        session: &SessionKey,
        index_session: &SessionKey,
        opts: &BackupOptions,
    ) -> Result<Uploaded> {
        let mut running: JoinSet<Result<IndexPack>> = JoinSet::new();
        let mut out = Uploaded::default();
        let limit = opts.uploads.max(1);
        while let Some(pack) = packs.recv().await {
            while running.len() >= limit {
                let r = running.join_next().await.expect("non-empty");
                self.stored(r, &mut out, index_session, opts).await?;
            }
            let backend = self.repo.backend().clone();
            let wrapped = session.wrapped.0.clone();
            running.spawn(async move {
                let key = ObjectKey::new(ObjectKind::Pack, pack.id.to_hex());
                let size = pack.bytes.len() as u64;
                backend.put(&key, pack.bytes, pack.id.0).await?;
                Ok(IndexPack {
                    id: pack.id,
                    size,
                    key: wrapped,
                    blobs: pack.blobs,
                })
            });
        }
        while let Some(r) = running.join_next().await {
            self.stored(r, &mut out, index_session, opts).await?;
        }
        Ok(out)
    }

    /// Account for one finished upload.
    async fn stored(
        &self,
        r: std::result::Result<Result<IndexPack>, tokio::task::JoinError>,
        out: &mut Uploaded,
        index_session: &SessionKey,
        opts: &BackupOptions,
    ) -> Result<()> {
        let p = r.map_err(|e| Error::Pipeline(format!("upload task: {e}")))??;
        out.bytes += p.size;
        out.packs += 1;
        opts.progress
            .bytes_uploaded
            .fetch_add(p.size, Ordering::Relaxed);
        out.pending.packs.push(p);
        if out.pending.packs.len() >= opts.checkpoint_packs.max(1) {
            let checkpoint = std::mem::take(&mut out.pending);
            out.bytes += self.repo.write_index(index_session, &checkpoint).await?.1;
        }
        Ok(())
    }
}

/// What the uploads stored.
#[derive(Default)]
struct Uploaded {
    /// Stored packs not yet in an index object.
    pending: IndexFile,
    /// Packs stored.
    packs: u64,
    /// Bytes stored (packs and checkpoint indexes).
    bytes: u64,
}

fn join<T>(h: std::thread::JoinHandle<Result<T>>, what: &str) -> Result<T> {
    h.join()
        .map_err(|_| Error::Pipeline(format!("the {what} thread panicked")))?
}

/// Compress (when it helps) and seal chunks.
fn seal_worker(
    rx: crossbeam_channel::Receiver<RawChunk>,
    tx: crossbeam_channel::Sender<SealedChunk>,
    key: &crate::crypto::DataKey,
    level: i32,
) -> Result<()> {
    let mut comp = zstd::bulk::Compressor::new(level)
        .map_err(|e| Error::Pipeline(format!("zstd level {level}: {e}")))?;
    for c in rx {
        let raw_len = c.data.len() as u32;
        let compressed = if looks_incompressible(&mut comp, &c.data) {
            None
        } else {
            comp.compress(&c.data)
                .ok()
                .filter(|z| z.len() < c.data.len())
        };
        let zstd = compressed.is_some();
        let payload = compressed.as_deref().unwrap_or(&c.data);
        let sealed = key.seal(&BlobEntry::aad(&c.id, zstd), payload);
        if tx
            .send(SealedChunk {
                id: c.id,
                sealed,
                raw_len,
                zstd,
            })
            .is_err()
        {
            break; // the packer stopped; its error tells why
        }
    }
    Ok(())
}

/// Media, archives and encrypted data do not compress: a sample of three
/// 16 KiB slices that zstd cannot shrink by 3% marks the chunk as stored
/// raw, which saves compressing it whole (about a third of the CPU of a
/// backup of mixed data).
fn looks_incompressible(comp: &mut zstd::bulk::Compressor<'_>, data: &[u8]) -> bool {
    const SLICE: usize = 16 * 1024;
    if data.len() < 8 * SLICE {
        return false;
    }
    let mid = data.len() / 2;
    let mut sample = Vec::with_capacity(3 * SLICE);
    sample.extend_from_slice(&data[..SLICE]);
    sample.extend_from_slice(&data[mid..mid + SLICE]);
    sample.extend_from_slice(&data[data.len() - SLICE..]);
    match comp.compress(&sample) {
        Ok(z) => z.len() * 100 >= sample.len() * 97,
        Err(_) => false,
    }
}

/// Gather sealed chunks into packs of about `pack_size` bytes.
fn packer(
    rx: crossbeam_channel::Receiver<SealedChunk>,
    tx: tokio::sync::mpsc::Sender<FinishedPack>,
    session: &SessionKey,
    pack_size: usize,
) -> Result<()> {
    let finish = |pb: PackBuilder| -> std::result::Result<(), ()> {
        let (bytes, blobs) = pb.finish(&session.key, &session.wrapped);
        let id = Id(sha256(&bytes));
        tx.blocking_send(FinishedPack {
            id,
            bytes: Bytes::from(bytes),
            blobs,
        })
        .map_err(|_| ())
    };
    let mut pb = PackBuilder::new(pack_size);
    for s in rx {
        pb.push(s.id, &s.sealed, s.raw_len, s.zstd);
        if pb.len() >= pack_size {
            let full = std::mem::replace(&mut pb, PackBuilder::new(pack_size));
            if finish(full).is_err() {
                return Ok(()); // uploads stopped; their error tells why
            }
        }
    }
    if !pb.is_empty() {
        let _ = finish(pb);
    }
    Ok(())
}
