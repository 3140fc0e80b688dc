//! `command` sources: any program whose stdout is the backup (pg_dump,
//! mysqldump, ...) and whose counterpart restores it from stdin (psql,
//! pg_restore, mysql). An optional check program prints a summary of the
//! data (row counts, checksums); its output at backup time is recorded and
//! must be printed again by the target after a restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, IndexedRepo, RestoreLedger, Snapshot};

use super::process::Program;
use super::{
    absolute, check_secret_file, drill_rank, BackupRequest, JobContext, Kind, RestoreReport, Source,
};

/// The `command` kind.
pub static KIND: Kind = Kind {
    name: "command",
    drill_rank: drill_rank::OTHER,
    parse: |t, base| Ok(Arc::new(CommandSpec::parse(t, base)?)),
};

/// Position key holding the check program's output at backup time.
pub const CHECK_OUTPUT: &str = "check.output";
/// Position key set when the data changed while it was dumped.
pub const CHECK_SKIPPED: &str = "check.skipped";
/// Longest check output recorded.
const MAX_CHECK_OUTPUT: usize = 4096;

/// A `command` source.
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// Writes the backup to stdout.
    pub backup: Vec<String>,
    /// Reads a backup from stdin (needed to restore into this source).
    pub restore: Vec<String>,
    /// Prints a summary of the data to compare after a restore.
    pub check: Vec<String>,
    /// Environment for all three.
    pub env: BTreeMap<String, String>,
    /// `KEY=value` lines (mode 0600) added to the environment: secrets.
    pub env_file: Option<PathBuf>,
    /// The stream's file name in the snapshot.
    pub stream_name: String,
    /// Working directory.
    pub dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    backup: Vec<String>,
    #[serde(default)]
    restore: Vec<String>,
    #[serde(default)]
    check: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    env_file: Option<PathBuf>,
    stream_name: Option<String>,
    dir: Option<PathBuf>,
}

impl CommandSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        if r.backup.is_empty() {
            bail!("`backup` must name a program, e.g. [\"pg_dump\", \"--format=custom\", \"app\"]");
        }
        let env_file = r.env_file.map(|p| absolute(base, &p));
        if let Some(f) = &env_file {
            check_secret_file("env_file", f)?;
        }
        let stream_name = r.stream_name.unwrap_or_else(|| "stdout".into());
        if stream_name.is_empty() || stream_name.contains('/') {
            bail!("stream_name {stream_name:?} must be a file name without '/'");
        }
        Ok(CommandSpec {
            backup: r.backup,
            restore: r.restore,
            check: r.check,
            env: r.env,
            env_file,
            stream_name,
            dir: r.dir.map(|d| absolute(base, &d)),
        })
    }

    fn program(&self, source: &str, which: &str, argv: &[String]) -> Result<Program> {
        let mut p = Program::new(format!("source {source}: {which} command"), argv.to_vec());
        p.env = self.env.clone();
        if let Some(f) = &self.env_file {
            p.env.extend(read_env_file(f)?);
        }
        p.dir = self.dir.clone();
        Ok(p)
    }

    async fn run_check(&self, source: &str) -> Result<Option<String>> {
        if self.check.is_empty() {
            return Ok(None);
        }
        let p = self.program(source, "check", &self.check)?;
        let out = tokio::task::spawn_blocking(move || p.output())
            .await
            .context("check task")??;
        let out = out.trim().to_string();
        if out.len() > MAX_CHECK_OUTPUT {
            bail!(
                "source {source}: the check command printed {} bytes; print a short summary (row counts, checksums), at most {MAX_CHECK_OUTPUT} bytes",
                out.len()
            );
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl Source for CommandSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([("backup".to_string(), self.backup.join(" "))]);
        if !self.restore.is_empty() {
            d.insert("restore".into(), self.restore.join(" "));
        }
        if !self.check.is_empty() {
            d.insert("check".into(), self.check.join(" "));
        }
        d
    }

    async fn backup(
        &self,
        source: &str,
        repo: &IndexedRepo,
        req: BackupRequest,
        _job: &JobContext,
    ) -> Result<Snapshot> {
        let mut opts = req.opts;
        let before = self.run_check(source).await?;
        let reader = self.program(source, "backup", &self.backup)?.reader(None)?;
        let _kill = reader.kill_on_drop();
        let late = opts
            .late_position
            .get_or_insert_with(Default::default)
            .clone();
        let (this, name) = (self.clone(), source.to_string());
        // Once the dump has ended (and before the manifest is written), the
        // check runs again: the recorded output stands only if the data did
        // not change while it was dumped.
        let reader = AtEnd::new(reader, move || {
            let Some(before) = before else { return Ok(()) };
            let p = this
                .program(&name, "check", &this.check)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            let after = p
                .output()
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
            let mut late = late.lock().unwrap_or_else(|e| e.into_inner());
            if after.trim() == before {
                late.insert(CHECK_OUTPUT.into(), before);
            } else {
                tracing::warn!(source = %name, "the check output changed while the dump ran; this snapshot's restore cannot be checked");
                late.insert(
                    CHECK_SKIPPED.into(),
                    "the data changed while it was dumped (check output before and after differ)"
                        .into(),
                );
            }
            Ok(())
        });
        Ok(repo
            .backup(
                BackupInput::Stream {
                    name: self.stream_name.clone(),
                    reader: Box::new(reader),
                },
                opts,
            )
            .await?)
    }

    async fn restore(
        &self,
        source: &str,
        repo: &IndexedRepo,
        snap: &Snapshot,
        job: &JobContext,
        _ledger: Option<&Arc<RestoreLedger>>,
    ) -> Result<RestoreReport> {
        if self.restore.is_empty() {
            bail!("source {source} has no `restore` command: add one (e.g. [\"psql\", \"--single-transaction\", \"app_staging\"]) or restore to a path");
        }
        let p = self.program(source, "restore", &self.restore)?;
        let n = super::restore_into_program(repo, snap, &p, None, &job.progress).await?;
        let mut report = RestoreReport {
            files: 1,
            bytes: n,
            ..Default::default()
        };
        match (super::position(snap, CHECK_OUTPUT), self.check.is_empty()) {
            (Some(expected), false) => {
                let got = self.run_check(source).await?.unwrap_or_default();
                if got != expected {
                    bail!(
                        "source {source}: restore check failed: the check command printed {got:?} after the restore, {expected:?} at backup time"
                    );
                }
                report
                    .checks
                    .push(format!("check command output matches the backup's: {got}"));
            }
            (Some(_), true) => report
                .checks
                .push("not checked: the target source has no `check` command".to_string()),
            (None, _) => report
                .checks
                .push(match super::position(snap, CHECK_SKIPPED) {
                    Some(why) => format!("not checked: {why}"),
                    None => "not checked: the backup recorded no check output".to_string(),
                }),
        }
        Ok(report)
    }
}

/// `KEY=value` lines; `#` comments and blank lines are skipped.
fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>> {
    check_secret_file("env_file", path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read env_file {}", path.display()))?;
    let mut env = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            bail!(
                "env_file {} line {}: expected KEY=value",
                path.display(),
                i + 1
            );
        };
        env.insert(k.trim().to_string(), v.to_string());
    }
    Ok(env)
}

/// A reader that runs `f` once, when `inner` has ended cleanly; an error
/// from `f` is the read's error.
pub(crate) struct AtEnd<R, F> {
    inner: R,
    f: Option<F>,
}

impl<R, F> AtEnd<R, F> {
    pub(crate) fn new(inner: R, f: F) -> Self {
        AtEnd { inner, f: Some(f) }
    }
}

impl<R: std::io::Read, F: FnOnce() -> std::io::Result<()>> std::io::Read for AtEnd<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(f) = self.f.take() {
                f()?;
            }
        }
        Ok(n)
    }
}
