//! Snapshot manifests (`TRSN`): the sealed-object frame, then
//! `open_object::<SnapshotManifest>` (AES-GCM, zstd, CBOR).
//!
//! First byte: mode, as in `index_object`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::format::{open_object, sealed_object_key, SNAPSHOT_MAGIC};
use trireme_common::manifest::SnapshotManifest;
use trireme_fuzz::{key, sealed_object, zstd_payload};

fn open(bytes: &[u8]) {
    let Ok((_wrapped, header_len)) = sealed_object_key("snapshots/fuzz", bytes, SNAPSHOT_MAGIC)
    else {
        return;
    };
    if let Ok(m) = open_object::<SnapshotManifest>("snapshots/fuzz", bytes, header_len, key()) {
        // What listings print.
        let _ = (m.parent.map(|p| p.to_hex()), m.tree.len(), format!("{m:?}"));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        open(rest);
    } else {
        open(&sealed_object(SNAPSHOT_MAGIC, &zstd_payload(rest)));
    }
});
