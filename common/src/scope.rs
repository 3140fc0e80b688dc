//! Key scopes: exactly which stored data keys one job may have unwrapped.
//!
//! The controller's key service unwraps a wrapped key for a job only when it
//! is in the job's scope, computed here from the repository:
//!
//! - **Restore of snapshot S**: the repository's id key; S's own key (its
//!   manifest's); the key of one pack holding each chunk S references (tree
//!   stream and file contents); and the keys of the index objects that list
//!   those packs. Snapshots S's restore needs as well (its dependencies,
//!   [`crate::manifest::dependencies`]: a chain recorded in its position as
//!   `<chain>.previous_snapshot`, e.g. TiDB incrementals) add theirs.
//! - **Backup**: the id key; every index key that seals no pack (index
//!   objects have their own key since backups seal them apart from their
//!   data; see `docs/format.md` §3), so the backup can skip chunks the
//!   repository already holds without being able to read them; and for an
//!   incremental backup, the parent snapshot's key and the keys of the packs
//!   holding its tree stream (to compare files with the parent).
//!
//! A job's agent loads only the index objects whose key is in its scope
//! ([`crate::Repository::load_index_scoped`]) and never asks for anything
//! else; a request outside the scope is refused and audited.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::backend::ObjectKind;
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile};
use crate::keys::WrappedKey;
use crate::repo::{IndexedRepo, Repository};

/// Longest chain of previous snapshots a restore scope follows.
const MAX_CHAIN: usize = 10_000;

/// The wrapped keys one job may unwrap.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyScope {
    /// The keys.
    pub keys: HashSet<WrappedKey>,
    /// Snapshots whose keys are in the scope (the restored one and its chain;
    /// a backup's parent), for the audit trail.
    pub snapshots: Vec<Id>,
}

impl KeyScope {
    /// Whether `key` is in the scope.
    pub fn contains(&self, key: &WrappedKey) -> bool {
        self.keys.contains(key)
    }
}

/// The repository's index objects, each with the key its header carries.
pub struct KeyedIndex {
    repo: IndexedRepo,
    /// Index object name → (its key, the packs it lists).
    objects: BTreeMap<String, Arc<(WrappedKey, IndexFile)>>,
}

impl KeyedIndex {
    /// Read every index object of `repo` (the caller holds the master key).
    ///
    /// # Errors
    /// Storage, key and corruption errors: a scope is computed from a whole
    /// index or not at all.
    pub async fn load(repo: &Arc<Repository>) -> Result<Self> {
        Self::refresh(repo, None).await
    }

    /// As [`KeyedIndex::load`], reading only the index objects `previous`
    /// (an earlier load of the same location) does not have: index objects
    /// are immutable, so a controller that keeps the last load reads each
    /// one once, not once per job.
    ///
    /// # Errors
    /// As [`KeyedIndex::load`].
    pub async fn refresh(repo: &Arc<Repository>, previous: Option<&KeyedIndex>) -> Result<Self> {
        let listed = repo.backend().list(ObjectKind::Index).await?;
        let mut objects = BTreeMap::new();
        let mut missing = Vec::new();
        for o in listed {
            match previous.and_then(|p| p.objects.get(&o.key.name)) {
                Some(known) => {
                    objects.insert(o.key.name.clone(), known.clone());
                }
                None => missing.push(o.key),
            }
        }
        let read: Vec<(String, Arc<(WrappedKey, IndexFile)>)> = futures::stream::iter(missing)
            .map(|key| async move {
                let f = repo.read_index_keyed(&key).await?;
                Ok::<_, Error>((key.name, Arc::new(f)))
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        objects.extend(read);
        let mut index = Index::new();
        for o in objects.values() {
            for p in &o.1.packs {
                index.add_pack(p);
            }
        }
        Ok(KeyedIndex {
            repo: IndexedRepo {
                repo: repo.clone(),
                index: Arc::new(index),
                damaged: Arc::default(),
            },
            objects,
        })
    }

    /// How many index objects this load holds.
    pub fn objects(&self) -> usize {
        self.objects.len()
    }

    /// The repository with this load's index (to read snapshots' trees).
    pub fn indexed(&self) -> &IndexedRepo {
        &self.repo
    }

    /// The scope of a restore of `snapshot`.
    ///
    /// # Errors
    /// The snapshot (or one of its chain) is missing or unreadable, or
    /// references a chunk no index lists.
    pub async fn restore_scope(&self, snapshot: &Id) -> Result<KeyScope> {
        let repo = &self.repo.repo;
        let mut scope = KeyScope::default();
        scope.keys.insert(repo.config().wrapped_id_key());
        let mut next = std::collections::VecDeque::from([*snapshot]);
        while let Some(id) = next.pop_front() {
            if scope.snapshots.contains(&id) {
                continue;
            }
            if scope.snapshots.len() >= MAX_CHAIN {
                break;
            }
            scope.snapshots.push(id);
            let (key, snap) = repo.read_snapshot_keyed(&id).await?;
            scope.keys.insert(key);
            next.extend(snap.manifest.dependencies().into_iter().map(|d| d.snapshot));
        }
        let chunks = crate::prune::referenced_by(&self.repo, &scope.snapshots).await?;
        self.add_packs_of(&mut scope, &chunks, "the restore's key scope")?;
        Ok(scope)
    }

    /// Add the keys of the packs holding `chunks`, and of the index objects
    /// that list those packs.
    fn add_packs_of<'a>(
        &self,
        scope: &mut KeyScope,
        chunks: impl IntoIterator<Item = &'a Id>,
        context: &str,
    ) -> Result<()> {
        let mut packs = HashSet::new();
        for c in chunks {
            let (pack, _) = self
                .repo
                .index
                .get(c)
                .ok_or_else(|| self.repo.not_indexed(context, c))?;
            packs.insert(pack.id);
            scope.keys.insert(pack.key.clone());
        }
        for o in self.objects.values() {
            if o.1.packs.iter().any(|p| packs.contains(&p.id)) {
                scope.keys.insert(o.0.clone());
            }
        }
        Ok(())
    }

    /// The scope of a backup, incremental against `parent` when given.
    ///
    /// # Errors
    /// The parent is unreadable or its tree references an unlisted chunk.
    pub async fn backup_scope(&self, parent: Option<&Id>) -> Result<KeyScope> {
        let repo = &self.repo.repo;
        let mut scope = KeyScope::default();
        scope.keys.insert(repo.config().wrapped_id_key());
        let pack_keys: HashSet<&WrappedKey> =
            self.repo.index.packs().iter().map(|p| &p.key).collect();
        for o in self.objects.values() {
            // An index object sealed with its packs' own key (written before
            // index keys were separate) would open those packs too.
            if !pack_keys.contains(&o.0) {
                scope.keys.insert(o.0.clone());
            }
        }
        if let Some(p) = parent {
            scope.snapshots.push(*p);
            let (key, snap) = repo.read_snapshot_keyed(p).await?;
            scope.keys.insert(key);
            self.add_packs_of(&mut scope, &snap.manifest.tree, "the parent's tree")?;
        }
        Ok(scope)
    }
}
