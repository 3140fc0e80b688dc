//! The reader stage: walks the source, skips unchanged files, chunks,
//! hashes and dedups. Runs on its own thread.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use fastcdc::v2020::{FastCDC, Normalization};

use super::{BackupInput, Progress, RawChunk};
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::format::ChunkerParams;
use crate::manifest::{path_cmp, write_entry, EntryKind, EntryReader, Summary, TreeEntry};
use crate::repo::{IndexedRepo, Snapshot};

/// Bytes read from a source at a time (at least two maximum-size chunks).
const READ_BLOCK: usize = 8 * 1024 * 1024;

/// Cut `src` into content-defined chunks and hand each to `f`; returns the
/// byte count.
///
/// Reads blocks of `block` bytes (at least two maximum-size chunks) and cuts
/// them with FastCDC: every chunk but a block's last is final (its cut point
/// does not depend on what follows), the last is carried over and re-cut with
/// the next block unless the input ended. This gives exactly the chunks of
/// streaming chunking while copying each byte once less than `StreamCDC`.
pub(crate) fn for_each_chunk(
    mut src: impl Read,
    p: ChunkerParams,
    seed: u64,
    block: usize,
    buf: &mut Vec<u8>,
    name: &str,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<u64> {
    let block = block.max(p.max as usize * 2);
    buf.resize(block, 0);
    let mut total = 0u64;
    let mut filled = 0usize;
    let mut eof = false;
    loop {
        while !eof && filled < block {
            match src.read(&mut buf[filled..]) {
                Ok(0) => eof = true,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("reading", name, e)),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        let cuts: Vec<(usize, usize)> = FastCDC::with_level_and_seed(
            &buf[..filled],
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            Normalization::Level1,
            seed,
        )
        .map(|c| (c.offset, c.length))
        .collect();
        let keep = if eof { cuts.len() } else { cuts.len() - 1 };
        if keep == 0 {
            // A full block of two maximum-size chunks always has a cut.
            return Err(Error::Pipeline(format!(
                "chunking {name}: no cut point in a full block"
            )));
        }
        let mut consumed = 0usize;
        for &(offset, length) in &cuts[..keep] {
            f(&buf[offset..offset + length])?;
            total += length as u64;
            consumed = offset + length;
        }
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
}

pub(super) struct ReaderCtx {
    pub repo: IndexedRepo,
    pub handle: tokio::runtime::Handle,
    pub chunk_tx: crossbeam_channel::Sender<RawChunk>,
    pub progress: Arc<Progress>,
    pub stop: Arc<AtomicBool>,
    pub exclude: Option<super::PathFilter>,
    pub exclude_if_present: Vec<String>,
    pub one_file_system: bool,
}

pub(super) struct ReadOutput {
    pub tree: Vec<Id>,
    pub parent: Option<Id>,
    pub summary: Summary,
}

struct Reader {
    ctx: ReaderCtx,
    params: ChunkerParams,
    seed: u64,
    dispatched: HashSet<Id>,
    summary: Summary,
    /// The read buffer, reused from file to file.
    block: Vec<u8>,
}

/// The chunker's gear table is seeded from the repository's secret id key, so
/// chunk boundaries (and sizes) do not reveal known content either.
pub(crate) fn chunker_seed(id_key_hash: &Id) -> u64 {
    u64::from_le_bytes(id_key_hash.0[..8].try_into().expect("8 bytes"))
}

pub(super) fn run(
    ctx: ReaderCtx,
    input: BackupInput,
    parent: Option<Snapshot>,
) -> Result<ReadOutput> {
    let params = ctx.repo.repo.config().chunker;
    let seed = chunker_seed(&ctx.repo.repo.hasher().id(b"trireme chunker seed v1"));
    let mut r = Reader {
        ctx,
        params,
        seed,
        dispatched: HashSet::new(),
        summary: Summary::default(),
        block: Vec::new(),
    };
    let tree_file = tempfile::tempfile()
        .map_err(|e| Error::io("creating temp file", std::env::temp_dir(), e))?;
    let mut tree = BufWriter::with_capacity(1 << 20, tree_file);
    let parent_id = parent.as_ref().map(|p| p.id);
    match input {
        BackupInput::Tree(root) => r.walk(&[root], parent, &mut tree)?,
        BackupInput::Trees(roots) => r.walk(&roots, parent, &mut tree)?,
        BackupInput::Stream { name, reader } => {
            let (chunks, size) = r.chunk_stream(reader, &name)?;
            r.summary.files = 1;
            r.summary.bytes = size;
            let entry = TreeEntry {
                path: name.into_bytes(),
                kind: EntryKind::File,
                mode: 0o600,
                uid: 0,
                gid: 0,
                mtime_ns: crate::repo::now_ns(),
                ctime_ns: 0,
                inode: 0,
                size,
                target: Vec::new(),
                chunks,
            };
            write_entry(&mut tree, &entry)
                .map_err(|e| Error::io("writing temp file", "tree", e))?;
        }
    }
    let mut tree_file = tree
        .into_inner()
        .map_err(|e| Error::io("writing temp file", "tree", e.into_error()))?;
    tree_file
        .rewind()
        .map_err(|e| Error::io("reading temp file", "tree", e))?;
    // The tree stream is metadata: keep it out of the source's byte counts.
    let bytes_read = r.summary.bytes_read;
    let (tree, _) = r.chunk_stream(tree_file, "tree")?;
    r.summary.bytes_read = bytes_read;
    Ok(ReadOutput {
        tree,
        parent: parent_id,
        summary: r.summary,
    })
}

impl Reader {
    fn stopped(&self) -> Error {
        Error::Pipeline("stopped".into())
    }

    /// Hash a chunk and send it on unless the repository (or this backup) has it.
    fn add_chunk(&mut self, data: Vec<u8>) -> Result<Id> {
        let id = self.ctx.repo.repo.hasher().id(&data);
        if !self.ctx.repo.index.contains(&id) && self.dispatched.insert(id) {
            self.summary.new_chunks += 1;
            self.summary.new_bytes += data.len() as u64;
            self.ctx
                .chunk_tx
                .send(RawChunk { id, data })
                .map_err(|_| self.stopped())?;
        }
        Ok(id)
    }

    /// Chunk a whole reader; returns the chunk ids and the byte count.
    fn chunk_stream(&mut self, src: impl Read, name: &str) -> Result<(Vec<Id>, u64)> {
        let p = self.params;
        let seed = self.seed;
        let mut ids = Vec::new();
        // One buffer for the whole backup: no zeroing or mapping per file.
        let mut buf = std::mem::take(&mut self.block);
        let total = for_each_chunk(src, p, seed, READ_BLOCK, &mut buf, name, |chunk| {
            if self.ctx.stop.load(Ordering::Relaxed) {
                return Err(self.stopped());
            }
            self.ctx
                .progress
                .bytes_read
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            ids.push(self.add_chunk(chunk.to_vec())?);
            Ok(())
        })?;
        self.block = buf;
        self.summary.bytes_read += total;
        Ok((ids, total))
    }

    /// Read one file; small files skip the chunker (they are one chunk anyway).
    fn chunk_file(&mut self, path: &Path, size_hint: u64) -> Result<(Vec<Id>, u64)> {
        let mut f = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        // Ask the kernel to read ahead: the file is read once, start to end.
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
        if size_hint < self.params.min as u64 {
            let mut data = Vec::with_capacity(size_hint as usize + 1);
            f.read_to_end(&mut data)
                .map_err(|e| Error::io("reading", path, e))?;
            if data.len() < self.params.min as usize {
                let n = data.len() as u64;
                self.summary.bytes_read += n;
                self.ctx.progress.bytes_read.fetch_add(n, Ordering::Relaxed);
                if n == 0 {
                    return Ok((Vec::new(), 0));
                }
                return Ok((vec![self.add_chunk(data)?], n));
            }
            // It grew while we looked: chunk what we have plus the rest.
            return self.chunk_stream(std::io::Cursor::new(data).chain(f), &path.to_string_lossy());
        }
        self.chunk_stream(f, &path.to_string_lossy())
    }

    /// One tree as the snapshot's root, or several directories each under
    /// its full path (`/srv/app` as `srv/app`, with `srv` and the root
    /// taken from the file system), in tree order.
    fn walk(
        &mut self,
        roots: &[PathBuf],
        parent: Option<Snapshot>,
        tree: &mut impl Write,
    ) -> Result<()> {
        let mut parent = parent.map(|p| ParentCursor::new(&self.ctx, p));
        if let [root] = roots {
            return self.walk_one(root, b"", &mut parent, tree);
        }
        let mut under: Vec<(Vec<u8>, &PathBuf)> = Vec::new();
        for root in roots {
            let rel: Vec<&[u8]> = root
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(n) => Some(n.as_bytes()),
                    _ => None,
                })
                .collect();
            if !root.is_absolute()
                || rel.is_empty()
                || root
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(Error::io(
                    "backing up",
                    root,
                    std::io::Error::other(
                        "several paths must each be an absolute directory other than /",
                    ),
                ));
            }
            under.push((rel.join(&b'/'), root));
        }
        under.sort_by(|a, b| crate::manifest::path_cmp(&a.0, &b.0));
        // A path inside another is in it already.
        let mut kept: Vec<(Vec<u8>, &PathBuf)> = Vec::new();
        for (rel, root) in under {
            let inside = kept.last().is_some_and(|(k, _)| {
                rel == *k || (rel.starts_with(k) && rel.get(k.len()) == Some(&b'/'))
            });
            if !inside {
                kept.push((rel, root));
            }
        }
        self.dir_entry(Path::new("/"), Vec::new(), tree)?;
        let mut made: HashSet<Vec<u8>> = HashSet::new();
        for (rel, root) in &kept {
            let mut end = 0;
            while let Some(i) = rel[end..].iter().position(|c| *c == b'/') {
                end += i;
                let above = rel[..end].to_vec();
                if made.insert(above.clone()) {
                    let at = Path::new("/").join(std::ffi::OsStr::from_bytes(&above));
                    self.dir_entry(&at, above, tree)?;
                }
                end += 1;
            }
            self.walk_one(root, rel, &mut parent, tree)?;
        }
        Ok(())
    }

    /// A directory entry at `path` in the snapshot for the directory `at`
    /// (followed if a link), enclosing what is backed up below it.
    fn dir_entry(&mut self, at: &Path, path: Vec<u8>, tree: &mut impl Write) -> Result<()> {
        let meta = std::fs::metadata(at).map_err(|e| Error::io("reading", at, e))?;
        let entry = TreeEntry {
            path,
            kind: EntryKind::Dir,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
            ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
            inode: meta.ino(),
            size: 0,
            target: Vec::new(),
            chunks: Vec::new(),
        };
        self.summary.dirs += 1;
        write_entry(tree, &entry).map_err(|e| Error::io("writing temp file", "tree", e))
    }

    /// Walk `root` into the snapshot under `prefix` (empty: as its root).
    fn walk_one(
        &mut self,
        root: &Path,
        prefix: &[u8],
        parent: &mut Option<ParentCursor>,
        tree: &mut impl Write,
    ) -> Result<()> {
        // The root may be a symlink to a directory; below it, links are kept as links.
        let meta = std::fs::metadata(root).map_err(|e| Error::io("reading", root, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                "backing up",
                root,
                std::io::Error::other(
                    "not a directory (back up its parent directory, or use a stream source)",
                ),
            ));
        }
        let mut walker = walkdir::WalkDir::new(root)
            .follow_links(false)
            .same_file_system(self.ctx.one_file_system)
            .sort_by_file_name()
            .into_iter();
        while let Some(item) = walker.next() {
            if self.ctx.stop.load(Ordering::Relaxed) {
                return Err(self.stopped());
            }
            let item = match item {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping unreadable entry");
                    self.summary.errors += 1;
                    continue;
                }
            };
            let rel_in_root = item
                .path()
                .strip_prefix(root)
                .expect("walk stays under root");
            let joined;
            let rel = if prefix.is_empty() {
                rel_in_root
            } else {
                let mut p = prefix.to_vec();
                if !rel_in_root.as_os_str().is_empty() {
                    p.push(b'/');
                    p.extend_from_slice(rel_in_root.as_os_str().as_bytes());
                }
                joined = std::path::PathBuf::from(std::ffi::OsString::from_vec(p));
                joined.as_path()
            };
            if let Some(f) = &self.ctx.exclude {
                if !rel.as_os_str().is_empty() && (f.0)(rel) {
                    if item.file_type().is_dir() {
                        walker.skip_current_dir();
                    }
                    continue;
                }
            }
            if item.file_type().is_dir()
                && !rel.as_os_str().is_empty()
                && self
                    .ctx
                    .exclude_if_present
                    .iter()
                    .any(|marker| item.path().join(marker).symlink_metadata().is_ok())
            {
                walker.skip_current_dir();
                continue;
            }
            let rel_bytes = rel.as_os_str().as_bytes().to_vec();
            let meta = match item.metadata() {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(path = %item.path().display(), error = %e, "skipping entry");
                    self.summary.errors += 1;
                    continue;
                }
            };
            let ft = meta.file_type();
            let mut entry = TreeEntry {
                path: rel_bytes,
                kind: EntryKind::Dir,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
                inode: meta.ino(),
                size: 0,
                target: Vec::new(),
                chunks: Vec::new(),
            };
            if ft.is_dir() {
                self.summary.dirs += 1;
            } else if ft.is_symlink() {
                entry.kind = EntryKind::Symlink;
                entry.target = match std::fs::read_link(item.path()) {
                    Ok(t) => t.as_os_str().as_bytes().to_vec(),
                    Err(e) => {
                        tracing::warn!(path = %item.path().display(), error = %e, "skipping symlink");
                        self.summary.errors += 1;
                        continue;
                    }
                };
                self.summary.others += 1;
            } else if ft.is_file() {
                entry.kind = EntryKind::File;
                entry.size = meta.len();
                self.summary.files += 1;
                self.ctx.progress.files.fetch_add(1, Ordering::Relaxed);
                let prev = match parent.as_mut() {
                    Some(p) => p.find(&entry.path),
                    None => None,
                };
                match prev.filter(|p| self.unchanged(p, &entry)) {
                    Some(p) => {
                        entry.size = p.size;
                        entry.chunks = p.chunks;
                        self.summary.files_unchanged += 1;
                        self.ctx
                            .progress
                            .bytes_skipped
                            .fetch_add(entry.size, Ordering::Relaxed);
                    }
                    None => match self.chunk_file(item.path(), meta.len()) {
                        Ok((chunks, size)) => {
                            entry.chunks = chunks;
                            entry.size = size;
                        }
                        Err(e @ Error::Io { .. }) => {
                            tracing::warn!(error = %e, "skipping file");
                            self.summary.errors += 1;
                            self.summary.files -= 1;
                            continue;
                        }
                        Err(e) => return Err(e),
                    },
                }
                self.summary.bytes += entry.size;
            } else {
                tracing::warn!(path = %item.path().display(), "skipping special file (socket, fifo or device)");
                continue;
            }
            write_entry(tree, &entry).map_err(|e| Error::io("writing temp file", "tree", e))?;
        }
        Ok(())
    }

    /// A file is unchanged when type, size, mtime, ctime and inode match the
    /// parent's entry and all its chunks are still indexed.
    fn unchanged(&self, prev: &TreeEntry, cur: &TreeEntry) -> bool {
        prev.kind == EntryKind::File
            && prev.size == cur.size
            && prev.mtime_ns == cur.mtime_ns
            && prev.ctime_ns == cur.ctime_ns
            && prev.inode == cur.inode
            && prev.chunks.iter().all(|c| self.ctx.repo.index.contains(c))
    }
}

/// Walks the parent snapshot's tree stream alongside the current walk (both
/// are in the same depth-first, name-sorted order).
struct ParentCursor {
    entries: Option<EntryReader<crate::repo::ChunkReader>>,
    peeked: Option<TreeEntry>,
}

impl ParentCursor {
    fn new(ctx: &ReaderCtx, parent: Snapshot) -> Self {
        let reader = ctx
            .repo
            .chunk_reader(ctx.handle.clone(), parent.manifest.tree.clone());
        ParentCursor {
            entries: Some(EntryReader::new(reader, format!("snapshots/{}", parent.id))),
            peeked: None,
        }
    }

    fn find(&mut self, path: &[u8]) -> Option<TreeEntry> {
        loop {
            let entries = self.entries.as_mut()?;
            if self.peeked.is_none() {
                match entries.next_entry() {
                    Ok(Some(e)) => self.peeked = Some(e),
                    Ok(None) => {
                        self.entries = None;
                        return None;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the parent snapshot; reading every file");
                        self.entries = None;
                        return None;
                    }
                }
            }
            let p = self.peeked.as_ref().expect("just filled");
            match path_cmp(&p.path, path) {
                std::cmp::Ordering::Less => self.peeked = None,
                std::cmp::Ordering::Equal => return self.peeked.take(),
                std::cmp::Ordering::Greater => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcdc::v2020::StreamCDC;
    use proptest::prelude::*;
    use trireme_testkit::noise;

    const P: ChunkerParams = ChunkerParams {
        min: 1024,
        avg: 4096,
        max: 16384,
    };

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        /// Block-wise cutting gives exactly the chunks of streaming FastCDC,
        /// whatever the block size and however the reader splits its reads.
        #[test]
        fn block_chunking_matches_streaming(len in 0usize..200_000, seed in any::<u64>(), gear in any::<u64>(), block in 32_768usize..70_000, zeros in any::<bool>()) {
            let mut data = noise(seed, len);
            if zeros && len > 10 {
                data[len / 3..len / 2].fill(0); // a long run of equal bytes: max-size cuts
            }
            let expected: Vec<Vec<u8>> = StreamCDC::with_level_and_seed(&data[..], 1024, 4096, 16384, Normalization::Level1, gear)
                .map(|c| c.unwrap().data)
                .collect();
            let mut got = Vec::new();
            let mut buf = Vec::new();
            // A reader that returns short reads, as pipes do.
            let src = std::io::Read::chain(&data[..data.len() / 2], &data[data.len() / 2..]);
            let n = for_each_chunk(src, P, gear, block, &mut buf, "t", |c| { got.push(c.to_vec()); Ok(()) }).unwrap();
            prop_assert_eq!(n, len as u64);
            prop_assert_eq!(got, expected);
        }
    }
}
