//! Looking inside snapshots without restoring them: list a tree (`ls`),
//! compare two (`diff`), search names across snapshots (`find`), and count
//! sizes (`stats`). Everything streams the snapshots' tree objects (and
//! reads no file data); only what is reported is kept in memory.

use std::collections::HashSet;

use serde::Serialize;

use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::glob::PathGlobs;
use crate::manifest::{path_cmp, EntryKind, EntryReader, TreeEntry};
use crate::repo::{IndexedRepo, Snapshot};

/// One path that differs between two snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The path (lossy UTF-8 for display).
    pub path: String,
    /// What changed.
    pub what: ChangeKind,
    /// Size in the first snapshot (0 if absent).
    pub old_size: u64,
    /// Size in the second snapshot (0 if absent).
    pub new_size: u64,
}

/// How a path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Only in the second snapshot.
    Added,
    /// Only in the first.
    Removed,
    /// Its content (a file's data, a link's target) or its type differs.
    Modified,
    /// Same content; mode, owner or modification time differ.
    Metadata,
}

impl ChangeKind {
    /// The one-character mark of `diff`'s text output (`+ - M m`).
    pub fn mark(self) -> char {
        match self {
            ChangeKind::Added => '+',
            ChangeKind::Removed => '-',
            ChangeKind::Modified => 'M',
            ChangeKind::Metadata => 'm',
        }
    }
}

/// Counts of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiffSummary {
    /// Paths only in the second snapshot.
    pub added: u64,
    /// Paths only in the first.
    pub removed: u64,
    /// Paths whose content or type changed.
    pub modified: u64,
    /// Paths whose metadata only changed.
    pub metadata: u64,
    /// Bytes of files added, and of the new version of modified files.
    pub added_bytes: u64,
    /// Bytes of files removed, and of the old version of modified files.
    pub removed_bytes: u64,
}

/// What `stats` counts for one or more snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Snapshots counted.
    pub snapshots: u64,
    /// Files (counted once per snapshot).
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// The files' bytes, summed over the snapshots (what a restore of each writes).
    pub logical_bytes: u64,
    /// Distinct chunks the files refer to.
    pub unique_chunks: u64,
    /// Plaintext bytes of those chunks (after deduplication).
    pub unique_bytes: u64,
    /// Bytes those chunks take at the location (compressed, sealed).
    pub stored_bytes: u64,
}

impl Stats {
    /// `logical / unique`: how many times deduplication shrank the data (≥ 1).
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.logical_bytes, self.unique_bytes)
    }

    /// `unique / stored`: how many times compression shrank it.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.unique_bytes, self.stored_bytes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// The path of `e` for display.
pub fn display_path(e: &TreeEntry) -> String {
    if e.path.is_empty() {
        "/".into()
    } else {
        format!("/{}", String::from_utf8_lossy(&e.path))
    }
}

/// `PATH` as given by an operator (`/etc/x`, `etc/x/`, `/`) as a tree path.
pub fn tree_path(path: &str) -> Vec<u8> {
    path.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
        .into_bytes()
}

/// Whether `path` is `dir` or below it.
fn under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty()
        || path == dir
        || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|c| **c == b'/').count()
    }
}

/// What `list` keeps while it walks.
#[derive(Default)]
struct ListState {
    found: Option<EntryKind>,
    out: Vec<TreeEntry>,
    truncated: bool,
}

impl IndexedRepo {
    /// Read `snap`'s tree in order on a blocking thread, giving each entry
    /// to `f` with `state` until it returns `false`; the state is returned.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for a malformed tree; storage and key errors; `f`'s.
    pub async fn walk_tree<S, F>(&self, snap: &Snapshot, state: S, f: F) -> Result<S>
    where
        S: Send + 'static,
        F: FnMut(&mut S, TreeEntry) -> Result<bool> + Send + 'static,
    {
        let this = self.clone();
        let snap = snap.clone();
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let (mut state, mut f) = (state, f);
            let name = format!("snapshots/{}", snap.id);
            let tree = this.chunk_reader(handle, snap.manifest.tree.clone());
            let mut entries = EntryReader::new(tree, name);
            while let Some(e) = entries.next_entry()? {
                if !f(&mut state, e)? {
                    break;
                }
            }
            Ok(state)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("tree reader: {e}")))?
    }

    /// The entries of `snap` at `path`: a directory's children (all its
    /// descendants when `recursive`), or the one entry a file path names.
    /// Chunk lists are left out.
    ///
    /// # Errors
    /// [`Error::Snapshot`] naming the path when the snapshot has no such
    /// entry; as [`IndexedRepo::walk_tree`].
    pub async fn list(
        &self,
        snap: &Snapshot,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<TreeEntry>> {
        Ok(self
            .list_at_most(snap, path, recursive, usize::MAX)
            .await?
            .0)
    }

    /// As [`IndexedRepo::list`], keeping at most `max` entries: the walk
    /// stops there, and the flag says whether entries were left out (so a
    /// huge tree cannot fill the memory of whoever lists it).
    ///
    /// # Errors
    /// As [`IndexedRepo::list`].
    pub async fn list_at_most(
        &self,
        snap: &Snapshot,
        path: &str,
        recursive: bool,
        max: usize,
    ) -> Result<(Vec<TreeEntry>, bool)> {
        let dir = tree_path(path);
        let want_depth = depth(&dir) + 1;
        let prefix = dir.clone();
        let s = self
            .walk_tree(snap, ListState::default(), move |s, mut e| {
                if e.path == prefix {
                    s.found = Some(e.kind);
                    if e.kind != EntryKind::Dir {
                        e.chunks = Vec::new();
                        s.out.push(e);
                        return Ok(false);
                    }
                    return Ok(true);
                }
                if s.found.is_some() && under(&e.path, &prefix) {
                    if recursive || depth(&e.path) == want_depth {
                        if s.out.len() >= max {
                            s.truncated = true;
                            return Ok(false);
                        }
                        e.chunks = Vec::new();
                        s.out.push(e);
                    }
                    return Ok(true);
                }
                // Depth-first, name-sorted: once past the subtree, done.
                Ok(s.found.is_none() && path_cmp(&e.path, &prefix) == std::cmp::Ordering::Less)
            })
            .await?;
        if s.found.is_none() {
            return Err(Error::Snapshot(format!(
                "snapshot {} has no path {}: list its root with `ls {}` and walk down",
                snap.id.short(),
                shown(&dir),
                snap.id.short()
            )));
        }
        Ok((s.out, s.truncated))
    }

    /// The differences between snapshots `a` and `b`, in path order, and
    /// their counts. Only the changes are kept in memory.
    ///
    /// # Errors
    /// As [`IndexedRepo::walk_tree`].
    pub async fn diff(&self, a: &Snapshot, b: &Snapshot) -> Result<(Vec<Change>, DiffSummary)> {
        let (changes, sum, _) = self.diff_at_most(a, b, usize::MAX).await?;
        Ok((changes, sum))
    }

    /// As [`IndexedRepo::diff`], keeping at most `max` changes (the
    /// summary still counts them all); the flag says whether some were
    /// left out.
    ///
    /// # Errors
    /// As [`IndexedRepo::walk_tree`].
    pub async fn diff_at_most(
        &self,
        a: &Snapshot,
        b: &Snapshot,
        max: usize,
    ) -> Result<(Vec<Change>, DiffSummary, bool)> {
        let this = self.clone();
        let (a, b) = (a.clone(), b.clone());
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let reader = |s: &Snapshot| {
                EntryReader::new(
                    this.chunk_reader(handle.clone(), s.manifest.tree.clone()),
                    format!("snapshots/{}", s.id),
                )
            };
            let (mut ra, mut rb) = (reader(&a), reader(&b));
            let (mut ea, mut eb) = (ra.next_entry()?, rb.next_entry()?);
            let mut changes = Vec::new();
            let mut truncated = false;
            let mut keep = |changes: &mut Vec<Change>, c: Change| {
                if changes.len() < max {
                    changes.push(c);
                } else {
                    truncated = true;
                }
            };
            let mut sum = DiffSummary::default();
            loop {
                let order = match (&ea, &eb) {
                    (None, None) => break,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(x), Some(y)) => path_cmp(&x.path, &y.path),
                };
                match order {
                    std::cmp::Ordering::Less => {
                        let x = ea.take().expect("some");
                        sum.removed += 1;
                        sum.removed_bytes += x.size;
                        keep(&mut changes, change(&x, ChangeKind::Removed, x.size, 0));
                        ea = ra.next_entry()?;
                    }
                    std::cmp::Ordering::Greater => {
                        let y = eb.take().expect("some");
                        sum.added += 1;
                        sum.added_bytes += y.size;
                        keep(&mut changes, change(&y, ChangeKind::Added, 0, y.size));
                        eb = rb.next_entry()?;
                    }
                    std::cmp::Ordering::Equal => {
                        let (x, y) = (ea.take().expect("some"), eb.take().expect("some"));
                        if x.kind != y.kind
                            || x.chunks != y.chunks
                            || x.target != y.target
                            || x.size != y.size
                        {
                            sum.modified += 1;
                            sum.removed_bytes += x.size;
                            sum.added_bytes += y.size;
                            keep(
                                &mut changes,
                                change(&y, ChangeKind::Modified, x.size, y.size),
                            );
                        } else if x.mode != y.mode
                            || x.uid != y.uid
                            || x.gid != y.gid
                            || (x.kind != EntryKind::Dir && x.mtime_ns != y.mtime_ns)
                        {
                            sum.metadata += 1;
                            keep(
                                &mut changes,
                                change(&y, ChangeKind::Metadata, x.size, y.size),
                            );
                        }
                        ea = ra.next_entry()?;
                        eb = rb.next_entry()?;
                    }
                }
            }
            Ok((changes, sum, truncated))
        })
        .await
        .map_err(|e| Error::Pipeline(format!("tree reader: {e}")))?
    }

    /// The entries of `snap` whose name (pattern without `/`) or path
    /// (pattern with `/`) matches `globs`, chunk lists left out.
    ///
    /// # Errors
    /// As [`IndexedRepo::walk_tree`].
    pub async fn find(&self, snap: &Snapshot, globs: &PathGlobs) -> Result<Vec<TreeEntry>> {
        Ok(self.find_at_most(snap, globs, usize::MAX).await?.0)
    }

    /// As [`IndexedRepo::find`], keeping at most `max` entries: the walk
    /// stops there, and the flag says whether entries were left out.
    ///
    /// # Errors
    /// As [`IndexedRepo::walk_tree`].
    pub async fn find_at_most(
        &self,
        snap: &Snapshot,
        globs: &PathGlobs,
        max: usize,
    ) -> Result<(Vec<TreeEntry>, bool)> {
        let globs = globs.clone();
        self.walk_tree(snap, (Vec::new(), false), move |(out, truncated), mut e| {
            if !e.path.is_empty() && globs.matches(&e.path) {
                if out.len() >= max {
                    *truncated = true;
                    return Ok(false);
                }
                e.chunks = Vec::new();
                out.push(e);
            }
            Ok(true)
        })
        .await
    }

    /// Sizes of `snaps` together: chunks shared between them (or within
    /// one) count once in `unique_*` and `stored_bytes`. Memory: one chunk
    /// id (32 bytes) per distinct chunk.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when a file refers to a chunk the index does not
    /// know; as [`IndexedRepo::walk_tree`].
    pub async fn stats(&self, snaps: &[Snapshot]) -> Result<Stats> {
        let mut state = (Stats::default(), HashSet::<Id>::new(), Vec::<Id>::new());
        for snap in snaps {
            state.0.snapshots += 1;
            state = self
                .walk_tree(snap, state, |(st, seen, fresh), e| {
                    match e.kind {
                        EntryKind::Dir => st.dirs += 1,
                        EntryKind::Symlink => st.symlinks += 1,
                        EntryKind::File => {
                            st.files += 1;
                            st.logical_bytes += e.size;
                            for c in e.chunks {
                                if seen.insert(c) {
                                    fresh.push(c);
                                }
                            }
                        }
                    }
                    Ok(true)
                })
                .await?;
            let (st, _, fresh) = &mut state;
            for id in fresh.drain(..) {
                let (_, blob) = self.index.get(&id).ok_or_else(|| {
                    self.not_indexed(&format!("snapshot {}", snap.id.short()), &id)
                })?;
                st.unique_chunks += 1;
                st.unique_bytes += u64::from(blob.raw_len);
                st.stored_bytes += u64::from(blob.length);
            }
        }
        Ok(state.0)
    }
}

fn change(e: &TreeEntry, what: ChangeKind, old_size: u64, new_size: u64) -> Change {
    Change {
        path: display_path(e),
        what,
        old_size,
        new_size,
    }
}

fn shown(path: &[u8]) -> String {
    format!("/{}", String::from_utf8_lossy(path))
}
