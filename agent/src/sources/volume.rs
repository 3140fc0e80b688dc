//! `volume` sources: any directory (PD, TiKV raw volumes, uploads, ...),
//! backed up as a tree with change detection against the previous snapshot,
//! and restored into the (empty) directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, IndexedRepo, RestoreLedger, Snapshot};

use super::{absolute, drill_rank, BackupRequest, JobContext, Kind, RestoreReport, Source};

/// The `volume` kind.
pub static KIND: Kind = Kind {
    name: "volume",
    drill_rank: drill_rank::OTHER,
    parse: |t, base| Ok(Arc::new(VolumeSpec::parse(t, base)?)),
};

/// A plain directory.
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    /// The directory.
    pub path: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<PathBuf>,
}

impl VolumeSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        let path = r.path.context("needs `path`, the directory to back up")?;
        Ok(VolumeSpec {
            path: absolute(base, &path),
        })
    }
}

#[async_trait]
impl Source for VolumeSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("path".to_string(), self.path.display().to_string())])
    }

    fn data_path(&self) -> Option<&Path> {
        Some(&self.path)
    }

    async fn backup(
        &self,
        _name: &str,
        repo: &IndexedRepo,
        req: BackupRequest,
        _job: &JobContext,
    ) -> Result<Snapshot> {
        let BackupRequest { mut opts, parent } = req;
        opts.parent = parent.map(|p| p.id);
        Ok(repo
            .backup(BackupInput::Tree(self.path.clone()), opts)
            .await?)
    }

    async fn restore(
        &self,
        _name: &str,
        repo: &IndexedRepo,
        snap: &Snapshot,
        job: &JobContext,
        ledger: Option<&Arc<RestoreLedger>>,
    ) -> Result<RestoreReport> {
        super::restore_to_path(repo, snap, &self.path, job, ledger).await
    }
}
