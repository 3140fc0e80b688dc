//! Index objects (`TRIX`): the sealed-object frame (`sealed_object_key`),
//! then `open_object::<IndexFile>` (AES-GCM, zstd, CBOR) and loading the
//! result into the in-memory `Index` as `load_index` does.
//!
//! First byte: mode. Even = the rest is a stored object (any bytes), opened
//! with the fuzz key; odd = the rest goes through `zstd_payload` and is
//! sealed under the fuzz key, so the zstd and CBOR decoders are fuzzed
//! behind authentication.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::format::{open_object, sealed_object_key, INDEX_MAGIC};
use trireme_common::index::{Index, IndexFile};
use trireme_fuzz::{key, sealed_object, zstd_payload};

fn open(bytes: &[u8]) {
    let Ok((_wrapped, header_len)) = sealed_object_key("index/fuzz", bytes, INDEX_MAGIC) else {
        return;
    };
    assert!(header_len <= bytes.len());
    let Ok(file) = open_object::<IndexFile>("index/fuzz", bytes, header_len, key()) else {
        return;
    };
    let mut index = Index::new();
    for p in &file.packs {
        index.add_pack(p);
    }
    for (pack, entry) in index.iter() {
        assert!(index.get(&entry.id).is_some());
        let _ = pack.id.to_hex();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        open(rest);
    } else {
        open(&sealed_object(INDEX_MAGIC, &zstd_payload(rest)));
    }
});
