//! Pruning one location: remove snapshots and the data only they used.
//!
//! [`plan`] reads the location (every index object, every snapshot manifest,
//! and the tree of every snapshot that stays) and works out what can go:
//! the manifests of the snapshots to remove, the packs that hold no chunk a
//! remaining snapshot references, and the index objects that list those
//! packs. [`execute`] carries a plan out, in the order that leaves a
//! readable repository after a crash at any point (see `docs/format.md`,
//! section 12):
//!
//! 1. delete the removed snapshot manifests;
//! 2. write one new index object listing the surviving packs of the index
//!    objects about to be replaced (packs no other index object lists);
//! 3. delete the replaced index objects;
//! 4. delete the packs nothing references any more.
//!
//! Packs holding both referenced and unreferenced chunks are kept whole
//! (their unused bytes are reported; repacking is not done). Packs that no
//! index object lists (left by interrupted backups) are left alone. Every
//! delete goes through the [`Backend`](crate::Backend) trait. A delete the
//! store refuses because the object is locked (S3 Object Lock retention or
//! legal hold, an immutable file) is counted as *locked, kept*: a locked
//! manifest keeps its snapshot (and so the data it references), and a
//! locked index object keeps the packs it lists.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::{sha256, Id};
use crate::error::{Error, Result};
use crate::format::{seal_object, INDEX_MAGIC};
use crate::index::{Index, IndexFile, IndexPack};
use crate::repo::{IndexedRepo, Repository, SessionKey};

/// Objects read or deleted at once.
const CONCURRENCY: usize = 8;

/// What pruning one location would do (and, once executed, the input of
/// [`execute`]).
#[derive(Debug, Clone, Default)]
pub struct PrunePlan {
    /// The location (its URL), for messages.
    pub location: String,
    /// Snapshots to remove that this location holds.
    pub remove: Vec<Id>,
    /// Snapshots asked to be removed that this location does not hold.
    pub absent: Vec<Id>,
    /// Snapshots this location keeps.
    pub kept: Vec<Id>,
    /// Packs to delete, with their sizes.
    pub delete_packs: Vec<(Id, u64)>,
    /// Index objects to replace (they list a pack to delete).
    pub replace_index: Vec<ObjectKey>,
    /// The index object that replaces them, `None` when every pack they
    /// list goes or is listed elsewhere.
    pub new_index: Option<IndexFile>,
    /// Kept packs that also hold unreferenced chunks.
    pub mixed_packs: usize,
    /// Bytes of unreferenced chunks inside kept packs (not freed: there is
    /// no repacking).
    pub unused_bytes: u64,
    /// Packs no index object lists (left alone).
    pub unindexed_packs: usize,
    /// Every index object at the location, as read.
    index_files: Vec<(ObjectKey, IndexFile)>,
    /// Chunks the kept snapshots reference.
    referenced: HashSet<Id>,
}

impl PrunePlan {
    /// Bytes the pack deletions free.
    pub fn pack_bytes(&self) -> u64 {
        self.delete_packs.iter().map(|(_, s)| s).sum()
    }

    /// Every object the plan deletes.
    pub fn deletions(&self) -> Vec<ObjectKey> {
        let mut out: Vec<ObjectKey> = self
            .remove
            .iter()
            .map(|id| ObjectKey::new(ObjectKind::Snapshot, id.to_hex()))
            .collect();
        out.extend(self.replace_index.iter().cloned());
        out.extend(
            self.delete_packs
                .iter()
                .map(|(id, _)| ObjectKey::new(ObjectKind::Pack, id.to_hex())),
        );
        out
    }

    /// Work out the packs and index objects from `referenced`. Every claim
    /// about a pack counts: when index objects disagree on what a pack
    /// holds, the pack goes only if no claim lists a referenced chunk in it
    /// (the conservative claim wins), so a forged or stale claim can keep a
    /// pack but never make one go.
    fn compute_packs(&mut self) {
        let mut packs: BTreeMap<Id, Vec<&IndexPack>> = BTreeMap::new();
        for (_, f) in &self.index_files {
            for p in &f.packs {
                packs.entry(p.id).or_default().push(p);
            }
        }
        let mut delete = Vec::new();
        let (mut mixed, mut unused) = (0, 0);
        for claims in packs.values() {
            let live = claims
                .iter()
                .any(|p| p.blobs.iter().any(|b| self.referenced.contains(&b.id)));
            let first = claims[0];
            if !live {
                delete.push((first.id, first.size));
                continue;
            }
            let dead: u64 = first
                .blobs
                .iter()
                .filter(|b| !self.referenced.contains(&b.id))
                .map(|b| u64::from(b.length))
                .sum();
            if dead > 0 {
                mixed += 1;
                unused += dead;
            }
        }
        let doomed: HashSet<Id> = delete.iter().map(|(id, _)| *id).collect();
        let (replace, keep): (Vec<_>, Vec<_>) = self
            .index_files
            .iter()
            .partition(|(_, f)| f.packs.iter().any(|p| doomed.contains(&p.id)));
        // A surviving pack's entry is carried over unless a kept object
        // lists the very same entry: a kept object that says something else
        // about the pack must not make the replaced object's claim vanish.
        let covered: HashSet<&IndexPack> = keep.iter().flat_map(|(_, f)| f.packs.iter()).collect();
        let mut seen = HashSet::new();
        let survivors: Vec<IndexPack> = replace
            .iter()
            .flat_map(|(_, f)| f.packs.iter())
            .filter(|p| !doomed.contains(&p.id) && !covered.contains(p) && seen.insert(*p))
            .cloned()
            .collect();
        self.replace_index = replace.iter().map(|(k, _)| k.clone()).collect();
        self.new_index = (!survivors.is_empty()).then_some(IndexFile {
            packs: survivors,
            ..IndexFile::default()
        });
        self.delete_packs = delete;
        self.mixed_packs = mixed;
        self.unused_bytes = unused;
    }
}

/// Seals each replacement index once, so that locations pruned with the
/// same plan get byte-identical index objects (the same name everywhere:
/// replication then has nothing to copy between them).
#[derive(Debug, Default)]
pub struct IndexSealer {
    sealed: Mutex<HashMap<[u8; 32], Bytes>>,
    session: tokio::sync::OnceCell<SessionKey>,
}

impl IndexSealer {
    /// An empty sealer.
    pub fn new() -> Self {
        Self::default()
    }

    async fn seal(&self, repo: &Repository, index: &IndexFile) -> Result<Bytes> {
        let mut cbor = Vec::new();
        ciborium::into_writer(index, &mut cbor).expect("CBOR to memory");
        let digest = sha256(&cbor);
        if let Some(b) = lock(&self.sealed).get(&digest) {
            return Ok(b.clone());
        }
        let session = self
            .session
            .get_or_try_init(|| repo.new_session_key())
            .await?;
        let index = repo.attributed(index);
        let bytes = Bytes::from(seal_object(
            INDEX_MAGIC,
            &session.key,
            &session.wrapped,
            &*index,
        ));
        Ok(lock(&self.sealed).entry(digest).or_insert(bytes).clone())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`execute`] did at one location.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Snapshot manifests deleted.
    pub snapshots_removed: Vec<Id>,
    /// The index object written, if any.
    pub index_written: Option<ObjectKey>,
    /// Index objects deleted.
    pub index_deleted: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Bytes freed (packs, index objects and manifests deleted).
    pub bytes_freed: u64,
    /// Objects whose deletion the store refused because they are locked
    /// (Object Lock retention or legal hold): kept.
    pub locked: Vec<ObjectKey>,
    /// Snapshots kept because their manifest is locked.
    pub locked_snapshots: Vec<Id>,
}

/// Whether a delete failed because the object is locked: S3 Object Lock
/// (retention or legal hold: `AccessDenied` on the locked object), or an
/// immutable file (`EPERM`).
pub fn is_locked_refusal(e: &Error) -> bool {
    match e {
        Error::Storage {
            message,
            temporary: false,
            ..
        } => {
            let m = message.to_ascii_lowercase();
            [
                "accessdenied",
                "objectlocked",
                "object lock",
                "retention",
                "legal hold",
                "operation not permitted",
            ]
            .iter()
            .any(|w| m.contains(w))
        }
        _ => false,
    }
}

/// Plan the removal of `remove` (those of them the location holds) at the
/// repository's location. Every other snapshot there is kept, including
/// snapshots the caller does not know about.
///
/// # Errors
/// Storage and key errors; [`Error::Corrupt`] when an index object or a
/// kept snapshot cannot be read, or a kept snapshot references a chunk that
/// no index lists: a location in that state is not pruned (run `check`).
pub async fn plan(repo: &Arc<Repository>, remove: &BTreeSet<Id>) -> Result<PrunePlan> {
    plan_believing(repo, remove, &crate::scope::believe_all).await
}

/// As [`plan`], reading only the index objects `believe` accepts (the
/// controller's: those recorded as written by a checked job or by itself).
/// An object it does not believe is ignored: its packs count as listed by
/// no index object and are left alone; an unreadable one it does not
/// believe does not stop the prune.
///
/// # Errors
/// As [`plan`]; a believed index object that cannot be read.
pub async fn plan_believing(
    repo: &Arc<Repository>,
    remove: &BTreeSet<Id>,
    believe: crate::scope::Belief<'_>,
) -> Result<PrunePlan> {
    let backend = repo.backend().clone();
    let mut plan = PrunePlan {
        location: backend.location().to_string(),
        ..PrunePlan::default()
    };
    let mut here = BTreeSet::new();
    for o in backend.list(ObjectKind::Snapshot).await? {
        let id = Id::from_hex(&o.key.name)
            .ok_or_else(|| Error::corrupt(o.key.path(), "name is not a SHA-256"))?;
        here.insert(id);
    }
    for id in &here {
        if remove.contains(id) {
            plan.remove.push(*id);
        } else {
            plan.kept.push(*id);
        }
    }
    plan.absent = remove.difference(&here).copied().collect();

    // Every index object must read: a pack listed only by an unreadable
    // one would look unlisted, and its chunks unreferenced.
    let listed = backend.list(ObjectKind::Index).await?;
    let read: Vec<Option<(ObjectKey, IndexFile)>> = futures::stream::iter(listed)
        .map(|o| async move {
            match repo.read_index(&o.key).await {
                Ok(f) => Ok(believe(&o.key.name, Some(&f)).then_some((o.key, f))),
                Err(e @ (Error::Corrupt { .. } | Error::Key(_) | Error::WrongKey(_))) => {
                    if believe(&o.key.name, None) {
                        Err(e)
                    } else {
                        Ok(None)
                    }
                }
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    plan.index_files = read.into_iter().flatten().collect();
    plan.index_files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut index = Index::new();
    for (_, f) in &plan.index_files {
        for p in &f.packs {
            index.add_pack(p);
        }
    }
    let indexed: HashSet<String> = index.packs().iter().map(|p| p.id.to_hex()).collect();
    plan.unindexed_packs = backend
        .list(ObjectKind::Pack)
        .await?
        .iter()
        .filter(|o| !indexed.contains(&o.key.name))
        .count();
    let repo = IndexedRepo {
        repo: repo.clone(),
        index: Arc::new(index),
        damaged: Arc::default(),
    };
    plan.referenced = crate::scope::referenced_by(&repo, &plan.kept).await?;
    plan.compute_packs();
    Ok(plan)
}

/// Carry out a plan made by [`plan`] on the same repository, in the crash-safe
/// order of the module documentation. `sealer` shares the sealed
/// replacement index between locations.
///
/// # Errors
/// Storage errors other than locked objects (the repository stays readable:
/// what is left is at most an extra index object or unlisted packs), key
/// errors, and the errors of [`plan`] when a locked manifest's tree must be
/// read.
pub async fn execute(
    repo: &Arc<Repository>,
    mut plan: PrunePlan,
    sealer: &IndexSealer,
) -> Result<PruneReport> {
    let backend = repo.backend().clone();
    let mut report = PruneReport::default();

    // 1. Manifests.
    let sizes: HashMap<ObjectKey, u64> = backend
        .list(ObjectKind::Snapshot)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    for id in plan.remove.clone() {
        let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
        match backend.delete(&key).await {
            Ok(()) => {
                report.bytes_freed += sizes.get(&key).copied().unwrap_or(0);
                report.snapshots_removed.push(id);
            }
            Err(e) if is_locked_refusal(&e) => {
                tracing::warn!(object = %key, location = %plan.location, "locked: kept");
                report.locked.push(key);
                report.locked_snapshots.push(id);
            }
            Err(e) => return Err(e),
        }
    }
    if !report.locked_snapshots.is_empty() {
        // A locked snapshot stays readable, and so must its data.
        let mut index = Index::new();
        for (_, f) in &plan.index_files {
            f.packs.iter().for_each(|p| index.add_pack(p));
        }
        let indexed = IndexedRepo {
            repo: repo.clone(),
            index: Arc::new(index),
            damaged: Arc::default(),
        };
        let more = crate::scope::referenced_by(&indexed, &report.locked_snapshots).await?;
        plan.referenced.extend(more);
        plan.compute_packs();
    }

    // 2. The replacement index, before anything it replaces goes.
    if let Some(new) = &plan.new_index {
        let bytes = sealer.seal(repo, new).await?;
        let sum = sha256(&bytes);
        let key = ObjectKey::new(ObjectKind::Index, hex::encode(sum));
        crate::replicate::put_verified(&backend, &key, bytes, sum).await?;
        report.index_written = Some(key);
    }

    // 3. The replaced index objects; a locked one keeps its packs.
    let index_sizes: HashMap<ObjectKey, u64> = backend
        .list(ObjectKind::Index)
        .await?
        .into_iter()
        .map(|o| (o.key, o.size))
        .collect();
    let mut keep_packs: HashSet<Id> = HashSet::new();
    for key in &plan.replace_index {
        if report.index_written.as_ref() == Some(key) {
            continue;
        }
        match backend.delete(key).await {
            Ok(()) => {
                report.index_deleted += 1;
                report.bytes_freed += index_sizes.get(key).copied().unwrap_or(0);
            }
            Err(e) if is_locked_refusal(&e) => {
                report.locked.push(key.clone());
                if let Some((_, f)) = plan.index_files.iter().find(|(k, _)| k == key) {
                    keep_packs.extend(f.packs.iter().map(|p| p.id));
                }
            }
            Err(e) => return Err(e),
        }
    }

    // 4. The packs.
    let packs: Vec<(Id, u64)> = plan
        .delete_packs
        .iter()
        .filter(|(id, _)| !keep_packs.contains(id))
        .copied()
        .collect();
    let results: Vec<(ObjectKey, u64, Result<()>)> = futures::stream::iter(packs)
        .map(|(id, size)| {
            let backend = backend.clone();
            async move {
                let key = ObjectKey::new(ObjectKind::Pack, id.to_hex());
                let r = backend.delete(&key).await;
                (key, size, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut first_error = None;
    for (key, size, r) in results {
        match r {
            Ok(()) => {
                report.packs_deleted += 1;
                report.bytes_freed += size;
            }
            Err(e) if is_locked_refusal(&e) => report.locked.push(key),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
