//! Index objects (which pack holds which chunk) and the in-memory index.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::crypto::Id;
use crate::format::BlobEntry;
use crate::keys::WrappedKey;

/// One pack as recorded in an index object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IndexPack {
    /// The pack's id (SHA-256 of its bytes, which is also its name).
    pub id: Id,
    /// The pack's size in bytes.
    pub size: u64,
    /// The pack's data key, wrapped (also stored in the pack itself).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The chunks in the pack.
    pub blobs: Vec<BlobEntry>,
}

/// The payload of an index object.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexFile {
    /// Packs described by this index object.
    pub packs: Vec<IndexPack>,
    /// The job that wrote it (16-byte id; all zeros: the controller), in
    /// fleet mode. Optional (format 1.1); see [`crate::attribution`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<serde_bytes::ByteBuf>,
    /// Keyed BLAKE3 of this payload with `mac` absent, under the job's
    /// attribution key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<serde_bytes::ByteBuf>,
}

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// Position of the pack in [`Index::packs`].
    pub pack: u32,
    /// The blob's entry in that pack.
    pub entry: BlobEntry,
}

/// A pack known to the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackInfo {
    /// Pack id.
    pub id: Id,
    /// Size in bytes.
    pub size: u64,
    /// The pack's wrapped data key.
    pub key: WrappedKey,
}

/// All chunks of a repository, by id.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<PackInfo>,
    pack_pos: HashMap<Id, u32>,
    blobs: HashMap<Id, BlobLocation>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a pack and its blobs. A chunk already known keeps its first location.
    pub fn add_pack(&mut self, pack: &IndexPack) {
        let pos = match self.pack_pos.get(&pack.id) {
            Some(p) => *p,
            None => {
                let p = self.packs.len() as u32;
                self.packs.push(PackInfo {
                    id: pack.id,
                    size: pack.size,
                    key: WrappedKey(pack.key.clone()),
                });
                self.pack_pos.insert(pack.id, p);
                p
            }
        };
        for b in &pack.blobs {
            self.blobs.entry(b.id).or_insert(BlobLocation {
                pack: pos,
                entry: *b,
            });
        }
    }

    /// Whether a chunk is stored.
    pub fn contains(&self, id: &Id) -> bool {
        self.blobs.contains_key(id)
    }

    /// Where a chunk is stored.
    pub fn get(&self, id: &Id) -> Option<(&PackInfo, BlobEntry)> {
        self.blobs
            .get(id)
            .map(|l| (&self.packs[l.pack as usize], l.entry))
    }

    /// Every known pack.
    pub fn packs(&self) -> &[PackInfo] {
        &self.packs
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every chunk with its location.
    pub fn iter(&self) -> impl Iterator<Item = (&PackInfo, BlobEntry)> + '_ {
        self.blobs
            .values()
            .map(|l| (&self.packs[l.pack as usize], l.entry))
    }
}
