//! Finding every wrapped data key stored at the locations: the config's id
//! key, each index object's key and the pack keys it lists, each snapshot
//! manifest's key. (A pack's trailer holds the key its index entry lists.)

use std::collections::{BTreeMap, HashMap, HashSet};

use futures::StreamExt;
use trireme_common::format::{
    open_object, sealed_object_key, RepoConfig, INDEX_MAGIC, SNAPSHOT_MAGIC,
};
use trireme_common::index::IndexFile;
use trireme_common::keys::KeyCache;
use trireme_common::{DynBackend, ObjectKey, ObjectKind, WrappedKey};

use crate::error::{Error, Result};

/// How many objects are read at once.
const CONCURRENCY: usize = 16;

/// What [`collect`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// Each distinct wrapped key, with where it was first seen
    /// (`loc1: index/ab…`).
    pub keys: HashMap<WrappedKey, String>,
    /// Objects read.
    pub objects: usize,
    /// Objects no location could read (path → why): storage or key errors.
    pub unreadable: BTreeMap<String, String>,
    /// Objects damaged wherever they were read (path → why): repositories
    /// skip them too, so their keys do not matter.
    pub damaged: BTreeMap<String, String>,
}

/// The error for a location that cannot be listed or read.
pub fn unreachable(name: &str, e: impl std::fmt::Display) -> Error {
    Error::Rotation(format!("location {name} cannot be reached: {e}"))
}

/// Read every object that holds a wrapped key at each of `sites` (an
/// object is read once, at the first location that has a good copy);
/// index objects are opened with `keys`.
///
/// # Errors
/// [`Error::Rotation`] naming a location that cannot be listed or whose
/// config cannot be read.
pub async fn collect(sites: &[(String, DynBackend)], keys: &KeyCache) -> Result<Found> {
    let mut found = Found::default();
    let mut done: HashSet<ObjectKey> = HashSet::new();
    for (name, backend) in sites {
        match backend.get(&ObjectKey::config()).await {
            Ok(bytes) => match RepoConfig::decode(&bytes) {
                Ok(c) => {
                    found.objects += 1;
                    found
                        .keys
                        .entry(c.wrapped_id_key())
                        .or_insert_with(|| format!("{name}: config"));
                    // The controller key (fleet mode) is re-wrapped too.
                    if let Some(k) = c.wrapped_controller_key() {
                        found
                            .keys
                            .entry(k)
                            .or_insert_with(|| format!("{name}: config (controller key)"));
                    }
                }
                Err(e) => {
                    found
                        .damaged
                        .entry("config".into())
                        .or_insert_with(|| format!("{name}: {e}"));
                }
            },
            Err(trireme_common::Error::NotFound { .. }) => {}
            Err(e) => return Err(unreachable(name, e)),
        }
        for kind in [ObjectKind::Index, ObjectKind::Snapshot] {
            let listed = backend.list(kind).await.map_err(|e| unreachable(name, e))?;
            let todo: Vec<ObjectKey> = listed
                .into_iter()
                .map(|o| o.key)
                .filter(|k| !done.contains(k))
                .collect();
            let results: Vec<(ObjectKey, trireme_common::Result<Vec<WrappedKey>>)> =
                futures::stream::iter(todo)
                    .map(|key| async move {
                        let r = object_keys(backend, &key, keys).await;
                        (key, r)
                    })
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            for (key, r) in results {
                let path = key.path();
                match r {
                    Ok(ws) => {
                        found.objects += 1;
                        found.unreadable.remove(&path);
                        found.damaged.remove(&path);
                        for w in ws {
                            found
                                .keys
                                .entry(w)
                                .or_insert_with(|| format!("{name}: {path}"));
                        }
                        done.insert(key);
                    }
                    Err(
                        e @ (trireme_common::Error::Corrupt { .. }
                        | trireme_common::Error::UnsupportedFormat { .. }),
                    ) => {
                        if !found.unreadable.contains_key(&path) {
                            found
                                .damaged
                                .entry(path)
                                .or_insert_with(|| format!("{name}: {e}"));
                        }
                    }
                    Err(e) => {
                        found.damaged.remove(&path);
                        found
                            .unreadable
                            .entry(path)
                            .or_insert_with(|| format!("{name}: {e}"));
                    }
                }
            }
        }
    }
    Ok(found)
}

/// The wrapped keys one index or snapshot object holds.
async fn object_keys(
    backend: &DynBackend,
    key: &ObjectKey,
    keys: &KeyCache,
) -> trireme_common::Result<Vec<WrappedKey>> {
    let path = key.path();
    let bytes = backend.get(key).await?;
    if hex::encode(trireme_common::crypto::sha256(&bytes)) != key.name {
        return Err(trireme_common::Error::corrupt(
            &path,
            "content does not match its SHA-256 name",
        ));
    }
    let magic = if key.kind == ObjectKind::Index {
        INDEX_MAGIC
    } else {
        SNAPSHOT_MAGIC
    };
    let (wrapped, header_len) = sealed_object_key(&path, &bytes, magic)?;
    if key.kind != ObjectKind::Index {
        return Ok(vec![wrapped]);
    }
    let dek = keys.unwrap(&wrapped).await?;
    let file: IndexFile = open_object(&path, &bytes, header_len, &dek)?;
    let mut out = vec![wrapped];
    out.extend(file.packs.into_iter().map(|p| WrappedKey(p.key)));
    Ok(out)
}
