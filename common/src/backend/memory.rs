//! An in-memory backend for fast unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, ListedObject, ObjectKey, ObjectKind, ObjectMeta};
use crate::error::{Error, Result};

/// Objects held in a map; `put` records the checksum it was given, like S3.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    objects: Mutex<BTreeMap<ObjectKey, (Bytes, [u8; 32])>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace an object's bytes without touching its stored checksum
    /// (tests use this to simulate bit rot).
    pub fn tamper(&self, key: &ObjectKey, f: impl FnOnce(&mut Vec<u8>)) {
        let mut map = self.objects.lock().unwrap();
        if let Some((data, _)) = map.get_mut(key) {
            let mut v = data.to_vec();
            f(&mut v);
            *data = Bytes::from(v);
        }
    }

    /// Keys of every stored object.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn location(&self) -> &str {
        "memory://"
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, sha256: [u8; 32]) -> Result<()> {
        self.objects
            .lock()
            .unwrap()
            .insert(key.clone(), (data, sha256));
        Ok(())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        self.objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(d, _)| d.clone())
            .ok_or_else(|| Error::NotFound {
                key: key.path(),
                location: self.location().into(),
            })
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Bytes> {
        let data = self.get(key).await?;
        let end = offset
            .checked_add(length)
            .filter(|e| *e <= data.len() as u64)
            .ok_or_else(|| {
                Error::corrupt(
                    key.path(),
                    format!("truncated: cannot read {length} bytes at offset {offset}"),
                )
            })?;
        Ok(data.slice(offset as usize..end as usize))
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .get(key)
            .map(|(d, sha)| ObjectMeta {
                size: d.len() as u64,
                sha256: Some(*sha),
            }))
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ListedObject>> {
        Ok(self
            .objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.kind == kind)
            .map(|(k, (d, _))| ListedObject {
                key: k.clone(),
                size: d.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
}
