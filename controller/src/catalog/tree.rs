//! Typed views of sled trees: keys through [`Key`], values as CBOR.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::TransactionalTree;
use trireme_common::Id;

use super::{abort, TxResult};
use crate::error::{Error, Result};

/// A catalog key: its byte encoding orders the way iteration should.
pub trait Key: Sized {
    /// The key's bytes.
    fn to_key(&self) -> Vec<u8>;
    /// Decode a key; `None` when the bytes are not one.
    fn from_key(bytes: &[u8]) -> Option<Self>;
    /// A printable form for error messages.
    fn display_key(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

impl Key for String {
    fn to_key(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

impl Key for Id {
    fn to_key(&self) -> Vec<u8> {
        self.0.to_vec()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        Some(Id(bytes.try_into().ok()?))
    }
    fn display_key(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }
}

/// Sequence numbers (the audit log): big-endian, so iteration is in order.
impl Key for u64 {
    fn to_key(&self) -> Vec<u8> {
        self.to_be_bytes().to_vec()
    }
    fn from_key(bytes: &[u8]) -> Option<Self> {
        Some(u64::from_be_bytes(bytes.try_into().ok()?))
    }
    fn display_key(bytes: &[u8]) -> String {
        Self::from_key(bytes).map_or_else(|| hex::encode(bytes), |n| n.to_string())
    }
}

fn encode<V: Serialize>(v: &V) -> Vec<u8> {
    let mut buf = Vec::new();
    // Writing CBOR into a Vec fails only for values serde cannot represent,
    // which the catalog's types never are.
    ciborium::into_writer(v, &mut buf).expect("catalog values encode to CBOR");
    buf
}

fn decode<K: Key, V: DeserializeOwned>(tree: &'static str, key: &[u8], bytes: &[u8]) -> Result<V> {
    ciborium::from_reader(bytes).map_err(|e| Error::CatalogCorrupt {
        tree,
        key: K::display_key(key),
        reason: e.to_string(),
    })
}

fn decode_key<K: Key>(tree: &'static str, key: &[u8]) -> Result<K> {
    K::from_key(key).ok_or_else(|| Error::CatalogCorrupt {
        tree,
        key: K::display_key(key),
        reason: "malformed key".into(),
    })
}

/// A sled tree with typed keys and CBOR values.
pub struct Tree<K, V> {
    inner: sled::Tree,
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K, V> Clone for Tree<K, V> {
    fn clone(&self) -> Self {
        Tree {
            inner: self.inner.clone(),
            name: self.name,
            _types: PhantomData,
        }
    }
}

impl<K: Key, V: Serialize + DeserializeOwned> Tree<K, V> {
    pub(super) fn new(inner: sled::Tree, name: &'static str) -> Self {
        Tree {
            inner,
            name,
            _types: PhantomData,
        }
    }

    /// The tree's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    fn err(&self, op: &str, e: sled::Error) -> Error {
        Error::catalog(format!("{op} {}", self.name), e)
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// Catalog I/O errors; [`Error::CatalogCorrupt`] for an undecodable value.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let k = key.to_key();
        match self.inner.get(&k).map_err(|e| self.err("read", e))? {
            Some(v) => Ok(Some(decode::<K, V>(self.name, &k, &v)?)),
            None => Ok(None),
        }
    }

    /// Store `value` under `key` (not flushed; see [`super::Catalog::flush`]).
    ///
    /// # Errors
    /// Catalog I/O errors.
    pub fn insert(&self, key: &K, value: &V) -> Result<()> {
        self.inner
            .insert(key.to_key(), encode(value))
            .map(|_| ())
            .map_err(|e| self.err("write", e))
    }

    /// Remove `key`; returns whether it was there.
    ///
    /// # Errors
    /// Catalog I/O errors.
    pub fn remove(&self, key: &K) -> Result<bool> {
        self.inner
            .remove(key.to_key())
            .map(|v| v.is_some())
            .map_err(|e| self.err("remove from", e))
    }

    /// Number of entries (walks the tree).
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    fn collect(&self, iter: sled::Iter) -> Result<Vec<(K, V)>> {
        iter.map(|r| {
            let (k, v) = r.map_err(|e| self.err("read", e))?;
            Ok((
                decode_key::<K>(self.name, &k)?,
                decode::<K, V>(self.name, &k, &v)?,
            ))
        })
        .collect()
    }

    /// Every entry, in key order.
    ///
    /// # Errors
    /// Catalog I/O errors; [`Error::CatalogCorrupt`] for an undecodable entry.
    pub fn entries(&self) -> Result<Vec<(K, V)>> {
        self.collect(self.inner.iter())
    }

    /// Every value, in key order.
    ///
    /// # Errors
    /// As [`Tree::entries`].
    pub fn values(&self) -> Result<Vec<V>> {
        Ok(self.entries()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Every key, in order (values are not decoded).
    ///
    /// # Errors
    /// Catalog I/O errors; [`Error::CatalogCorrupt`] for a malformed key.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.inner
            .iter()
            .keys()
            .map(|r| decode_key::<K>(self.name, &r.map_err(|e| self.err("read", e))?))
            .collect()
    }

    /// Every entry, in key order, one at a time: an undecodable entry is an
    /// `Err` in its place and the walk goes on.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V)>> + '_ {
        self.inner.iter().map(|r| {
            let (k, v) = r.map_err(|e| self.err("read", e))?;
            Ok((
                decode_key::<K>(self.name, &k)?,
                decode::<K, V>(self.name, &k, &v)?,
            ))
        })
    }

    /// The entry with the greatest key.
    ///
    /// # Errors
    /// As [`Tree::entries`].
    pub fn last(&self) -> Result<Option<(K, V)>> {
        match self.inner.last().map_err(|e| self.err("read", e))? {
            None => Ok(None),
            Some((k, v)) => Ok(Some((
                decode_key::<K>(self.name, &k)?,
                decode::<K, V>(self.name, &k, &v)?,
            ))),
        }
    }

    /// Entries with keys from `start` on, in key order, at most `limit`.
    ///
    /// # Errors
    /// As [`Tree::entries`].
    pub fn range_from(&self, start: &K, limit: usize) -> Result<Vec<(K, V)>> {
        self.inner
            .range(start.to_key()..)
            .take(limit)
            .map(|r| {
                let (k, v) = r.map_err(|e| self.err("read", e))?;
                Ok((
                    decode_key::<K>(self.name, &k)?,
                    decode::<K, V>(self.name, &k, &v)?,
                ))
            })
            .collect()
    }

    /// Entries whose key starts with `prefix`, in key order.
    ///
    /// # Errors
    /// As [`Tree::entries`].
    pub fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(K, V)>> {
        self.collect(self.inner.scan_prefix(prefix))
    }
}

/// A typed tree inside a catalog transaction.
pub struct TxTree<'a, K, V> {
    inner: &'a TransactionalTree,
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<'a, K: Key, V: Serialize + DeserializeOwned> TxTree<'a, K, V> {
    pub(super) fn new(inner: &'a TransactionalTree, name: &'static str) -> Self {
        TxTree {
            inner,
            name,
            _types: PhantomData,
        }
    }

    /// The value under `key`.
    ///
    /// # Errors
    /// Conflicts and storage errors (the transaction retries or fails);
    /// aborts with [`Error::CatalogCorrupt`] for an undecodable value.
    pub fn get(&self, key: &K) -> TxResult<Option<V>> {
        let k = key.to_key();
        match self.inner.get(&k)? {
            Some(v) => Ok(Some(decode::<K, V>(self.name, &k, &v).map_err(abort)?)),
            None => Ok(None),
        }
    }

    /// Store `value` under `key`.
    ///
    /// # Errors
    /// Conflicts and storage errors.
    pub fn insert(&self, key: &K, value: &V) -> TxResult<()> {
        self.inner.insert(key.to_key(), encode(value))?;
        Ok(())
    }

    /// Remove `key`; returns whether it was there.
    ///
    /// # Errors
    /// Conflicts and storage errors.
    pub fn remove(&self, key: &K) -> TxResult<bool> {
        Ok(self.inner.remove(key.to_key())?.is_some())
    }
}
