//! Local mode's look inside snapshots: `ls`, `diff`, `find`, `stats`
//! (the engine is `trireme_common::browse`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Result};
use clap::Args;
use trireme_common::browse::{display_path, Stats};
use trireme_common::glob::PathGlobs;
use trireme_common::manifest::{EntryKind, TreeEntry};
use trireme_common::Snapshot;

use super::{human_bytes, open, to_system_time, RepoArgs};

/// Arguments of `trireme-agent ls`.
#[derive(Args)]
pub struct LsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The snapshot: an id (or unique prefix), or `latest` with --source.
    snapshot: String,
    /// The directory (or file) to list, from the snapshot's root.
    #[arg(default_value = "/")]
    path: String,
    /// Resolve `latest` among this source's snapshots.
    #[arg(long)]
    source: Option<String>,
    /// Everything below PATH, not only its children.
    #[arg(long, short = 'R')]
    recursive: bool,
    /// Mode, owner, size and modification time, like `ls -l`.
    #[arg(long, short = 'l')]
    long: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `trireme-agent diff`.
#[derive(Args)]
pub struct DiffArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The older snapshot.
    from: String,
    /// The newer snapshot.
    to: String,
    /// Resolve `latest` among this source's snapshots.
    #[arg(long)]
    source: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `trireme-agent find`.
#[derive(Args)]
pub struct FindArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// Glob(s): without `/` matched against names (`*.json`), with `/`
    /// against paths from the root (`/srv/**/export-*.json`).
    #[arg(required = true)]
    patterns: Vec<String>,
    /// Only this source's snapshots.
    #[arg(long)]
    source: Option<String>,
    /// Only snapshots taken at or after this time (RFC 3339, a date, or an
    /// age such as `7d`).
    #[arg(long)]
    since: Option<String>,
    /// Only snapshots taken at or before this time.
    #[arg(long)]
    until: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Arguments of `trireme-agent stats`.
#[derive(Args)]
pub struct StatsArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// One snapshot; without it, every snapshot (of --source, if given).
    snapshot: Option<String>,
    /// Only this source's snapshots.
    #[arg(long)]
    source: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `-rw-r--r--` for a tree entry.
pub fn mode_string(e: &TreeEntry) -> String {
    let mut s = String::with_capacity(10);
    s.push(match e.kind {
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::File => '-',
    });
    let m = e.mode;
    for (shift, special, on, off) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (m >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (bits & 1 != 0, m & special != 0) {
            (true, true) => on,
            (false, true) => off,
            (true, false) => 'x',
            (false, false) => '-',
        });
    }
    s
}

fn time_text(ns: i64) -> String {
    humantime::format_rfc3339_seconds(to_system_time(ns)).to_string()
}

fn entry_json(e: &TreeEntry) -> serde_json::Value {
    serde_json::json!({
        "path": display_path(e),
        "type": e.kind,
        "mode": format!("{:04o}", e.mode & 0o7777),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": time_text(e.mtime_ns),
        "target": (e.kind == EntryKind::Symlink).then(|| String::from_utf8_lossy(&e.target).into_owned()),
    })
}

/// A time given on the command line: RFC 3339, a date (`2026-12-01`,
/// midnight UTC), or an age before now (`36h`, `7d`).
pub fn parse_time(flag: &str, text: &str) -> Result<SystemTime> {
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(&format!("{text}T00:00:00")) {
        return Ok(t);
    }
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(SystemTime::now() - d);
    }
    bail!("{flag} {text:?} is not a time: give RFC 3339 (2026-12-01T10:42:00Z), a date (2026-12-01) or an age (36h, 7d)")
}

pub async fn ls(a: LsArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let snap = repo.find_snapshot(&a.snapshot, a.source.as_deref()).await?;
    let ix = repo.load_index().await?;
    let entries = ix.list(&snap, &a.path, a.recursive).await?;
    if a.json {
        let v: Vec<_> = entries.iter().map(entry_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for e in &entries {
        let mut line = String::new();
        if a.long {
            line.push_str(&format!(
                "{} {:>6} {:>6} {:>12} {} ",
                mode_string(e),
                e.uid,
                e.gid,
                e.size,
                time_text(e.mtime_ns)
            ));
        }
        line.push_str(&display_path(e));
        if e.kind == EntryKind::Dir && !e.path.is_empty() {
            line.push('/');
        }
        if a.long && e.kind == EntryKind::Symlink {
            line.push_str(&format!(" -> {}", String::from_utf8_lossy(&e.target)));
        }
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn diff(a: DiffArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let from = repo.find_snapshot(&a.from, a.source.as_deref()).await?;
    let to = repo.find_snapshot(&a.to, a.source.as_deref()).await?;
    let ix = repo.load_index().await?;
    let (changes, sum) = ix.diff(&from, &to).await?;
    if a.json {
        let v = serde_json::json!({
            "from": from.id.to_hex(),
            "to": to.id.to_hex(),
            "changes": changes,
            "summary": sum,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for c in &changes {
        let size = match c.what.mark() {
            '+' => format!("{}", c.new_size),
            '-' => format!("{}", c.old_size),
            _ if c.old_size != c.new_size => format!("{} -> {}", c.old_size, c.new_size),
            _ => format!("{}", c.new_size),
        };
        println!("{} {}  ({size} bytes)", c.what.mark(), c.path);
    }
    println!(
        "{} added, {} removed, {} modified, {} metadata only; +{} -{} ({} -> {})",
        sum.added,
        sum.removed,
        sum.modified,
        sum.metadata,
        human_bytes(sum.added_bytes),
        human_bytes(sum.removed_bytes),
        from.id.short(),
        to.id.short()
    );
    Ok(ExitCode::SUCCESS)
}

/// The snapshots `find` and `stats` look at: newest first.
async fn chosen(
    repo: &trireme_common::Repository,
    source: Option<&str>,
    since: Option<SystemTime>,
    until: Option<SystemTime>,
) -> Result<Vec<Snapshot>> {
    let mut snaps: Vec<Snapshot> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|s| source.is_none_or(|src| s.manifest.source == src))
        .filter(|s| {
            let t = to_system_time(s.manifest.started_ns);
            since.is_none_or(|x| t >= x) && until.is_none_or(|x| t <= x)
        })
        .collect();
    snaps.sort_by_key(|s| std::cmp::Reverse(s.manifest.started_ns));
    Ok(snaps)
}

pub async fn find(a: FindArgs) -> Result<ExitCode> {
    let globs = PathGlobs::new("find", &a.patterns)?;
    let since = a
        .since
        .as_deref()
        .map(|t| parse_time("--since", t))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|t| parse_time("--until", t))
        .transpose()?;
    let repo = open(&a.repo).await?;
    let snaps = chosen(&repo, a.source.as_deref(), since, until).await?;
    let ix = repo.load_index().await?;
    // One line per version of a path: (path, kind, size, mtime) -> the
    // snapshots holding it, newest first.
    type Version = (String, String, u64, i64);
    let mut versions: BTreeMap<Version, Vec<&Snapshot>> = BTreeMap::new();
    for s in &snaps {
        for e in ix.find(s, &globs).await? {
            let kind = serde_json::to_value(e.kind)?
                .as_str()
                .unwrap_or("")
                .to_string();
            versions
                .entry((display_path(&e), kind, e.size, e.mtime_ns))
                .or_default()
                .push(s);
        }
    }
    // Newest version first within a path; paths in order.
    let mut rows: Vec<(&Version, &Vec<&Snapshot>)> = versions.iter().collect();
    rows.sort_by(|x, y| x.0 .0.cmp(&y.0 .0).then(y.0 .3.cmp(&x.0 .3)));
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .map(|((path, kind, size, mtime), in_snaps)| {
                serde_json::json!({
                    "path": path,
                    "type": kind,
                    "size": size,
                    "mtime": time_text(*mtime),
                    "snapshots": in_snaps.iter().map(|s| serde_json::json!({
                        "id": s.id.to_hex(),
                        "source": s.manifest.source,
                        "host": s.manifest.host,
                        "time": time_text(s.manifest.started_ns),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    for ((path, _, size, mtime), in_snaps) in &rows {
        let ids: Vec<String> = in_snaps.iter().map(|s| s.id.short()).collect();
        println!(
            "{path}  {size} bytes, modified {}  in {} snapshot(s): {}",
            time_text(*mtime),
            ids.len(),
            ids.join(" ")
        );
    }
    println!(
        "{} version(s) of {} path(s) in {} snapshot(s) searched",
        rows.len(),
        rows.iter()
            .map(|r| &r.0 .0)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        snaps.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn stats(a: StatsArgs) -> Result<ExitCode> {
    let repo = open(&a.repo).await?;
    let snaps = match &a.snapshot {
        Some(spec) => vec![repo.find_snapshot(spec, a.source.as_deref()).await?],
        None => chosen(&repo, a.source.as_deref(), None, None).await?,
    };
    if snaps.is_empty() {
        bail!(
            "no snapshot to count{}",
            a.source
                .as_deref()
                .map(|s| format!(" of source {s:?}"))
                .unwrap_or_default()
        );
    }
    let ix = repo.load_index().await?;
    let st: Stats = ix.stats(&snaps).await?;
    if a.json {
        let mut v = serde_json::to_value(&st)?;
        v["dedup_ratio"] = serde_json::json!(st.dedup_ratio());
        v["compression_ratio"] = serde_json::json!(st.compression_ratio());
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("snapshots          {}", st.snapshots);
    println!(
        "files              {} ({} dirs, {} symlinks)",
        st.files, st.dirs, st.symlinks
    );
    println!(
        "logical size       {} ({} bytes)",
        human_bytes(st.logical_bytes),
        st.logical_bytes
    );
    println!(
        "unique data        {} in {} chunks",
        human_bytes(st.unique_bytes),
        st.unique_chunks
    );
    println!("stored             {}", human_bytes(st.stored_bytes));
    println!("deduplication      {:.2}x", st.dedup_ratio());
    println!("compression        {:.2}x", st.compression_ratio());
    Ok(ExitCode::SUCCESS)
}
