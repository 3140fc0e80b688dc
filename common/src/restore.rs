//! Restore: a snapshot back to a directory (or a stream to a writer),
//! verifying every chunk on the way.
//!
//! The tree stream is read in order: directories and symlinks are created at
//! once, files are created at their full size, kept open and gathered into
//! batches. Each batch is then restored pack by pack, several packs at a
//! time: a pack that is mostly needed is fetched whole in one request and
//! its frame (magic, authenticated header, wrapped key, trailer) is
//! verified, otherwise only its needed blobs are fetched. Every chunk is
//! authenticated and re-hashed to its id before it is written to each place
//! it belongs. A file's metadata (mode, owner, mtime) is applied when its
//! last chunk lands; directories get theirs at the end, deepest first.
//!
//! Nothing is written through a symbolic link: everything is created
//! relative to open directories and written through the descriptors the
//! creation returned (see [`fs`]).

mod fs;
mod place;
mod select;

pub use fs::{create_new_file, Removed, RestoreLedger};
pub use select::Selection;

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::format::{open_blob, pack_header, pack_tail, BlobEntry};
use crate::index::PackInfo;
use crate::manifest::{ContentKind, EntryKind, EntryReader, TreeEntry};
use crate::repo::{IndexedRepo, Snapshot};
use place::{Placer, Replace};

/// Settings of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Packs fetched and written at once (each holds up to one pack in
    /// memory); raise it for object stores with high latency.
    pub workers: usize,
    /// Restore file owners (uid/gid); needs root.
    pub owners: bool,
    /// Where to record everything the restore creates, so that exactly that
    /// can be removed afterwards (restore tests); none by default.
    pub ledger: Option<Arc<RestoreLedger>>,
    /// Which entries to restore; all by default.
    pub selection: Selection,
    /// What to do with what is already in the target; `None` (the default):
    /// the target must be new or empty.
    pub overwrite: Option<Overwrite>,
}

/// What a restore with `--overwrite` does where the target already holds
/// something at an entry's path. A directory is reused (its own mode and
/// times are left as they are); a file or link is kept or replaced as the
/// mode says (a replacement is written beside it and renamed over it once
/// whole, so an interrupted restore never leaves a half-written file in its
/// place); anything of another kind (a directory where the snapshot has a
/// file, a device, a file where it has a directory) is left alone and
/// reported, with everything below it. Nothing is ever written through a
/// link: a link is replaced itself, never followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overwrite {
    /// Keep every existing file and link; write only what is missing.
    Never,
    /// Replace a file whose size or modification time differs from the
    /// snapshot's (a link whose target differs).
    IfChanged,
    /// Replace every file and link.
    Always,
}

impl std::str::FromStr for Overwrite {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "never" => Ok(Overwrite::Never),
            "if-changed" => Ok(Overwrite::IfChanged),
            "always" => Ok(Overwrite::Always),
            other => Err(Error::Selection(format!(
                "--overwrite {other:?} is not a mode: use never, if-changed or always"
            ))),
        }
    }
}

impl std::fmt::Display for Overwrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overwrite::Never => "never",
            Overwrite::IfChanged => "if-changed",
            Overwrite::Always => "always",
        })
    }
}

impl Default for RestoreOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RestoreOptions {
            workers: cores.max(2),
            owners: rustix::process::geteuid().is_root(),
            ledger: None,
            selection: Selection::all(),
            overwrite: None,
        }
    }
}

/// What a restore did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// With `--overwrite`: files and links already there that were
    /// replaced (counted in `files`/`symlinks` too).
    pub replaced: u64,
    /// With `--overwrite`: files and links already there that were kept
    /// (unchanged, or `never`).
    pub kept: u64,
    /// With `--overwrite`: paths where something of another kind stood and
    /// was left alone, with everything the snapshot has below it (the first
    /// [`MAX_CONFLICTS`]; `conflicts` counts them all).
    pub conflict_paths: Vec<String>,
    /// How many such paths there were.
    pub conflicts: u64,
}

/// Conflicting paths a [`RestoreSummary`] names.
pub const MAX_CONFLICTS: usize = 20;

impl RestoreSummary {
    fn conflict(&mut self, path: &Path) {
        self.conflicts += 1;
        if self.conflict_paths.len() < MAX_CONFLICTS {
            self.conflict_paths.push(path.display().to_string());
        }
    }
}

impl IndexedRepo {
    /// Restore a tree snapshot into `target`, which must be an empty
    /// directory or absent (then it is created). Its last component must not
    /// be a symbolic link; nothing is ever written through one.
    ///
    /// # Errors
    /// [`Error::RestoreTarget`] for a target that is not empty or is a link,
    /// and for a link (or anything else) found where the restore writes, before
    /// or while it runs; [`Error::Corrupt`] naming the object when data fails
    /// verification; storage, key and I/O errors.
    pub async fn restore_to_dir(
        &self,
        snap: &Snapshot,
        target: &Path,
        opts: &RestoreOptions,
    ) -> Result<RestoreSummary> {
        let this = self.clone();
        let snap = snap.clone();
        let target = target.to_path_buf();
        let opts = opts.clone();
        let handle = tokio::runtime::Handle::current();
        if opts.ledger.is_some() && opts.overwrite.is_some() {
            return Err(Error::Pipeline(
                "a restore recorded for removal (a restore test) writes into a new or empty directory, never with --overwrite".into(),
            ));
        }
        tokio::task::spawn_blocking(move || {
            let root = fs::open_target(&target, opts.ledger.as_deref(), opts.overwrite.is_some())?;
            this.restore_blocking(&handle, &snap, &target, root, &opts)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("restore task: {e}")))?
    }

    /// Write a stream snapshot's bytes to `out`; returns the byte count.
    ///
    /// # Errors
    /// As [`IndexedRepo::restore_to_dir`]; [`Error::Snapshot`] for a tree snapshot.
    pub async fn restore_stream(
        &self,
        snap: &Snapshot,
        mut out: impl Write + Send + 'static,
    ) -> Result<u64> {
        if snap.manifest.content != ContentKind::Stream {
            return Err(Error::Snapshot(format!(
                "{} is a directory tree; restore it to a directory with --target",
                snap.id.short()
            )));
        }
        let this = self.clone();
        let snap = snap.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let name = format!("snapshots/{}", snap.id);
            let tree = this.chunk_reader(handle.clone(), snap.manifest.tree.clone());
            let mut entries = EntryReader::new(tree, name.clone());
            let entry = entries
                .next_entry()?
                .ok_or_else(|| Error::corrupt(&name, "stream snapshot has no entry"))?;
            let mut data = this.chunk_reader(handle, entry.chunks.clone());
            let n = std::io::copy(&mut data, &mut out)
                .map_err(|e| crate::manifest::unwrap_io(e, &name))?;
            out.flush().map_err(|e| Error::io("writing", "output", e))?;
            if n != entry.size {
                return Err(Error::corrupt(
                    &name,
                    format!("stream restored {n} bytes, manifest says {}", entry.size),
                ));
            }
            Ok(n)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("restore task: {e}")))?
    }

    fn restore_blocking(
        &self,
        handle: &tokio::runtime::Handle,
        snap: &Snapshot,
        target: &Path,
        root: fs::TargetDir,
        opts: &RestoreOptions,
    ) -> Result<RestoreSummary> {
        let name = format!("snapshots/{}", snap.id);
        let rec = fs::Recorder(opts.ledger.as_deref());
        let max_files = batch_files();
        let mut place = Placer::new(target, &root.fd, rec, opts)?;
        let tree = self.chunk_reader(handle.clone(), snap.manifest.tree.clone());
        let mut entries = EntryReader::new(tree, name.clone());
        let mut batch = Batch::default();
        let mut order = TreeOrder::default();
        while let Some(entry) = entries.next_entry()? {
            order.admit(&entry, &name)?;
            let path = safe_join(target, &entry.path, &name)?;
            if entry.path.is_empty() {
                // The root: the target itself, which gets the root's
                // metadata unless it held something before.
                if opts.overwrite.is_none() {
                    place.summary.dirs += 1;
                    place.dirs.push((root.id, entry));
                }
                continue;
            }
            if let Some(file) = place.place(&entry, &path, &name)? {
                place.summary.files += 1;
                place.summary.bytes += entry.size;
                batch.add_file(self, &name, file, path, entry, opts.owners)?;
                if batch.is_full(max_files) {
                    self.restore_batch(handle, std::mem::take(&mut batch), opts)?;
                }
            }
        }
        self.restore_batch(handle, batch, opts)?;
        let Placer { summary, dirs, .. } = place;
        // Directories last, deepest first, so writing into them does not
        // disturb their mtimes. Each is re-opened without following links
        // and must still be the directory the restore created.
        let mut walker = fs::DirWalker::new(root.fd.as_fd(), target);
        for (id, entry) in dirs.iter().rev() {
            let fd = walker.open(&entry.path, *id)?;
            let path = safe_join(target, &entry.path, &name)?;
            fs::set_meta(fd, &path, entry, opts.owners)?;
        }
        // And the target is still where it was given.
        fs::check_target(target, root.id)?;
        Ok(summary)
    }

    /// Fetch every pack the batch needs and write each chunk to every place
    /// it belongs, `opts.workers` packs at a time.
    fn restore_batch(
        &self,
        handle: &tokio::runtime::Handle,
        batch: Batch,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let Batch { files, packs, .. } = batch;
        let files = Arc::new(files);
        let owners = opts.owners;
        handle.block_on(async {
            let mut work = futures::stream::iter(packs.into_values().map(|(pack, blobs)| {
                let files = files.clone();
                async move {
                    // A restore test that gave up (timed out) removed what
                    // this restore created: stop.
                    if opts.ledger.as_ref().is_some_and(|l| l.is_closed()) {
                        return Err(fs::stopped());
                    }
                    self.restore_pack(pack, blobs, files, owners).await
                }
            }))
            .buffer_unordered(opts.workers.max(1));
            while let Some(r) = work.next().await {
                r?;
            }
            Ok(())
        })
    }

    /// Restore the needed blobs of one pack. A pack that is mostly needed is
    /// fetched whole and its frame verified (see [`verify_pack_frame`]); otherwise just
    /// the needed blobs are fetched.
    async fn restore_pack(
        &self,
        pack: PackInfo,
        blobs: Vec<NeededBlob>,
        files: Arc<Vec<PendingFile>>,
        owners: bool,
    ) -> Result<()> {
        let key = ObjectKey::new(ObjectKind::Pack, pack.id.to_hex());
        let dek = self.repo.keys().unwrap(&pack.key).await?;
        let mut blobs = blobs;
        blobs.sort_by_key(|b| b.entry.offset);
        let spans = coalesce(&blobs);
        let span_bytes: u64 = spans.iter().map(|(s, e)| e - s).sum();
        let backend = self.repo.backend().clone();
        // Mostly needed: one request for the whole pack.
        let whole = if span_bytes * 2 >= pack.size {
            let bytes = backend.get(&key).await?;
            if bytes.len() as u64 != pack.size {
                return Err(Error::corrupt(
                    key.path(),
                    format!("size {} but the index records {}", bytes.len(), pack.size),
                ));
            }
            Some(bytes)
        } else {
            None
        };
        // Otherwise: the needed spans, a few requests at a time.
        let fetched: Vec<(u64, bytes::Bytes)> = if whole.is_none() {
            futures::stream::iter(spans)
                .map(|(start, end)| {
                    let backend = backend.clone();
                    let key = key.clone();
                    async move {
                        let b = backend.get_range(&key, start, end - start).await?;
                        Ok::<_, Error>((start, b))
                    }
                })
                .buffered(SPAN_FETCHES)
                .try_collect()
                .await?
        } else {
            Vec::new()
        };
        let hasher = self.repo.hasher().clone();
        tokio::task::spawn_blocking(move || -> Result<()> {
            let name = key.path();
            if let Some(bytes) = &whole {
                verify_pack_frame(&name, bytes, &pack, &blobs, &dek)?;
            }
            let mut span = 0;
            for b in &blobs {
                let (base, bytes) = match &whole {
                    Some(bytes) => (0, bytes),
                    None => {
                        // Spans and blobs are both in offset order.
                        while fetched[span].0 + fetched[span].1.len() as u64
                            <= b.entry.offset as u64
                        {
                            span += 1;
                        }
                        (fetched[span].0, &fetched[span].1)
                    }
                };
                let start = (b.entry.offset as u64 - base) as usize;
                let sealed = &bytes[start..start + b.entry.length as usize];
                let data = open_blob(&name, &b.entry, sealed, &dek, &hasher)?;
                let zero = data.iter().all(|x| *x == 0);
                for (file, offset) in &b.targets {
                    let f = &files[*file as usize];
                    // All-zero chunks stay holes: the file was sized up front.
                    if !zero {
                        f.file
                            .write_all_at(&data, *offset)
                            .map_err(|e| Error::io("writing", &f.path, e))?;
                    }
                    if f.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
                        f.finish(owners)?;
                    }
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Pipeline(format!("restore task: {e}")))?
    }
}

/// Check every byte of a whole pack that the restore does not authenticate
/// blob by blob: magic, version and trailer parse; the header authenticates
/// and lists each needed blob exactly as the index does; the stored wrapped
/// key is the index's. With the needed blobs' own AEAD checks, a damaged
/// byte anywhere in the pack is caught (the blobs this restore does not need
/// are left to `check --deep`). Cheaper than re-hashing the whole pack.
fn verify_pack_frame(
    name: &str,
    bytes: &[u8],
    pack: &PackInfo,
    blobs: &[NeededBlob],
    dek: &crate::crypto::DataKey,
) -> Result<()> {
    let tail = pack_tail(name, bytes)?;
    if tail.wrapped != pack.key {
        return Err(Error::corrupt(
            name,
            "the pack's data key differs from the index",
        ));
    }
    let header = pack_header(name, bytes, &tail, dek)?;
    let listed: HashMap<Id, BlobEntry> = header.into_iter().map(|e| (e.id, e)).collect();
    for b in blobs {
        if listed.get(&b.entry.id) != Some(&b.entry) {
            return Err(Error::corrupt(
                name,
                format!(
                    "chunk {}: the pack header disagrees with the index",
                    b.entry.id.short()
                ),
            ));
        }
    }
    Ok(())
}

/// Needed blobs closer than this are fetched in one ranged request.
const SPAN_GAP: u64 = 256 * 1024;
/// Ranged requests in flight per pack.
const SPAN_FETCHES: usize = 4;

/// Merge the byte ranges of blobs (sorted by offset) into spans, bridging
/// gaps up to [`SPAN_GAP`].
fn coalesce(blobs: &[NeededBlob]) -> Vec<(u64, u64)> {
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for b in blobs {
        let (s, e) = (
            b.entry.offset as u64,
            b.entry.offset as u64 + b.entry.length as u64,
        );
        match spans.last_mut() {
            Some(last) if s <= last.1 + SPAN_GAP => last.1 = last.1.max(e),
            _ => spans.push((s, e)),
        }
    }
    spans
}

/// Largest batch, in files and in chunk placements: bounds memory however
/// many files a snapshot has.
const BATCH_FILES: usize = 50_000;
const BATCH_TARGETS: usize = 200_000;

/// Files per batch: every file of a batch is held open until its last chunk
/// lands, so at most a quarter of the process's open file limit (at least
/// 64, at most [`BATCH_FILES`]).
fn batch_files() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    usize::try_from(limit / 4)
        .unwrap_or(usize::MAX)
        .clamp(64, BATCH_FILES)
}

/// Files whose chunks are fetched together, pack by pack.
#[derive(Default)]
struct Batch {
    files: Vec<PendingFile>,
    /// Needed blobs by pack.
    packs: HashMap<Id, (PackInfo, Vec<NeededBlob>)>,
    /// Where a chunk already sits in `packs` (pack, position).
    blob_pos: HashMap<Id, (Id, usize)>,
    /// Chunk placements so far.
    targets: usize,
}

impl Batch {
    fn is_full(&self, max_files: usize) -> bool {
        self.files.len() >= max_files || self.targets >= BATCH_TARGETS
    }

    /// Take a file created at its final size and note where each chunk goes.
    fn add_file(
        &mut self,
        repo: &IndexedRepo,
        snapshot: &str,
        (file, replace): (std::fs::File, Option<Replace>),
        path: PathBuf,
        entry: TreeEntry,
        owners: bool,
    ) -> Result<()> {
        let idx = self.files.len() as u32;
        let mut offset = 0u64;
        for id in &entry.chunks {
            let (pack, blob) = repo
                .index
                .get(id)
                .ok_or_else(|| repo.not_indexed(&format!("{snapshot}: {}", path.display()), id))?;
            let packs = &mut self.packs;
            let (pid, pos) = *self.blob_pos.entry(*id).or_insert_with(|| {
                let slot = packs
                    .entry(pack.id)
                    .or_insert_with(|| (pack.clone(), Vec::new()));
                slot.1.push(NeededBlob {
                    entry: blob,
                    targets: Vec::new(),
                });
                (pack.id, slot.1.len() - 1)
            });
            self.packs.get_mut(&pid).expect("inserted").1[pos]
                .targets
                .push((idx, offset));
            self.targets += 1;
            offset += blob.raw_len as u64;
        }
        if offset != entry.size {
            return Err(Error::corrupt(
                snapshot,
                format!(
                    "{}: chunks add up to {offset} bytes, manifest says {}",
                    path.display(),
                    entry.size
                ),
            ));
        }
        let n_chunks = entry.chunks.len();
        let pending = PendingFile {
            file,
            path,
            remaining: AtomicUsize::new(n_chunks),
            entry: TreeEntry {
                chunks: Vec::new(),
                ..entry
            },
            replace,
        };
        if n_chunks == 0 {
            pending.finish(owners)?;
        }
        self.files.push(pending);
        Ok(())
    }
}

/// Enforces what a well-formed tree stream guarantees, so that a crafted
/// one cannot make the restore write outside the target: paths strictly
/// increase in walk order, and every entry's parent is a directory entry
/// restored just before it (never a symlink).
#[derive(Default)]
struct TreeOrder {
    /// The directories enclosing the current entry, outermost first.
    dirs: Vec<Vec<u8>>,
    last: Option<Vec<u8>>,
}

impl TreeOrder {
    fn admit(&mut self, entry: &TreeEntry, snapshot: &str) -> Result<()> {
        let bad = |why: &str| {
            Error::corrupt(
                snapshot,
                format!(
                    "tree entry {:?} {why}",
                    String::from_utf8_lossy(&entry.path)
                ),
            )
        };
        // Only canonical paths: with `a/./b` or `a//b` beside `a/b`, two
        // entries would name one file while comparing as different paths,
        // so a symlink planted at `a/./b` could pass for the directory `a/b`
        // and files "inside" it would be written through the link.
        if !entry.path.is_empty()
            && entry
                .path
                .split(|c| *c == b'/')
                .any(|s| s.is_empty() || s == b"." || s == b"..")
        {
            return Err(bad("is not a canonical relative path"));
        }
        if let Some(last) = &self.last {
            if crate::manifest::path_cmp(last, &entry.path) != std::cmp::Ordering::Less {
                return Err(bad("is out of order or repeated"));
            }
        }
        let path = &entry.path;
        let parent: &[u8] = match path.iter().rposition(|c| *c == b'/') {
            Some(i) => &path[..i],
            None if path.is_empty() => {
                if entry.kind != EntryKind::Dir {
                    return Err(bad("is the root but not a directory"));
                }
                self.dirs = vec![Vec::new()];
                self.last = Some(path.clone());
                return Ok(());
            }
            None => b"",
        };
        while self.dirs.last().is_some_and(|d| d.as_slice() != parent) {
            self.dirs.pop();
        }
        if self.dirs.is_empty() && !(parent.is_empty() && self.last.is_none()) {
            return Err(bad("does not sit in a directory restored before it"));
        }
        if entry.kind == EntryKind::Dir {
            self.dirs.push(path.clone());
        }
        self.last = Some(path.clone());
        Ok(())
    }
}

/// Fuzzing entry point: the checks a restore applies to each tree entry
/// before it touches the file system (walk order, enclosing directories,
/// safe paths), returning the paths it would write under `target`. Not part
/// of the API.
///
/// # Errors
/// The first entry a restore would refuse.
#[doc(hidden)]
pub fn fuzz_admit_tree(target: &Path, entries: &[TreeEntry]) -> Result<Vec<PathBuf>> {
    let mut order = TreeOrder::default();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        order.admit(entry, "fuzz")?;
        out.push(safe_join(target, &entry.path, "fuzz")?);
    }
    Ok(out)
}

/// A file being restored, open for writing.
struct PendingFile {
    file: std::fs::File,
    path: PathBuf,
    entry: TreeEntry,
    remaining: AtomicUsize,
    /// With `--overwrite`: the file it replaces once whole.
    replace: Option<Replace>,
}

impl PendingFile {
    /// The last chunk landed: metadata, then into its place.
    fn finish(&self, owners: bool) -> Result<()> {
        fs::set_meta(self.file.as_fd(), &self.path, &self.entry, owners)?;
        match &self.replace {
            Some(r) => r.finish(),
            None => Ok(()),
        }
    }
}

/// A chunk needed from a pack, and where it goes: (file, offset).
struct NeededBlob {
    entry: BlobEntry,
    targets: Vec<(u32, u64)>,
}

/// Join a snapshot path under the target, refusing anything that could
/// escape it (absolute paths, `..`).
fn safe_join(target: &Path, rel: &[u8], snapshot: &str) -> Result<PathBuf> {
    let rel = Path::new(std::ffi::OsStr::from_bytes(rel));
    for c in rel.components() {
        if !matches!(c, Component::Normal(_)) {
            return Err(Error::corrupt(
                snapshot,
                format!("unsafe path {:?} in the tree", rel.display()),
            ));
        }
    }
    Ok(target.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            inode: 0,
            size: 0,
            target: Vec::new(),
            chunks: Vec::new(),
        }
    }

    fn admit_all(entries: &[(&str, EntryKind)]) -> Result<()> {
        let mut order = TreeOrder::default();
        for (p, k) in entries {
            order.admit(&entry(p, *k), "s")?;
        }
        Ok(())
    }

    #[test]
    fn tree_order_accepts_walks_and_refuses_escapes() {
        use EntryKind::*;
        admit_all(&[
            ("", Dir),
            ("a", Dir),
            ("a/x", File),
            ("a/y", Dir),
            ("a/y/z", File),
            ("b", Symlink),
            ("c", File),
        ])
        .unwrap();
        admit_all(&[("stream", File)]).unwrap();
        // A file under a symlink (the symlink could point anywhere).
        let err = admit_all(&[("", Dir), ("a", Symlink), ("a/passwd", File)]).unwrap_err();
        assert!(err.to_string().contains("a/passwd"), "{err}");
        // Repeated or out-of-order paths.
        assert!(admit_all(&[("", Dir), ("b", File), ("a", File)]).is_err());
        assert!(admit_all(&[("", Dir), ("a", Symlink), ("a", Dir)]).is_err());
        // A parent that never appeared.
        assert!(admit_all(&[("", Dir), ("x/y", File)]).is_err());
    }

    /// Found while fuzzing `tree_order`: `a/./b` and `a/b` compared as two
    /// paths but named one file, so a symlink at `a/./b` passed for the
    /// directory `a/b` and `a/b/x` was written through it.
    #[test]
    fn tree_order_refuses_non_canonical_paths() {
        use EntryKind::*;
        let err = admit_all(&[
            ("", Dir),
            ("a", Dir),
            ("a/.", Dir),
            ("a/./b", Symlink),
            ("a/b", Dir),
            ("a/b/x", File),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("canonical"), "{err}");
        for bad in ["a/", "/a", "a//b", "./a", "a/..", "a/../b"] {
            let err = admit_all(&[("", Dir), ("a", Dir), (bad, File)]).unwrap_err();
            assert!(err.to_string().contains("canonical"), "{bad}: {err}");
        }
    }

    #[test]
    fn coalesce_bridges_small_gaps() {
        let blob = |offset: u32, length: u32| NeededBlob {
            entry: BlobEntry {
                id: Id([0; 32]),
                offset,
                length,
                raw_len: length,
                zstd: false,
            },
            targets: Vec::new(),
        };
        let spans = coalesce(&[blob(5, 10), blob(20, 10), blob(2_000_000, 5)]);
        assert_eq!(spans, vec![(5, 30), (2_000_000, 2_000_005)]);
        assert!(coalesce(&[]).is_empty());
    }
}
