//! The file system side of a restore: nothing is ever written through a
//! symbolic link.
//!
//! The target directory is opened once, its last component without following
//! a link (the components above it are the operator's choice). Everything
//! inside it is created relative to an open directory: `mkdirat` then
//! `openat(O_DIRECTORY | O_NOFOLLOW)`, files with `openat(O_CREAT | O_EXCL |
//! O_NOFOLLOW)`, `symlinkat`; owners, modes and times are set on the open
//! descriptor (or with `AT_SYMLINK_NOFOLLOW` for symlinks). A link planted
//! where the restore creates something makes the creation fail; a directory
//! swapped for a link while the restore runs is never entered (its files are
//! written through descriptors opened before), and the final pass, which
//! re-opens every directory without following links and compares its
//! identity, fails the restore naming it.
//!
//! A [`RestoreLedger`] records the identity (device, inode) of everything a
//! restore creates, so a restore test can remove exactly that afterwards and
//! nothing else: not a file that was there before, not one someone else
//! wrote meanwhile.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Timespec, Timestamps};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::manifest::TreeEntry;

/// A file system object's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    fn of(st: &rfs::Stat) -> Self {
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        }
    }

    fn of_fd(fd: BorrowedFd<'_>, path: &Path) -> Result<Self> {
        rfs::fstat(fd)
            .map(|st| FileId::of(&st))
            .map_err(|e| io("reading the status of", path, e))
    }
}

fn io(op: &'static str, path: &Path, e: Errno) -> Error {
    Error::io(op, path, e.into())
}

fn refused(path: &Path, reason: impl Into<String>) -> Error {
    Error::RestoreTarget {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// A directory to open for reading, never through a link.
const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What stands at `name` in `dir` (not following a link), in words, for an
/// error about something the restore did not expect there.
fn what_is_there(dir: BorrowedFd<'_>, name: &[u8]) -> String {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
            let to = rfs::readlinkat(dir, name, Vec::new())
                .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned())
                .unwrap_or_else(|_| "?".into());
            format!("it is a symbolic link (to {to:?}); a restore never writes through a link")
        }
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            "a directory is already there".into()
        }
        Ok(_) => "a file is already there".into(),
        Err(_) => "something is already there".into(),
    }
}

/// An error for creating `path` (`name` in `dir`) that failed with `e`.
fn creating(dir: BorrowedFd<'_>, name: &[u8], path: &Path, e: Errno) -> Error {
    match e {
        Errno::EXIST => refused(
            path,
            format!(
                "{}; it appeared while the restore ran and was left alone",
                what_is_there(dir, name)
            ),
        ),
        _ => io("creating", path, e),
    }
}

/// The directory a tree is restored into, open.
pub(super) struct TargetDir {
    pub(super) fd: OwnedFd,
    pub(super) id: FileId,
}

/// Open `target` for a restore, creating it (and missing parents) when
/// absent. An existing target must be a directory and not a link, and
/// empty unless `non_empty` (a restore with `--overwrite`).
pub(super) fn open_target(
    target: &Path,
    ledger: Option<&RestoreLedger>,
    non_empty: bool,
) -> Result<TargetDir> {
    let fd = match rfs::open(target, DIR, Mode::empty()) {
        Ok(fd) => {
            if !non_empty {
                check_empty(fd.as_fd(), target)?;
            }
            let st = rfs::fstat(&fd).map_err(|e| io("reading the status of", target, e))?;
            let id = FileId::of(&st);
            if let Some(l) = ledger {
                l.record(|| {
                    Ok((
                        (),
                        Place::Tree(target.to_path_buf(), id, Some(Attrs::of(&st))),
                    ))
                })?;
            }
            return Ok(TargetDir { fd, id });
        }
        Err(Errno::NOENT) => create_target(target, ledger, non_empty)?,
        Err(e) => return Err(open_error(target, e)),
    };
    let id = FileId::of_fd(fd.as_fd(), target)?;
    Ok(TargetDir { fd, id })
}

fn open_error(target: &Path, e: Errno) -> Error {
    match e {
        // A link with O_NOFOLLOW | O_DIRECTORY gives either.
        Errno::LOOP | Errno::NOTDIR => match link_to(target) {
            Some(to) => refused(
                target,
                format!("it is a symbolic link{to}; a restore never writes through a link: give the real directory"),
            ),
            None => refused(
                target,
                "it is not a directory: a tree restores into a new or empty directory",
            ),
        },
        _ => io("opening", target, e),
    }
}

/// `Some(" (to …)")` when `path` is a symbolic link.
fn link_to(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_symlink() {
        return None;
    }
    Some(
        std::fs::read_link(path)
            .map(|t| format!(" (to {:?})", t.display().to_string()))
            .unwrap_or_default(),
    )
}

/// After a restore: `target` must still be the directory restored into
/// (not a link planted in its place meanwhile).
pub(super) fn check_target(target: &Path, id: FileId) -> Result<()> {
    let fd = rfs::open(target, DIR, Mode::empty()).map_err(|e| replaced(target, e))?;
    if FileId::of_fd(fd.as_fd(), target)? != id {
        return Err(refused(
            target,
            "it was replaced by another directory while the restore ran",
        ));
    }
    Ok(())
}

/// Create an absent target, recording it and the parents it needed.
fn create_target(
    target: &Path,
    ledger: Option<&RestoreLedger>,
    non_empty: bool,
) -> Result<OwnedFd> {
    let mut missing = Vec::new();
    let mut up = target.parent();
    while let Some(p) = up.filter(|p| !p.as_os_str().is_empty()) {
        match std::fs::symlink_metadata(p) {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing.push(p.to_path_buf()),
            Err(e) => return Err(Error::io("opening", p, e)),
        }
        up = p.parent();
    }
    for p in missing.iter().rev() {
        let made = || -> Result<((), Place)> {
            match rfs::mkdir(p, Mode::from_raw_mode(0o777)) {
                Ok(()) => {}
                // Someone else's: not recorded.
                Err(Errno::EXIST) => return Ok(((), Place::Nothing)),
                Err(e) => return Err(io("creating", p, e)),
            }
            let fd = rfs::open(p, DIR, Mode::empty()).map_err(|e| open_error(p, e))?;
            let id = FileId::of_fd(fd.as_fd(), p)?;
            Ok(((), Place::Top(p.to_path_buf(), id)))
        };
        match ledger {
            Some(l) => l.record(made)?,
            None => made()?.0,
        }
    }
    // Private while the restore runs; the snapshot's root entry sets its mode at the end.
    let made = || -> Result<(OwnedFd, Place)> {
        match rfs::mkdir(target, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            // Created meanwhile (or a dangling link): opened and checked below.
            Err(Errno::EXIST) => {
                let fd =
                    rfs::open(target, DIR, Mode::empty()).map_err(|e| open_error(target, e))?;
                if !non_empty {
                    check_empty(fd.as_fd(), target)?;
                }
                let st = rfs::fstat(&fd).map_err(|e| io("reading the status of", target, e))?;
                let place =
                    Place::Tree(target.to_path_buf(), FileId::of(&st), Some(Attrs::of(&st)));
                return Ok((fd, place));
            }
            Err(e) => return Err(io("creating", target, e)),
        }
        let fd = rfs::open(target, DIR, Mode::empty()).map_err(|e| open_error(target, e))?;
        let id = FileId::of_fd(fd.as_fd(), target)?;
        Ok((fd, Place::Tree(target.to_path_buf(), id, None)))
    };
    match ledger {
        Some(l) => l.record(made),
        None => Ok(made()?.0),
    }
}

/// An existing target must hold nothing: a restore never overwrites.
fn check_empty(dir: BorrowedFd<'_>, target: &Path) -> Result<()> {
    let entries = rfs::Dir::read_from(dir).map_err(|e| io("reading", target, e))?;
    for e in entries {
        let e = e.map_err(|e| io("reading", target, e))?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err(refused(
                target,
                "the directory is not empty. Without --overwrite a restore writes only into a new or empty directory, and it left this one untouched: give a new directory, or say what to do with what is there (--overwrite never keeps every existing file, if-changed replaces files whose size or mtime differ, always replaces them all)",
            ));
        }
    }
    Ok(())
}

/// Create directory `name` in `dir` (private until its metadata is set at
/// the end) and open it.
pub(super) fn make_dir(dir: BorrowedFd<'_>, name: &[u8], path: &Path) -> Result<(OwnedFd, FileId)> {
    rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
        .map_err(|e| creating(dir, name, path, e))?;
    let fd = rfs::openat(dir, name, DIR, Mode::empty()).map_err(|e| replaced(path, e))?;
    let id = FileId::of_fd(fd.as_fd(), path)?;
    Ok((fd, id))
}

/// Create the regular file `name` in `dir` at `size`, open for writing.
pub(super) fn make_file(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    size: u64,
) -> Result<(File, FileId)> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rfs::openat(dir, name, flags, Mode::from_raw_mode(0o600))
        .map_err(|e| creating(dir, name, path, e))?;
    let id = FileId::of_fd(fd.as_fd(), path)?;
    rfs::ftruncate(&fd, size).map_err(|e| io("sizing", path, e))?;
    Ok((File::from(fd), id))
}

/// Create the symlink `name` in `dir` pointing at `target`, with its
/// owner (when `owners`) and times.
pub(super) fn make_symlink(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    entry: &TreeEntry,
    owners: bool,
) -> Result<FileId> {
    rfs::symlinkat(OsStr::from_bytes(&entry.target), dir, name)
        .map_err(|e| creating(dir, name, path, e))?;
    let st = rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io("reading the status of", path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Symlink {
        return Err(refused(path, "it was replaced while the restore ran"));
    }
    if owners {
        // Best effort, as `lchown` is refused on some file systems.
        let _ = rfs::chownat(
            dir,
            name,
            Some(rfs::Uid::from_raw(entry.uid)),
            Some(rfs::Gid::from_raw(entry.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
    }
    rfs::utimensat(dir, name, &times(entry.mtime_ns), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io("setting times of", path, e))?;
    Ok(FileId::of(&st))
}

/// Owner (when `owners`), mode and times of an open file or directory.
pub(super) fn set_meta(
    fd: BorrowedFd<'_>,
    path: &Path,
    entry: &TreeEntry,
    owners: bool,
) -> Result<()> {
    if owners {
        rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(entry.uid)),
            Some(rfs::Gid::from_raw(entry.gid)),
        )
        .map_err(|e| io("setting owner of", path, e))?;
    }
    rfs::fchmod(fd, Mode::from_raw_mode(entry.mode & 0o7777))
        .map_err(|e| io("setting mode of", path, e))?;
    rfs::futimens(fd, &times(entry.mtime_ns)).map_err(|e| io("setting times of", path, e))
}

fn times(ns: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: ns.div_euclid(1_000_000_000),
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// An error for re-opening the directory at `path` the restore created.
fn replaced(path: &Path, e: Errno) -> Error {
    match e {
        Errno::LOOP | Errno::NOTDIR => refused(
            path,
            match link_to(path) {
                Some(to) => format!("the directory was replaced by a symbolic link{to} while the restore ran; nothing was written through it"),
                None => "the directory was replaced by a file while the restore ran; nothing was written into it".into(),
            },
        ),
        Errno::NOENT => refused(path, "it was removed or renamed while the restore ran"),
        _ => io("opening", path, e),
    }
}

/// Re-opens directories below the target one component at a time, never
/// following a link, and checks each is the one the restore created. Keeps
/// the chain last opened, so walking directories deepest first (reverse
/// walk order) opens each about once.
pub(super) struct DirWalker<'a> {
    root: BorrowedFd<'a>,
    target: &'a Path,
    /// Relative path and descriptor of each directory of the chain.
    chain: Vec<(Vec<u8>, OwnedFd)>,
}

impl<'a> DirWalker<'a> {
    pub(super) fn new(root: BorrowedFd<'a>, target: &'a Path) -> Self {
        DirWalker {
            root,
            target,
            chain: Vec::new(),
        }
    }

    /// The directory at `rel` (canonical, `""` for the target), which must
    /// be the one with identity `id`.
    pub(super) fn open(&mut self, rel: &[u8], id: FileId) -> Result<BorrowedFd<'_>> {
        let within = |dir: &[u8]| {
            rel == dir || (rel.len() > dir.len() && rel.starts_with(dir) && rel[dir.len()] == b'/')
        };
        while self.chain.last().is_some_and(|(d, _)| !within(d)) {
            self.chain.pop();
        }
        let mut done = self.chain.last().map_or(0, |(d, _)| d.len());
        while done < rel.len() {
            let start = if done == 0 { 0 } else { done + 1 };
            let end = rel[start..]
                .iter()
                .position(|c| *c == b'/')
                .map_or(rel.len(), |i| start + i);
            let path = self.target.join(OsStr::from_bytes(&rel[..end]));
            let parent = self.chain.last().map_or(self.root, |(_, fd)| fd.as_fd());
            let fd = rfs::openat(parent, &rel[start..end], DIR, Mode::empty())
                .map_err(|e| replaced(&path, e))?;
            self.chain.push((rel[..end].to_vec(), fd));
            done = end;
        }
        let fd = self.chain.last().map_or(self.root, |(_, fd)| fd.as_fd());
        let path = self.target.join(OsStr::from_bytes(rel));
        if FileId::of_fd(fd, &path)? != id {
            return Err(refused(
                &path,
                "it was replaced by another directory while the restore ran",
            ));
        }
        Ok(fd)
    }
}

/// Owner, mode of a target directory that existed before the restore, to
/// put back when a restore test removes what it created.
#[derive(Debug, Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
}

impl Attrs {
    fn of(st: &rfs::Stat) -> Self {
        Attrs {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }
}

/// Where a created object is recorded.
enum Place {
    /// Nothing was created.
    Nothing,
    /// Inside a target directory.
    Inside(FileId),
    /// Created at a path of its own: a target directory's missing parent, a
    /// stream restored to a file.
    Top(PathBuf, FileId),
    /// A target directory: created (no attributes) or found empty (its
    /// attributes before the restore).
    Tree(PathBuf, FileId, Option<Attrs>),
}

/// Everything restores created, by identity, so that exactly that can be
/// removed again (a restore test cleaning up after itself). Give it to a
/// restore in [`RestoreOptions::ledger`](super::RestoreOptions::ledger) or
/// [`create_new_file`]; [`RestoreLedger::remove`] then removes what they
/// created — also after a failed or interrupted restore — and never
/// anything else.
#[derive(Default)]
pub struct RestoreLedger {
    inner: Mutex<Ledger>,
}

#[derive(Default)]
struct Ledger {
    /// Set by `remove`: a restore still running fails at its next creation.
    closed: bool,
    /// Target directories (path, identity, attributes if they existed).
    trees: Vec<(PathBuf, FileId, Option<Attrs>)>,
    /// Created at their own path, in creation order.
    top: Vec<(PathBuf, FileId)>,
    /// Created inside the target directories.
    inside: HashSet<FileId>,
}

impl std::fmt::Debug for RestoreLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = self.lock();
        f.debug_struct("RestoreLedger")
            .field("closed", &l.closed)
            .field("trees", &l.trees.len())
            .field("top", &l.top.len())
            .field("inside", &l.inside.len())
            .finish()
    }
}

/// What [`RestoreLedger::remove`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Files and symlinks removed.
    pub files: u64,
    /// Directories removed.
    pub dirs: u64,
    /// Entries left in place because the restore did not create them (or
    /// they changed identity), with directories of ours that still hold them.
    pub kept: Vec<PathBuf>,
}

impl RestoreLedger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Run `create` and record what it made; refused once the ledger is
    /// closed. The lock is held throughout, so nothing is created after
    /// `remove` has run.
    fn record<T>(&self, create: impl FnOnce() -> Result<(T, Place)>) -> Result<T> {
        let mut l = self.lock();
        if l.closed {
            return Err(stopped());
        }
        let (out, place) = create()?;
        match place {
            Place::Nothing => {}
            Place::Inside(id) => {
                l.inside.insert(id);
            }
            Place::Top(p, id) => l.top.push((p, id)),
            Place::Tree(p, id, attrs) => {
                if attrs.is_none() {
                    l.top.push((p.clone(), id));
                }
                l.trees.push((p, id, attrs));
            }
        }
        Ok(out)
    }

    /// Whether `remove` has run (a restore still running should stop).
    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        let l = self.lock();
        l.trees.is_empty() && l.top.is_empty() && l.inside.is_empty()
    }

    /// Remove everything recorded, deepest first, and close the ledger (a
    /// restore still running fails at its next creation). Only entries whose
    /// identity was recorded are removed, never through a link; a directory
    /// of ours that holds anything else is kept with it. A target directory
    /// that existed before gets its mode and owner back.
    ///
    /// # Errors
    /// I/O errors removing; what was removed until then stays removed.
    pub fn remove(&self) -> Result<Removed> {
        let mut l = self.lock();
        l.closed = true;
        let mut out = Removed::default();
        for (path, id, attrs) in &l.trees {
            let fd = match rfs::open(path, DIR, Mode::empty()) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(_) => {
                    out.kept.push(path.clone());
                    continue;
                }
            };
            if FileId::of_fd(fd.as_fd(), path)? != *id {
                out.kept.push(path.clone());
                continue;
            }
            let _ = rfs::fchmod(&fd, Mode::from_raw_mode(0o700));
            remove_inside(fd.as_fd(), path, &l.inside, &mut out)?;
            if let Some(a) = attrs {
                let _ = rfs::fchmod(&fd, Mode::from_raw_mode(a.mode));
                if rustix::process::geteuid().is_root() {
                    let _ = rfs::fchown(
                        &fd,
                        Some(rfs::Uid::from_raw(a.uid)),
                        Some(rfs::Gid::from_raw(a.gid)),
                    );
                }
            }
        }
        for (path, id) in l.top.iter().rev() {
            let Ok(st) = rfs::lstat(path) else { continue };
            if FileId::of(&st) != *id {
                out.kept.push(path.clone());
                continue;
            }
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                match rfs::rmdir(path) {
                    Ok(()) => out.dirs += 1,
                    Err(Errno::NOTEMPTY | Errno::EXIST) => out.kept.push(path.clone()),
                    Err(e) => return Err(io("removing", path, e)),
                }
            } else {
                rfs::unlink(path).map_err(|e| io("removing", path, e))?;
                out.files += 1;
            }
        }
        Ok(out)
    }
}

/// The error of a restore whose ledger was closed under it.
pub(super) fn stopped() -> Error {
    Error::Pipeline("the restore was stopped and what it created removed".into())
}

/// Remove the entries of `dir` (at `path`) recorded in `ours`, recursively.
fn remove_inside(
    dir: BorrowedFd<'_>,
    path: &Path,
    ours: &HashSet<FileId>,
    out: &mut Removed,
) -> Result<()> {
    let mut names = Vec::new();
    for e in rfs::Dir::read_from(dir).map_err(|e| io("reading", path, e))? {
        let e = e.map_err(|e| io("reading", path, e))?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    for name in names {
        let p = path.join(OsStr::from_bytes(&name));
        let st = match rfs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(io("reading the status of", &p, e)),
        };
        let id = FileId::of(&st);
        if !ours.contains(&id) {
            out.kept.push(p);
            continue;
        }
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let sub = rfs::openat(dir, &name, DIR, Mode::empty()).map_err(|e| replaced(&p, e))?;
            if FileId::of_fd(sub.as_fd(), &p)? != id {
                out.kept.push(p);
                continue;
            }
            // Ours: writable again, whatever mode the snapshot gave it.
            let _ = rfs::fchmod(&sub, Mode::from_raw_mode(0o700));
            remove_inside(sub.as_fd(), &p, ours, out)?;
            match rfs::unlinkat(dir, &name, AtFlags::REMOVEDIR) {
                Ok(()) => out.dirs += 1,
                // Holds something we did not create (listed in `kept`).
                Err(Errno::NOTEMPTY | Errno::EXIST) => {}
                Err(e) => return Err(io("removing", &p, e)),
            }
        } else {
            rfs::unlinkat(dir, &name, AtFlags::empty()).map_err(|e| io("removing", &p, e))?;
            out.files += 1;
        }
    }
    Ok(())
}

/// Records what one restore creates, when it has a ledger.
#[derive(Clone, Copy)]
pub(super) struct Recorder<'a>(pub(super) Option<&'a RestoreLedger>);

impl Recorder<'_> {
    /// Run `create`, recording the identity it returns as created inside
    /// the target.
    pub(super) fn made<T>(&self, create: impl FnOnce() -> Result<(T, FileId)>) -> Result<T> {
        match self.0 {
            None => Ok(create()?.0),
            Some(l) => l.record(|| create().map(|(t, id)| (t, Place::Inside(id)))),
        }
    }
}

/// Create a new file at `path` for a stream restore: never through a
/// symbolic link (a link at `path`, dangling or not, is refused, and so is
/// anything else already there). Recorded in `ledger` when given.
///
/// # Errors
/// [`Error::RestoreTarget`] when something is at `path`; I/O errors.
pub fn create_new_file(path: &Path, ledger: Option<&RestoreLedger>) -> Result<File> {
    let name = path
        .file_name()
        .ok_or_else(|| refused(path, "a stream restores into a file: give a file name"))?
        .as_bytes();
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let create = || -> Result<(File, Place)> {
        let dir = rfs::open(
            parent,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io("opening", parent, e))?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd =
            rfs::openat(&dir, name, flags, Mode::from_raw_mode(0o666)).map_err(|e| match e {
                Errno::EXIST => {
                    let there = what_is_there(dir.as_fd(), name);
                    let why = if there.contains("symbolic link") {
                        ""
                    } else {
                        "; a stream restores into a new file and never overwrites one"
                    };
                    refused(path, format!("{there}{why}: give a new file name"))
                }
                e => io("creating", path, e),
            })?;
        let id = FileId::of_fd(fd.as_fd(), path)?;
        Ok((File::from(fd), Place::Top(path.to_path_buf(), id)))
    };
    match ledger {
        Some(l) => l.record(create),
        None => Ok(create()?.0),
    }
}

/// What stands at a name the restore is to create, with `--overwrite`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Existing {
    Nothing,
    Dir,
    File {
        size: u64,
        mtime_ns: i64,
    },
    Symlink(Vec<u8>),
    /// A device, fifo or socket: never replaced.
    Other,
}

/// What is at `name` in `dir`, without following a link.
#[allow(clippy::unnecessary_cast)] // the field types differ between platforms
pub(super) fn existing(dir: BorrowedFd<'_>, name: &[u8], path: &Path) -> Result<Existing> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(Existing::Nothing),
        Err(e) => return Err(io("reading the status of", path, e)),
    };
    Ok(match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => Existing::Dir,
        FileType::RegularFile => Existing::File {
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64) * 1_000_000_000 + st.st_mtime_nsec as i64,
        },
        FileType::Symlink => Existing::Symlink(
            rfs::readlinkat(dir, name, Vec::new())
                .map_err(|e| io("reading the link", path, e))?
                .into_bytes(),
        ),
        _ => Existing::Other,
    })
}

/// Open the directory already at `name` in `dir` (never through a link).
pub(super) fn open_existing_dir(dir: BorrowedFd<'_>, name: &[u8], path: &Path) -> Result<OwnedFd> {
    rfs::openat(dir, name, DIR, Mode::empty()).map_err(|e| replaced(path, e))
}

/// A name beside `name` for a file or link that replaces it once whole:
/// `.NAME.trireme-PID-N`.
fn temp_name(name: &[u8]) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let mut t = b".".to_vec();
    t.extend_from_slice(&name[..name.len().min(200)]);
    t.extend_from_slice(
        format!(
            ".trireme-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
        .as_bytes(),
    );
    t
}

/// A new file beside `name` in `dir` at `size`, to replace `name` once
/// written ([`replace`]); returns it and its name.
pub(super) fn make_replacement_file(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    size: u64,
) -> Result<(File, Vec<u8>)> {
    let tmp = temp_name(name);
    let (file, _) = make_file(dir, &tmp, path, size)?;
    Ok((file, tmp))
}

/// Put `tmp` (written by this restore) in place of `name` in `dir`. What
/// stands at `name` must still be a file or a link (a rename replaces the
/// link itself, never what it points to); a directory that appeared there
/// meanwhile fails the rename and `tmp` is removed.
pub(super) fn replace(dir: BorrowedFd<'_>, tmp: &[u8], name: &[u8], path: &Path) -> Result<()> {
    rfs::renameat(dir, tmp, dir, name).map_err(|e| {
        remove_temp(dir, tmp);
        match e {
            Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => refused(
                path,
                "a directory appeared there while the restore ran; it was left alone",
            ),
            e => io("replacing", path, e),
        }
    })
}

/// Remove a replacement this restore wrote and did not put in place.
pub(super) fn remove_temp(dir: BorrowedFd<'_>, tmp: &[u8]) {
    let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
}

/// Replace what is at `name` (a file or a link) by the snapshot's link.
pub(super) fn replace_symlink(
    dir: BorrowedFd<'_>,
    name: &[u8],
    path: &Path,
    entry: &TreeEntry,
    owners: bool,
) -> Result<()> {
    let tmp = temp_name(name);
    if let Err(e) = make_symlink(dir, &tmp, path, entry, owners) {
        remove_temp(dir, &tmp);
        return Err(e);
    }
    replace(dir, &tmp, name, path)
}
