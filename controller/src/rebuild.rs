//! Rebuilding the catalog from the objects at one location, for a new
//! controller that lost the old one's state directory: with the master key
//! (imported from its recovery export), every snapshot manifest at the
//! location is read and recorded — its source, agent, time, counters,
//! datastore position and the snapshots it depends on — with the sources
//! it names and each source's newest snapshot as the parent of its next
//! incremental. The replication loop
//! then finds the copies at the other locations and verifies them.
//!
//! Only what the controller's own key vouches for is believed: a snapshot
//! manifest is recorded only when its attribution (job, agent, MAC under
//! that job's attribution key, `docs/format.md` §8) verifies, and its agent
//! is the one the attribution names; index objects are believed (for
//! prune, scopes and result checks) only when theirs verifies. Others
//! (planted by an agent, or written before attribution existed) are
//! reported as skipped. Policies are not in the repository: apply them
//! again.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trireme_common::attribution::{Attributable, CONTROLLER_JOB};
use trireme_common::backend::ObjectKind;
use trireme_common::{Repository, Snapshot};

use crate::catalog::Catalog;
use crate::custody::Custody;
use crate::error::Result;
use crate::jobs::JobId;
use crate::schedule::remember_latest_in;
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::sources::{SourceId, SourceRecord};

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

/// Read every attributed snapshot at `repo` (the repository at location
/// `location`) into `catalog`, and record the attributed index objects as
/// believed.
///
/// # Errors
/// Storage and key errors reading the location (a wrong key is named);
/// catalog errors.
pub async fn rebuild(
    catalog: &Catalog,
    repo: &Repository,
    custody: &Custody,
    location: &str,
    now: DateTime<Utc>,
) -> Result<RebuildReport> {
    let key_of = |j: &[u8; 16], a: &str| custody.job_mac_key(j, a);
    // Index objects whose attribution verifies are believed, and the keys
    // of the packs a job's own objects list go back into the ledger (so
    // the agent's next backups deduplicate against them again).
    let ledger = crate::attribution::Ledger::new(catalog);
    for o in repo.backend().list(ObjectKind::Index).await? {
        let Ok((key, f)) = repo.read_index_keyed(&o.key).await else {
            continue;
        };
        let Some(w) = f.attributed(key_of) else {
            continue;
        };
        let job = (w.job != CONTROLLER_JOB).then(|| JobId(uuid::Uuid::from_bytes(w.job)));
        if let Some(j) = job {
            ledger.record_found(&key, j, &w.agent, now)?;
            for p in &f.packs {
                ledger.record_found(
                    &trireme_common::WrappedKey(p.key.clone()),
                    j,
                    &w.agent,
                    now,
                )?;
            }
        }
        crate::attribution::believe(catalog, [o.key.name], job, now)?;
    }
    let snaps = repo.snapshots().await?;
    let mut report = RebuildReport {
        found: snaps.len(),
        ..Default::default()
    };
    let mut sources: BTreeMap<SourceId, SourceRecord> = BTreeMap::new();
    for s in snaps {
        let m = &s.manifest;
        let Some(writer) = m.attributed(key_of) else {
            report.skipped.push(format!(
                "snapshot {}: not attributed to a job under this controller's key (planted, or written before attribution); not believed",
                s.id.short()
            ));
            continue;
        };
        let agent = writer.agent.clone();
        ledger.record_found(
            &repo.snapshot_key(&s.id).await?,
            JobId(uuid::Uuid::from_bytes(writer.job)),
            &agent,
            now,
        )?;
        if agent_of(&s) != agent {
            report.skipped.push(format!(
                "snapshot {}: its tags name agent {:?} but it was written by a job of {agent:?}; not believed",
                s.id.short(),
                agent_of(&s)
            ));
            continue;
        }
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
            job: Some(JobId(uuid::Uuid::from_bytes(writer.job))),
            copies: BTreeMap::from([(location.to_string(), CopyState::Copied { at: now })]),
            position: m.position.clone(),
            depends_on: Vec::new(),
        };
        // Recomputed from the manifest's position, as when it was recorded.
        record.derive_dependencies();
        catalog.transaction_durable(|tx| {
            tx.snapshots().insert(&record.id, &record)?;
            remember_latest_in(tx, &record)
        })?;
        report.added += 1;
        let entry = sources.entry(source).or_insert_with(|| SourceRecord {
            kind: m.source_kind.clone(),
            details: BTreeMap::new(),
            last_seen: time,
            drill_rank: None,
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
        Repository::init(backend.clone(), key.clone(), ChunkerParams::default())
            .await
            .unwrap();
        // The controller's custody (it upgrades the config with its key),
        // and backups attributed to a job of agent db-1, as in fleet mode.
        let catalog = Catalog::open(dir.path().join("catalog")).unwrap();
        let (custody, _) = crate::custody::prepare(
            &catalog,
            &[("loc1".to_string(), backend.clone())],
            key.clone(),
            Utc::now(),
        )
        .await
        .unwrap();
        let repo = Repository::from_config(backend, key, custody.config_bytes())
            .await
            .unwrap();
        let job = *uuid::Uuid::new_v4().as_bytes();
        repo.set_attribution(trireme_common::attribution::Attribution {
            job,
            agent: "db-1".into(),
            key: custody.job_mac_key(&job, "db-1"),
        });
        let repo = Arc::new(repo);
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
        // A manifest written without attribution (as an agent could plant
        // one) is not believed.
        let planted = Repository::from_config(
            repo.backend().clone(),
            Arc::new(LocalKeyFile::load(&dir.path().join("key")).unwrap()),
            custody.config_bytes(),
        )
        .await
        .unwrap();
        let planted = Arc::new(planted)
            .load_index()
            .await
            .unwrap()
            .backup(
                BackupInput::Tree(src.clone()),
                BackupOptions::new("tidb", "tidb", "db-1"),
            )
            .await
            .unwrap();
        let catalog2 = Catalog::open(dir.path().join("catalog2")).unwrap();
        let report = rebuild(&catalog2, &repo, &custody, "loc1", Utc::now())
            .await
            .unwrap();
        assert_eq!(report.found, 4);
        assert!(
            report.skipped.iter().any(
                |s| s.contains(&planted.id.short().to_string()) && s.contains("not attributed")
            ),
            "{report:?}"
        );
        assert!(catalog2.snapshots().get(&planted.id).unwrap().is_none());
        let catalog = catalog2;
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
