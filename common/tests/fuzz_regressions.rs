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

/// `open_object`: the zstd payload of an index object or manifest was
/// decompressed without a bound, so a small object sealed by someone holding
/// a data key could expand to gigabytes in the reader. It is now refused
/// past `max(64 MiB, 32 × compressed size)`.
#[test]
fn decompression_bomb_in_a_sealed_object_is_refused() {
    use trireme_common::format::{open_object, seal_object, sealed_object_key};
    use trireme_common::WrappedKey;
    let key = DataKey::from_bytes([7; 32]);
    let wrapped = WrappedKey(vec![1, 2, 3]);
    let bomb = "a".repeat(100 << 20);
    let bytes = seal_object(*b"TRIX", &key, &wrapped, &bomb);
    assert!(bytes.len() < 1 << 20, "{} bytes sealed", bytes.len());
    let (_, header) = sealed_object_key("index/bomb", &bytes, *b"TRIX").unwrap();
    let err = open_object::<String>("index/bomb", &bytes, header, &key).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. })
            && err.to_string().contains("decompresses to more than"),
        "{err}"
    );
    // A payload of ordinary size still opens.
    let small = "b".repeat(1 << 20);
    let bytes = seal_object(*b"TRIX", &key, &wrapped, &small);
    let (_, header) = sealed_object_key("index/ok", &bytes, *b"TRIX").unwrap();
    assert_eq!(
        open_object::<String>("index/ok", &bytes, header, &key).unwrap(),
        small
    );
}

/// `EntryReader`: a tree entry's length prefix was trusted for the buffer
/// (up to 256 MiB reserved for a 10-byte stream). The buffer now grows with
/// what arrives, and the short entry is reported as such.
#[test]
fn tree_entry_claiming_more_than_the_stream_holds_is_refused() {
    use trireme_common::manifest::EntryReader;
    let mut stream = (200u32 << 20).to_le_bytes().to_vec();
    stream.extend_from_slice(b"0123456789");
    let mut r = EntryReader::new(&stream[..], "tree");
    let err = r.next_entry().unwrap_err();
    assert!(err.to_string().contains("ends mid-entry"), "{err}");
}
