//! Rebuilding the catalog from the objects at one location, for a new
//! controller that lost the old one's state directory: with the master key
//! (imported from its recovery export), every snapshot manifest at the
//! location is read and recorded — its source, agent, time, counters,
//! datastore position and the snapshots it depends on — with the sources
//! it names and each source's newest snapshot as the parent of its next
//! incremental. The replication loop
//! then finds the copies at the other locations and verifies them.
//!
//! Agents are named by the `agent:<name>` tag their snapshots carry (older
//! snapshots without it: by their host name). Policies are not in the
//! repository: apply them again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trireme_common::{Repository, Snapshot};

use crate::catalog::{Catalog, CopyState, SnapshotRecord, SourceId, SourceRecord};
use crate::error::Result;
use crate::jobs::remember_latest_in;

/// The tag naming the agent that made a snapshot.
pub const AGENT_TAG: &str = "agent:";

/// What a rebuild found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RebuildReport {
    /// Snapshot manifests read at the location.
    pub found: usize,
    /// Snapshots added to the catalog.
    pub added: usize,
    /// Snapshots the catalog already had.
    pub known: usize,
    /// Sources added.
    pub sources_added: usize,
    /// Snapshots whose source or agent name is not valid in the catalog.
    pub skipped: Vec<String>,
}

/// The agent that made `s`: its `agent:` tag, else its host.
pub fn agent_of(s: &Snapshot) -> String {
    s.manifest
        .tags
        .iter()
        .find_map(|t| t.strip_prefix(AGENT_TAG))
        .map_or_else(|| s.manifest.host.clone(), str::to_string)
}

/// Read every snapshot at `repo` (the repository at location `location`) into
/// `catalog`.
///
/// # Errors
/// Storage and key errors reading the location (a wrong key is named);
/// catalog errors.
pub async fn rebuild(
    catalog: &Catalog,
    repo: &Repository,
    location: &str,
    now: DateTime<Utc>,
) -> Result<RebuildReport> {
    let snaps = repo.snapshots().await?;
    let mut report = RebuildReport {
        found: snaps.len(),
        ..Default::default()
    };
    let mut sources: BTreeMap<SourceId, SourceRecord> = BTreeMap::new();
    for s in snaps {
        let agent = agent_of(&s);
        let m = &s.manifest;
        let source = match SourceId::new(agent.clone(), m.source.clone()) {
            Ok(id) => id,
            Err(e) => {
                report
                    .skipped
                    .push(format!("snapshot {}: {e}", s.id.short()));
                continue;
            }
        };
        if catalog.snapshots().get(&s.id)?.is_some() {
            report.known += 1;
            continue;
        }
        let time = DateTime::from_timestamp_nanos(m.started_ns);
        let mut record = SnapshotRecord {
            id: s.id,
            source: source.clone(),
            agent,
            time,
            size: m.summary.bytes,
            summary: m.summary.clone(),
            job: None,
            copies: BTreeMap::from([(location.to_string(), CopyState::Copied { at: now })]),
            position: m.position.clone(),
            depends_on: Vec::new(),
        };
        // Recomputed from the manifest's position, as when it was recorded.
        record.derive_dependencies();
        catalog.transaction_durable(|tx| {
            tx.snapshots.insert(&record.id, &record)?;
            remember_latest_in(tx, &record)
        })?;
        report.added += 1;
        let entry = sources.entry(source).or_insert_with(|| SourceRecord {
            kind: m.source_kind.clone(),
            details: BTreeMap::new(),
            last_seen: time,
        });
        if time > entry.last_seen {
            entry.last_seen = time;
            entry.kind.clone_from(&m.source_kind);
        }
    }
    for (id, rec) in sources {
        if catalog.sources().get(&id)?.is_none() {
            catalog.sources().insert(&id, &rec)?;
            report.sources_added += 1;
        }
    }
    catalog.flush()?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use trireme_common::backend::MemoryBackend;
    use trireme_common::{
        BackupInput, BackupOptions, ChunkerParams, Dependency, DynBackend, Id, LocalKeyFile,
    };

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuilt_catalog_knows_what_each_snapshot_depends_on() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(LocalKeyFile::create(&dir.path().join("key")).unwrap());
        let backend: DynBackend = Arc::new(MemoryBackend::new());
        let repo = Arc::new(
            Repository::init(backend, key, ChunkerParams::default())
                .await
                .unwrap(),
        );
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("f"), b"backup data").unwrap();
        let mut previous: Option<Id> = None;
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut opts = BackupOptions::new("tidb", "tidb", "db-1");
            if let Some(p) = previous {
                opts.position
                    .insert("tidb.previous_snapshot".into(), p.to_hex());
            }
            let s = repo
                .load_index()
                .await
                .unwrap()
                .backup(BackupInput::Tree(src.clone()), opts)
                .await
                .unwrap();
            previous = Some(s.id);
            ids.push(s.id);
        }
        let catalog = Catalog::open(dir.path().join("catalog")).unwrap();
        let report = rebuild(&catalog, &repo, "loc1", Utc::now()).await.unwrap();
        assert_eq!(report.added, 3);
        let deps = |id: &Id| catalog.snapshots().get(id).unwrap().unwrap().depends_on;
        assert!(deps(&ids[0]).is_empty());
        for i in 1..3 {
            assert_eq!(
                deps(&ids[i]),
                vec![Dependency {
                    snapshot: ids[i - 1],
                    chain: "tidb".into()
                }]
            );
        }
    }
}
