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

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::Id;
use crate::error::{Error, Result};
use crate::index::{Index, IndexFile, PackInfo};
use crate::keys::WrappedKey;
use crate::manifest::EntryReader;
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
    /// Backups: the only packs the job may reference (deduplicate
    /// against), when limited; see [`KeyedIndex::packs_where`].
    pub packs: Option<HashSet<Id>>,
    /// The index objects the job loads (the believed ones it needs), when
    /// limited: an object planted at the location, even sealed with a key in
    /// the scope, is never read by the job.
    pub index_objects: Option<BTreeSet<String>>,
}

/// What one snapshot references, as an index resolves it: see
/// [`KeyedIndex::snapshot_refs`].
#[derive(Debug)]
pub struct SnapshotRefs {
    /// The wrapped key in the manifest's header.
    pub key: WrappedKey,
    /// The snapshot.
    pub snapshot: crate::repo::Snapshot,
    /// The packs holding its chunks (one per chunk, preferred ones first).
    pub packs: BTreeMap<Id, PackInfo>,
    /// Chunks found only in packs the caller does not prefer: (chunk, pack).
    pub unpreferred: Vec<(Id, Id)>,
}

impl KeyScope {
    /// Whether `key` is in the scope.
    pub fn contains(&self, key: &WrappedKey) -> bool {
        self.keys.contains(key)
    }
}

/// Which index objects a reader believes: called with each object's name
/// and payload (`None` when it cannot be opened: damaged, or planted by
/// someone without a key that opens it). The controller believes the
/// objects it recorded as written by a checked job (or by itself); local
/// mode believes every readable one ([`believe_all`]).
pub type Belief<'a> = &'a (dyn Fn(&str, Option<&IndexFile>) -> bool + Send + Sync);

/// A [`Belief`] that believes every readable index object.
pub fn believe_all(_: &str, f: Option<&IndexFile>) -> bool {
    f.is_some()
}

/// An index object's payload with the key its header carries.
type Keyed = Arc<(WrappedKey, IndexFile)>;

/// The repository's index objects, each with the key its header carries.
pub struct KeyedIndex {
    repo: IndexedRepo,
    /// Index object name → (its key, the packs it lists); `None`: it could
    /// not be opened.
    objects: BTreeMap<String, Option<Keyed>>,
    /// The objects believed at the last refresh (the index is built from
    /// them alone).
    believed: BTreeSet<String>,
}

impl KeyedIndex {
    /// Read every index object of `repo` (the caller holds the master key).
    ///
    /// # Errors
    /// Storage and key errors; a believed object that cannot be read.
    pub async fn load(repo: &Arc<Repository>) -> Result<Self> {
        Self::refresh(repo, None, &believe_all).await
    }

    /// As [`KeyedIndex::load`], reading only the index objects `previous`
    /// (an earlier load of the same location) does not have: index objects
    /// are immutable, so a controller that keeps the last load reads each
    /// one once, not once per job. The index (and so every scope) is built
    /// from the objects `believe` accepts; the others are kept, unused, so
    /// they are not read again.
    ///
    /// # Errors
    /// Storage and key-service errors; [`Error::Corrupt`] when an object
    /// `believe` requires cannot be opened.
    pub async fn refresh(
        repo: &Arc<Repository>,
        previous: Option<&KeyedIndex>,
        believe: Belief<'_>,
    ) -> Result<Self> {
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
        let read: Vec<(ObjectKey, Option<Keyed>)> = futures::stream::iter(missing)
            .map(|key| async move {
                match repo.read_index_keyed(&key).await {
                    Ok(f) => Ok((key, Some(Arc::new(f)))),
                    // Damaged or planted: believed by nobody, unless the
                    // caller requires it (checked below).
                    Err(Error::Corrupt { .. } | Error::Key(_) | Error::WrongKey(_)) => {
                        Ok((key, None))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        for (key, f) in read {
            objects.insert(key.name, f);
        }
        let mut index = Index::new();
        let mut believed = BTreeSet::new();
        for (name, o) in &objects {
            let file = o.as_ref().map(|o| &o.1);
            if !believe(name, file) {
                continue;
            }
            let Some(f) = file else {
                return Err(Error::corrupt(
                    format!("index/{name}"),
                    "this index object cannot be opened (damaged?), yet it is one the controller recorded; run `trireme verify --deep` to repair it from another location",
                ));
            };
            believed.insert(name.clone());
            for p in &f.packs {
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
            believed,
        })
    }

    /// The believed objects, with their key and payload.
    fn believed_objects(&self) -> impl Iterator<Item = (&String, &(WrappedKey, IndexFile))> {
        self.believed.iter().filter_map(|n| {
            self.objects
                .get(n)
                .and_then(|o| o.as_deref())
                .map(|o| (n, o))
        })
    }

    /// The names of the believed index objects.
    pub fn believed_names(&self) -> &BTreeSet<String> {
        &self.believed
    }

    /// Every readable object (believed or not), with its payload: what a
    /// result check looks through for a job's own objects.
    pub fn readable_objects(&self) -> impl Iterator<Item = (&String, &IndexFile)> {
        self.objects
            .iter()
            .filter_map(|(n, o)| o.as_deref().map(|o| (n, &o.1)))
    }

    /// Names of objects that could not be opened (damaged, or planted).
    pub fn unreadable(&self) -> Vec<String> {
        self.objects
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(n, _)| n.clone())
            .collect()
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
    pub async fn restore_scope(
        &self,
        snapshot: &Id,
        prefer: &(dyn Fn(&WrappedKey) -> bool + Sync),
    ) -> Result<KeyScope> {
        let repo = &self.repo.repo;
        let mut scope = KeyScope {
            index_objects: Some(BTreeSet::new()),
            ..KeyScope::default()
        };
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
        let chunks = referenced_by(&self.repo, &scope.snapshots).await?;
        self.add_packs_of(&mut scope, &chunks, "the restore's key scope", prefer)?;
        Ok(scope)
    }

    /// Add the keys of the packs holding `chunks` (preferring packs whose
    /// key `prefer` accepts), and of the believed index objects that list
    /// those packs.
    fn add_packs_of<'a>(
        &self,
        scope: &mut KeyScope,
        chunks: impl IntoIterator<Item = &'a Id>,
        context: &str,
        prefer: &(dyn Fn(&WrappedKey) -> bool + Sync),
    ) -> Result<()> {
        let (preferred, other) = self.resolve(chunks, context, prefer)?;
        let mut packs = HashSet::new();
        for p in preferred.values().chain(other.iter().map(|(_, p)| p)) {
            packs.insert(p.id);
            scope.keys.insert(p.key.clone());
        }
        for (name, o) in self.believed_objects() {
            if o.1.packs.iter().any(|p| packs.contains(&p.id)) {
                scope.keys.insert(o.0.clone());
                scope
                    .index_objects
                    .get_or_insert_with(BTreeSet::new)
                    .insert(name.clone());
            }
        }
        Ok(())
    }

    /// Resolve `chunks` to packs: one per chunk, a pack whose key `prefer`
    /// accepts when any believed object lists the chunk in one. Returns the
    /// preferred packs and the chunks held only elsewhere, with the pack the
    /// index gives for each.
    ///
    /// # Errors
    /// A chunk no believed index object lists.
    #[allow(clippy::type_complexity)]
    fn resolve<'a>(
        &self,
        chunks: impl IntoIterator<Item = &'a Id>,
        context: &str,
        prefer: &(dyn Fn(&WrappedKey) -> bool + Sync),
    ) -> Result<(BTreeMap<Id, PackInfo>, Vec<(Id, PackInfo)>)> {
        let mut packs = BTreeMap::new();
        let mut other: HashSet<Id> = HashSet::new();
        for c in chunks {
            let (pack, _) = self
                .repo
                .index
                .get(c)
                .ok_or_else(|| self.repo.not_indexed(context, c))?;
            if prefer(&pack.key) {
                packs.insert(pack.id, pack.clone());
            } else {
                other.insert(*c);
            }
        }
        // A chunk first seen in a pack the caller does not prefer may be
        // stored in a preferred one too.
        if !other.is_empty() {
            for (_, o) in self.believed_objects() {
                for p in
                    o.1.packs
                        .iter()
                        .filter(|p| prefer(&WrappedKey(p.key.clone())))
                {
                    let mut found = false;
                    for b in &p.blobs {
                        found |= other.remove(&b.id);
                    }
                    if found {
                        packs.entry(p.id).or_insert_with(|| PackInfo {
                            id: p.id,
                            size: p.size,
                            key: WrappedKey(p.key.clone()),
                        });
                    }
                }
            }
        }
        let mut rest: Vec<(Id, PackInfo)> = other
            .into_iter()
            .filter_map(|c| self.repo.index.get(&c).map(|(p, _)| (c, p.clone())))
            .collect();
        rest.sort_by_key(|(c, p)| (*c, p.id));
        Ok((packs, rest))
    }

    /// The ids of the packs whose wrapped key `keep` accepts (a backup's
    /// dedup limit: the controller passes the packs of the agent's own jobs).
    pub fn packs_where(&self, keep: impl Fn(&WrappedKey) -> bool) -> HashSet<Id> {
        self.repo
            .index
            .packs()
            .iter()
            .filter(|p| keep(&p.key))
            .map(|p| p.id)
            .collect()
    }

    /// Read snapshot `id` and resolve every chunk it references (tree stream
    /// and files) to a pack, preferring packs whose wrapped key `prefer`
    /// accepts when a chunk is listed in several.
    ///
    /// # Errors
    /// The manifest is missing or unreadable ([`Error::NotFound`] when it
    /// is not there), its tree cannot be read, or it references a chunk no
    /// index object lists.
    pub async fn snapshot_refs(
        &self,
        id: &Id,
        prefer: impl Fn(&WrappedKey) -> bool + Sync,
    ) -> Result<SnapshotRefs> {
        let (key, snapshot) = self.repo.repo.read_snapshot_keyed(id).await?;
        let chunks = referenced_by(&self.repo, &[*id]).await?;
        let (packs, rest) = self.resolve(&chunks, "the snapshot", &prefer)?;
        let unpreferred = rest.into_iter().map(|(c, p)| (c, p.id)).collect();
        Ok(SnapshotRefs {
            key,
            snapshot,
            packs,
            unpreferred,
        })
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
        let mut names = BTreeSet::new();
        for (name, o) in self.believed_objects() {
            // An index object sealed with its packs' own key (written before
            // index keys were separate) would open those packs too.
            if !pack_keys.contains(&o.0) {
                scope.keys.insert(o.0.clone());
                names.insert(name.clone());
            }
        }
        scope.index_objects = Some(names);
        if let Some(p) = parent {
            scope.snapshots.push(*p);
            let (key, snap) = repo.read_snapshot_keyed(p).await?;
            scope.keys.insert(key);
            self.add_packs_of(
                &mut scope,
                &snap.manifest.tree,
                "the parent's tree",
                &|_| true,
            )?;
        }
        Ok(scope)
    }
}

/// Every chunk the snapshots `ids` reference (tree stream and files).
pub(crate) async fn referenced_by(repo: &IndexedRepo, ids: &[Id]) -> Result<HashSet<Id>> {
    let mut all = HashSet::new();
    for id in ids {
        let snap = repo.repo.read_snapshot(id).await?;
        let r = repo.clone();
        let handle = tokio::runtime::Handle::current();
        let chunks = tokio::task::spawn_blocking(move || -> Result<HashSet<Id>> {
            let name = format!("snapshots/{}", snap.id);
            let mut chunks: HashSet<Id> = HashSet::new();
            for c in &snap.manifest.tree {
                if !r.index.contains(c) {
                    return Err(r.not_indexed(&name, c));
                }
                chunks.insert(*c);
            }
            let mut entries =
                EntryReader::new(r.chunk_reader(handle, snap.manifest.tree.clone()), &name);
            while let Some(e) = entries.next_entry()? {
                for c in e.chunks {
                    if !r.index.contains(&c) {
                        return Err(r.not_indexed(&name, &c));
                    }
                    chunks.insert(c);
                }
            }
            Ok(chunks)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("prune task: {e}")))??;
        all.extend(chunks);
    }
    Ok(all)
}
