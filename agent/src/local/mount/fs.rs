//! The mounted file system: a read-only view of a repository.
//!
//! ```text
//! /snapshots/<time>-<id>/…          each snapshot's tree (time in UTC)
//! /by-source/<source>/<time>-<id>   links to ../../snapshots/<time>-<id>
//! /by-source/<source>/latest        link to the source's newest snapshot
//! ```
//!
//! A snapshot's tree is read (its tree objects only) the first time
//! something looks inside it, and its entries then stay in memory with
//! their inode numbers until the file system is unmounted. A read fetches
//! only the chunks that cover the bytes asked for (one ranged read of the
//! sealed blob each), through a bounded LRU cache of decrypted chunks.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, Request,
};
use trireme_common::manifest::{EntryKind, EntryReader};
use trireme_common::{Id, IndexedRepo, Snapshot};

use super::cache::Lru;

/// How long the kernel may keep names and attributes: nothing here changes.
const TTL: Duration = Duration::from_secs(300);

/// What the mount counts (printed when it ends; the test reads it).
#[derive(Default)]
pub struct Counters {
    /// Chunks fetched from the location.
    pub fetched: AtomicU64,
    /// Sealed bytes fetched from the location for them.
    pub fetched_bytes: AtomicU64,
    /// Chunk reads served from the cache.
    pub hits: AtomicU64,
    /// Snapshot trees read.
    pub trees: AtomicU64,
}

enum Content {
    /// Children by name, sorted; `pending` until the snapshot's tree is read.
    Dir {
        children: Vec<(Vec<u8>, u64)>,
        pending: Option<Box<Snapshot>>,
    },
    /// Chunks with the offset each starts at.
    File {
        chunks: Arc<[(Id, u64)]>,
    },
    Link(Vec<u8>),
}

struct Node {
    parent: u64,
    kind: FileType,
    perm: u16,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: SystemTime,
    nlink: u32,
    content: Content,
}

/// The file system.
pub struct RepoFs {
    ix: IndexedRepo,
    handle: tokio::runtime::Handle,
    /// Node `ino` is at index `ino - 1`.
    nodes: RwLock<Vec<Node>>,
    /// One tree read at a time.
    loading: Mutex<()>,
    cache: Mutex<Lru>,
    counters: Arc<Counters>,
}

fn time(ns: i64) -> SystemTime {
    crate::local::to_system_time(ns)
}

/// `2026-12-04T17:04:31Z-176a00a3`: sorts by time, names the snapshot.
pub fn snapshot_name(s: &Snapshot) -> String {
    format!(
        "{}-{}",
        humantime::format_rfc3339_seconds(time(s.manifest.started_ns)),
        s.id.short()
    )
}

/// A source name as one path component.
fn component(name: &str) -> Vec<u8> {
    match name {
        "" | "." | ".." => format!("_{name}").into_bytes(),
        n => n.replace('/', "_").into_bytes(),
    }
}

impl RepoFs {
    /// The view of `snapshots` of `ix`; `cache` bytes of chunks kept.
    pub fn new(
        ix: IndexedRepo,
        mut snapshots: Vec<Snapshot>,
        cache: usize,
        counters: Arc<Counters>,
    ) -> Self {
        snapshots.sort_by_key(|s| (s.manifest.started_ns, s.id));
        let (uid, gid) = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let now = SystemTime::now();
        let dir = |parent: u64, nlink: u32, mtime: SystemTime| Node {
            parent,
            kind: FileType::Directory,
            perm: 0o555,
            uid,
            gid,
            size: 0,
            mtime,
            nlink,
            content: Content::Dir {
                children: Vec::new(),
                pending: None,
            },
        };
        let link = |parent: u64, target: String, mtime: SystemTime| Node {
            parent,
            kind: FileType::Symlink,
            perm: 0o777,
            uid,
            gid,
            size: target.len() as u64,
            mtime,
            nlink: 1,
            content: Content::Link(target.into_bytes()),
        };
        let mut sources: Vec<Vec<u8>> = snapshots
            .iter()
            .map(|s| component(&s.manifest.source))
            .collect();
        sources.sort();
        sources.dedup();
        let mut nodes = vec![
            dir(1, 4, now),
            dir(1, 2 + snapshots.len() as u32, now),
            dir(1, 2 + sources.len() as u32, now),
        ];
        let mut top = vec![];
        let mut by_snapshot = vec![];
        for s in &snapshots {
            let mut d = dir(2, 2, time(s.manifest.started_ns));
            d.content = Content::Dir {
                children: Vec::new(),
                pending: Some(Box::new(s.clone())),
            };
            nodes.push(d);
            by_snapshot.push((snapshot_name(s).into_bytes(), nodes.len() as u64));
        }
        for src in &sources {
            nodes.push(dir(3, 2, now));
            let src_ino = nodes.len() as u64;
            let mut children = vec![];
            let mine: Vec<&Snapshot> = snapshots
                .iter()
                .filter(|s| &component(&s.manifest.source) == src)
                .collect();
            for s in &mine {
                let name = snapshot_name(s);
                nodes.push(link(
                    src_ino,
                    format!("../../snapshots/{name}"),
                    time(s.manifest.started_ns),
                ));
                children.push((name.into_bytes(), nodes.len() as u64));
            }
            if let Some(s) = mine.last() {
                nodes.push(link(
                    src_ino,
                    format!("../../snapshots/{}", snapshot_name(s)),
                    time(s.manifest.started_ns),
                ));
                children.push((b"latest".to_vec(), nodes.len() as u64));
            }
            children.sort();
            nodes[src_ino as usize - 1].content = Content::Dir {
                children,
                pending: None,
            };
            top.push((src.clone(), src_ino));
        }
        by_snapshot.sort();
        top.sort();
        nodes[0].content = Content::Dir {
            children: vec![(b"by-source".to_vec(), 3), (b"snapshots".to_vec(), 2)],
            pending: None,
        };
        nodes[1].content = Content::Dir {
            children: by_snapshot,
            pending: None,
        };
        nodes[2].content = Content::Dir {
            children: top,
            pending: None,
        };
        RepoFs {
            ix,
            handle: tokio::runtime::Handle::current(),
            nodes: RwLock::new(nodes),
            loading: Mutex::new(()),
            cache: Mutex::new(Lru::new(cache)),
            counters,
        }
    }

    fn attr(&self, ino: u64, n: &Node) -> FileAttr {
        FileAttr {
            ino: INodeNo(ino),
            size: n.size,
            blocks: n.size.div_ceil(512),
            atime: n.mtime,
            mtime: n.mtime,
            ctime: n.mtime,
            crtime: n.mtime,
            kind: n.kind,
            perm: n.perm,
            nlink: n.nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Read the tree of the snapshot directory `ino` if not yet read.
    fn load(&self, ino: u64) -> Result<(), Errno> {
        let pending = |fs: &Self| -> Option<Snapshot> {
            let nodes = fs.nodes.read().expect("nodes");
            match &nodes.get(ino as usize - 1)?.content {
                Content::Dir {
                    pending: Some(s), ..
                } => Some((**s).clone()),
                _ => None,
            }
        };
        if pending(self).is_none() {
            return Ok(());
        }
        let _one = self.loading.lock().expect("loading");
        let Some(snap) = pending(self) else {
            return Ok(());
        };
        let first = self.nodes.read().expect("nodes").len() as u64 + 1;
        let built = self.read_tree(&snap, ino, first).map_err(|e| {
            tracing::error!(snapshot = %snap.id, error = %e, "cannot read the snapshot's tree");
            Errno::EIO
        })?;
        self.counters.trees.fetch_add(1, Ordering::Relaxed);
        let (mut new, children, dir_links) = built;
        let mut nodes = self.nodes.write().expect("nodes");
        for (parent, kids) in children {
            let links = dir_links.get(&parent).copied().unwrap_or(0);
            let target = if parent == ino {
                nodes[ino as usize - 1].nlink = 2 + links;
                &mut nodes[ino as usize - 1].content
            } else {
                let n = &mut new[(parent - first) as usize];
                n.nlink = 2 + links;
                &mut n.content
            };
            if let Content::Dir { children, .. } = target {
                *children = kids;
            }
        }
        if let Content::Dir { pending, .. } = &mut nodes[ino as usize - 1].content {
            *pending = None;
        }
        nodes.extend(new);
        Ok(())
    }

    /// The nodes of `snap`'s tree (numbered from `first`, below directory
    /// `root`), each directory's sorted children, and its subdirectory count.
    #[allow(clippy::type_complexity)]
    fn read_tree(
        &self,
        snap: &Snapshot,
        root: u64,
        first: u64,
    ) -> trireme_common::Result<(
        Vec<Node>,
        HashMap<u64, Vec<(Vec<u8>, u64)>>,
        HashMap<u64, u32>,
    )> {
        let tree = self
            .ix
            .chunk_reader(self.handle.clone(), snap.manifest.tree.clone());
        let mut entries = EntryReader::new(tree, format!("snapshots/{}", snap.id));
        let mut dirs: HashMap<Vec<u8>, u64> = HashMap::from([(Vec::new(), root)]);
        let mut children: HashMap<u64, Vec<(Vec<u8>, u64)>> = HashMap::from([(root, vec![])]);
        let mut subdirs: HashMap<u64, u32> = HashMap::new();
        let mut nodes = Vec::new();
        while let Some(e) = entries.next_entry()? {
            if e.path.is_empty() {
                continue;
            }
            let (parent_path, name) = match e.path.iter().rposition(|c| *c == b'/') {
                Some(i) => (&e.path[..i], &e.path[i + 1..]),
                None => (&e.path[..0], &e.path[..]),
            };
            let Some(&parent) = dirs.get(parent_path) else {
                tracing::warn!(path = %String::from_utf8_lossy(&e.path), "tree entry without its directory; left out");
                continue;
            };
            let ino = first + nodes.len() as u64;
            let (kind, content) = match e.kind {
                EntryKind::Dir => {
                    dirs.insert(e.path.clone(), ino);
                    children.insert(ino, vec![]);
                    *subdirs.entry(parent).or_default() += 1;
                    (
                        FileType::Directory,
                        Content::Dir {
                            children: vec![],
                            pending: None,
                        },
                    )
                }
                EntryKind::Symlink => (FileType::Symlink, Content::Link(e.target.clone())),
                EntryKind::File => {
                    let mut at = 0u64;
                    let mut chunks = Vec::with_capacity(e.chunks.len());
                    for id in &e.chunks {
                        chunks.push((*id, at));
                        at += self
                            .ix
                            .index
                            .get(id)
                            .map_or(0, |(_, b)| u64::from(b.raw_len));
                    }
                    (
                        FileType::RegularFile,
                        Content::File {
                            chunks: chunks.into(),
                        },
                    )
                }
            };
            children
                .get_mut(&parent)
                .expect("a directory's list")
                .push((name.to_vec(), ino));
            nodes.push(Node {
                parent,
                kind,
                perm: (e.mode & 0o7777) as u16,
                uid: e.uid,
                gid: e.gid,
                size: match e.kind {
                    EntryKind::Symlink => e.target.len() as u64,
                    _ => e.size,
                },
                mtime: time(e.mtime_ns),
                nlink: 1,
                content,
            });
        }
        for kids in children.values_mut() {
            kids.sort();
        }
        Ok((nodes, children, subdirs))
    }

    /// Chunk `id`, from the cache or the location.
    fn chunk(&self, id: &Id) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(d) = self.cache.lock().expect("cache").get(id) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        let data = self.handle.block_on(self.ix.read_chunk(id)).map_err(|e| {
            tracing::error!(chunk = %id, error = %e, "cannot read a chunk");
            Errno::EIO
        })?;
        self.counters.fetched.fetch_add(1, Ordering::Relaxed);
        if let Some((_, b)) = self.ix.index.get(id) {
            self.counters
                .fetched_bytes
                .fetch_add(u64::from(b.length), Ordering::Relaxed);
        }
        let data = Arc::new(data);
        self.cache.lock().expect("cache").put(*id, data.clone());
        Ok(data)
    }

    /// `len` bytes of a file's data from `offset` (fewer at its end).
    fn read_at(
        &self,
        chunks: &[(Id, u64)],
        size: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, Errno> {
        let end = size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut i = chunks.partition_point(|c| c.1 <= offset).saturating_sub(1);
        let mut pos = offset;
        while pos < end && i < chunks.len() {
            let (id, start) = chunks[i];
            let data = self.chunk(&id)?;
            let from = (pos - start) as usize;
            if from >= data.len() {
                // The index said otherwise: a damaged repository.
                return Err(Errno::EIO);
            }
            let take = data.len().min(from + (end - pos) as usize);
            out.extend_from_slice(&data[from..take]);
            pos += (take - from) as u64;
            i += 1;
        }
        if pos < end {
            return Err(Errno::EIO);
        }
        Ok(out)
    }
}

impl Filesystem for RepoFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if let Err(e) = self.load(parent.0) {
            return reply.error(e);
        }
        let nodes = self.nodes.read().expect("nodes");
        let Some(Node {
            content: Content::Dir { children, .. },
            ..
        }) = nodes.get(parent.0 as usize - 1)
        else {
            return reply.error(Errno::ENOTDIR);
        };
        match children.binary_search_by(|(n, _)| n.as_slice().cmp(name.as_bytes())) {
            Ok(i) => {
                let ino = children[i].1;
                reply.entry(
                    &TTL,
                    &self.attr(ino, &nodes[ino as usize - 1]),
                    Generation(0),
                );
            }
            Err(_) => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let nodes = self.nodes.read().expect("nodes");
        match nodes.get((ino.0 as usize).wrapping_sub(1)) {
            Some(n) => reply.attr(&TTL, &self.attr(ino.0, n)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let nodes = self.nodes.read().expect("nodes");
        match nodes.get((ino.0 as usize).wrapping_sub(1)) {
            Some(Node {
                content: Content::Link(t),
                ..
            }) => reply.data(t),
            _ => reply.error(Errno::EINVAL),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        let nodes = self.nodes.read().expect("nodes");
        match nodes.get((ino.0 as usize).wrapping_sub(1)) {
            // Nothing here ever changes: the kernel may keep what it read.
            Some(n) if n.kind == FileType::RegularFile => {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Some(_) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (chunks, len) = {
            let nodes = self.nodes.read().expect("nodes");
            match nodes.get((ino.0 as usize).wrapping_sub(1)) {
                Some(Node {
                    content: Content::File { chunks },
                    size,
                    ..
                }) => (chunks.clone(), *size),
                _ => return reply.error(Errno::EISDIR),
            }
        };
        match self.read_at(&chunks, len, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.load(ino.0) {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if let Err(e) = self.load(ino.0) {
            return reply.error(e);
        }
        let nodes = self.nodes.read().expect("nodes");
        let Some(Node {
            content: Content::Dir { children, .. },
            parent,
            ..
        }) = nodes.get((ino.0 as usize).wrapping_sub(1))
        else {
            return reply.error(Errno::ENOTDIR);
        };
        let dots = [
            (ino.0, FileType::Directory, &b"."[..]),
            (*parent, FileType::Directory, &b".."[..]),
        ];
        let all = dots.into_iter().chain(
            children
                .iter()
                .map(|(name, i)| (*i, nodes[*i as usize - 1].kind, name.as_slice())),
        );
        for (n, (i, kind, name)) in all.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(i), n as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: fuser::ReplyStatfs) {
        let files = self.nodes.read().expect("nodes").len() as u64;
        reply.statfs(0, 0, 0, files, 0, 4096, 255, 4096);
    }
}
