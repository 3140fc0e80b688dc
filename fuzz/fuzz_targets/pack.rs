//! Packs: the trailer and header layout (`pack_tail`), the sealed header's
//! CBOR blob table (`pack_header`), and opening the blobs it lists
//! (`open_blob`: AES-GCM, zstd into `raw_len`, length and id checks).
//!
//! First byte: mode. 0 = the rest is a whole pack as stored (any bytes);
//! 1 = `body_len (u16 LE) || body || header plaintext`, framed into a pack
//! whose header is sealed under the fuzz key, so the CBOR blob table is
//! fuzzed behind authentication; 2 = `flags (1) || raw_len (u32 LE) ||
//! plaintext`, one blob sealed under the fuzz key and opened with that
//! entry (fuzzes the zstd decoding of an authentic blob).
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::crypto::Id;
use trireme_common::format::{open_blob, pack_header, pack_tail, BlobEntry, PACK_TRAILER_LEN};
use trireme_fuzz::{hasher, key, pack};

fn parse(bytes: &[u8]) {
    let Ok(tail) = pack_tail("packs/fuzz", bytes) else {
        return;
    };
    // The layout the reader relies on.
    assert!(tail.header_offset >= 5);
    assert!(
        tail.header_offset + tail.header_len + tail.wrapped.0.len() + PACK_TRAILER_LEN
            == bytes.len()
    );
    let Ok(entries) = pack_header("packs/fuzz", bytes, &tail, key()) else {
        return;
    };
    let h = hasher();
    for e in entries.iter().take(256) {
        let (o, l) = (e.offset as usize, e.length as usize);
        assert!(
            o >= 5 && o + l <= tail.header_offset,
            "entry outside the body"
        );
        let _ = open_blob("packs/fuzz", e, &bytes[o..o + l], key(), &h);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => parse(rest),
        1 => {
            if rest.len() < 2 {
                return;
            }
            let n = (u16::from_le_bytes([rest[0], rest[1]]) as usize).min(rest.len() - 2);
            let (body, header) = rest[2..].split_at(n);
            parse(&pack(body, header));
        }
        _ => {
            if rest.len() < 5 {
                return;
            }
            let flags = rest[0];
            let raw_len = u32::from_le_bytes(rest[1..5].try_into().unwrap());
            let plain = &rest[5..];
            let h = hasher();
            let zstd = flags & 1 == 1;
            // An id that matches when the plaintext is the chunk itself.
            let id = if flags & 2 == 2 {
                h.id(plain)
            } else {
                Id([flags; 32])
            };
            let sealed = key().seal(&BlobEntry::aad(&id, zstd), plain);
            let entry = BlobEntry {
                id,
                offset: 5,
                length: sealed.len() as u32,
                raw_len,
                zstd,
            };
            if let Ok(chunk) = open_blob("packs/fuzz", &entry, &sealed, key(), &h) {
                assert_eq!(chunk.len(), raw_len as usize);
                assert_eq!(h.id(&chunk), id);
            }
        }
    }
});
