//! `volume` sources: any directory (PD, TiKV raw volumes, uploads, ...),
//! backed up as a tree with change detection against the previous snapshot,
//! and restored into the (empty) directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use async_trait::async_trait;
use serde::Deserialize;
use std::os::unix::ffi::OsStrExt;

use trireme_common::glob::PathGlobs;
use trireme_common::{BackupInput, IndexedRepo, PathFilter, RestoreLedger, Snapshot};

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
    /// The directory (with `paths`: the first of them).
    pub path: PathBuf,
    /// With `paths`: every directory, each stored under its full path.
    pub paths: Vec<PathBuf>,
    /// Globs of paths to leave out (see [`trireme_common::glob`]).
    pub exclude: PathGlobs,
    /// Leave out directories holding a file of one of these names.
    pub exclude_if_present: Vec<String>,
    /// Do not cross into other file systems.
    pub one_file_system: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: Option<PathBuf>,
    #[serde(default)]
    paths: Vec<PathBuf>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    exclude_if_present: OneOrMany,
    #[serde(default)]
    one_file_system: bool,
}

/// A name, or a list of names.
#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl VolumeSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        let paths: Vec<PathBuf> = r.paths.iter().map(|p| absolute(base, p)).collect();
        let path = match (r.path, paths.first()) {
            (Some(_), Some(_)) => anyhow::bail!(
                "has both `path` and `paths`: give one directory as `path`, or several as `paths`"
            ),
            (Some(p), None) => p,
            (None, Some(first)) => first.clone(),
            (None, None) => anyhow::bail!(
                "needs `path`, the directory to back up (or `paths`, several directories)"
            ),
        };
        if let Some(root) = paths.iter().find(|p| p.parent().is_none()) {
            anyhow::bail!(
                "paths: {} is the whole file system; give the directories to back up",
                root.display()
            );
        }
        let exclude = PathGlobs::new("exclude", &r.exclude)?;
        let exclude_if_present = match r.exclude_if_present {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(n) => vec![n],
            OneOrMany::Many(v) => v,
        };
        if let Some(bad) = exclude_if_present
            .iter()
            .find(|n| n.is_empty() || n.contains('/') || *n == "." || *n == "..")
        {
            anyhow::bail!(
                "exclude_if_present {bad:?} must be a file name (no '/'), e.g. \".nobackup\""
            );
        }
        Ok(VolumeSpec {
            path: absolute(base, &path),
            paths,
            exclude,
            exclude_if_present,
            one_file_system: r.one_file_system,
        })
    }
}

#[async_trait]
impl Source for VolumeSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([if self.paths.is_empty() {
            ("path".to_string(), self.path.display().to_string())
        } else {
            (
                "paths".to_string(),
                self.paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        }]);
        if !self.exclude.is_empty() {
            d.insert("exclude".into(), self.exclude.describe());
        }
        if !self.exclude_if_present.is_empty() {
            d.insert(
                "exclude_if_present".into(),
                self.exclude_if_present.join(", "),
            );
        }
        if self.one_file_system {
            d.insert("one_file_system".into(), "true".into());
        }
        d
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
        // The source's own settings, and what the policy added.
        if !self.exclude.is_empty() {
            let globs = self.exclude.clone();
            let also = opts.exclude.take();
            opts.exclude = Some(PathFilter(Arc::new(move |rel: &Path| {
                globs.matches_or_inside(rel.as_os_str().as_bytes())
                    || also.as_ref().is_some_and(|f| (f.0)(rel))
            })));
        }
        opts.exclude_if_present
            .extend(self.exclude_if_present.iter().cloned());
        opts.one_file_system |= self.one_file_system;
        Ok(repo
            .backup(
                if self.paths.is_empty() {
                    BackupInput::Tree(self.path.clone())
                } else {
                    BackupInput::Trees(self.paths.clone())
                },
                opts,
            )
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
        if !self.paths.is_empty() {
            anyhow::bail!(
                "this volume source backs up several paths, each stored under its full path: restore it to a path (e.g. --to agent:/srv/restore) and move what you need, or restore one of them there with --path"
            );
        }
        super::restore_to_path(repo, snap, &self.path, job, ledger).await
    }
}
