//! Regression tests for what fuzzing found (docs/fuzzing.md): each feeds
//! the offending input through the public API and expects a clean error.

use std::path::Path;

use trireme_common::crypto::{ChunkHasher, DataKey};
use trireme_common::format::{open_blob, BlobEntry, MAX_CHUNK_LEN};
use trireme_common::manifest::{EntryKind, TreeEntry};
use trireme_common::restore::fuzz_admit_tree;
use trireme_common::Error;

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
        target: b"/etc".to_vec(),
        chunks: Vec::new(),
    }
}

/// `tree_order`: a symlink at `a/./b` (which the file system resolves to
/// `a/b`) followed by a directory `a/b` and a file `a/b/x` passed the
/// order and parent checks, so a restore would have created `/etc/x`
/// through the link (and chmod'ed `/etc`). Non-canonical paths are now
/// refused before anything is written.
#[test]
fn symlink_planted_through_dot_segment_is_refused() {
    use EntryKind::*;
    let tree = [
        entry("", Dir),
        entry("a", Dir),
        entry("a/.", Dir),
        entry("a/./b", Symlink),
        entry("a/b", Dir),
        entry("a/b/x", File),
    ];
    let err = fuzz_admit_tree(Path::new("/restore-target"), &tree).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("canonical"), "{err}");
    // The well-formed tree still passes.
    let good = [
        entry("", Dir),
        entry("a", Dir),
        entry("a/b", Dir),
        entry("a/b/x", File),
    ];
    fuzz_admit_tree(Path::new("/restore-target"), &good).unwrap();
}

/// `pack`: a blob entry claiming `raw_len = u32::MAX` made `open_blob`
/// reserve 4 GiB for zstd's output before decompressing (an index or pack
/// header written by a holder of a data key could exhaust a reader's
/// memory). Entries over the chunk limit are now refused first.
#[test]
fn blob_claiming_a_huge_length_is_refused_before_allocating() {
    let key = DataKey::from_bytes([0x42; 32]);
    let hasher = ChunkHasher::new([0x17; 32]);
    let chunk = b"hello world!";
    let id = hasher.id(chunk);
    let z = zstd::bulk::compress(chunk, 3).unwrap();
    let sealed = key.seal(&BlobEntry::aad(&id, true), &z);
    let mut e = BlobEntry {
        id,
        offset: 5,
        length: sealed.len() as u32,
        raw_len: u32::MAX,
        zstd: true,
    };
    let err = open_blob("packs/xx", &e, &sealed, &key, &hasher).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("chunk limit"), "{err}");
    e.raw_len = MAX_CHUNK_LEN as u32 + 1;
    assert!(open_blob("packs/xx", &e, &sealed, &key, &hasher).is_err());
    e.raw_len = chunk.len() as u32;
    assert_eq!(
        open_blob("packs/xx", &e, &sealed, &key, &hasher).unwrap(),
        chunk
    );
}
