//! Snapshot manifests and the tree stream.
//!
//! A snapshot's file tree is a *stream of entries*: length-prefixed CBOR
//! records in depth-first, name-sorted order, chunked and stored like data.
//! The manifest itself stays small (it lists the tree stream's chunks), trees
//! of any size stream through bounded memory, and unchanged parts of a tree
//! dedupe between snapshots.

use std::collections::BTreeMap;
use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::crypto::Id;
use crate::error::{Error, Result};

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentKind {
    /// A directory tree.
    Tree,
    /// One byte stream (a dump command's stdout, an archive); the tree has a
    /// single file entry.
    Stream,
}

/// Counters recorded with a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Regular files (or the stream) in the snapshot.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks and other entries.
    pub others: u64,
    /// Plaintext bytes of all files.
    pub bytes: u64,
    /// Files reused unread from the parent (unchanged size, mtime, ctime, inode).
    pub files_unchanged: u64,
    /// Bytes read from the source (those not skipped as unchanged).
    pub bytes_read: u64,
    /// Chunks that were new to the repository.
    pub new_chunks: u64,
    /// Plaintext bytes of the new chunks.
    pub new_bytes: u64,
    /// Packs written.
    pub packs: u64,
    /// Bytes uploaded (packs and index objects; not the manifest itself).
    pub uploaded_bytes: u64,
    /// Entries that could not be read (named in the agent's log).
    pub errors: u64,
}

/// A snapshot manifest: one backup of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Source name (unique per host), e.g. `redis-main`.
    pub source: String,
    /// Source kind, e.g. `volume`, `redis`, `command`.
    pub source_kind: String,
    /// Host (agent) that made the backup.
    pub host: String,
    /// Backup start, Unix nanoseconds.
    pub started_ns: i64,
    /// Backup end, Unix nanoseconds.
    pub finished_ns: i64,
    /// Parent snapshot used for change detection, if any.
    pub parent: Option<Id>,
    /// Tree or stream.
    pub content: ContentKind,
    /// Chunks of the entry stream, in order.
    pub tree: Vec<Id>,
    /// Datastore position (e.g. BR's `backup_ts`), free-form.
    pub position: BTreeMap<String, String>,
    /// Operator labels.
    pub tags: Vec<String>,
    /// Counters.
    pub summary: Summary,
    /// The job that wrote it (16-byte id), in fleet mode. Optional (format
    /// 1.1); see [`crate::attribution`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_bytes::ByteBuf>,
    /// Keyed BLAKE3 of this payload with `mac` absent, under the job's
    /// attribution key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<serde_bytes::ByteBuf>,
}

/// Position keys ending with this name an earlier snapshot that restoring
/// this one needs first: its chain (e.g. `tidb.previous_snapshot`, a TiDB
/// incremental backup resting on the one before it). The part before the
/// suffix names the chain. Any source with incremental backups that do not
/// stand alone records its predecessor this way; a tree snapshot's `parent`
/// (change detection only) is not a dependency.
pub const PREVIOUS_SNAPSHOT_SUFFIX: &str = ".previous_snapshot";

/// An earlier snapshot that restoring a snapshot needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dependency {
    /// The snapshot needed.
    pub snapshot: Id,
    /// The chain it belongs to: the position key's prefix, e.g. `tidb`.
    pub chain: String,
}

/// The snapshots a snapshot with datastore position `position` depends on:
/// one per key ending in [`PREVIOUS_SNAPSHOT_SUFFIX`], in key order. The one
/// rule shared by restore key scopes and retention. A value that is not a
/// snapshot id names nothing and is left out (the restore of such a
/// snapshot fails on it).
pub fn dependencies(position: &BTreeMap<String, String>) -> Vec<Dependency> {
    let mut seen = std::collections::HashSet::new();
    position
        .iter()
        .filter_map(|(k, v)| {
            let chain = k.strip_suffix(PREVIOUS_SNAPSHOT_SUFFIX)?;
            Some(Dependency {
                snapshot: Id::from_hex(v.trim())?,
                chain: chain.to_string(),
            })
        })
        .filter(|d| seen.insert(d.snapshot))
        .collect()
}

impl SnapshotManifest {
    /// The snapshots this one depends on (see [`dependencies`]).
    pub fn dependencies(&self) -> Vec<Dependency> {
        dependencies(&self.position)
    }
}

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file (or the stream of a stream snapshot).
    File,
    /// A symbolic link.
    Symlink,
}

/// One entry of a snapshot's tree stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Path relative to the backup root, `/`-separated, raw bytes (paths need
    /// not be UTF-8). The root directory itself is the empty path.
    #[serde(with = "serde_bytes")]
    pub path: Vec<u8>,
    /// Entry type.
    pub kind: EntryKind,
    /// Unix mode bits (permissions, setuid/setgid/sticky).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time, Unix nanoseconds.
    pub mtime_ns: i64,
    /// Status change time, Unix nanoseconds (change detection only).
    pub ctime_ns: i64,
    /// Inode number (change detection only).
    pub inode: u64,
    /// File size in bytes (0 for others).
    pub size: u64,
    /// Symlink target, raw bytes.
    #[serde(with = "serde_bytes", default, skip_serializing_if = "Vec::is_empty")]
    pub target: Vec<u8>,
    /// A file's chunks, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Id>,
}

/// Largest tree entry, written or read: 256 MiB of CBOR, about 7.8 million
/// chunk ids, so files up to ~7 TiB at the 1 MiB average chunk size.
pub const MAX_ENTRY_LEN: u32 = 256 * 1024 * 1024;

/// Write one entry as `len (u32 LE) || CBOR`.
///
/// # Errors
/// I/O errors of `w`.
pub fn write_entry(w: &mut impl Write, e: &TreeEntry) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(128 + e.chunks.len() * 34);
    ciborium::into_writer(e, &mut buf).map_err(std::io::Error::other)?;
    if buf.len() > MAX_ENTRY_LEN as usize {
        return Err(std::io::Error::other(format!(
            "{}: the file is too large for one tree entry ({} chunks; limit {MAX_ENTRY_LEN} bytes of metadata)",
            String::from_utf8_lossy(&e.path),
            e.chunks.len()
        )));
    }
    w.write_all(&(buf.len() as u32).to_le_bytes())?;
    w.write_all(&buf)
}

/// Reads entries back from a tree stream.
#[derive(Debug)]
pub struct EntryReader<R> {
    inner: R,
    name: String,
}

impl<R: Read> EntryReader<R> {
    /// Entries from `inner`; `name` (the snapshot) appears in errors.
    pub fn new(inner: R, name: impl Into<String>) -> Self {
        EntryReader {
            inner,
            name: name.into(),
        }
    }

    /// The next entry, or `None` at the end of the stream.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the stream is malformed; errors of the reader.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.inner.read(&mut len[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(Error::corrupt(&self.name, "tree stream ends mid-entry")),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(unwrap_io(e, &self.name)),
            }
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_ENTRY_LEN {
            return Err(Error::corrupt(
                &self.name,
                format!("tree entry of {len} bytes"),
            ));
        }
        // Grow with what actually arrives rather than trusting the claimed
        // length for the allocation.
        let mut buf = Vec::with_capacity((len as usize).min(64 << 10));
        (&mut self.inner)
            .take(u64::from(len))
            .read_to_end(&mut buf)
            .map_err(|e| unwrap_io(e, &self.name))?;
        if buf.len() != len as usize {
            return Err(Error::corrupt(&self.name, "tree stream ends mid-entry"));
        }
        let e: TreeEntry = ciborium::from_reader(&buf[..])
            .map_err(|err| Error::corrupt(&self.name, format!("bad tree entry: {err}")))?;
        Ok(Some(e))
    }
}

/// Readers over repository data carry a crate [`Error`] inside an
/// `io::Error`; take it back out so the object name survives.
pub(crate) fn unwrap_io(e: std::io::Error, name: &str) -> Error {
    if e.get_ref().is_some_and(|inner| inner.is::<Error>()) {
        return *e
            .into_inner()
            .expect("checked")
            .downcast::<Error>()
            .expect("checked");
    }
    Error::Pipeline(format!("reading {name}: {e}"))
}

/// Compare two relative paths component by component, which is the order
/// of a depth-first walk with name-sorted children.
pub fn path_cmp(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let ca = a.split(|c| *c == b'/').filter(|s| !s.is_empty());
    let cb = b.split(|c| *c == b'/').filter(|s| !s.is_empty());
    ca.cmp(cb)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> TreeEntry {
        TreeEntry {
            path: path.as_bytes().to_vec(),
            kind: EntryKind::File,
            mode: 0o644,
            uid: 1,
            gid: 2,
            mtime_ns: 3,
            ctime_ns: 4,
            inode: 5,
            size: 6,
            target: vec![],
            chunks: vec![Id([1; 32])],
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut buf = Vec::new();
        let es = [entry(""), entry("a"), entry("a/b")];
        for e in &es {
            write_entry(&mut buf, e).unwrap();
        }
        let mut r = EntryReader::new(&buf[..], "s");
        for e in &es {
            assert_eq!(&r.next_entry().unwrap().unwrap(), e);
        }
        assert!(r.next_entry().unwrap().is_none());
        let mut r = EntryReader::new(&buf[..buf.len() - 1], "snapshots/x");
        r.next_entry().unwrap();
        r.next_entry().unwrap();
        let err = r.next_entry().unwrap_err().to_string();
        assert!(err.contains("snapshots/x"), "{err}");
    }

    #[test]
    fn dependencies_are_the_previous_snapshot_keys_of_any_chain() {
        let a = Id([0xaa; 32]);
        let b = Id([0xbb; 32]);
        let position: BTreeMap<String, String> = [
            ("tidb.previous_snapshot", a.to_hex()),
            ("tidb.backup_ts", "435".to_string()),
            ("other.previous_snapshot", b.to_hex()),
            ("broken.previous_snapshot", "not an id".to_string()),
            ("previous_snapshot", b.to_hex()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(
            dependencies(&position),
            vec![
                Dependency {
                    snapshot: b,
                    chain: "other".into()
                },
                Dependency {
                    snapshot: a,
                    chain: "tidb".into()
                },
            ]
        );
        assert!(dependencies(&BTreeMap::new()).is_empty());
    }

    #[test]
    fn path_order_is_depth_first() {
        use std::cmp::Ordering::*;
        assert_eq!(path_cmp(b"", b"a"), Less);
        assert_eq!(path_cmp(b"a", b"a/b"), Less);
        assert_eq!(path_cmp(b"a/z", b"a.b"), Less, "a's children before a.b");
        assert_eq!(path_cmp(b"a/b", b"a/b"), Equal);
        assert_eq!(path_cmp(b"b", b"a/b"), Greater);
    }
}
