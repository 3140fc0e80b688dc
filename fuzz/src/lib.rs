//! Helpers shared by the fuzz targets: a fixed data key, and builders that
//! wrap fuzzed bytes in a *valid* frame (magic, lengths, an authentic AES-GCM
//! seal under the fixed key), so that the fuzzer reaches the decoders behind
//! the authentication, which it could never reach by guessing a tag. That is
//! the view of an attacker who holds a data key (a compromised agent or
//! writer) and wants to crash whoever reads the repository next.

use std::sync::OnceLock;

use trireme_common::crypto::{ChunkHasher, DataKey};
use trireme_common::format::FORMAT_VERSION;
use trireme_common::keys::WrappedKey;

/// The data key every framed input is sealed with.
pub fn key() -> &'static DataKey {
    static KEY: OnceLock<DataKey> = OnceLock::new();
    KEY.get_or_init(|| DataKey::from_bytes([0x42; 32]))
}

/// The chunk-id hasher the targets use.
pub fn hasher() -> ChunkHasher {
    ChunkHasher::new([0x17; 32])
}

/// A stand-in wrapped key of scheme 1's size (never unwrapped here).
pub fn wrapped() -> WrappedKey {
    let mut w = vec![1u8];
    w.extend_from_slice(&[0xAB; 68]);
    WrappedKey(w)
}

/// The AAD of a pack header (docs/format.md section 6).
pub const PACK_HEADER_AAD: &[u8] = b"TRPK\x01 header";

/// `magic || version || W || wrapped || seal(key, AAD = preceding, payload)`:
/// a sealed object (index or manifest) whose sealed plaintext is `payload`
/// (which the reader takes for zstd).
pub fn sealed_object(magic: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let w = wrapped();
    let mut out = magic.to_vec();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(w.0.len() as u16).to_le_bytes());
    out.extend_from_slice(&w.0);
    let aad = out.clone();
    key().seal_into(&aad, payload, &mut out);
    out
}

/// The payload for [`sealed_object`]: `data` itself when its first byte is
/// odd (the fuzzer writes the zstd frame), else `data[1..]` compressed here
/// (the fuzzer writes the CBOR).
pub fn zstd_payload(data: &[u8]) -> Vec<u8> {
    match data.first() {
        Some(b) if b & 1 == 1 => data[1..].to_vec(),
        Some(_) => zstd::bulk::compress(&data[1..], 1).expect("zstd to memory"),
        None => Vec::new(),
    }
}

/// A pack around a fuzzed body and header plaintext:
/// `TRPK 01 || body || seal(key, header AAD, header) || wrapped || H || W || TRPK`.
pub fn pack(body: &[u8], header_plain: &[u8]) -> Vec<u8> {
    let w = wrapped();
    let mut out = b"TRPK".to_vec();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(body);
    let start = out.len();
    key().seal_into(PACK_HEADER_AAD, header_plain, &mut out);
    let h = (out.len() - start) as u32;
    out.extend_from_slice(&w.0);
    out.extend_from_slice(&h.to_le_bytes());
    out.extend_from_slice(&(w.0.len() as u16).to_le_bytes());
    out.extend_from_slice(b"TRPK");
    out
}

/// Text of a fuzz input, lossily: the config parsers take `&str`.
pub fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(data)
}
