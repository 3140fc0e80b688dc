//! Repository check: quick (every referenced object present, size and stored
//! checksum match) and deep (every object re-read, re-hashed, decrypted and
//! authenticated).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;

use crate::backend::{ObjectKey, ObjectKind};
use crate::crypto::{sha256, Id};
use crate::error::{Error, Result};
use crate::format::{open_blob, pack_header, pack_tail};
use crate::index::{Index, IndexFile};
use crate::manifest::EntryReader;
use crate::repo::{IndexedRepo, Repository};

const HEAD_CONCURRENCY: usize = 32;
const DEEP_CONCURRENCY: usize = 4;

/// What a check found.
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// Index objects read.
    pub indexes: usize,
    /// Packs referenced by the index.
    pub packs: usize,
    /// Snapshots checked.
    pub snapshots: usize,
    /// Chunks referenced by snapshots.
    pub chunks: usize,
    /// Bytes re-read (deep check).
    pub bytes_read: u64,
    /// Packs no index refers to (left by interrupted backups or an interrupted
    /// prune; harmless; prune leaves them alone).
    pub unreferenced_packs: Vec<String>,
    /// Problems, each naming the object at fault.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether the repository is sound.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Repository {
    /// Check the repository; `deep` re-reads every pack.
    ///
    /// Problems are collected, not returned as errors, so one damaged object
    /// does not hide others.
    ///
    /// # Errors
    /// Only when the location cannot be listed at all.
    pub async fn check(self: &Arc<Self>, deep: bool) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let backend = self.backend().clone();

        // 1. Index objects: each must read, hash to its name and authenticate.
        let mut index = Index::new();
        let listed = backend.list(ObjectKind::Index).await?;
        report.indexes = listed.len();
        let files: Vec<(ObjectKey, Result<IndexFile>)> = futures::stream::iter(listed)
            .map(|o| async move {
                let r = self.read_index(&o.key).await;
                (o.key, r)
            })
            .buffer_unordered(HEAD_CONCURRENCY)
            .collect()
            .await;
        for (key, r) in files {
            match r {
                Ok(f) => f.packs.iter().for_each(|p| index.add_pack(p)),
                Err(e) => report.problems.push(format!("{key}: {e}")),
            }
        }
        report.packs = index.packs().len();

        // 2. Packs: present, right size, right stored checksum.
        let listed_packs: HashMap<String, u64> = backend
            .list(ObjectKind::Pack)
            .await?
            .into_iter()
            .map(|o| (o.key.name, o.size))
            .collect();
        let indexed: HashSet<String> = index.packs().iter().map(|p| p.id.to_hex()).collect();
        report.unreferenced_packs = listed_packs
            .keys()
            .filter(|k| !indexed.contains(*k))
            .map(|k| ObjectKey::new(ObjectKind::Pack, k.clone()).path())
            .collect();
        report.unreferenced_packs.sort();
        let heads: Vec<Option<String>> = futures::stream::iter(index.packs().to_vec())
            .map(|p| {
                let backend = backend.clone();
                async move {
                    let key = ObjectKey::new(ObjectKind::Pack, p.id.to_hex());
                    match backend.head(&key).await {
                        Ok(None) => Some(format!("{key}: missing (referenced by the index)")),
                        Ok(Some(m)) if m.size != p.size => Some(format!(
                            "{key}: size {} but the index records {} (truncated or replaced)",
                            m.size, p.size
                        )),
                        Ok(Some(m)) if m.sha256.is_some_and(|s| s != p.id.0) => Some(format!(
                            "{key}: the store's checksum does not match the pack's name"
                        )),
                        Ok(Some(_)) => None,
                        Err(e) => Some(format!("{key}: {e}")),
                    }
                }
            })
            .buffer_unordered(HEAD_CONCURRENCY)
            .collect()
            .await;
        report.problems.extend(heads.into_iter().flatten());

        // 3. Deep: re-read every indexed pack.
        let indexed_repo = IndexedRepo {
            repo: self.clone(),
            index: Arc::new(index),
            damaged: Arc::default(),
        };
        if deep {
            let results: Vec<(u64, Vec<String>)> =
                futures::stream::iter(indexed_repo.index.packs().to_vec())
                    .map(|p| {
                        let r = indexed_repo.clone();
                        async move { r.deep_check_pack(p.id).await }
                    })
                    .buffer_unordered(DEEP_CONCURRENCY)
                    .collect()
                    .await;
            for (n, problems) in results {
                report.bytes_read += n;
                report.problems.extend(problems);
            }
        }

        // 4. Snapshots: readable, and every chunk they name is indexed.
        let snaps = backend.list(ObjectKind::Snapshot).await?;
        report.snapshots = snaps.len();
        let mut referenced: HashSet<Id> = HashSet::new();
        for o in snaps {
            let Some(id) = Id::from_hex(&o.key.name) else {
                report
                    .problems
                    .push(format!("{}: name is not a SHA-256", o.key));
                continue;
            };
            let snap = match self.read_snapshot(&id).await {
                Ok(s) => s,
                Err(e) => {
                    report.problems.push(format!("{}: {e}", o.key));
                    continue;
                }
            };
            let r = indexed_repo.clone();
            let handle = tokio::runtime::Handle::current();
            let (problems, chunks) =
                tokio::task::spawn_blocking(move || r.check_tree(&handle, &snap))
                    .await
                    .map_err(|e| Error::Pipeline(format!("check task: {e}")))?;
            report.problems.extend(problems);
            referenced.extend(chunks);
        }
        report.chunks = referenced.len();
        Ok(report)
    }
}

impl IndexedRepo {
    /// Walk a snapshot's tree stream; every chunk must be indexed.
    fn check_tree(
        &self,
        handle: &tokio::runtime::Handle,
        snap: &crate::repo::Snapshot,
    ) -> (Vec<String>, HashSet<Id>) {
        let name = format!("snapshots/{}", snap.id);
        let mut problems = Vec::new();
        let mut chunks = HashSet::new();
        for id in &snap.manifest.tree {
            if !self.index.contains(id) {
                problems.push(format!("{name}: tree chunk {} is in no index", id.to_hex()));
            }
            chunks.insert(*id);
        }
        if !problems.is_empty() {
            return (problems, chunks);
        }
        let mut entries = EntryReader::new(
            self.chunk_reader(handle.clone(), snap.manifest.tree.clone()),
            name.clone(),
        );
        loop {
            match entries.next_entry() {
                Ok(Some(e)) => {
                    for id in &e.chunks {
                        if chunks.insert(*id) && !self.index.contains(id) {
                            problems.push(format!(
                                "{name}: {} references chunk {} which is in no index",
                                String::from_utf8_lossy(&e.path),
                                id.to_hex()
                            ));
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    problems.push(format!("{name}: cannot read its tree: {e}"));
                    break;
                }
            }
        }
        (problems, chunks)
    }

    /// Re-read one pack: its bytes must hash to its name, its header must
    /// authenticate and agree with the index, and every blob must decrypt and
    /// hash to its chunk id.
    async fn deep_check_pack(&self, id: Id) -> (u64, Vec<String>) {
        let key = ObjectKey::new(ObjectKind::Pack, id.to_hex());
        let name = key.path();
        let bytes = match self.repo.backend().get(&key).await {
            Ok(b) => b,
            Err(e) => return (0, vec![format!("{name}: {e}")]),
        };
        let n = bytes.len() as u64;
        let this = self.clone();
        let problems = tokio::task::spawn_blocking(move || -> Vec<String> {
            if sha256(&bytes) != id.0 {
                return vec![format!(
                    "{name}: content does not match its SHA-256 name (bit rot or tampering)"
                )];
            }
            let tail = match pack_tail(&name, &bytes) {
                Ok(t) => t,
                Err(e) => return vec![e.to_string()],
            };
            let dek = match tokio::runtime::Handle::current()
                .block_on(this.repo.keys().unwrap(&tail.wrapped))
            {
                Ok(k) => k,
                Err(e) => return vec![format!("{name}: {e}")],
            };
            let entries = match pack_header(&name, &bytes, &tail, &dek) {
                Ok(e) => e,
                Err(e) => return vec![e.to_string()],
            };
            let mut problems = Vec::new();
            for e in &entries {
                if let Some((p, ie)) = this.index.get(&e.id) {
                    if p.id == id && ie != *e {
                        problems.push(format!(
                            "{name}: chunk {} disagrees with the index",
                            e.id.short()
                        ));
                    }
                }
                let sealed = &bytes[e.offset as usize..(e.offset + e.length) as usize];
                if let Err(err) = open_blob(&name, e, sealed, &dek, this.repo.hasher()) {
                    problems.push(err.to_string());
                }
            }
            problems
        })
        .await
        .unwrap_or_else(|e| vec![format!("check task failed: {e}")]);
        (n, problems)
    }
}
