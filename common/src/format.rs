//! Repository format v1: the byte layout of packs, sealed objects and the
//! config. `docs/format.md` is the reference; this module is its code.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::crypto::{DataKey, Id, SEAL_OVERHEAD};
use crate::error::{Error, Result};
use crate::keys::WrappedKey;

/// The repository format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;

/// Magic of pack objects.
pub const PACK_MAGIC: [u8; 4] = *b"TRPK";
/// Magic of index objects.
pub const INDEX_MAGIC: [u8; 4] = *b"TRIX";
/// Magic of snapshot manifests.
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"TRSN";
/// Magic of the repository config.
pub const CONFIG_MAGIC: [u8; 4] = *b"TRCF";

/// Fixed size of a pack's trailer: header length (u32), wrapped key length
/// (u16), magic.
pub const PACK_TRAILER_LEN: usize = 4 + 2 + 4;
const PACK_HEADER_AAD: &[u8] = b"TRPK\x01 header";

/// Content-defined chunking parameters, fixed per repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    /// Smallest chunk (bytes), except a file's last.
    pub min: u32,
    /// Target average chunk (bytes).
    pub avg: u32,
    /// Largest chunk (bytes).
    pub max: u32,
}

impl ChunkerParams {
    /// Check the parameters against FastCDC's limits.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the config.
    pub fn validate(&self) -> Result<()> {
        use fastcdc::v2020 as f;
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (f::MINIMUM_MIN..=f::MINIMUM_MAX).contains(&min)
            && (f::AVERAGE_MIN..=f::AVERAGE_MAX).contains(&avg)
            && (f::MAXIMUM_MIN..=f::MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::corrupt(
                "config",
                format!("chunker parameters {min}/{avg}/{max} are outside FastCDC's limits"),
            ))
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            min: 256 * 1024,
            avg: 1024 * 1024,
            max: 4 * 1024 * 1024,
        }
    }
}

/// The repository config, stored in plain CBOR under `config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Format version of the repository.
    pub version: u8,
    /// Random repository id.
    pub id: uuid::Uuid,
    /// Creation time, Unix seconds.
    pub created: i64,
    /// Chunking parameters every writer must use, so chunks dedupe.
    pub chunker: ChunkerParams,
    /// The secret key of chunk ids (keyed BLAKE3), wrapped by the master key.
    #[serde(with = "serde_bytes")]
    pub id_key: Vec<u8>,
    /// Keyed BLAKE3 of the config with this field empty, under a key derived
    /// from the id key: proves the config was written by a holder of the
    /// master key and not altered since.
    #[serde(with = "serde_bytes")]
    pub mac: Vec<u8>,
    /// Fleet mode: the controller's key (a controller key, see
    /// [`crate::keys::CONTROLLER_KEY_MARK`]), wrapped by the master key.
    /// Optional (format 1.1); absent in local mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_key: Option<serde_bytes::ByteBuf>,
    /// Keyed BLAKE3 of the config with this field and `mac` empty (absent),
    /// under a key derived from the controller key: no agent can make it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller_mac: Option<serde_bytes::ByteBuf>,
}

impl RepoConfig {
    /// Encode: magic, version byte, CBOR.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = CONFIG_MAGIC.to_vec();
        out.push(self.version);
        ciborium::into_writer(self, &mut out).expect("CBOR to memory");
        out
    }

    /// Decode and check the version.
    ///
    /// # Errors
    /// [`Error::UnsupportedFormat`] for another version, [`Error::Corrupt`] for garbage.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let body = check_magic("config", bytes, CONFIG_MAGIC)?;
        let cfg: RepoConfig = ciborium::from_reader(body)
            .map_err(|e| Error::corrupt("config", format!("cannot decode: {e}")))?;
        if cfg.version != bytes[4] {
            return Err(Error::corrupt(
                "config",
                "version field disagrees with the header",
            ));
        }
        cfg.chunker.validate()?;
        Ok(cfg)
    }

    /// The MAC of this config under `id_key` (computed with `mac` empty and
    /// without the controller fields, so readers that predate them agree).
    pub fn compute_mac(&self, id_key: &[u8; 32]) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.mac = Vec::new();
        unsigned.controller_key = None;
        unsigned.controller_mac = None;
        let mut cbor = Vec::new();
        ciborium::into_writer(&unsigned, &mut cbor).expect("CBOR to memory");
        let key = blake3::derive_key("trireme config mac v1", id_key);
        blake3::keyed_hash(&key, &cbor).as_bytes().to_vec()
    }

    /// Check the MAC once the id key is unwrapped.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the config was altered.
    pub fn verify_mac(&self, id_key: &[u8; 32]) -> Result<()> {
        if self.mac != self.compute_mac(id_key) {
            return Err(Error::corrupt(
                "config",
                "authentication failed: the config was altered (or its id key swapped)",
            ));
        }
        Ok(())
    }

    /// The controller MAC of this config under the unwrapped controller key
    /// (computed with `mac` empty and `controller_mac` absent).
    pub fn compute_controller_mac(&self, controller_key: &[u8; 32]) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.mac = Vec::new();
        unsigned.controller_mac = None;
        let mut cbor = Vec::new();
        ciborium::into_writer(&unsigned, &mut cbor).expect("CBOR to memory");
        let key = blake3::derive_key("trireme config controller mac v1", controller_key);
        blake3::keyed_hash(&key, &cbor).as_bytes().to_vec()
    }

    /// Add the controller key and the controller MAC, then the id-key MAC.
    pub fn seal_controlled(
        &mut self,
        id_key: &[u8; 32],
        controller_key: &[u8; 32],
        wrapped_controller_key: &WrappedKey,
    ) {
        self.controller_key = Some(serde_bytes::ByteBuf::from(wrapped_controller_key.0.clone()));
        self.controller_mac = None;
        self.controller_mac = Some(serde_bytes::ByteBuf::from(
            self.compute_controller_mac(controller_key),
        ));
        self.mac = self.compute_mac(id_key);
    }

    /// Check the controller MAC with the unwrapped controller key.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when the config has no controller MAC or it does
    /// not match (written or altered by someone without the controller key).
    pub fn verify_controller_mac(&self, controller_key: &[u8; 32]) -> Result<()> {
        match &self.controller_mac {
            Some(m) if m.as_slice() == self.compute_controller_mac(controller_key) => Ok(()),
            Some(_) => Err(Error::corrupt(
                "config",
                "the controller MAC does not match: the config was altered by someone without the controller key",
            )),
            None => Err(Error::corrupt(
                "config",
                "the config carries no controller MAC",
            )),
        }
    }

    /// The wrapped controller key, if the config carries one.
    pub fn wrapped_controller_key(&self) -> Option<WrappedKey> {
        self.controller_key.as_ref().map(|k| WrappedKey(k.to_vec()))
    }

    /// The wrapped id key.
    pub fn wrapped_id_key(&self) -> WrappedKey {
        WrappedKey(self.id_key.clone())
    }
}

/// Checks `magic || version` at the start of an object and returns the rest.
pub(crate) fn check_magic<'a>(key: &str, bytes: &'a [u8], magic: [u8; 4]) -> Result<&'a [u8]> {
    if bytes.len() < 5 || bytes[..4] != magic {
        return Err(Error::corrupt(
            key,
            format!(
                "not a Trireme {} object (bad magic)",
                String::from_utf8_lossy(&magic)
            ),
        ));
    }
    if bytes[4] != FORMAT_VERSION {
        return Err(Error::UnsupportedFormat {
            key: key.to_string(),
            reason: format!(
                "format version {} (this build reads version {FORMAT_VERSION}; upgrade Trireme)",
                bytes[4]
            ),
        });
    }
    Ok(&bytes[5..])
}

/// Seal a CBOR payload into an index or snapshot object:
/// `magic || version || wrapped key len (u16 LE) || wrapped key || sealed(zstd(CBOR))`.
/// The AAD is everything before the sealed part.
pub fn seal_object<T: Serialize>(
    magic: [u8; 4],
    key: &DataKey,
    wrapped: &WrappedKey,
    payload: &T,
) -> Vec<u8> {
    let mut cbor = Vec::new();
    ciborium::into_writer(payload, &mut cbor).expect("CBOR to memory");
    let compressed = zstd::bulk::compress(&cbor, 3).expect("zstd to memory");
    let mut out = magic.to_vec();
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&(wrapped.0.len() as u16).to_le_bytes());
    out.extend_from_slice(&wrapped.0);
    let aad = out.clone();
    key.seal_into(&aad, &compressed, &mut out);
    out
}

/// The wrapped key of a sealed object, read without decrypting it.
///
/// # Errors
/// [`Error::Corrupt`] or [`Error::UnsupportedFormat`] naming `name`.
pub fn sealed_object_key(name: &str, bytes: &[u8], magic: [u8; 4]) -> Result<(WrappedKey, usize)> {
    let body = check_magic(name, bytes, magic)?;
    if body.len() < 2 {
        return Err(Error::corrupt(name, "truncated header"));
    }
    let wlen = u16::from_le_bytes([body[0], body[1]]) as usize;
    if body.len() < 2 + wlen + SEAL_OVERHEAD {
        return Err(Error::corrupt(name, "truncated"));
    }
    Ok((WrappedKey(body[2..2 + wlen].to_vec()), 5 + 2 + wlen))
}

/// Open an object made by [`seal_object`] with its (already unwrapped) key.
///
/// # Errors
/// [`Error::Corrupt`] naming `name` when authentication or decoding fails.
pub fn open_object<T: DeserializeOwned>(
    name: &str,
    bytes: &[u8],
    header_len: usize,
    key: &DataKey,
) -> Result<T> {
    let plain = key
        .open(&bytes[..header_len], &bytes[header_len..])
        .map_err(|_| Error::corrupt(name, "authentication failed (damaged or altered)"))?;
    let cbor = decompress_bounded(name, &plain)?;
    ciborium::from_reader(&cbor[..])
        .map_err(|e| Error::corrupt(name, format!("cannot decode: {e}")))
}

/// Decompress an index or manifest payload, refusing one that would expand
/// past `max(64 MiB, 32 × its compressed size)`: CBOR of random ids
/// compresses about 2:1, so only a crafted object comes near (a "zip bomb"
/// sealed by someone holding a data key).
fn decompress_bounded(name: &str, compressed: &[u8]) -> Result<Vec<u8>> {
    use std::io::Read;
    let cap = (64u64 << 20).max(32 * compressed.len() as u64);
    let decoder = zstd::stream::read::Decoder::new(compressed)
        .map_err(|e| Error::corrupt(name, format!("cannot decompress: {e}")))?;
    let mut out = Vec::with_capacity(compressed.len().saturating_mul(3));
    decoder
        .take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::corrupt(name, format!("cannot decompress: {e}")))?;
    if out.len() as u64 > cap {
        return Err(Error::corrupt(
            name,
            format!("decompresses to more than {cap} bytes, far past any real payload of its size"),
        ));
    }
    Ok(out)
}

/// One chunk's place in a pack, as listed in the pack header and the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlobEntry {
    /// Chunk id (keyed BLAKE3 of the plaintext).
    pub id: Id,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u32,
    /// Length of the sealed blob (nonce, ciphertext, tag).
    pub length: u32,
    /// Length of the chunk's plaintext.
    pub raw_len: u32,
    /// Whether the sealed bytes are zstd-compressed.
    pub zstd: bool,
}

impl BlobEntry {
    /// The AAD a blob is sealed with: its chunk id and compression flag, so a
    /// blob cannot be passed off as another chunk.
    pub fn aad(id: &Id, zstd: bool) -> [u8; 33] {
        let mut a = [0u8; 33];
        a[..32].copy_from_slice(&id.0);
        a[32] = zstd as u8;
        a
    }
}

/// Builds one pack: `magic || version || blobs… || sealed header || wrapped
/// key || header len (u32 LE) || wrapped key len (u16 LE) || magic`.
#[derive(Debug)]
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<BlobEntry>,
}

impl PackBuilder {
    /// A new pack with room for about `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity + 64 * 1024);
        buf.extend_from_slice(&PACK_MAGIC);
        buf.push(FORMAT_VERSION);
        PackBuilder {
            buf,
            entries: Vec::new(),
        }
    }

    /// Append an already-sealed blob.
    pub fn push(&mut self, id: Id, sealed: &[u8], raw_len: u32, zstd: bool) {
        self.entries.push(BlobEntry {
            id,
            offset: self.buf.len() as u32,
            length: sealed.len() as u32,
            raw_len,
            zstd,
        });
        self.buf.extend_from_slice(sealed);
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seal the header and close the pack; returns its bytes and entries.
    pub fn finish(mut self, key: &DataKey, wrapped: &WrappedKey) -> (Vec<u8>, Vec<BlobEntry>) {
        let mut header = Vec::new();
        ciborium::into_writer(&self.entries, &mut header).expect("CBOR to memory");
        let start = self.buf.len();
        key.seal_into(PACK_HEADER_AAD, &header, &mut self.buf);
        let header_len = (self.buf.len() - start) as u32;
        self.buf.extend_from_slice(&wrapped.0);
        self.buf.extend_from_slice(&header_len.to_le_bytes());
        self.buf
            .extend_from_slice(&(wrapped.0.len() as u16).to_le_bytes());
        self.buf.extend_from_slice(&PACK_MAGIC);
        (self.buf, self.entries)
    }
}

/// The parts of a pack's tail: where its sealed header is and its wrapped key.
#[derive(Debug, Clone)]
pub struct PackTail {
    /// Offset of the sealed header.
    pub header_offset: usize,
    /// Length of the sealed header.
    pub header_len: usize,
    /// The pack's wrapped data key.
    pub wrapped: WrappedKey,
}

/// Parse the tail of a whole pack.
///
/// # Errors
/// [`Error::Corrupt`] naming `name` when the layout does not hold.
pub fn pack_tail(name: &str, pack: &[u8]) -> Result<PackTail> {
    check_magic(name, pack, PACK_MAGIC)?;
    let n = pack.len();
    if n < 5 + PACK_TRAILER_LEN || pack[n - 4..] != PACK_MAGIC {
        return Err(Error::corrupt(name, "pack trailer missing (truncated?)"));
    }
    let t = &pack[n - PACK_TRAILER_LEN..];
    let header_len = u32::from_le_bytes(t[0..4].try_into().expect("4 bytes")) as usize;
    let wlen = u16::from_le_bytes(t[4..6].try_into().expect("2 bytes")) as usize;
    let header_offset = (n - PACK_TRAILER_LEN)
        .checked_sub(wlen + header_len)
        .filter(|o| *o >= 5)
        .ok_or_else(|| Error::corrupt(name, "pack trailer lengths out of range"))?;
    let wrapped = WrappedKey(pack[header_offset + header_len..n - PACK_TRAILER_LEN].to_vec());
    Ok(PackTail {
        header_offset,
        header_len,
        wrapped,
    })
}

/// Decrypt a pack's header with its unwrapped key.
///
/// # Errors
/// [`Error::Corrupt`] naming `name`.
pub fn pack_header(
    name: &str,
    pack: &[u8],
    tail: &PackTail,
    key: &DataKey,
) -> Result<Vec<BlobEntry>> {
    let sealed = &pack[tail.header_offset..tail.header_offset + tail.header_len];
    let plain = key
        .open(PACK_HEADER_AAD, sealed)
        .map_err(|_| Error::corrupt(name, "pack header failed authentication"))?;
    let entries: Vec<BlobEntry> = ciborium::from_reader(&plain[..])
        .map_err(|e| Error::corrupt(name, format!("cannot decode pack header: {e}")))?;
    for e in &entries {
        if (e.offset as usize) < 5 || e.offset as usize + e.length as usize > tail.header_offset {
            return Err(Error::corrupt(
                name,
                format!("blob {} lies outside the pack body", e.id.short()),
            ));
        }
    }
    Ok(entries)
}

/// Largest chunk any repository can hold: FastCDC's largest `max`
/// (16 MiB). Blob entries claiming more are refused as corrupt.
pub const MAX_CHUNK_LEN: usize = fastcdc::v2020::MAXIMUM_MAX;

/// Open one sealed blob and return the chunk's plaintext, checking it hashes
/// to its id.
///
/// # Errors
/// [`Error::Corrupt`] naming the pack and chunk.
pub fn open_blob(
    pack_name: &str,
    entry: &BlobEntry,
    sealed: &[u8],
    key: &DataKey,
    hasher: &crate::crypto::ChunkHasher,
) -> Result<Vec<u8>> {
    let bad = |why: &str| Error::corrupt(pack_name, format!("chunk {}: {why}", entry.id.short()));
    // No chunker makes a chunk larger than FastCDC's largest maximum: refuse
    // a larger `raw_len` before decompressing into a buffer of that size.
    if entry.raw_len as usize > MAX_CHUNK_LEN {
        return Err(bad(&format!(
            "length {} is over the {MAX_CHUNK_LEN}-byte chunk limit",
            entry.raw_len
        )));
    }
    let plain = key
        .open(&BlobEntry::aad(&entry.id, entry.zstd), sealed)
        .map_err(|_| bad("failed authentication"))?;
    let data = if entry.zstd {
        zstd::bulk::decompress(&plain, entry.raw_len as usize)
            .map_err(|_| bad("cannot decompress"))?
    } else {
        plain
    };
    if data.len() != entry.raw_len as usize {
        return Err(bad("wrong length"));
    }
    if hasher.id(&data) != entry.id {
        return Err(bad("content does not match its id"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::ChunkHasher;

    #[test]
    fn pack_round_trip_and_damage() {
        let key = DataKey::generate();
        let wrapped = WrappedKey(vec![7; 69]);
        let h = ChunkHasher::new([3; 32]);
        let chunks: Vec<Vec<u8>> = vec![b"alpha".to_vec(), vec![0; 5000], b"".to_vec()];
        let mut pb = PackBuilder::new(1024);
        for c in &chunks {
            let id = h.id(c);
            let z = zstd::bulk::compress(c, 3).unwrap();
            let (data, zst) = if z.len() < c.len() {
                (z, true)
            } else {
                (c.clone(), false)
            };
            let sealed = key.seal(&BlobEntry::aad(&id, zst), &data);
            pb.push(id, &sealed, c.len() as u32, zst);
        }
        let (pack, entries) = pb.finish(&key, &wrapped);
        let tail = pack_tail("p", &pack).unwrap();
        assert_eq!(tail.wrapped, wrapped);
        let hdr = pack_header("p", &pack, &tail, &key).unwrap();
        assert_eq!(hdr, entries);
        for (e, c) in hdr.iter().zip(&chunks) {
            let sealed = &pack[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&open_blob("p", e, sealed, &key, &h).unwrap(), c);
        }
        assert!(hdr[1].zstd && !hdr[0].zstd);

        // A flipped byte anywhere in a blob fails that blob.
        let e = hdr[1];
        let mut bad = pack.clone();
        bad[e.offset as usize + 20] ^= 0x40;
        let sealed = &bad[e.offset as usize..(e.offset + e.length) as usize];
        let err = open_blob("packs/xx", &e, sealed, &key, &h)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("packs/xx") && err.contains("authentication"),
            "{err}"
        );
        // Truncation loses the trailer.
        assert!(pack_tail("p", &pack[..pack.len() - 3]).is_err());
        // Damaged header.
        let mut bad = pack.clone();
        bad[tail.header_offset + 13] ^= 1;
        assert!(pack_header("p", &bad, &tail, &key).is_err());
    }

    #[test]
    fn sealed_object_round_trip_and_version_check() {
        let key = DataKey::generate();
        let wrapped = WrappedKey(vec![1, 2, 3]);
        let obj = seal_object(INDEX_MAGIC, &key, &wrapped, &vec![1u32, 2, 3]);
        let (w, hl) = sealed_object_key("i", &obj, INDEX_MAGIC).unwrap();
        assert_eq!(w, wrapped);
        let back: Vec<u32> = open_object("i", &obj, hl, &key).unwrap();
        assert_eq!(back, vec![1, 2, 3]);
        // Wrong magic, future version, flipped byte.
        assert!(sealed_object_key("i", &obj, SNAPSHOT_MAGIC).is_err());
        let mut v2 = obj.clone();
        v2[4] = 2;
        let err = sealed_object_key("index/ab", &v2, INDEX_MAGIC).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
        let mut bad = obj.clone();
        *bad.last_mut().unwrap() ^= 1;
        let err = open_object::<Vec<u32>>("index/ab", &bad, hl, &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("index/ab"), "{err}");
        // The wrapped key is authenticated too.
        let mut bad = obj.clone();
        bad[7] ^= 1;
        assert!(open_object::<Vec<u32>>("i", &bad, hl, &key).is_err());
    }

    #[test]
    fn config_round_trip() {
        let cfg = RepoConfig {
            version: FORMAT_VERSION,
            id: uuid::Uuid::new_v4(),
            created: 1,
            chunker: ChunkerParams::default(),
            id_key: vec![9; 69],
            mac: Vec::new(),
            controller_key: None,
            controller_mac: None,
        };
        let mut cfg = cfg;
        cfg.mac = cfg.compute_mac(&[5; 32]);
        let back = RepoConfig::decode(&cfg.encode()).unwrap();
        assert_eq!(back.id, cfg.id);
        back.verify_mac(&[5; 32]).unwrap();
        assert!(back.verify_mac(&[6; 32]).is_err(), "another id key");
        let mut altered = back.clone();
        altered.chunker.avg = 2 * 1024 * 1024;
        assert!(altered.verify_mac(&[5; 32]).is_err(), "altered field");
        assert!(RepoConfig::decode(b"junk").is_err());
        let mut bad = cfg.clone();
        bad.chunker.min = 3;
        assert!(
            RepoConfig::decode(&bad.encode()).is_err(),
            "odd / tiny chunker sizes"
        );
    }
}
