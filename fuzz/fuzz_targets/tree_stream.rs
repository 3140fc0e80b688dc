//! The tree stream of a snapshot: `EntryReader` (`len (u32 LE) ||
//! CBOR(TreeEntry)` records), then the checks a restore applies to each
//! entry before writing (`restore::fuzz_admit_tree`: walk order, enclosing
//! directories, safe paths).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use trireme_common::manifest::EntryReader;
use trireme_common::restore::fuzz_admit_tree;

fuzz_target!(|data: &[u8]| {
    let mut r = EntryReader::new(data, "snapshots/fuzz");
    let mut entries = Vec::new();
    while let Ok(Some(e)) = r.next_entry() {
        entries.push(e);
    }
    let target = Path::new("/restore-target");
    if let Ok(paths) = fuzz_admit_tree(target, &entries) {
        for p in paths {
            assert!(p.starts_with(target));
        }
    }
});
