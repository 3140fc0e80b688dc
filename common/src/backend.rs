//! Storage backends: where a repository's objects live.
//!
//! One small async trait, [`Backend`], addressed by [`ObjectKey`] (a kind plus
//! a name), with a `file://` implementation, an `s3://` implementation and an
//! in-memory one for tests. Backends move opaque bytes; encryption and the
//! repository format sit above them.

mod file;
mod memory;
mod s3;

pub use file::FileBackend;
pub use memory::MemoryBackend;
pub use s3::{S3Backend, S3Settings};

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;

/// The kinds of object in a repository, each under its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectKind {
    /// The repository config (`config`), written once at init.
    Config,
    /// Pack objects: sealed chunks (`packs/<2 hex>/<sha256>`).
    Pack,
    /// Index objects: chunk id to pack maps (`index/<sha256>`).
    Index,
    /// Snapshot manifests (`snapshots/<sha256>`).
    Snapshot,
    /// The controller's mirror of its audit log (`audit/<first sequence
    /// number>.jsonl`): plain JSON lines, protected by the log's hash chain,
    /// not encrypted. Not part of the repository proper, so not in
    /// [`ObjectKind::ALL`] (replication and checks leave it alone), and not
    /// content-addressed.
    Audit,
    /// Key tables (`keys/table-<master key id>`): after a master-key
    /// rotation, the stored data keys wrapped again under the new master key
    /// (see [`crate::keys::KeyTable`]). Like the audit mirror, not part of the
    /// repository proper (not in [`ObjectKind::ALL`]) and not
    /// content-addressed: the controller writes them to every location.
    Keys,
}

impl ObjectKind {
    /// All kinds, in the order a copy or check should visit them.
    pub const ALL: [ObjectKind; 4] = [
        ObjectKind::Config,
        ObjectKind::Pack,
        ObjectKind::Index,
        ObjectKind::Snapshot,
    ];

    /// The folder of this kind inside the repository (empty for the config).
    pub fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::Pack => "packs/",
            ObjectKind::Index => "index/",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Audit => "audit/",
            ObjectKind::Keys => "keys/",
        }
    }
}

/// The address of one object inside a repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// What kind of object this is.
    pub kind: ObjectKind,
    /// Its name: the hex SHA-256 of its bytes, or `config`.
    pub name: String,
}

impl ObjectKey {
    /// The repository config object.
    pub fn config() -> Self {
        ObjectKey {
            kind: ObjectKind::Config,
            name: "config".into(),
        }
    }

    /// An object of `kind` named `name`.
    pub fn new(kind: ObjectKind, name: impl Into<String>) -> Self {
        ObjectKey {
            kind,
            name: name.into(),
        }
    }

    /// The object's path relative to the repository root. Packs are fanned
    /// out into 256 folders by the first two hex digits of their name.
    pub fn path(&self) -> String {
        match self.kind {
            ObjectKind::Config => "config".to_string(),
            ObjectKind::Pack if self.name.len() >= 2 => {
                format!("packs/{}/{}", &self.name[..2], self.name)
            }
            kind => format!("{}{}", kind.prefix(), self.name),
        }
    }

    /// Parse a repository-relative path back into a key (the inverse of
    /// [`ObjectKey::path`]); `None` for paths that are not repository objects.
    pub fn from_path(path: &str) -> Option<Self> {
        if path == "config" {
            return Some(Self::config());
        }
        let (kind, rest) = if let Some(rest) = path.strip_prefix("packs/") {
            (ObjectKind::Pack, rest.rsplit('/').next()?)
        } else if let Some(rest) = path.strip_prefix("index/") {
            (ObjectKind::Index, rest)
        } else if let Some(rest) = path.strip_prefix("snapshots/") {
            (ObjectKind::Snapshot, rest)
        } else if let Some(rest) = path.strip_prefix("audit/") {
            (ObjectKind::Audit, rest)
        } else if let Some(rest) = path.strip_prefix("keys/") {
            (ObjectKind::Keys, rest)
        } else {
            return None;
        };
        if rest.is_empty() || rest.contains('/') || rest.starts_with('.') {
            return None;
        }
        Some(Self::new(kind, rest))
    }

    /// Whether the object's name is the SHA-256 of its bytes (all but the
    /// config, the audit mirror's segments and the key tables).
    pub fn is_content_addressed(&self) -> bool {
        !matches!(
            self.kind,
            ObjectKind::Config | ObjectKind::Audit | ObjectKind::Keys
        )
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path())
    }
}

/// What a backend knows of a stored object without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// The SHA-256 the store recorded for the object at upload time, when the
    /// store keeps one (S3 checksums, or Trireme's own metadata). `None` when
    /// the backend keeps none (the file backend: there the name is the hash).
    pub sha256: Option<[u8; 32]>,
}

/// A listed object: its key and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    /// The object's key.
    pub key: ObjectKey,
    /// Its size in bytes.
    pub size: u64,
}

/// The storage seam: a flat store of immutable objects.
///
/// Implementations must make `put` atomic (a reader sees the whole object or
/// none of it) and safe with concurrent writers of the same key (the content
/// is the same, since names are content hashes).
#[async_trait]
pub trait Backend: Send + Sync + fmt::Debug {
    /// A human-readable name for messages, e.g. the location URL.
    fn location(&self) -> &str;

    /// Store `data` under `key`. `sha256` is the SHA-256 of `data`, sent to
    /// the store so that it verifies the upload and keeps the checksum.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when the store refuses or cannot be reached.
    async fn put(&self, key: &ObjectKey, data: Bytes, sha256: [u8; 32]) -> Result<()>;

    /// Read a whole object.
    ///
    /// # Errors
    /// [`Error::NotFound`](crate::Error::NotFound) when absent, [`Error::Storage`](crate::Error::Storage) otherwise.
    async fn get(&self, key: &ObjectKey) -> Result<Bytes>;

    /// Read `length` bytes at `offset` of an object.
    ///
    /// # Errors
    /// As [`Backend::get`]; a range past the end is [`Error::Corrupt`](crate::Error::Corrupt) (truncated object).
    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Bytes>;

    /// Size and stored checksum of an object, or `None` when it is absent.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when the store cannot be asked.
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>>;

    /// Every object of one kind.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when the store cannot be listed.
    async fn list(&self, kind: ObjectKind) -> Result<Vec<ListedObject>>;

    /// Remove an object; removing an absent object is not an error.
    ///
    /// # Errors
    /// [`Error::Storage`](crate::Error::Storage) when the store refuses.
    async fn delete(&self, key: &ObjectKey) -> Result<()>;
}

/// A shared, dynamically dispatched backend.
pub type DynBackend = Arc<dyn Backend>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_paths_round_trip() {
        let keys = [
            ObjectKey::config(),
            ObjectKey::new(ObjectKind::Pack, "ab".repeat(32)),
            ObjectKey::new(ObjectKind::Index, "cd".repeat(32)),
            ObjectKey::new(ObjectKind::Snapshot, "ef".repeat(32)),
            ObjectKey::new(ObjectKind::Audit, "00000000000000000001.jsonl"),
            ObjectKey::new(ObjectKind::Keys, "table-0123456789abcdef"),
        ];
        for key in keys {
            assert_eq!(ObjectKey::from_path(&key.path()), Some(key.clone()));
        }
        assert_eq!(
            ObjectKey::new(ObjectKind::Pack, "abcd").path(),
            "packs/ab/abcd"
        );
        assert_eq!(ObjectKey::from_path("packs/ab/.tmp-1"), None);
        assert_eq!(ObjectKey::from_path("other/x"), None);
    }
}
