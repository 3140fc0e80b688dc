//! Getting data out of a snapshot as one stream (`dump`): a file's bytes,
//! or a directory's subtree as a tar archive.
//!
//! The archive is written as it is read, entry by entry, to any
//! [`Write`]: memory holds one tree entry and the chunks read ahead for the
//! file being written ([`IndexedRepo::chunk_reader`]), never the archive.
//! Entries are named by their path from the snapshot's root (`etc/app/x`,
//! as `restic dump` names them), so extracting the archive puts the subtree
//! at its place, as `restore --path` does. Each entry carries its type,
//! permission bits (setuid, setgid, sticky included), numeric owner and
//! group, and modification time (whole seconds); links carry their target.
//! Long names and link targets use GNU tar's extension, which GNU tar,
//! bsdtar and Python's tarfile read.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::browse::{display_path, tree_path};
use crate::error::{Error, Result};
use crate::manifest::{path_cmp, EntryKind, EntryReader, TreeEntry};
use crate::repo::{IndexedRepo, Snapshot};

/// What a dump wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    /// Whether it is a tar archive (a directory was dumped) rather than one
    /// file's bytes.
    pub tar: bool,
    /// Entries in the archive (1 for a file).
    pub entries: u64,
    /// Bytes of file data read from the snapshot.
    pub file_bytes: u64,
    /// Bytes written to the output (the archive with its headers, or the file).
    pub written: u64,
}

/// Counts what goes through, and refuses to write once the dump failed (so
/// the tar builder, when dropped, cannot end a broken archive with the
/// end-of-archive blocks that would make it look whole).
struct Out<W> {
    inner: W,
    written: u64,
    failed: Arc<AtomicBool>,
}

impl<W: Write> Write for Out<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("the dump failed"));
        }
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A file's data, which must be exactly the size the snapshot records.
struct Exact<R> {
    inner: R,
    left: u64,
    size: u64,
    path: String,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let mut one = [0u8; 1];
            return match self.inner.read(&mut one)? {
                0 => Ok(0),
                _ => Err(std::io::Error::other(Error::corrupt(
                    self.path.clone(),
                    format!(
                        "the data is longer than the {} bytes the snapshot records",
                        self.size
                    ),
                ))),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::other(Error::corrupt(
                self.path.clone(),
                format!(
                    "the data read is {} bytes, the snapshot records {}",
                    self.size - self.left,
                    self.size
                ),
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// A failed write as the crate's error (the reader's errors carry the
/// crate's error inside; it is taken back out).
fn io_error(e: std::io::Error) -> Error {
    if e.get_ref().is_some_and(|i| i.is::<Error>()) {
        match e.into_inner().map(|i| i.downcast::<Error>()) {
            Some(Ok(inner)) => *inner,
            Some(Err(other)) => Error::Io {
                op: "writing the dump",
                path: "-".into(),
                error: std::io::Error::other(other),
            },
            None => Error::Pipeline("dump".into()),
        }
    } else {
        Error::Io {
            op: "writing the dump",
            path: "-".into(),
            error: e,
        }
    }
}

fn header(e: &TreeEntry, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(e.mode & 0o7777);
    h.set_uid(u64::from(e.uid));
    h.set_gid(u64::from(e.gid));
    h.set_mtime(u64::try_from(e.mtime_ns.div_euclid(1_000_000_000)).unwrap_or(0));
    h
}

impl IndexedRepo {
    /// The entry of `snap` at `path` (`/etc/x`, `etc/x/`, `/` for the
    /// root), found by reading the tree up to it.
    ///
    /// # Errors
    /// [`Error::Snapshot`] naming the path when the snapshot has none; as
    /// [`IndexedRepo::walk_tree`].
    pub async fn entry_at(&self, snap: &Snapshot, path: &str) -> Result<TreeEntry> {
        let want = tree_path(path);
        let wanted = want.clone();
        let found = self
            .walk_tree(snap, None, move |s: &mut Option<TreeEntry>, e| {
                if e.path == wanted {
                    *s = Some(e);
                    return Ok(false);
                }
                Ok(path_cmp(&e.path, &wanted) == std::cmp::Ordering::Less)
            })
            .await?;
        found.ok_or_else(|| {
            Error::Snapshot(format!(
                "{} has no path /{}: see `ls {}`",
                snap.id.short(),
                String::from_utf8_lossy(&want),
                snap.id.short()
            ))
        })
    }

    /// Write `entry` of `snap` (from [`IndexedRepo::entry_at`]) to `out`: a
    /// file's bytes, or a directory's subtree as a tar archive. Streams on
    /// a blocking thread; `out` is flushed at the end.
    ///
    /// # Errors
    /// [`Error::Selection`] for a symbolic link; data that is not the size
    /// the snapshot records ([`Error::Corrupt`]); [`Error::Io`] when `out`
    /// fails (e.g. a closed pipe); storage and key errors. After an error
    /// the output ends where it stopped (a tar archive gets no end blocks).
    pub async fn dump(
        &self,
        snap: &Snapshot,
        entry: TreeEntry,
        out: impl Write + Send + 'static,
    ) -> Result<DumpSummary> {
        if entry.kind == EntryKind::Symlink {
            return Err(Error::Selection(format!(
                "{} is a symbolic link to {} in snapshot {}: dump takes a file or a directory",
                display_path(&entry),
                String::from_utf8_lossy(&entry.target),
                snap.id.short()
            )));
        }
        let this = self.clone();
        let snap = snap.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let failed = Arc::new(AtomicBool::new(false));
            let mut out = Out {
                inner: out,
                written: 0,
                failed: failed.clone(),
            };
            let r = if entry.kind == EntryKind::File {
                this.dump_file(&handle, &entry, &mut out)
            } else {
                this.dump_tar(&handle, &snap, &entry, &mut out)
            };
            match r {
                Ok(mut s) => {
                    out.flush().map_err(io_error)?;
                    s.written = out.written;
                    Ok(s)
                }
                Err(e) => {
                    failed.store(true, Ordering::Relaxed);
                    Err(e)
                }
            }
        })
        .await
        .map_err(|e| Error::Pipeline(format!("dump: {e}")))?
    }

    fn file_reader(&self, handle: &tokio::runtime::Handle, e: &TreeEntry) -> impl Read {
        Exact {
            inner: self.chunk_reader(handle.clone(), e.chunks.clone()),
            left: e.size,
            size: e.size,
            path: display_path(e),
        }
    }

    fn dump_file(
        &self,
        handle: &tokio::runtime::Handle,
        e: &TreeEntry,
        out: &mut impl Write,
    ) -> Result<DumpSummary> {
        let n = std::io::copy(&mut self.file_reader(handle, e), out).map_err(io_error)?;
        Ok(DumpSummary {
            tar: false,
            entries: 1,
            file_bytes: n,
            written: 0,
        })
    }

    fn dump_tar(
        &self,
        handle: &tokio::runtime::Handle,
        snap: &Snapshot,
        dir: &TreeEntry,
        out: &mut impl Write,
    ) -> Result<DumpSummary> {
        let mut sum = DumpSummary {
            tar: true,
            ..DumpSummary::default()
        };
        let mut tar = tar::Builder::new(out);
        let tree = self.chunk_reader(handle.clone(), snap.manifest.tree.clone());
        let mut entries = EntryReader::new(tree, format!("snapshots/{}", snap.id));
        let prefix = &dir.path;
        let inside = |p: &[u8]| {
            prefix.is_empty()
                || p == prefix.as_slice()
                || (p.len() > prefix.len() && p.starts_with(prefix) && p[prefix.len()] == b'/')
        };
        let mut seen = false;
        while let Some(e) = entries.next_entry()? {
            if !inside(&e.path) {
                if seen {
                    // Depth-first, name-sorted: past the subtree, done.
                    break;
                }
                continue;
            }
            seen = true;
            if e.path.is_empty() {
                // The root itself has no name in the archive.
                continue;
            }
            let name = Path::new(OsStr::from_bytes(&e.path));
            match e.kind {
                EntryKind::Dir => {
                    let mut h = header(&e, tar::EntryType::Directory, 0);
                    tar.append_data(&mut h, name, std::io::empty())
                        .map_err(io_error)?;
                }
                EntryKind::Symlink => {
                    let mut h = header(&e, tar::EntryType::Symlink, 0);
                    tar.append_link(&mut h, name, Path::new(OsStr::from_bytes(&e.target)))
                        .map_err(io_error)?;
                }
                EntryKind::File => {
                    let mut h = header(&e, tar::EntryType::Regular, e.size);
                    tar.append_data(&mut h, name, self.file_reader(handle, &e))
                        .map_err(io_error)?;
                    sum.file_bytes += e.size;
                }
            }
            sum.entries += 1;
        }
        tar.finish().map_err(io_error)?;
        Ok(sum)
    }
}
