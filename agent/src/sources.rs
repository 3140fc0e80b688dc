//! Datastore integrations: how each kind of source is backed up, restored
//! and checked.
//!
//! | kind | backup | restore into a source | check after restore |
//! |---|---|---|---|
//! | `volume` | the directory tree | into an empty directory | file count |
//! | `kafka` | closed log segments, indexes and checkpoints (all segments offline) | the partition directories, into an empty directory | partitions and segments |
//! | `command` | a program's stdout | a program's stdin | a check program's output, equal to the backup's |
//! | `redis` | BGSAVE, then the RDB (from the data directory or the replication stream) | stop, place the RDB, start | key count and sampled values |
//! | `mongodb` | `mongodump --archive --gzip` | `mongorestore --archive --gzip` | documents restored = dumped, none failed |
//! | `tidb` | `br backup full` (incremental with `--lastbackupts`) to a staging directory | `br restore full` of the chain | BR's own checksums |
//!
//! Every kind restores to a plain directory too (the files the backup holds),
//! so a snapshot can be inspected or moved by hand.
//!
//! Each kind is one module implementing [`Source`] on its parsed
//! configuration, with a [`Kind`] (its name, drill rank and parser) listed
//! once in [`KINDS`]; nothing outside the kind's module matches on kinds.

pub mod command;
pub mod kafka;
pub mod mongodb;
pub mod process;
pub mod redis;
mod resp;
pub mod tidb;
pub mod volume;

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{
    BackupOptions, ContentKind, IndexedRepo, Overwrite, Progress, RestoreLedger, RestoreOptions,
    Selection, Snapshot,
};

/// Every kind this agent supports, in the order the "not supported" error
/// lists them: the one place that names them all. Config parsing,
/// registration and job dispatch go through it (or through the [`Source`]
/// a kind's parser returns). To add a kind, write a module with a
/// [`Source`] implementation and a `static KIND: Kind`, and add that
/// `KIND` here.
pub static KINDS: &[&Kind] = &[
    &volume::KIND,
    &kafka::KIND,
    &command::KIND,
    &redis::KIND,
    &mongodb::KIND,
    &tidb::KIND,
];

/// The kind named `name`, if this agent supports it.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().copied().find(|k| k.name == name)
}

/// A kind of source: its name, what it tells the controller about itself,
/// and how its part of a `[[source]]` table is read.
#[derive(Debug)]
pub struct Kind {
    /// The `kind` key's value, e.g. `redis`.
    pub name: &'static str,
    /// The order a DR drill restores sources of this kind in, lower first:
    /// what others depend on first, caches last (reported to the controller
    /// with each source; see [`drill_rank`]).
    pub drill_rank: u32,
    /// Read the kind's keys (the table without the keys every source has,
    /// [`COMMON_KEYS`]); relative paths are relative to the path given.
    /// Errors name the key; the caller adds which source it is.
    pub parse: fn(toml::Table, &Path) -> Result<Arc<dyn Source>>,
}

/// Drill ranks ([`Kind::drill_rank`]), spaced so that a new kind can go
/// between two others without renumbering (agents of different versions
/// report to one controller).
pub mod drill_rank {
    /// The database of record (TiDB): everything else may refer to it.
    pub const DATABASE_OF_RECORD: u32 = 10;
    /// Other databases (MongoDB).
    pub const DATABASE: u32 = 20;
    /// Logs and queues (Kafka).
    pub const LOG: u32 = 30;
    /// Caches, rebuilt from the above (Redis).
    pub const CACHE: u32 = 40;
    /// Plain files and program dumps, which nothing is known to depend on.
    pub const OTHER: u32 = 50;
}

/// One configured source of some kind: what each kind does where the
/// agent used to match over kinds. A kind's module implements it on its
/// parsed configuration; [`backup`], [`restore`] and [`restore_job`] add
/// what every kind shares (hooks, timeouts, smoke tests, the restore test's
/// clean-up) around it.
#[async_trait]
pub trait Source: Any + std::fmt::Debug + Send + Sync {
    /// Its kind.
    fn kind(&self) -> &'static Kind;

    /// Facts shown to operators (`trireme sources ls`); never secrets.
    fn details(&self) -> BTreeMap<String, String>;

    /// The directory whose filesystem holds the datastore's data (or the
    /// staging area), to watch its usage; none when the agent cannot see it.
    fn data_path(&self) -> Option<&Path> {
        None
    }

    /// Back up the datastore into `repo` as a snapshot, recording its
    /// position (counts, samples, backup TS) for the restore's checks.
    /// `name` is the source's name, for messages.
    ///
    /// # Errors
    /// The datastore's or its tool's failure, or the repository's.
    async fn backup(
        &self,
        name: &str,
        repo: &IndexedRepo,
        req: BackupRequest,
        job: &JobContext,
    ) -> Result<Snapshot>;

    /// Restore `snap` (a snapshot of this kind) into this source's
    /// datastore, then check the result against what the backup recorded
    /// (counts, sampled values, checksums, a check program's output): the
    /// check is part of the restore because for several kinds it reads what
    /// the restore tool reported. What is created as files is recorded in
    /// `ledger`, when given.
    ///
    /// # Errors
    /// A target that is not ready (not empty, missing settings), the
    /// restore tool's failure, or a check that does not match the backup.
    async fn restore(
        &self,
        name: &str,
        repo: &IndexedRepo,
        snap: &Snapshot,
        job: &JobContext,
        ledger: Option<&Arc<RestoreLedger>>,
    ) -> Result<RestoreReport>;
}

/// One source of this host, as configured.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique on this agent.
    pub name: String,
    /// What it is and how to reach it.
    pub spec: Arc<dyn Source>,
    /// Run before a backup (argv); a failure fails the job.
    pub pre_hook: Vec<String>,
    /// Run after a backup, also after a failed one (argv).
    pub post_hook: Vec<String>,
    /// How long one backup or restore of this source may take.
    pub timeout: Duration,
    /// Run after a restore into this source (argv), e.g. a query the
    /// application depends on; a failure fails the restore.
    pub smoke_test: Vec<String>,
}

impl SourceConfig {
    /// The kind's name, e.g. `redis`.
    pub fn kind(&self) -> &'static str {
        self.spec.kind().name
    }

    /// Facts shown to operators (`trireme sources ls`); never secrets.
    pub fn details(&self) -> BTreeMap<String, String> {
        let mut d = self.spec.details();
        if !self.pre_hook.is_empty() {
            d.insert("pre_hook".into(), self.pre_hook.join(" "));
        }
        if !self.post_hook.is_empty() {
            d.insert("post_hook".into(), self.post_hook.join(" "));
        }
        d
    }

    /// The kind's own configuration, when it is a `T` (e.g.
    /// [`redis::RedisSpec`]).
    pub fn spec_as<T: Source>(&self) -> Option<&T> {
        let any: &dyn Any = &*self.spec;
        any.downcast_ref()
    }
}

/// Keys every `[[source]]` table has, whatever its kind.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    kind: String,
    #[serde(default)]
    pre_hook: Vec<String>,
    #[serde(default)]
    post_hook: Vec<String>,
    timeout: Option<String>,
    #[serde(default)]
    smoke_test: Vec<String>,
}

/// The keys every `[[source]]` table may have; the rest of a table is the
/// kind's.
pub const COMMON_KEYS: &[&str] = &[
    "name",
    "kind",
    "pre_hook",
    "post_hook",
    "timeout",
    "smoke_test",
];

/// Parse one `[[source]]` table; relative paths are relative to `base`.
///
/// # Errors
/// What is wrong, naming the source and the key.
pub fn parse_source(table: toml::Table, base: &Path) -> Result<SourceConfig> {
    let (common, rest): (toml::Table, toml::Table) = table
        .into_iter()
        .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
    let c: Common = common.try_into().context("[[source]]")?;
    let name = c.name;
    let Some(kind) = kind(&c.kind) else {
        bail!(
            "source {name:?}: kind {:?} is not supported by this agent (supported: {})",
            c.kind,
            KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
        );
    };
    let spec = (kind.parse)(rest, base).with_context(|| format!("source {name:?} ({})", c.kind))?;
    let timeout = match &c.timeout {
        None => Duration::from_secs(24 * 3600),
        Some(s) => parse_duration(s).with_context(|| format!("source {name:?}: timeout"))?,
    };
    Ok(SourceConfig {
        name,
        spec,
        pre_hook: c.pre_hook,
        post_hook: c.post_hook,
        timeout,
        smoke_test: c.smoke_test,
    })
}

/// `base/p` unless `p` is absolute.
pub(crate) fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A duration like `30s`, `5m`, `2h`, with a message saying how to write one.
pub(crate) fn parse_duration(s: &str) -> Result<Duration> {
    humantime::parse_duration(s)
        .with_context(|| format!("{s:?} is not a duration; write e.g. \"30s\", \"5m\" or \"2h\""))
}

/// A file holding a secret must not be readable by others.
pub(crate) fn check_secret_file(what: &str, path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{what} {} is readable by other users (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        );
    }
    Ok(())
}

/// What a job gives a source.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job's id (names scratch files, tags the snapshot).
    pub job_id: String,
    /// A scratch directory for this job; the source may create it and must
    /// leave nothing behind.
    pub scratch: PathBuf,
    /// Live counters.
    pub progress: Arc<Progress>,
    /// Longest pre/post hook.
    pub hook_timeout: Duration,
    /// A restore of a tree: which part, and what to do with files already
    /// in the target (default: all of it into a new or empty directory).
    pub tree: TreeRestore,
}

/// Which part of a tree snapshot a restore writes, and over what.
#[derive(Clone, Debug, Default)]
pub struct TreeRestore {
    /// `--path`, `--include`, `--exclude`.
    pub selection: Selection,
    /// `--overwrite`; none: the target must be new or empty.
    pub overwrite: Option<Overwrite>,
}

impl TreeRestore {
    /// The whole snapshot into a new or empty target.
    pub fn is_whole(&self) -> bool {
        self.selection.is_all() && self.overwrite.is_none()
    }

    /// As flags, for messages.
    pub fn describe(&self) -> String {
        let mut s = self.selection.describe();
        if let Some(o) = self.overwrite {
            if !s.is_empty() {
                s.push(' ');
            }
            s.push_str(&format!("--overwrite {o}"));
        }
        s
    }
}

/// A backup to make.
pub struct BackupRequest {
    /// Pipeline settings, with source name, kind, host and tags filled in.
    pub opts: BackupOptions,
    /// The previous snapshot of this source, for change detection and
    /// incremental positions (none for a full backup).
    pub parent: Option<Snapshot>,
}

/// Back up `source` into `repo`: its pre-hook, the backup (within the
/// source's `timeout`), and its post-hook, which runs whatever happened
/// before it (a pre-hook that stopped a service half way included).
///
/// # Errors
/// A failing hook, the source's failure (tool missing, wrong credentials,
/// datastore down), a timeout, or the repository's; no snapshot is written
/// then — except when only the post-hook fails, which fails the job but
/// keeps the snapshot it made.
pub async fn backup(
    source: &SourceConfig,
    repo: &IndexedRepo,
    req: BackupRequest,
    job: &JobContext,
) -> Result<Snapshot> {
    let name = &source.name;
    let pre = process::run_hook(&source.pre_hook, "pre_hook", name, job.hook_timeout).await;
    let result = match pre {
        Err(e) => Err(e),
        Ok(()) => tokio::time::timeout(source.timeout, source.spec.backup(name, repo, req, job))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "source {name}: the backup did not finish within its timeout ({}); it was stopped and nothing was recorded",
                    humantime::format_duration(source.timeout)
                ))
            }),
    };
    let post = process::run_hook(&source.post_hook, "post_hook", name, job.hook_timeout).await;
    let snap = result?;
    post.with_context(|| {
        format!(
            "the backup itself succeeded as snapshot {}",
            snap.id.short()
        )
    })?;
    Ok(snap)
}

/// Where a restore goes.
#[derive(Debug, Clone, Copy)]
pub enum RestoreTarget<'a> {
    /// A new or empty directory (tree snapshots) or a new file (streams).
    Path(&'a Path),
    /// Into the datastore of a source of this agent (usually a staging one).
    Source(&'a SourceConfig),
}

/// What a restore did and checked.
#[derive(Debug, Default, Clone)]
pub struct RestoreReport {
    /// Files written.
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Bytes restored.
    pub bytes: u64,
    /// Integrity checks that passed, one line each.
    pub checks: Vec<String>,
}

/// Restore `snap` to `target`, then check it where the kind can.
///
/// # Errors
/// Repository errors (corrupt data is named), a target that is not empty
/// or is a symbolic link, a failing restore tool, or a check that does not
/// match the backup.
pub async fn restore(
    repo: &IndexedRepo,
    snap: &Snapshot,
    target: RestoreTarget<'_>,
    job: &JobContext,
) -> Result<RestoreReport> {
    restore_recorded(repo, snap, target, job, None).await
}

/// [`restore`], recording what it creates as files in `ledger`.
async fn restore_recorded(
    repo: &IndexedRepo,
    snap: &Snapshot,
    target: RestoreTarget<'_>,
    job: &JobContext,
    ledger: Option<&Arc<RestoreLedger>>,
) -> Result<RestoreReport> {
    let kind = snap.manifest.source_kind.as_str();
    match target {
        RestoreTarget::Path(path) => restore_to_path(repo, snap, path, job, ledger).await,
        RestoreTarget::Source(source) => {
            if !job.tree.is_whole() && source.kind() != "volume" {
                bail!(
                    "{} restores into a {} source only whole: --path, --include, --exclude and --overwrite apply to directory trees (restore to a path, or into a volume source)",
                    job.tree.describe(),
                    source.kind()
                );
            }
            if source.kind() != kind {
                bail!(
                    "snapshot {} is a {kind} backup; source {:?} is a {} source: restore into a {kind} source or to a path",
                    snap.id.short(),
                    source.name,
                    source.kind()
                );
            }
            source
                .spec
                .restore(&source.name, repo, snap, job, ledger)
                .await
        }
    }
}

/// A restore as a job runs it: [`restore`] within `timeout`, then the
/// target source's smoke test (if it has one) on the restored data.
///
/// A restore test (`test`) then removes exactly what the restore created
/// as files (into a path, or a `volume`/`kafka` source's directory) — also
/// when it failed or timed out, and only what it created: a target it
/// refused is left untouched, and nothing that was there before or that
/// someone else wrote meanwhile is removed. Datastore targets keep their
/// data: the next restore replaces it.
///
/// # Errors
/// As [`restore`]; the timeout; the smoke test failing.
pub async fn restore_job(
    repo: &IndexedRepo,
    snap: &Snapshot,
    target: RestoreTarget<'_>,
    job: &JobContext,
    timeout: Duration,
    test: bool,
) -> Result<RestoreReport> {
    let ledger = test.then(|| Arc::new(RestoreLedger::default()));
    let restored = tokio::time::timeout(
        timeout,
        restore_recorded(repo, snap, target, job, ledger.as_ref()),
    )
    .await
    .unwrap_or_else(|_| {
        Err(anyhow!(
            "the restore did not finish within {}",
            humantime::format_duration(timeout)
        ))
    });
    let mut result = match restored {
        Ok(mut report) => smoke_test(target, job).await.map(|checks| {
            report.checks.extend(checks);
            report
        }),
        Err(e) => Err(e),
    };
    if let Some(ledger) = ledger {
        let removed = tokio::task::spawn_blocking(move || ledger.remove())
            .await
            .context("clean-up task")
            .and_then(|r| Ok(r?));
        match removed {
            Ok(r) => {
                if !r.kept.is_empty() {
                    tracing::warn!(kept = ?r.kept, "the restore test left entries it did not create in place");
                }
                if let Ok(report) = &mut result {
                    if r.files + r.dirs > 0 {
                        report.checks.push(format!(
                            "cleaned up: removed the {} files and {} directories the restore created",
                            r.files, r.dirs
                        ));
                    }
                    if !r.kept.is_empty() {
                        report.checks.push(format!(
                            "kept {} entries the restore did not create (e.g. {})",
                            r.kept.len(),
                            r.kept[0].display()
                        ));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "cannot clean up after the restore test")
            }
        }
    }
    result
}

/// Run the target source's smoke test, if it has one.
async fn smoke_test(target: RestoreTarget<'_>, job: &JobContext) -> Result<Vec<String>> {
    match target {
        RestoreTarget::Source(s) if !s.smoke_test.is_empty() => {
            process::run_hook(&s.smoke_test, "smoke_test", &s.name, job.hook_timeout).await?;
            Ok(vec![format!(
                "smoke test {:?} passed",
                s.smoke_test.join(" ")
            )])
        }
        _ => Ok(Vec::new()),
    }
}

/// The snapshot's files: a tree into an empty or new directory (or, as
/// `job.tree` says, part of it, or over what is there), a stream into a new
/// file; never through a symbolic link. What it creates is recorded in
/// `ledger`, when given.
pub async fn restore_to_path(
    repo: &IndexedRepo,
    snap: &Snapshot,
    target: &Path,
    job: &JobContext,
    ledger: Option<&Arc<RestoreLedger>>,
) -> Result<RestoreReport> {
    let progress = &job.progress;
    match snap.manifest.content {
        ContentKind::Tree => {
            let opts = RestoreOptions {
                ledger: ledger.cloned(),
                selection: job.tree.selection.clone(),
                overwrite: job.tree.overwrite,
                ..RestoreOptions::default()
            };
            let s = repo.restore_to_dir(snap, target, &opts).await?;
            progress.files.store(s.files, Ordering::Relaxed);
            progress.bytes_read.store(s.bytes, Ordering::Relaxed);
            let mut checks = vec![if job.tree.selection.is_all() {
                format!(
                    "{} files, {} bytes, as in the snapshot; every chunk's hash verified",
                    s.files, s.bytes
                )
            } else {
                format!(
                    "{} files, {} bytes of the snapshot ({}); every chunk's hash verified",
                    s.files,
                    s.bytes,
                    job.tree.selection.describe()
                )
            }];
            if let Some(mode) = job.tree.overwrite {
                checks.push(overwrite_line(mode, &s));
            }
            Ok(RestoreReport {
                files: s.files,
                dirs: s.dirs,
                symlinks: s.symlinks,
                bytes: s.bytes,
                checks,
            })
        }
        ContentKind::Stream => {
            if !job.tree.is_whole() {
                bail!(
                    "snapshot {} is a stream, restored whole into a new file: {} applies to directory trees",
                    snap.id.short(),
                    job.tree.describe()
                );
            }
            let f = trireme_common::restore::create_new_file(target, ledger.map(|l| &**l))?;
            let n = repo.restore_stream(snap, f).await?;
            progress.bytes_read.store(n, Ordering::Relaxed);
            Ok(RestoreReport {
                files: 1,
                bytes: n,
                ..Default::default()
            })
        }
    }
}

/// What `--overwrite` did, in one line.
fn overwrite_line(mode: Overwrite, s: &trireme_common::RestoreSummary) -> String {
    let mut line = format!(
        "--overwrite {mode}: {} existing files and links replaced, {} kept as they were",
        s.replaced, s.kept
    );
    if s.conflicts > 0 {
        line.push_str(&format!(
            ", {} left alone because something of another kind stands there (with what the snapshot has below them): {}{}",
            s.conflicts,
            s.conflict_paths.join(", "),
            if s.conflicts as usize > s.conflict_paths.len() { ", ..." } else { "" }
        ));
    }
    line
}

/// Feed a stream snapshot into a program's stdin and wait for it.
pub(crate) async fn restore_into_program(
    repo: &IndexedRepo,
    snap: &Snapshot,
    program: &process::Program,
    on_line: Option<process::LineHook>,
    progress: &Progress,
) -> Result<u64> {
    if snap.manifest.content != ContentKind::Stream {
        bail!(
            "snapshot {} is a directory tree, not a stream: restore it to a path",
            snap.id.short()
        );
    }
    let writer = program.writer(snap.manifest.summary.bytes, on_line)?;
    let handle = writer.handle();
    let streamed = repo.restore_stream(snap, writer).await;
    let finished = tokio::task::spawn_blocking(move || handle.finish())
        .await
        .context("restore task")?;
    let n = match (streamed, finished) {
        (Ok(n), Ok(())) => n,
        (Err(e), Ok(())) => return Err(e.into()),
        (Ok(_), Err(tool)) => return Err(tool),
        // Both: the tool's exit (e.g. "No space left on device") and what
        // the stream saw (e.g. corrupt data, or the tool gone).
        (Err(e), Err(tool)) => bail!("{tool:#}; the restore stream: {e}"),
    };
    progress.bytes_read.store(n, Ordering::Relaxed);
    Ok(n)
}

/// A position value recorded at backup time.
pub(crate) fn position<'a>(snap: &'a Snapshot, key: &str) -> Option<&'a str> {
    snap.manifest.position.get(key).map(String::as_str)
}

#[cfg(test)]
mod tests;
