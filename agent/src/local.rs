//! Local mode: one-shot commands straight against a location.

mod browse;
mod dump;
#[cfg(feature = "mount")]
mod mount;
pub use browse::{diff, find, ls, stats, DiffArgs, FindArgs, LsArgs, StatsArgs};
pub use dump::{dump, DumpArgs};
#[cfg(feature = "mount")]
pub use mount::{mount, MountArgs};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, DynKeyProvider, Id, IndexedRepo, LocalKeyFile,
    Location, Overwrite, Progress, Repository, RestoreOptions, Selection, Snapshot,
};

/// Where the repository is and which master key opens it.
#[derive(clap::Args, Clone)]
pub struct RepoArgs {
    /// Location URL: `file:///path` or `s3://bucket/prefix?endpoint=…&region=…`.
    #[arg(long, env = "TRIREME_LOCATION")]
    pub location: String,
    /// Master key file (create one with `trireme-agent keygen`); mode 0600.
    #[arg(long, env = "TRIREME_KEY_FILE")]
    pub key_file: PathBuf,
}

/// Arguments of `trireme-agent backup`.
#[derive(Args)]
pub struct BackupArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Source name (snapshots of the same source chain as parents).
    #[arg(long)]
    source: String,
    /// Source kind recorded in the snapshot.
    #[arg(long, default_value = crate::sources::volume::KIND.name)]
    kind: String,
    /// Host name recorded in the snapshot (default: this machine's).
    #[arg(long)]
    host: Option<String>,
    /// Labels for the snapshot.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Read every file, ignoring the previous snapshot of this source.
    #[arg(long)]
    full: bool,
    /// Read the backup from standard input as one stream.
    #[arg(long, conflicts_with = "path")]
    stdin: bool,
    /// Name of the stream in the snapshot (with --stdin).
    #[arg(long, default_value = "stdin")]
    stream_name: String,
    /// zstd compression level (1–19).
    #[arg(long, default_value_t = trireme_common::backup::DEFAULT_ZSTD_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    zstd_level: i32,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
    /// Directory to back up.
    #[arg(required_unless_present = "stdin")]
    path: Option<PathBuf>,
}

/// Arguments of `trireme-agent restore`.
#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Snapshot id (at least 4 hex digits) or `latest`.
    snapshot: String,
    /// With `latest`: the newest snapshot of this source.
    #[arg(long)]
    source: Option<String>,
    /// Directory to restore into (empty or absent, unless --overwrite).
    #[arg(long, required_unless_present = "stdout")]
    target: Option<PathBuf>,
    /// Write a stream snapshot to standard output.
    #[arg(long, conflicts_with = "target")]
    stdout: bool,
    /// Restore only this subtree (a path from the snapshot's root); it
    /// keeps its place under the target.
    #[arg(long, value_name = "PATH", conflicts_with = "stdout")]
    path: Option<String>,
    /// Restore only entries matching this glob (repeatable): with a `/`
    /// matched from the root (`/etc/*.conf`), without one against every
    /// name (`*.log`); a matching directory comes whole.
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    include: Vec<String>,
    /// Leave out entries matching this glob (repeatable; wins over --include).
    #[arg(long, value_name = "GLOB", conflicts_with = "stdout")]
    exclude: Vec<String>,
    /// Restore into a directory that holds files: `never` keeps them,
    /// `if-changed` replaces those whose size or mtime differ, `always`
    /// replaces them all. Nothing is deleted; no link is followed.
    #[arg(long, value_name = "MODE", conflicts_with = "stdout")]
    overwrite: Option<Overwrite>,
}

fn key_provider(path: &Path) -> Result<DynKeyProvider> {
    Ok(Arc::new(LocalKeyFile::load(path)?))
}

pub(crate) async fn open(args: &RepoArgs) -> Result<Arc<Repository>> {
    let location = Location::parse(&args.location)?;
    let keys = key_provider(&args.key_file)?;
    let backend = location.open().await?;
    match Repository::open(backend.clone(), keys).await {
        Ok(r) => Ok(Arc::new(r)),
        Err(e @ trireme_common::Error::WrongKey(_)) => {
            // Key tables are a controller feature (master-key rotation).
            let rotated = backend
                .list(trireme_common::ObjectKind::Keys)
                .await
                .is_ok_and(|k| !k.is_empty());
            if rotated {
                bail!("{e}; this repository's master key was rotated by trireme-controller (key tables under keys/): local mode reads no key tables, so restore through the controller, or use the key the data was written under");
            }
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn keygen(path: &Path) -> Result<ExitCode> {
    let k = LocalKeyFile::create(path)?;
    println!("created master key {} in {}", k.key_id(), path.display());
    println!("keep this file safe and apart from the backups: without it they cannot be read");
    Ok(ExitCode::SUCCESS)
}

pub async fn init(args: &RepoArgs) -> Result<ExitCode> {
    let location = Location::parse(&args.location)?;
    let keys = key_provider(&args.key_file)?;
    let backend = location.open().await?;
    let repo = Repository::init(backend, keys, ChunkerParams::default()).await?;
    println!("created repository {} at {location}", repo.config().id);
    Ok(ExitCode::SUCCESS)
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

pub async fn backup(a: BackupArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let indexed = repo.load_index().await?;
    let host = a.host.clone().unwrap_or_else(host_name);
    let mut opts = BackupOptions::new(&a.source, &a.kind, &host);
    if a.repo.is_remote() {
        opts.uploads = 4;
    }
    opts.tags = a.tags.clone();
    opts.zstd_level = a.zstd_level;
    let input = if a.stdin {
        BackupInput::Stream {
            name: a.stream_name.clone(),
            reader: Box::new(std::io::stdin()),
        }
    } else {
        let path = a.path.clone().expect("clap requires a path");
        if !a.full {
            opts.parent = latest_of(&repo, &a.source, &host).await?.map(|s| s.id);
        }
        BackupInput::Tree(path)
    };
    let progress = opts.progress.clone();
    let started = Instant::now();
    let ticker = spawn_progress(progress.clone());
    let result = indexed.backup(input, opts).await;
    ticker.abort();
    let snap = result?;
    let secs = started.elapsed().as_secs_f64();
    let s = &snap.manifest.summary;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "snapshot": snap.id.to_hex(),
                "parent": snap.manifest.parent.map(|p| p.to_hex()),
                "seconds": secs,
                "summary": s,
            })
        );
    } else {
        println!("snapshot {} saved ({})", snap.id.short(), snap.id);
        println!(
            "  {} files, {} dirs, {} total; {} files unchanged",
            s.files,
            s.dirs,
            human_bytes(s.bytes),
            s.files_unchanged
        );
        println!(
            "  read {}, new data {} in {} chunks, uploaded {} in {} packs, {:.1}s ({}/s)",
            human_bytes(s.bytes_read),
            human_bytes(s.new_bytes),
            s.new_chunks,
            human_bytes(s.uploaded_bytes),
            s.packs,
            secs,
            human_bytes((s.bytes_read as f64 / secs.max(1e-9)) as u64)
        );
    }
    if s.errors > 0 {
        eprintln!(
            "warning: {} entries could not be read and are not in the snapshot (see the log above)",
            s.errors
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// The newest snapshot of `source` made on `host`, the parent for change detection.
async fn latest_of(repo: &Repository, source: &str, host: &str) -> Result<Option<Snapshot>> {
    Ok(repo
        .snapshots()
        .await?
        .into_iter()
        .rev()
        .find(|s| s.manifest.source == source && s.manifest.host == host))
}

fn spawn_progress(p: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"),
        );
        loop {
            bar.set_message(format!(
                "{} files, read {}, skipped {} unchanged, uploaded {}",
                p.files.load(Ordering::Relaxed),
                human_bytes(p.bytes_read.load(Ordering::Relaxed)),
                human_bytes(p.bytes_skipped.load(Ordering::Relaxed)),
                human_bytes(p.bytes_uploaded.load(Ordering::Relaxed)),
            ));
            bar.tick();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

pub async fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let snap = repo.find_snapshot(&a.snapshot, a.source.as_deref()).await?;
    let indexed: IndexedRepo = repo.load_index().await?;
    let started = Instant::now();
    if a.stdout {
        let n = indexed.restore_stream(&snap, std::io::stdout()).await?;
        eprintln!(
            "restored {} from snapshot {} in {:.1}s",
            human_bytes(n),
            snap.id.short(),
            started.elapsed().as_secs_f64()
        );
    } else {
        let target = a
            .target
            .clone()
            .context("--target or --stdout is required")?;
        let mut ropts = RestoreOptions {
            selection: Selection::new(a.path.as_deref(), &a.include, &a.exclude)?,
            overwrite: a.overwrite,
            ..RestoreOptions::default()
        };
        if a.repo.is_remote() {
            ropts.workers = ropts.workers.max(4);
        }
        let s = indexed.restore_to_dir(&snap, &target, &ropts).await?;
        let secs = started.elapsed().as_secs_f64();
        let part = ropts.selection.describe();
        println!(
            "restored snapshot {}{} to {}: {} files, {} dirs, {} symlinks, {} in {:.1}s ({}/s)",
            snap.id.short(),
            if part.is_empty() {
                String::new()
            } else {
                format!(" ({part})")
            },
            target.display(),
            s.files,
            s.dirs,
            s.symlinks,
            human_bytes(s.bytes),
            secs,
            human_bytes((s.bytes as f64 / secs.max(1e-9)) as u64)
        );
        if let Some(mode) = ropts.overwrite {
            println!(
                "--overwrite {mode}: {} existing files and links replaced, {} kept as they were",
                s.replaced, s.kept
            );
            if s.conflicts > 0 {
                eprintln!(
                    "warning: {} paths left alone because something of another kind stands there (and what the snapshot has below them): {}",
                    s.conflicts,
                    s.conflict_paths.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn snapshots(args: &RepoArgs, source: Option<&str>, json: bool) -> Result<ExitCode> {
    let repo = open(args).await?;
    let snaps: Vec<Snapshot> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| source.is_none_or(|src| s.manifest.source == src))
        .collect();
    if json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id.to_hex(),
                    "source": s.manifest.source,
                    "kind": s.manifest.source_kind,
                    "host": s.manifest.host,
                    "time": humantime::format_rfc3339_seconds(to_system_time(s.manifest.started_ns)).to_string(),
                    "parent": s.manifest.parent.map(|p: Id| p.to_hex()),
                    "content": s.manifest.content,
                    "tags": s.manifest.tags,
                    "summary": s.manifest.summary,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<20} {:<16} {:<16} {:>10} {:>8}",
        "ID", "TIME (UTC)", "SOURCE", "HOST", "SIZE", "FILES"
    );
    for s in &snaps {
        let m = &s.manifest;
        println!(
            "{:<10} {:<20} {:<16} {:<16} {:>10} {:>8}",
            s.id.short(),
            humantime::format_rfc3339_seconds(to_system_time(m.started_ns))
                .to_string()
                .replace('T', " ")
                .trim_end_matches('Z'),
            m.source,
            m.host,
            human_bytes(m.summary.bytes),
            m.summary.files
        );
    }
    println!("{} snapshot(s)", snaps.len());
    Ok(ExitCode::SUCCESS)
}

pub async fn check(args: &RepoArgs, deep: bool, json: bool) -> Result<ExitCode> {
    let repo = open(args).await?;
    let started = Instant::now();
    let r = repo.check(deep).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "deep": deep,
                "ok": r.is_ok(),
                "indexes": r.indexes,
                "packs": r.packs,
                "snapshots": r.snapshots,
                "chunks": r.chunks,
                "bytes_read": r.bytes_read,
                "unreferenced_packs": r.unreferenced_packs,
                "problems": r.problems,
            })
        );
    } else {
        println!(
            "{} check of {}: {} snapshots, {} index objects, {} packs, {} chunks referenced{} in {:.1}s",
            if deep { "deep" } else { "quick" },
            args.location_display(),
            r.snapshots,
            r.indexes,
            r.packs,
            r.chunks,
            if deep { format!(", {} re-read", human_bytes(r.bytes_read)) } else { String::new() },
            started.elapsed().as_secs_f64()
        );
        if !r.unreferenced_packs.is_empty() {
            println!(
                "note: {} pack(s) are referenced by no index (left by an interrupted backup; harmless)",
                r.unreferenced_packs.len()
            );
        }
        for p in &r.problems {
            println!("PROBLEM: {p}");
        }
    }
    if r.is_ok() {
        if !json {
            println!("no problems found");
        }
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("the repository check found {} problem(s)", r.problems.len())
    }
}

impl RepoArgs {
    /// Whether the location is an object store (more latency: more requests in flight).
    fn is_remote(&self) -> bool {
        matches!(Location::parse(&self.location), Ok(Location::S3(_)))
    }

    fn location_display(&self) -> String {
        Location::parse(&self.location).map_or_else(|_| self.location.clone(), |l| l.to_string())
    }
}

pub(crate) fn to_system_time(ns: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// Bytes in binary units, e.g. `1.5 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
