//! `tidb` sources: BR (`br backup full`, incremental with `--lastbackupts`)
//! into a staging directory that the agent then backs up and removes.
//!
//! The backup TS of each snapshot is read back with `br validate decode
//! --field=end-version` and recorded in the snapshot and the controller's
//! catalog; the next incremental backup starts from it. A restore into a
//! `tidb` source replays the chain: the full backup it rests on first, then
//! each incremental in order, each with `br restore full --pd <target>`.
//!
//! BR's `local://` storage is written by every TiKV node to its own disk at
//! that path: `staging_dir` must be one shared mount (e.g. NFS) at the same
//! path on every TiKV host and this agent, as BR's documentation requires.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, Id, IndexedRepo, RestoreLedger, RestoreOptions, Snapshot};

use super::process::Program;
use super::{absolute, drill_rank, BackupRequest, JobContext, Kind, RestoreReport, Source};

/// The `tidb` kind.
pub static KIND: Kind = Kind {
    name: "tidb",
    drill_rank: drill_rank::DATABASE_OF_RECORD,
    parse: |t, base| Ok(Arc::new(TidbSpec::parse(t, base)?)),
};

/// Position key: BR's backup TS (end version) of this snapshot.
pub const BACKUP_TS: &str = "tidb.backup_ts";
/// Position key: `full` or `incremental`.
pub const MODE: &str = "tidb.mode";
/// Position key (incremental): the TS it starts after.
pub const LAST_BACKUP_TS: &str = "tidb.last_backup_ts";
/// Position key (incremental): the snapshot it applies on top of.
pub const PREVIOUS: &str = "tidb.previous_snapshot";

/// Longest chain of incrementals followed on restore.
const MAX_CHAIN: usize = 1000;

/// A `tidb` source.
#[derive(Debug, Clone)]
pub struct TidbSpec {
    /// PD endpoints, `host:port[,host:port...]`.
    pub pd: String,
    /// Where BR writes (shared by every TiKV; see the module docs).
    pub staging_dir: PathBuf,
    /// The br program.
    pub br: String,
    /// `--ratelimit`, MiB/s per TiKV.
    pub ratelimit: Option<u32>,
    /// Extra `br backup` arguments.
    pub backup_args: Vec<String>,
    /// Extra `br restore` arguments.
    pub restore_args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    pd: String,
    staging_dir: PathBuf,
    br: Option<String>,
    ratelimit: Option<u32>,
    #[serde(default)]
    backup_args: Vec<String>,
    #[serde(default)]
    restore_args: Vec<String>,
}

/// Removes a directory when dropped.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.0.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(path = %self.0.display(), error = %e, "cannot remove the BR staging directory");
            }
        }
    }
}

impl TidbSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        if r.pd.split(',').any(|p| p.rsplit_once(':').is_none()) {
            bail!("pd = {:?}: write host:port of PD, e.g. \"pd-0:2379\" (several separated by commas)", r.pd);
        }
        if r.ratelimit == Some(0) {
            bail!("ratelimit = 0 would stop the backup; give MiB/s per TiKV, e.g. 128");
        }
        Ok(TidbSpec {
            pd: r.pd,
            staging_dir: absolute(base, &r.staging_dir),
            br: r.br.unwrap_or_else(|| "br".into()),
            ratelimit: r.ratelimit,
            backup_args: r.backup_args,
            restore_args: r.restore_args,
        })
    }

    fn br(&self, source: &str, what: &str, args: Vec<String>) -> Program {
        let mut argv = vec![self.br.clone()];
        argv.extend(args);
        Program::new(format!("source {source}: {what}"), argv)
    }

    fn storage(dir: &Path) -> String {
        format!("local://{}", dir.display())
    }

    fn staging(&self, name: &str) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.staging_dir)
            .with_context(|| format!("cannot create staging_dir {}", self.staging_dir.display()))?;
        let dir = self.staging_dir.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        Ok(dir)
    }

    /// The snapshots to apply, the full one first.
    async fn chain(repo: &IndexedRepo, snap: &Snapshot) -> Result<Vec<Snapshot>> {
        let mut chain = vec![snap.clone()];
        while let Some(prev) = super::position(chain.last().expect("non-empty"), PREVIOUS) {
            if chain.len() >= MAX_CHAIN {
                bail!(
                    "the incremental chain of {} is longer than {MAX_CHAIN}; make a full backup",
                    snap.id.short()
                );
            }
            let id = Id::from_hex(prev).ok_or_else(|| anyhow!("malformed {PREVIOUS} {prev:?}"))?;
            let p = repo.repo.read_snapshot(&id).await.with_context(|| {
                format!(
                    "incremental snapshot {} needs {} (the backup it applies on), which cannot be read",
                    chain.last().expect("non-empty").id.short(),
                    id.short()
                )
            })?;
            chain.push(p);
        }
        chain.reverse();
        Ok(chain)
    }
}

/// Whether BR's arguments turn its restore checksums off (`--checksum=false`;
/// a Go bool flag takes its value only after `=`).
fn checksums_off(args: &[String]) -> bool {
    args.iter().any(|a| {
        matches!(
            a.strip_prefix("--checksum="),
            Some("false" | "FALSE" | "False" | "f" | "F" | "0")
        )
    })
}

#[async_trait]
impl Source for TidbSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([
            ("pd".to_string(), self.pd.clone()),
            (
                "staging_dir".to_string(),
                self.staging_dir.display().to_string(),
            ),
        ]);
        if let Some(r) = self.ratelimit {
            d.insert("ratelimit".into(), format!("{r} MiB/s per TiKV"));
        }
        d
    }

    fn data_path(&self) -> Option<&Path> {
        Some(&self.staging_dir)
    }

    async fn backup(
        &self,
        source: &str,
        repo: &IndexedRepo,
        req: BackupRequest,
        job: &JobContext,
    ) -> Result<Snapshot> {
        let BackupRequest { mut opts, parent } = req;
        let dir = self.staging(&format!("backup-{}", job.job_id))?;
        let _cleanup = Cleanup(dir.clone());
        let last = parent
            .as_ref()
            .and_then(|p| super::position(p, BACKUP_TS).map(|ts| (ts.to_string(), p.id)));
        let mut args = vec![
            "backup".into(),
            "full".into(),
            format!("--pd={}", self.pd),
            format!("--storage={}", Self::storage(&dir)),
            format!(
                "--log-file={}",
                self.staging_dir
                    .join(format!("br-{}.log", job.job_id))
                    .display()
            ),
        ];
        if let Some(r) = self.ratelimit {
            args.push(format!("--ratelimit={r}"));
        }
        match &last {
            Some((ts, prev)) => {
                args.push(format!("--lastbackupts={ts}"));
                opts.position.insert(MODE.into(), "incremental".into());
                opts.position.insert(LAST_BACKUP_TS.into(), ts.clone());
                opts.position.insert(PREVIOUS.into(), prev.to_hex());
            }
            None => {
                if parent.is_some() {
                    tracing::warn!(%source, "the previous snapshot has no BR backup TS; making a full backup");
                }
                opts.position.insert(MODE.into(), "full".into());
            }
        }
        args.extend(self.backup_args.iter().cloned());
        let backup = self.br(source, "br backup", args);
        let decode = self.br(
            source,
            "br validate decode",
            vec![
                "validate".into(),
                "decode".into(),
                "--field=end-version".into(),
                format!("--storage={}", Self::storage(&dir)),
            ],
        );
        let log = self.staging_dir.join(format!("br-{}.log", job.job_id));
        let ts = tokio::task::spawn_blocking(move || -> Result<String> {
            let ran = backup.output_all();
            let _ = std::fs::remove_file(&log);
            ran?;
            let (out, _) = decode.output_all()?;
            let ts = out
                .lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default()
                .to_string();
            if ts.parse::<u64>().is_err() {
                bail!("cannot read the backup TS: `br validate decode --field=end-version` printed {ts:?}, not a TSO number");
            }
            Ok(ts)
        })
        .await
        .context("br task")??;
        opts.position.insert(BACKUP_TS.into(), ts);
        opts.parent = None;
        Ok(repo.backup(BackupInput::Tree(dir.clone()), opts).await?)
    }

    async fn restore(
        &self,
        source: &str,
        repo: &IndexedRepo,
        snap: &Snapshot,
        job: &JobContext,
        _ledger: Option<&Arc<RestoreLedger>>,
    ) -> Result<RestoreReport> {
        let chain = Self::chain(repo, snap).await?;
        let mut report = RestoreReport::default();
        for (i, s) in chain.iter().enumerate() {
            let dir = self.staging(&format!("restore-{}-{i}", job.job_id))?;
            let _cleanup = Cleanup(dir.clone());
            let r = repo
                .restore_to_dir(s, &dir, &RestoreOptions::default())
                .await?;
            report.files += r.files;
            report.dirs += r.dirs;
            report.bytes += r.bytes;
            let mut args = vec![
                "restore".into(),
                "full".into(),
                format!("--pd={}", self.pd),
                format!("--storage={}", Self::storage(&dir)),
            ];
            if let Some(r) = self.ratelimit {
                args.push(format!("--ratelimit={r}"));
            }
            args.extend(self.restore_args.iter().cloned());
            let p = self.br(source, "br restore", args);
            tokio::task::spawn_blocking(move || p.output_all())
                .await
                .context("br task")??;
            report.checks.push(format!(
                "br restore full of {} ({}, backup TS {}) succeeded, {}",
                s.id.short(),
                super::position(s, MODE).unwrap_or("full"),
                super::position(s, BACKUP_TS).unwrap_or("?"),
                if checksums_off(&self.restore_args) {
                    "not checked: restore_args turn BR's checksums off (--checksum=false)"
                } else {
                    "BR checksums verified"
                }
            ));
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_turned_off_are_seen() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(checksums_off(&args(&["--checksum=false"])));
        assert!(checksums_off(&args(&["--ratelimit=8", "--checksum=0"])));
        assert!(!checksums_off(&args(&["--checksum=true"])));
        assert!(!checksums_off(&args(&["--checksum"])));
        assert!(!checksums_off(&args(&[])));
    }
}
