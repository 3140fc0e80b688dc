//! Where each selected entry of a tree restore goes: created new or, with
//! `--overwrite`, found, kept or replaced (see [`Overwrite`]). Directories
//! are created only when something selected lies in them.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::fs::{self, Existing, FileId, Recorder};
use super::{Overwrite, RestoreOptions, RestoreSummary};
use crate::error::{Error, Result};
use crate::manifest::{EntryKind, TreeEntry};

/// A directory enclosing the current entry.
enum Level {
    /// Not created yet: nothing selected has needed it so far.
    Pending(TreeEntry),
    /// Created by this restore, or (with `--overwrite`) found there.
    Open(Arc<OwnedFd>),
    /// Something else stands at its path: nothing below it is restored.
    Blocked,
}

/// A file written beside the one it replaces, put in its place once whole.
/// Dropped before that (a failed restore), it is removed: it is this
/// restore's own.
pub(super) struct Replace {
    dir: Arc<OwnedFd>,
    tmp: Vec<u8>,
    name: Vec<u8>,
    path: PathBuf,
    done: AtomicBool,
}

impl Replace {
    /// Rename the written file over the one it replaces.
    pub(super) fn finish(&self) -> Result<()> {
        fs::replace(self.dir.as_fd(), &self.tmp, &self.name, &self.path)?;
        self.done.store(true, Ordering::Release);
        Ok(())
    }
}

impl Drop for Replace {
    fn drop(&mut self) {
        if !self.done.load(Ordering::Acquire) {
            fs::remove_temp(self.dir.as_fd(), &self.tmp);
        }
    }
}

/// Places the entries of one tree restore, in walk order.
pub(super) struct Placer<'a> {
    target: &'a Path,
    root: Arc<OwnedFd>,
    rec: Recorder<'a>,
    opts: &'a RestoreOptions,
    /// What was written, kept and left alone so far.
    pub(super) summary: RestoreSummary,
    /// Directories this restore created, for their metadata at the end.
    pub(super) dirs: Vec<(FileId, TreeEntry)>,
    /// The directories enclosing the current entry, outermost first (the
    /// target itself is `root`).
    chain: Vec<(Vec<u8>, Level)>,
}

/// The last component of a canonical relative path.
fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|c| *c == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

impl<'a> Placer<'a> {
    pub(super) fn new(
        target: &'a Path,
        root: &OwnedFd,
        rec: Recorder<'a>,
        opts: &'a RestoreOptions,
    ) -> Result<Self> {
        let root = root
            .try_clone()
            .map_err(|e| Error::io("opening", target, e))?;
        Ok(Placer {
            target,
            root: Arc::new(root),
            rec,
            opts,
            summary: RestoreSummary::default(),
            dirs: Vec::new(),
            chain: Vec::new(),
        })
    }

    /// Place `entry` (not the root), at `path` under the target; a file to
    /// write comes back open, with what to do once it is whole.
    ///
    /// # Errors
    /// A tree entry outside any directory (`snapshot` names the tree);
    /// what the file system refuses.
    pub(super) fn place(
        &mut self,
        entry: &TreeEntry,
        path: &Path,
        snapshot: &str,
    ) -> Result<Option<(File, Option<Replace>)>> {
        let parent: &[u8] = match entry.path.iter().rposition(|c| *c == b'/') {
            Some(i) => &entry.path[..i],
            None => b"",
        };
        while self
            .chain
            .last()
            .is_some_and(|(d, _)| d.as_slice() != parent)
        {
            self.chain.pop();
        }
        if self.chain.is_empty() && !parent.is_empty() {
            return Err(Error::corrupt(
                snapshot,
                format!("tree entry {} has no directory open", path.display()),
            ));
        }
        let blocked = matches!(self.chain.last(), Some((_, Level::Blocked)));
        if blocked || !self.opts.selection.selects(&entry.path) {
            if entry.kind == EntryKind::Dir {
                let level = if blocked {
                    Level::Blocked
                } else {
                    Level::Pending(entry.clone())
                };
                self.chain.push((entry.path.clone(), level));
            }
            return Ok(None);
        }
        let Some(dir) = self.open_chain()? else {
            if entry.kind == EntryKind::Dir {
                self.chain.push((entry.path.clone(), Level::Blocked));
            }
            return Ok(None);
        };
        let name = file_name(&entry.path);
        match entry.kind {
            EntryKind::Dir => {
                let level = self.dir(&dir, name, path, entry.clone())?;
                self.chain.push((entry.path.clone(), level));
                Ok(None)
            }
            EntryKind::Symlink => {
                self.symlink(&dir, name, path, entry)?;
                Ok(None)
            }
            EntryKind::File => self.file(&dir, name, path, entry),
        }
    }

    /// Create (or find) every pending directory enclosing the current
    /// entry; the innermost, or `None` when one of them is blocked.
    fn open_chain(&mut self) -> Result<Option<Arc<OwnedFd>>> {
        let mut parent = self.root.clone();
        for i in 0..self.chain.len() {
            let level = std::mem::replace(&mut self.chain[i].1, Level::Blocked);
            let level = match level {
                Level::Pending(entry) => {
                    let path = self.target.join(OsStr::from_bytes(&entry.path));
                    let name = file_name(&entry.path).to_vec();
                    self.dir(&parent, &name, &path, entry)?
                }
                other => other,
            };
            match &level {
                Level::Open(fd) => parent = fd.clone(),
                Level::Blocked => return Ok(None),
                Level::Pending(_) => unreachable!("just placed"),
            }
            self.chain[i].1 = level;
        }
        Ok(Some(parent))
    }

    fn dir(&mut self, dir: &OwnedFd, name: &[u8], path: &Path, entry: TreeEntry) -> Result<Level> {
        if self.opts.overwrite.is_some() {
            match fs::existing(dir.as_fd(), name, path)? {
                Existing::Nothing => {}
                Existing::Dir => {
                    let fd = fs::open_existing_dir(dir.as_fd(), name, path)?;
                    return Ok(Level::Open(Arc::new(fd)));
                }
                _ => {
                    self.summary.conflict(path);
                    return Ok(Level::Blocked);
                }
            }
        }
        let (fd, id) = self.rec.made(|| {
            let (fd, id) = fs::make_dir(dir.as_fd(), name, path)?;
            Ok(((fd, id), id))
        })?;
        self.summary.dirs += 1;
        self.dirs.push((id, entry));
        Ok(Level::Open(Arc::new(fd)))
    }

    fn symlink(
        &mut self,
        dir: &OwnedFd,
        name: &[u8],
        path: &Path,
        entry: &TreeEntry,
    ) -> Result<()> {
        if let Some(mode) = self.opts.overwrite {
            match fs::existing(dir.as_fd(), name, path)? {
                Existing::Nothing => {}
                Existing::Symlink(to)
                    if mode == Overwrite::Never
                        || (mode == Overwrite::IfChanged && to == entry.target) =>
                {
                    self.summary.kept += 1;
                    return Ok(());
                }
                Existing::File { .. } if mode == Overwrite::Never => {
                    self.summary.kept += 1;
                    return Ok(());
                }
                Existing::Symlink(_) | Existing::File { .. } => {
                    fs::replace_symlink(dir.as_fd(), name, path, entry, self.opts.owners)?;
                    self.summary.symlinks += 1;
                    self.summary.replaced += 1;
                    return Ok(());
                }
                Existing::Dir | Existing::Other => {
                    self.summary.conflict(path);
                    return Ok(());
                }
            }
        }
        self.rec.made(|| {
            let id = fs::make_symlink(dir.as_fd(), name, path, entry, self.opts.owners)?;
            Ok(((), id))
        })?;
        self.summary.symlinks += 1;
        Ok(())
    }

    fn file(
        &mut self,
        dir: &Arc<OwnedFd>,
        name: &[u8],
        path: &Path,
        entry: &TreeEntry,
    ) -> Result<Option<(File, Option<Replace>)>> {
        if let Some(mode) = self.opts.overwrite {
            match fs::existing(dir.as_fd(), name, path)? {
                Existing::Nothing => {}
                Existing::File { size, mtime_ns }
                    if mode == Overwrite::Never
                        || (mode == Overwrite::IfChanged
                            && size == entry.size
                            && mtime_ns == entry.mtime_ns) =>
                {
                    self.summary.kept += 1;
                    return Ok(None);
                }
                Existing::Symlink(_) if mode == Overwrite::Never => {
                    self.summary.kept += 1;
                    return Ok(None);
                }
                Existing::File { .. } | Existing::Symlink(_) => {
                    let (file, tmp) =
                        fs::make_replacement_file(dir.as_fd(), name, path, entry.size)?;
                    self.summary.replaced += 1;
                    let replace = Replace {
                        dir: dir.clone(),
                        tmp,
                        name: name.to_vec(),
                        path: path.to_path_buf(),
                        done: AtomicBool::new(false),
                    };
                    return Ok(Some((file, Some(replace))));
                }
                Existing::Dir | Existing::Other => {
                    self.summary.conflict(path);
                    return Ok(None);
                }
            }
        }
        let file = self
            .rec
            .made(|| fs::make_file(dir.as_fd(), name, path, entry.size))?;
        Ok(Some((file, None)))
    }
}
