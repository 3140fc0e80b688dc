//! Symmetric primitives: AES-256-GCM sealing, SHA-256, keyed BLAKE3 chunk ids.
//!
//! Every sealed message is `nonce (12) || ciphertext || tag (16)` with a fresh
//! random 96-bit nonce. Keys are per write session (see [`crate::keys`]), so a
//! key seals at most a few million messages, far below the random-nonce bound.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes added by [`DataKey::seal`]: nonce plus tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + 16;

/// A 256-bit symmetric key (a data key, or a master key).
pub struct DataKey {
    raw: [u8; 32],
    aead: LessSafeKey,
}

impl DataKey {
    /// A key from its raw bytes.
    pub fn from_bytes(raw: [u8; 32]) -> Self {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &raw).expect("32-byte key"));
        DataKey { raw, aead }
    }

    /// A fresh random key from the system's CSPRNG.
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes())
    }

    /// The raw key bytes (to wrap it, or to derive a BLAKE3 key from it).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.raw
    }

    /// Encrypt and authenticate `plaintext` bound to `aad`; returns
    /// `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Like [`DataKey::seal`], appending to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = random_bytes();
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut out[start..],
            )
            .expect("AES-GCM seal cannot fail for in-range lengths");
        out.extend_from_slice(tag.as_ref());
    }

    /// Check and decrypt a message made by [`DataKey::seal`] with the same `aad`.
    ///
    /// # Errors
    /// [`AuthError`] when the message was altered, truncated, bound to other
    /// data, or sealed with another key.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(AuthError);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| AuthError)?;
        let mut buf = body.to_vec();
        let plain_len = self
            .aead
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| AuthError)?
            .len();
        buf.truncate(plain_len);
        Ok(buf)
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// A sealed message failed authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// `N` random bytes from the system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b).expect("system random number generator");
    b
}

/// SHA-256 of `data` (hardware-accelerated where the CPU has it).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().expect("32-byte digest")
}

/// A 32-byte id: chunk ids (keyed BLAKE3 of the plaintext) and object ids
/// (SHA-256 of the stored bytes). Serialised as a CBOR byte string.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parse 64 hex characters.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Id(b))
    }

    /// The first 8 hex characters, for display.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = serde_bytes::ByteArray::<32>::deserialize(d)?;
        Ok(Id(b.into_array()))
    }
}

/// Computes chunk ids: BLAKE3 keyed with the repository's secret id key, so
/// ids reveal nothing about content to someone without the key.
#[derive(Clone)]
pub struct ChunkHasher {
    key: [u8; 32],
}

impl ChunkHasher {
    /// A hasher keyed with `key`.
    pub fn new(key: [u8; 32]) -> Self {
        ChunkHasher { key }
    }

    /// The id of a chunk's plaintext.
    pub fn id(&self, data: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.key, data).as_bytes())
    }
}

impl fmt::Debug for ChunkHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChunkHasher(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let k = DataKey::generate();
        let sealed = k.seal(b"aad", b"hello world");
        assert_eq!(sealed.len(), 11 + SEAL_OVERHEAD);
        assert_eq!(k.open(b"aad", &sealed).unwrap(), b"hello world");
        // Fresh nonce each time.
        assert_ne!(k.seal(b"aad", b"hello world"), sealed);
        // Wrong aad, wrong key, any flipped byte, truncation: all refused.
        assert_eq!(k.open(b"other", &sealed), Err(AuthError));
        assert_eq!(DataKey::generate().open(b"aad", &sealed), Err(AuthError));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert_eq!(k.open(b"aad", &bad), Err(AuthError), "byte {i}");
        }
        assert_eq!(k.open(b"aad", &sealed[..sealed.len() - 1]), Err(AuthError));
        assert_eq!(k.open(b"aad", &[]), Err(AuthError));
    }

    #[test]
    fn seal_into_appends() {
        let k = DataKey::generate();
        let mut out = b"prefix".to_vec();
        k.seal_into(b"", b"data", &mut out);
        assert_eq!(&out[..6], b"prefix");
        assert_eq!(k.open(b"", &out[6..]).unwrap(), b"data");
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn chunk_ids_are_keyed() {
        let a = ChunkHasher::new([1; 32]);
        let b = ChunkHasher::new([2; 32]);
        assert_eq!(a.id(b"x"), a.id(b"x"));
        assert_ne!(a.id(b"x"), b.id(b"x"));
        assert_ne!(a.id(b"x"), Id(*blake3::hash(b"x").as_bytes()));
    }

    #[test]
    fn id_hex_and_cbor() {
        let id = Id([0xab; 32]);
        assert_eq!(Id::from_hex(&id.to_hex()), Some(id));
        assert_eq!(Id::from_hex("zz"), None);
        let mut buf = Vec::new();
        ciborium::into_writer(&id, &mut buf).unwrap();
        assert_eq!(buf.len(), 34, "a 32-byte CBOR byte string");
        let back: Id = ciborium::from_reader(&buf[..]).unwrap();
        assert_eq!(back, id);
    }
}
