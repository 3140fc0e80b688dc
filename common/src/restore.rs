//! Restore: a snapshot back to a directory (or a stream to a writer),
//! verifying every chunk on the way.
//!
//! One thread reads the tree stream, creates directories and symlinks, and
//! hands file pieces (a few chunks each) to worker threads that fetch,
//! decrypt, verify and write them in place, so large files restore in
//! parallel too. Metadata (mode, owner, mtime) is applied when a file's last
//! piece lands; directories get theirs at the end, deepest first.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::manifest::{ContentKind, EntryKind, EntryReader, TreeEntry};
use crate::repo::{IndexedRepo, Snapshot};

/// Chunks per work item handed to a restore worker.
const PIECE_CHUNKS: usize = 4;

/// Settings of a restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Worker threads fetching and writing chunks.
    pub workers: usize,
    /// Restore file owners (uid/gid); needs root.
    pub owners: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        RestoreOptions {
            workers: (cores * 2).max(4),
            owners: rustix::process::geteuid().is_root(),
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
}

/// A file being restored, shared by its pieces.
struct OpenFile {
    file: File,
    path: PathBuf,
    entry: TreeEntry,
    remaining: AtomicUsize,
}

/// A few consecutive chunks of one file.
struct Piece {
    file: Arc<OpenFile>,
    offset: u64,
    chunks: Vec<Id>,
}

impl IndexedRepo {
    /// Restore a tree snapshot into `target`, which must be empty or absent.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the object when data fails verification;
    /// storage, key and I/O errors.
    pub async fn restore_to_dir(&self, snap: &Snapshot, target: &Path, opts: &RestoreOptions) -> Result<RestoreSummary> {
        prepare_target(target)?;
        let this = self.clone();
        let snap = snap.clone();
        let target = target.to_path_buf();
        let opts = opts.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || this.restore_blocking(&handle, &snap, &target, &opts))
            .await
            .map_err(|e| Error::Pipeline(format!("restore task: {e}")))?
    }

    /// Write a stream snapshot's bytes to `out`; returns the byte count.
    ///
    /// # Errors
    /// As [`IndexedRepo::restore_to_dir`]; [`Error::Snapshot`] for a tree snapshot.
    pub async fn restore_stream(&self, snap: &Snapshot, mut out: impl Write + Send + 'static) -> Result<u64> {
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
            let n = std::io::copy(&mut data, &mut out).map_err(|e| {
                crate::manifest::unwrap_io(e, &name)
            })?;
            out.flush().map_err(|e| Error::io("writing", "output", e))?;
            if n != entry.size {
                return Err(Error::corrupt(&name, format!("stream restored {n} bytes, manifest says {}", entry.size)));
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
        opts: &RestoreOptions,
    ) -> Result<RestoreSummary> {
        let name = format!("snapshots/{}", snap.id);
        let (tx, rx) = crossbeam_channel::bounded::<Piece>(opts.workers * 2);
        let first_err: Arc<Mutex<Option<Error>>> = Arc::default();
        let bytes = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..opts.workers.max(1) {
            let rx = rx.clone();
            let repo = self.clone();
            let handle = handle.clone();
            let first_err = first_err.clone();
            let bytes = bytes.clone();
            let owners = opts.owners;
            workers.push(std::thread::spawn(move || {
                for piece in rx {
                    if first_err.lock().expect("lock").is_some() {
                        continue; // drain
                    }
                    match write_piece(&repo, &handle, &piece, owners) {
                        Ok(n) => {
                            bytes.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => {
                            first_err.lock().expect("lock").get_or_insert(e);
                        }
                    }
                }
            }));
        }
        drop(rx);

        let mut summary = RestoreSummary::default();
        let mut dirs: Vec<(PathBuf, TreeEntry)> = Vec::new();
        let tree = self.chunk_reader(handle.clone(), snap.manifest.tree.clone());
        let mut entries = EntryReader::new(tree, name.clone());
        let walk = (|| -> Result<()> {
            while let Some(entry) = entries.next_entry()? {
                if first_err.lock().expect("lock").is_some() {
                    break;
                }
                let path = safe_join(target, &entry.path, &name)?;
                match entry.kind {
                    EntryKind::Dir => {
                        std::fs::create_dir_all(&path).map_err(|e| Error::io("creating directory", &path, e))?;
                        summary.dirs += 1;
                        dirs.push((path, entry));
                    }
                    EntryKind::Symlink => {
                        let t = std::ffi::OsStr::from_bytes(&entry.target);
                        std::os::unix::fs::symlink(t, &path).map_err(|e| Error::io("creating symlink", &path, e))?;
                        if opts.owners {
                            let _ = std::os::unix::fs::lchown(&path, Some(entry.uid), Some(entry.gid));
                        }
                        let mtime = filetime_of(entry.mtime_ns);
                        filetime::set_symlink_file_times(&path, mtime, mtime)
                            .map_err(|e| Error::io("setting times of", &path, e))?;
                        summary.symlinks += 1;
                    }
                    EntryKind::File => {
                        summary.files += 1;
                        let file = OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(&path)
                            .map_err(|e| Error::io("creating", &path, e))?;
                        file.set_len(entry.size).map_err(|e| Error::io("sizing", &path, e))?;
                        let pieces: Vec<Vec<Id>> = entry.chunks.chunks(PIECE_CHUNKS).map(|c| c.to_vec()).collect();
                        let open = Arc::new(OpenFile {
                            file,
                            path,
                            remaining: AtomicUsize::new(pieces.len()),
                            entry,
                        });
                        if pieces.is_empty() {
                            finish_file(&open, opts.owners)?;
                            continue;
                        }
                        let mut offset = 0u64;
                        let mut chunk_at = 0usize;
                        for chunks in pieces {
                            let n = chunks.len();
                            tx.send(Piece {
                                file: open.clone(),
                                offset,
                                chunks,
                            })
                            .map_err(|_| Error::Pipeline("restore workers stopped".into()))?;
                            // Offsets come from chunk lengths, known from the index.
                            for id in &open.entry.chunks[chunk_at..chunk_at + n] {
                                let (_, e) = self.index.get(id).ok_or_else(|| {
                                    Error::corrupt(&name, format!("chunk {} is in no index", id.short()))
                                })?;
                                offset += e.raw_len as u64;
                            }
                            chunk_at += n;
                        }
                        if offset != open.entry.size {
                            return Err(Error::corrupt(
                                &name,
                                format!(
                                    "{}: chunks add up to {offset} bytes, manifest says {}",
                                    open.path.display(),
                                    open.entry.size
                                ),
                            ));
                        }
                    }
                }
            }
            Ok(())
        })();
        drop(tx);
        for w in workers {
            let _ = w.join();
        }
        let worker_err = first_err.lock().expect("lock").take();
        walk?;
        if let Some(e) = worker_err {
            return Err(e);
        }
        // Directories last, deepest first, so writing into them does not
        // disturb their mtimes.
        for (path, entry) in dirs.iter().rev() {
            apply_meta(path, entry, opts.owners)?;
        }
        summary.bytes = bytes.load(Ordering::Relaxed);
        Ok(summary)
    }
}

fn write_piece(repo: &IndexedRepo, handle: &tokio::runtime::Handle, piece: &Piece, owners: bool) -> Result<u64> {
    let mut offset = piece.offset;
    for id in &piece.chunks {
        let data = repo.read_chunk_blocking(handle, id)?;
        // All-zero chunks stay holes: the file was sized up front.
        if data.iter().any(|b| *b != 0) {
            piece
                .file
                .file
                .write_all_at(&data, offset)
                .map_err(|e| Error::io("writing", &piece.file.path, e))?;
        }
        offset += data.len() as u64;
    }
    if piece.file.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
        finish_file(&piece.file, owners)?;
    }
    Ok(offset - piece.offset)
}

fn finish_file(f: &OpenFile, owners: bool) -> Result<()> {
    if owners {
        std::os::unix::fs::fchown(&f.file, Some(f.entry.uid), Some(f.entry.gid))
            .map_err(|e| Error::io("setting owner of", &f.path, e))?;
    }
    f.file
        .set_permissions(std::fs::Permissions::from_mode(f.entry.mode))
        .map_err(|e| Error::io("setting mode of", &f.path, e))?;
    let mtime = filetime_of(f.entry.mtime_ns);
    filetime::set_file_handle_times(&f.file, Some(mtime), Some(mtime))
        .map_err(|e| Error::io("setting times of", &f.path, e))
}

fn apply_meta(path: &Path, entry: &TreeEntry, owners: bool) -> Result<()> {
    if owners {
        std::os::unix::fs::chown(path, Some(entry.uid), Some(entry.gid))
            .map_err(|e| Error::io("setting owner of", path, e))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(entry.mode))
        .map_err(|e| Error::io("setting mode of", path, e))?;
    let mtime = filetime_of(entry.mtime_ns);
    filetime::set_file_times(path, mtime, mtime).map_err(|e| Error::io("setting times of", path, e))
}

fn filetime_of(ns: i64) -> filetime::FileTime {
    filetime::FileTime::from_unix_time(ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000) as u32)
}

/// The target must be absent or an empty directory: a restore never
/// overwrites.
fn prepare_target(target: &Path) -> Result<()> {
    match std::fs::read_dir(target) {
        Ok(mut d) => {
            if d.next().is_some() {
                return Err(Error::io(
                    "restoring into",
                    target,
                    std::io::Error::other("directory is not empty (restore into a new or empty directory)"),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| Error::io("creating", target, e))
        }
        Err(e) => Err(Error::io("opening", target, e)),
    }
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
