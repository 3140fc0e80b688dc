//! The restore's defence against crafted trees (`restore::fuzz_admit_tree`:
//! walk order, enclosing directories, safe paths), fed directly with
//! entries so the fuzzer need not write CBOR: the input is lines, each a
//! kind byte (`d`, `f`, `l`; others by value mod 3) and a path.
//!
//! Invariant: of the entries admitted, every enclosing path as the file
//! system resolves it (`a/./b` is `a/b`) was admitted before as a
//! directory and never as anything else, so no entry can be written
//! through a symlink the same snapshot planted.
#![no_main]

use std::collections::HashMap;
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use trireme_common::manifest::{EntryKind, TreeEntry};
use trireme_common::restore::fuzz_admit_tree;

fn entry(kind: u8, path: &[u8]) -> TreeEntry {
    TreeEntry {
        path: path.to_vec(),
        kind: match kind {
            b'd' => EntryKind::Dir,
            b'f' => EntryKind::File,
            b'l' => EntryKind::Symlink,
            k => [EntryKind::Dir, EntryKind::File, EntryKind::Symlink][k as usize % 3],
        },
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

fuzz_target!(|data: &[u8]| {
    let entries: Vec<TreeEntry> = data
        .split(|b| *b == b'\n')
        .take(64)
        .filter_map(|l| l.split_first().map(|(k, p)| entry(*k, p)))
        .collect();
    let target = Path::new("/restore-target");
    // Admit entry by entry: the restore stops at the first refusal.
    let mut admitted = 0;
    while admitted < entries.len() && fuzz_admit_tree(target, &entries[..=admitted]).is_ok() {
        admitted += 1;
    }
    let Ok(paths) = fuzz_admit_tree(target, &entries[..admitted]) else {
        unreachable!("a prefix of an admitted list is admitted");
    };
    // Normalised path (as the file system sees it) -> kinds admitted there.
    let mut seen: HashMap<Vec<String>, Vec<EntryKind>> = HashMap::new();
    for (e, p) in entries.iter().zip(&paths) {
        let rel = p.strip_prefix(target).expect("under the target");
        let comps: Vec<String> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => n.to_string_lossy().into_owned(),
                other => panic!("unsafe component {other:?} in {rel:?}"),
            })
            .collect();
        for k in 0..comps.len() {
            let kinds = seen.get(&comps[..k]).map(Vec::as_slice).unwrap_or(&[]);
            let stream_root = k == 0 && kinds.is_empty();
            assert!(
                stream_root || (!kinds.is_empty() && kinds.iter().all(|k| *k == EntryKind::Dir)),
                "{:?} ({:?}) sits under {:?}, admitted as {kinds:?}",
                String::from_utf8_lossy(&e.path),
                e.kind,
                comps[..k].join("/"),
            );
        }
        seen.entry(comps).or_default().push(e.kind);
    }
});
