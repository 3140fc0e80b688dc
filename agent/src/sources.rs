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

pub mod command;
pub mod kafka;
pub mod mongodb;
pub mod process;
pub mod redis;
mod resp;
pub mod tidb;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use trireme_common::{
    BackupInput, BackupOptions, ContentKind, IndexedRepo, Progress, RestoreLedger, RestoreOptions,
    Snapshot,
};

/// Source kinds this agent can back up.
pub const KINDS: &[&str] = &["volume", "kafka", "command", "redis", "mongodb", "tidb"];

/// One source of this host, as configured.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Unique on this agent.
    pub name: String,
    /// What it is and how to reach it.
    pub spec: SourceSpec,
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
    /// The kind, e.g. `redis`.
    pub fn kind(&self) -> &'static str {
        self.spec.kind()
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
}

/// A plain directory.
#[derive(Debug, Clone)]
pub struct VolumeSpec {
    /// The directory.
    pub path: PathBuf,
}

/// What a source is, per kind.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    /// Any directory (PD, TiKV raw volumes, uploads, ...).
    Volume(VolumeSpec),
    /// A Kafka log directory.
    Kafka(kafka::KafkaSpec),
    /// A dump program and its restore counterpart.
    Command(command::CommandSpec),
    /// A Redis instance.
    Redis(redis::RedisSpec),
    /// A MongoDB deployment, through mongodump/mongorestore.
    Mongodb(mongodb::MongoSpec),
    /// A TiDB cluster, through BR.
    Tidb(tidb::TidbSpec),
}

impl SourceSpec {
    /// The kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Volume(_) => "volume",
            SourceSpec::Kafka(_) => "kafka",
            SourceSpec::Command(_) => "command",
            SourceSpec::Redis(_) => "redis",
            SourceSpec::Mongodb(_) => "mongodb",
            SourceSpec::Tidb(_) => "tidb",
        }
    }

    /// The directory whose filesystem holds the datastore's data (or the
    /// staging area), to watch its usage; none when the agent cannot see it.
    pub fn data_path(&self) -> Option<&Path> {
        match self {
            SourceSpec::Volume(v) => Some(&v.path),
            SourceSpec::Kafka(k) => Some(&k.path),
            SourceSpec::Redis(r) => r.data_dir.as_deref(),
            SourceSpec::Tidb(t) => Some(&t.staging_dir),
            SourceSpec::Command(_) | SourceSpec::Mongodb(_) => None,
        }
    }

    fn details(&self) -> BTreeMap<String, String> {
        match self {
            SourceSpec::Volume(v) => {
                BTreeMap::from([("path".to_string(), v.path.display().to_string())])
            }
            SourceSpec::Kafka(k) => k.details(),
            SourceSpec::Command(c) => c.details(),
            SourceSpec::Redis(r) => r.details(),
            SourceSpec::Mongodb(m) => m.details(),
            SourceSpec::Tidb(t) => t.details(),
        }
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

const COMMON_KEYS: &[&str] = &[
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
    let ctx = || format!("source {name:?} ({})", c.kind);
    let spec = match c.kind.as_str() {
        "volume" => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Raw {
                path: Option<PathBuf>,
            }
            let r: Raw = rest.try_into().with_context(ctx)?;
            let path = r
                .path
                .with_context(|| format!("{}: needs `path`, the directory to back up", ctx()))?;
            SourceSpec::Volume(VolumeSpec {
                path: absolute(base, &path),
            })
        }
        "kafka" => SourceSpec::Kafka(kafka::KafkaSpec::parse(rest, base).with_context(ctx)?),
        "command" => {
            SourceSpec::Command(command::CommandSpec::parse(rest, base).with_context(ctx)?)
        }
        "redis" => SourceSpec::Redis(redis::RedisSpec::parse(rest, base).with_context(ctx)?),
        "mongodb" => SourceSpec::Mongodb(mongodb::MongoSpec::parse(rest, base).with_context(ctx)?),
        "tidb" => SourceSpec::Tidb(tidb::TidbSpec::parse(rest, base).with_context(ctx)?),
        other => bail!(
            "source {name:?}: kind {other:?} is not supported by this agent (supported: {})",
            KINDS.join(", ")
        ),
    };
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
        Ok(()) => tokio::time::timeout(source.timeout, backup_kind(source, repo, req, job))
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

async fn backup_kind(
    source: &SourceConfig,
    repo: &IndexedRepo,
    req: BackupRequest,
    job: &JobContext,
) -> Result<Snapshot> {
    let BackupRequest { mut opts, parent } = req;
    match &source.spec {
        SourceSpec::Volume(v) => {
            opts.parent = parent.map(|p| p.id);
            Ok(repo.backup(BackupInput::Tree(v.path.clone()), opts).await?)
        }
        SourceSpec::Kafka(k) => k.backup(repo, opts, parent).await,
        SourceSpec::Command(c) => c.backup(&source.name, repo, opts).await,
        SourceSpec::Redis(r) => r.backup(&source.name, repo, opts).await,
        SourceSpec::Mongodb(m) => m.backup(&source.name, repo, opts).await,
        SourceSpec::Tidb(t) => t.backup(&source.name, repo, opts, parent, job).await,
    }
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
        RestoreTarget::Path(path) => restore_to_path(repo, snap, path, &job.progress, ledger).await,
        RestoreTarget::Source(source) => {
            if source.kind() != kind {
                bail!(
                    "snapshot {} is a {kind} backup; source {:?} is a {} source: restore into a {kind} source or to a path",
                    snap.id.short(),
                    source.name,
                    source.kind()
                );
            }
            match &source.spec {
                SourceSpec::Volume(v) => {
                    restore_to_path(repo, snap, &v.path, &job.progress, ledger).await
                }
                SourceSpec::Kafka(k) => k.restore(repo, snap, &job.progress, ledger).await,
                SourceSpec::Command(c) => c.restore(&source.name, repo, snap, job).await,
                SourceSpec::Redis(r) => r.restore(&source.name, repo, snap, job).await,
                SourceSpec::Mongodb(m) => m.restore(&source.name, repo, snap, job).await,
                SourceSpec::Tidb(t) => t.restore(&source.name, repo, snap, job).await,
            }
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

/// The snapshot's files: a tree into an empty or new directory, a stream
/// into a new file; never through a symbolic link. What it creates is
/// recorded in `ledger`, when given.
pub async fn restore_to_path(
    repo: &IndexedRepo,
    snap: &Snapshot,
    target: &Path,
    progress: &Progress,
    ledger: Option<&Arc<RestoreLedger>>,
) -> Result<RestoreReport> {
    match snap.manifest.content {
        ContentKind::Tree => {
            let opts = RestoreOptions {
                ledger: ledger.cloned(),
                ..RestoreOptions::default()
            };
            let s = repo.restore_to_dir(snap, target, &opts).await?;
            progress.files.store(s.files, Ordering::Relaxed);
            progress.bytes_read.store(s.bytes, Ordering::Relaxed);
            Ok(RestoreReport {
                files: s.files,
                dirs: s.dirs,
                symlinks: s.symlinks,
                bytes: s.bytes,
                checks: vec![format!(
                    "{} files, {} bytes, as in the snapshot; every chunk's hash verified",
                    s.files, s.bytes
                )],
            })
        }
        ContentKind::Stream => {
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
