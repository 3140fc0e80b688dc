//! The key table: what a master-key rotation leaves behind.
//!
//! Wrapped data keys are embedded in content-addressed objects (the config,
//! packs, index objects, manifests), so they cannot be rewritten without
//! renaming and re-uploading everything. A rotation instead writes one
//! table that maps `SHA-256(old wrapped key)` to the same data key wrapped
//! under the new master key. The table is authenticated with a keyed BLAKE3
//! MAC under a key that only the new master key can unwrap, so a tampered,
//! truncated or swapped table is refused when it is loaded.
//!
//! The object is `keys/table-<id>` at every location (see `docs/format.md`,
//! section 3.5, for the bytes). [`SealedTable`] is a table read but not yet
//! authenticated; only [`SealedTable::open`] gives a [`KeyTable`].

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use super::{KeyProvider, WrappedKey};
use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::sha256;
use crate::error::{Error, Result};
use crate::format::check_magic;

/// Magic of a key table object.
pub const TABLE_MAGIC: [u8; 4] = *b"TRKT";
/// The key table format version this build reads and writes.
pub const TABLE_VERSION: u8 = 1;
/// Object names of key tables start with this.
pub const TABLE_PREFIX: &str = "table-";
const MAC_CONTEXT: &str = "trireme key table mac v1";
const MAC_LEN: usize = 32;
/// Longest master key id a table records (it is length-prefixed by a byte).
pub const MAX_KEY_ID: usize = 255;
/// Most superseded table names one table lists.
const MAX_SUPERSEDES: usize = 1024;

/// The hash a table is looked up by: `SHA-256(wrapped key)`.
pub fn entry_hash(wrapped: &WrappedKey) -> [u8; 32] {
    sha256(&wrapped.0)
}

/// The table object's id (the part after `table-`) for a master key id:
/// the id itself when it is short lower-case hex/letters/digits (a local key
/// file's 16 hex digits), else the first 16 hex digits of its SHA-256.
/// Without a key id, derived from the table's own wrapped MAC key.
fn table_id(key_id: &str, mac_key: &WrappedKey) -> String {
    let plain = !key_id.is_empty()
        && key_id.len() <= 64
        && key_id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if plain {
        key_id.to_string()
    } else if key_id.is_empty() {
        hex::encode(&sha256(&mac_key.0)[..8])
    } else {
        hex::encode(&sha256(key_id.as_bytes())[..8])
    }
}

/// The object name (`table-<id>`) of the table made for master key
/// `key_id`; `None` when the provider names no key (its tables are then
/// found by trying them).
pub fn table_name_for(key_id: Option<&str>) -> Option<String> {
    key_id
        .filter(|k| !k.is_empty())
        .map(|k| format!("{TABLE_PREFIX}{}", table_id(k, &WrappedKey(Vec::new()))))
}

/// The fields of a table, authenticated or not.
#[derive(Clone)]
struct Fields {
    key_id: String,
    created: i64,
    mac_key: WrappedKey,
    supersedes: Vec<String>,
    entries: BTreeMap<[u8; 32], WrappedKey>,
}

impl Fields {
    fn name(&self) -> String {
        format!("{TABLE_PREFIX}{}", table_id(&self.key_id, &self.mac_key))
    }

    /// Everything up to (not including) the MAC.
    fn encode_unsigned(&self) -> Vec<u8> {
        let size: usize = self.entries.values().map(|w| 34 + w.0.len()).sum();
        let mut out = Vec::with_capacity(64 + self.mac_key.0.len() + size);
        out.extend_from_slice(&TABLE_MAGIC);
        out.push(TABLE_VERSION);
        out.extend_from_slice(&self.created.to_le_bytes());
        out.push(self.key_id.len() as u8);
        out.extend_from_slice(self.key_id.as_bytes());
        out.extend_from_slice(&(self.mac_key.0.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.mac_key.0);
        out.extend_from_slice(&(self.supersedes.len() as u16).to_le_bytes());
        for s in &self.supersedes {
            out.push(s.len() as u8);
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (hash, w) in &self.entries {
            out.extend_from_slice(hash);
            out.extend_from_slice(&(w.0.len() as u16).to_le_bytes());
            out.extend_from_slice(&w.0);
        }
        out
    }
}

fn mac_of(mac_key: &[u8; 32], signed: &[u8]) -> blake3::Hash {
    blake3::keyed_hash(&blake3::derive_key(MAC_CONTEXT, mac_key), signed)
}

/// An authenticated key table: for each wrapped key stored before a
/// rotation, the same data key wrapped under the master key named by
/// [`KeyTable::key_id`].
#[derive(Clone)]
pub struct KeyTable {
    fields: Fields,
    name: String,
    bytes: Bytes,
}

impl fmt::Debug for KeyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyTable(keys/{}, {} entries)",
            self.name,
            self.fields.entries.len()
        )
    }
}

impl KeyTable {
    /// Seal a new table under `provider`'s master key: a fresh MAC key is
    /// generated (and stored wrapped in the header), and the table names
    /// the tables it `supersedes` (removed once it is verified everywhere).
    ///
    /// # Errors
    /// When the provider cannot generate a key; [`Error::Key`] when a
    /// name, the key id or a wrapped key is too long for the format.
    pub async fn seal(
        provider: &dyn KeyProvider,
        created: i64,
        supersedes: Vec<String>,
        entries: BTreeMap<[u8; 32], WrappedKey>,
    ) -> Result<KeyTable> {
        let key_id = provider.master_key_id().unwrap_or_default();
        if key_id.len() > MAX_KEY_ID {
            return Err(Error::Key(format!(
                "master key id {key_id:?} is longer than {MAX_KEY_ID} bytes"
            )));
        }
        if supersedes.len() > MAX_SUPERSEDES
            || supersedes.iter().any(|s| s.is_empty() || s.len() > 255)
        {
            return Err(Error::Key(
                "too many or too long superseded table names".into(),
            ));
        }
        if entries
            .values()
            .any(|w| w.0.is_empty() || w.0.len() > 65_535)
        {
            return Err(Error::Key(
                "a re-wrapped key is empty or longer than 65,535 bytes".into(),
            ));
        }
        // A controller key: an agent can get ordinary data keys (and so make a
        // table whose MAC checks out), never one with the controller mark.
        let (mac_plain, mac_key) = super::generate_controller_key(provider).await?;
        let fields = Fields {
            key_id,
            created,
            mac_key,
            supersedes,
            entries,
        };
        let mut bytes = fields.encode_unsigned();
        let mac = mac_of(mac_plain.as_bytes(), &bytes);
        bytes.extend_from_slice(mac.as_bytes());
        Ok(KeyTable {
            name: fields.name(),
            fields,
            bytes: Bytes::from(bytes),
        })
    }

    /// The object name, `table-<id>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's key, `keys/table-<id>`.
    pub fn object_key(&self) -> ObjectKey {
        ObjectKey::new(ObjectKind::Keys, self.name.clone())
    }

    /// The encoded object, MAC included.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The master key the entries are wrapped under (empty when its
    /// provider names none).
    pub fn key_id(&self) -> &str {
        &self.fields.key_id
    }

    /// When the rotation made it, Unix seconds.
    pub fn created(&self) -> i64 {
        self.fields.created
    }

    /// Names of the older tables this one replaces.
    pub fn supersedes(&self) -> &[String] {
        &self.fields.supersedes
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.fields.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.fields.entries.is_empty()
    }

    /// The re-wrapped form of `wrapped`, if the table has it.
    pub fn get(&self, wrapped: &WrappedKey) -> Option<&WrappedKey> {
        self.fields.entries.get(&entry_hash(wrapped))
    }

    /// The entry for a hash.
    pub fn get_hash(&self, hash: &[u8; 32]) -> Option<&WrappedKey> {
        self.fields.entries.get(hash)
    }

    /// Every entry, by hash.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8; 32], &WrappedKey)> + '_ {
        self.fields.entries.iter()
    }
}

/// A key table object parsed but not authenticated yet: only its header
/// can be looked at, to decide whether it is the one to open.
pub struct SealedTable {
    fields: Fields,
    path: String,
    signed_len: usize,
    bytes: Bytes,
}

impl fmt::Debug for SealedTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedTable({})", self.path)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::corrupt(
                self.path,
                format!("truncated key table (ends inside {what})"),
            ));
        };
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn i64(&mut self, what: &str) -> Result<i64> {
        let b = self.take(8, what)?;
        Ok(i64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn text(&mut self, n: usize, what: &str) -> Result<String> {
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Error::corrupt(self.path, format!("{what} is not UTF-8")))
    }
}

impl SealedTable {
    /// Parse the object `key` (a `keys/table-*` object). The structure is
    /// checked whole (lengths, order, the name against the header); the MAC
    /// is not.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the object for a wrong magic, a truncated or
    /// malformed table, or a name that does not match its header;
    /// [`Error::UnsupportedFormat`] for another version.
    pub fn parse(key: &ObjectKey, bytes: Bytes) -> Result<SealedTable> {
        let path = key.path();
        let corrupt = |reason: String| Error::corrupt(&path, reason);
        if bytes.len() >= 5 && bytes[..4] == TABLE_MAGIC && bytes[4] != TABLE_VERSION {
            return Err(Error::UnsupportedFormat {
                key: path,
                reason: format!(
                    "key table version {} (this build reads version {TABLE_VERSION}; upgrade Trireme)",
                    bytes[4]
                ),
            });
        }
        check_magic(&path, &bytes, TABLE_MAGIC)?;
        if bytes.len() < 5 + MAC_LEN {
            return Err(corrupt("truncated key table".into()));
        }
        let signed_len = bytes.len() - MAC_LEN;
        let mut r = Reader {
            bytes: &bytes[..signed_len],
            pos: 5,
            path: &path,
        };
        let created = r.i64("the header")?;
        let klen = r.u8("the header")? as usize;
        let key_id = r.text(klen, "the master key id")?;
        let wlen = r.u16("the header")? as usize;
        let mac_key = WrappedKey(r.take(wlen, "the wrapped MAC key")?.to_vec());
        if mac_key.0.is_empty() {
            return Err(corrupt("the wrapped MAC key is empty".into()));
        }
        let nsup = r.u16("the superseded tables")? as usize;
        let mut supersedes = Vec::with_capacity(nsup.min(MAX_SUPERSEDES));
        for _ in 0..nsup {
            let n = r.u8("the superseded tables")? as usize;
            let name = r.text(n, "a superseded table name")?;
            if !name.starts_with(TABLE_PREFIX) || name.contains('/') {
                return Err(corrupt(format!(
                    "superseded table name {name:?} is not a table name"
                )));
            }
            supersedes.push(name);
        }
        let n = r.u32("the entry count")? as usize;
        let mut entries = BTreeMap::new();
        let mut last: Option<[u8; 32]> = None;
        for i in 0..n {
            let hash: [u8; 32] = r.take(32, "an entry")?.try_into().expect("32 bytes");
            let wl = r.u16("an entry")? as usize;
            if wl == 0 {
                return Err(corrupt(format!("entry {i} has an empty key")));
            }
            let w = WrappedKey(r.take(wl, "an entry")?.to_vec());
            if last.is_some_and(|l| l >= hash) {
                return Err(corrupt(format!(
                    "entry {i} is out of order or repeated (entries are sorted by hash)"
                )));
            }
            last = Some(hash);
            entries.insert(hash, w);
        }
        if r.pos != signed_len {
            return Err(corrupt(format!(
                "{} unexpected bytes after the last entry",
                signed_len - r.pos
            )));
        }
        let fields = Fields {
            key_id,
            created,
            mac_key,
            supersedes,
            entries,
        };
        let name = fields.name();
        if key.kind != ObjectKind::Keys || key.name != name {
            return Err(corrupt(format!(
                "its header belongs to keys/{name} (a renamed or swapped key table)"
            )));
        }
        Ok(SealedTable {
            fields,
            path,
            signed_len,
            bytes,
        })
    }

    /// The master key id the header names (not authenticated yet).
    pub fn key_id(&self) -> &str {
        &self.fields.key_id
    }

    /// The creation time the header gives (not authenticated yet).
    pub fn created(&self) -> i64 {
        self.fields.created
    }

    /// The object's path, `keys/table-<id>`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Unwrap the MAC key with `provider` and check the MAC over the
    /// whole table.
    ///
    /// # Errors
    /// The provider's error when it cannot unwrap the MAC key (another
    /// master key: [`Error::WrongKey`]); [`Error::Corrupt`] naming the
    /// object when the MAC does not match (altered, truncated or damaged).
    pub async fn open(self, provider: &dyn KeyProvider) -> Result<KeyTable> {
        let mac_key = provider.unwrap(&self.fields.mac_key).await.map_err(|e| match e {
            Error::WrongKey(m) => Error::WrongKey(format!("key table {}: {m}", self.path)),
            Error::Key(m) => Error::Key(format!(
                "key table {}: its MAC key cannot be unwrapped ({m}); the table is damaged or was altered",
                self.path
            )),
            e => e,
        })?;
        if !super::is_controller_key(&mac_key) {
            return Err(Error::corrupt(
                &self.path,
                "the key table's MAC key is an ordinary data key, not a controller key: agents can obtain those, so the table may have been planted by one; refusing it (another location's copy, or the controller's catalog, holds a good one)",
            ));
        }
        let want = mac_of(mac_key.as_bytes(), &self.bytes[..self.signed_len]);
        let got: [u8; 32] = self.bytes[self.signed_len..]
            .try_into()
            .expect("MAC_LEN bytes");
        if want != blake3::Hash::from(got) {
            return Err(Error::corrupt(
                &self.path,
                "the key table's MAC does not match: it was altered, truncated or damaged; refusing it (another location's copy, or the controller's catalog, holds a good one)",
            ));
        }
        Ok(KeyTable {
            name: self.fields.name(),
            fields: self.fields,
            bytes: self.bytes,
        })
    }
}

/// Among `candidates` (key table objects and their bytes), open the table
/// made for `provider`'s master key.
///
/// When the provider names its key, only the object named for it counts
/// (others belong to other master keys); any problem with that object is an
/// error. When it names none, every table whose MAC key it can unwrap is a
/// candidate and the newest wins; tables it cannot unwrap are skipped.
///
/// # Errors
/// [`Error::Corrupt`]/[`Error::UnsupportedFormat`] naming the object for a
/// malformed, altered or truncated table of this key; provider errors.
pub async fn find_table(
    candidates: Vec<(ObjectKey, Bytes)>,
    provider: &dyn KeyProvider,
) -> Result<Option<KeyTable>> {
    if let Some(name) = table_name_for(provider.master_key_id().as_deref()) {
        let Some((key, bytes)) = candidates
            .into_iter()
            .find(|(k, _)| k.kind == ObjectKind::Keys && k.name == name)
        else {
            return Ok(None);
        };
        let sealed = SealedTable::parse(&key, bytes)?;
        return sealed.open(provider).await.map(Some);
    }
    let mut best: Option<KeyTable> = None;
    for (key, bytes) in candidates {
        if !key.name.starts_with(TABLE_PREFIX) {
            continue;
        }
        let Ok(sealed) = SealedTable::parse(&key, bytes) else {
            continue;
        };
        let table = match sealed.open(provider).await {
            Ok(t) => t,
            Err(e @ Error::Corrupt { .. }) => return Err(e),
            Err(_) => continue,
        };
        if best.as_ref().is_none_or(|b| table.created() > b.created()) {
            best = Some(table);
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::LocalKeyFile;

    fn entries(n: u8) -> BTreeMap<[u8; 32], WrappedKey> {
        (0..n)
            .map(|i| ([i; 32], WrappedKey(vec![i + 1; 69])))
            .collect()
    }

    #[tokio::test]
    async fn round_trip_and_lookup() {
        let d = tempfile::tempdir().unwrap();
        let k = LocalKeyFile::create(&d.path().join("k")).unwrap();
        let t = KeyTable::seal(&k, 1234, vec!["table-00".into()], entries(3))
            .await
            .unwrap();
        assert_eq!(t.name(), format!("table-{}", k.key_id()));
        assert_eq!(
            table_name_for(k.master_key_id().as_deref()).unwrap(),
            t.name()
        );
        let back = SealedTable::parse(&t.object_key(), t.bytes().clone())
            .unwrap()
            .open(&k)
            .await
            .unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.created(), 1234);
        assert_eq!(back.key_id(), k.key_id());
        assert_eq!(back.supersedes(), ["table-00".to_string()]);
        assert_eq!(back.get_hash(&[1; 32]), Some(&WrappedKey(vec![2; 69])));
        let w = WrappedKey(vec![9; 69]);
        assert_eq!(back.get(&w), None);
        let mut e = entries(0);
        e.insert(entry_hash(&w), WrappedKey(vec![7; 3]));
        let t2 = KeyTable::seal(&k, 1, Vec::new(), e).await.unwrap();
        assert_eq!(t2.get(&w), Some(&WrappedKey(vec![7; 3])));
    }

    #[tokio::test]
    async fn tampered_truncated_renamed_and_foreign_tables_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let k = LocalKeyFile::create(&d.path().join("k")).unwrap();
        let other = LocalKeyFile::create(&d.path().join("o")).unwrap();
        let t = KeyTable::seal(&k, 5, Vec::new(), entries(4)).await.unwrap();
        let key = t.object_key();
        let good = t.bytes().to_vec();

        // One flipped bit in an entry: the MAC catches it, naming the object.
        let mut bad = good.clone();
        let at = bad.len() - 40;
        bad[at] ^= 1;
        let err = SealedTable::parse(&key, bad.into())
            .unwrap()
            .open(&k)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains(&key.path()), "{err}");
        assert!(err.to_string().contains("MAC does not match"), "{err}");

        // Truncated anywhere: refused.
        for cut in [0, 4, 5, 20, good.len() / 2, good.len() - 1] {
            let err = SealedTable::parse(&key, good[..cut].to_vec().into());
            let err = match err {
                Ok(s) => s.open(&k).await.unwrap_err(),
                Err(e) => e,
            };
            assert!(err.to_string().contains(&key.path()), "cut {cut}: {err}");
        }
        // Under another name: refused.
        let renamed = ObjectKey::new(ObjectKind::Keys, "table-0000000000000000");
        let err = SealedTable::parse(&renamed, good.clone().into()).unwrap_err();
        assert!(err.to_string().contains("swapped"), "{err}");
        // Another version: named as unsupported.
        let mut v2 = good.clone();
        v2[4] = 2;
        let err = SealedTable::parse(&key, v2.into()).unwrap_err();
        assert!(matches!(err, Error::UnsupportedFormat { .. }), "{err}");
        // Another master key cannot open it.
        let err = SealedTable::parse(&key, good.clone().into())
            .unwrap()
            .open(&other)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::WrongKey(_)), "{err}");

        // find_table: the other key has no table here; ours is found.
        let cands = vec![(key.clone(), Bytes::from(good.clone()))];
        assert!(find_table(cands.clone(), &other).await.unwrap().is_none());
        assert_eq!(find_table(cands, &k).await.unwrap().unwrap().len(), 4);
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = find_table(vec![(key, bad.into())], &k).await.unwrap_err();
        assert!(err.to_string().contains("MAC does not match"), "{err}");
    }
}
