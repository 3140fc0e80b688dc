//! [`Rewrapped`]: a key provider that knows a [`KeyTable`], so data keys
//! wrapped under a retired master key open with the current one.

use std::fmt;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{DynKeyProvider, KeyProvider, KeyTable, WrappedKey};
use crate::crypto::DataKey;
use crate::error::{Error, Result};

/// The current master key plus the key table of its last rotation.
///
/// `unwrap(W)` looks `W` up in the table and unwraps the re-wrapped key
/// with the current provider; keys not in the table (made after the
/// rotation) are unwrapped directly. `generate` and `wrap` use the current
/// provider. The table can be set later (a catalog rebuild finds it at a
/// location).
pub struct Rewrapped {
    current: DynKeyProvider,
    table: RwLock<Option<Arc<KeyTable>>>,
}

impl Rewrapped {
    /// `current` with `table` (the one made for `current`'s master key).
    pub fn new(current: DynKeyProvider, table: Option<KeyTable>) -> Self {
        Rewrapped {
            current,
            table: RwLock::new(table.map(Arc::new)),
        }
    }

    /// The provider of the current master key.
    pub fn current(&self) -> &DynKeyProvider {
        &self.current
    }

    /// The key table in use, if any.
    pub fn table(&self) -> Option<Arc<KeyTable>> {
        self.table.read().expect("key table lock").clone()
    }

    /// Use `table` from now on.
    pub fn set_table(&self, table: Option<KeyTable>) {
        *self.table.write().expect("key table lock") = table.map(Arc::new);
    }
}

impl fmt::Debug for Rewrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Rewrapped({:?}, {:?})", self.current, self.table())
    }
}

#[async_trait]
impl KeyProvider for Rewrapped {
    async fn generate(&self) -> Result<(DataKey, WrappedKey)> {
        self.current.generate().await
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        let table = self.table();
        if let Some(rewrapped) = table.as_ref().and_then(|t| t.get(wrapped)) {
            let name = table.as_ref().map(|t| t.name().to_string());
            return self.current.unwrap(rewrapped).await.map_err(|e| {
                let place = format!("keys/{}", name.unwrap_or_default());
                match e {
                    Error::WrongKey(m) => {
                        Error::WrongKey(format!("the entry of key table {place}: {m}"))
                    }
                    Error::Key(m) => Error::Key(format!("the entry of key table {place}: {m}")),
                    e => e,
                }
            });
        }
        self.current.unwrap(wrapped).await.map_err(|e| match e {
            Error::WrongKey(m) => Error::WrongKey(match &table {
                Some(t) => format!(
                    "{m}; the key table keys/{} has no entry for this key (it was not in the repository when the master key was rotated: run `trireme-controller key verify`)",
                    t.name()
                ),
                None => format!(
                    "{m}; no key table for the current master key was found (after a master-key rotation, the locations' keys/table-<key id> object re-wraps older keys)"
                ),
            }),
            e => e,
        })
    }

    async fn wrap(&self, key: &DataKey) -> Result<WrappedKey> {
        self.current.wrap(key).await
    }

    fn master_key_id(&self) -> Option<String> {
        self.current.master_key_id()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::keys::{entry_hash, LocalKeyFile};

    #[tokio::test]
    async fn unwraps_old_keys_through_the_table_and_new_keys_directly() {
        let d = tempfile::tempdir().unwrap();
        let old = LocalKeyFile::create(&d.path().join("old")).unwrap();
        let new: DynKeyProvider = Arc::new(LocalKeyFile::create(&d.path().join("new")).unwrap());
        let (k1, w1) = old.generate().await.unwrap();
        let (_, w_unlisted) = old.generate().await.unwrap();

        // Before a table is set: a clear wrong-key error with the hint.
        let r = Rewrapped::new(new.clone(), None);
        let err = r.unwrap(&w1).await.unwrap_err();
        assert!(matches!(err, Error::WrongKey(_)), "{err}");
        assert!(err.to_string().contains("no key table"), "{err}");

        let entries = BTreeMap::from([(entry_hash(&w1), new.wrap(&k1).await.unwrap())]);
        let table = KeyTable::seal(new.as_ref(), 1, Vec::new(), entries)
            .await
            .unwrap();
        r.set_table(Some(table));
        assert_eq!(r.unwrap(&w1).await.unwrap().as_bytes(), k1.as_bytes());

        // A key made after the rotation: no entry needed.
        let (k2, w2) = r.generate().await.unwrap();
        assert_eq!(r.unwrap(&w2).await.unwrap().as_bytes(), k2.as_bytes());
        let w3 = r.wrap(&k1).await.unwrap();
        assert_eq!(new.unwrap(&w3).await.unwrap().as_bytes(), k1.as_bytes());
        assert_eq!(r.master_key_id(), new.master_key_id());

        // An old key the table lacks: named as such.
        let err = r.unwrap(&w_unlisted).await.unwrap_err();
        assert!(err.to_string().contains("has no entry"), "{err}");
    }
}
