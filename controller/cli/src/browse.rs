//! `trireme ls | diff | find | stats`: look inside snapshots through the
//! controller (it reads the repository; nothing is restored). The text
//! output is that of the agent's local mode (`trireme-agent ls …`): `ls -l`
//! mode strings, the diff marks `+ - M m` and summary line, one `find` line
//! per version of a path, `stats` with its ratios.

use serde_json::{json, Value};
use trireme_client::{with_totp, Controller};
use trireme_proto::v1::{
    DiffSnapshotsReply, DiffSnapshotsRequest, DumpFileRequest, FindFilesReply, FindFilesRequest,
    ListTreeRequest, SnapshotStatsReply, SnapshotStatsRequest, TreeEntryInfo,
};

use crate::output::{one, print_json, println, size, Format};
use crate::{DiffArgs, DumpArgs, FindArgs, LsArgs, StatsArgs};

/// `-rw-r--r--` for an entry of type `kind` with permission bits `m`.
pub fn mode_string(kind: &str, m: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        _ => '-',
    });
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

/// Nanoseconds since the epoch as RFC 3339 (seconds).
fn time_ns(ns: i64) -> String {
    chrono::DateTime::from_timestamp(ns.div_euclid(1_000_000_000), 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| "-".into())
}

fn unix_time(t: i64) -> String {
    crate::output::time(t)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn entry_json(e: &TreeEntryInfo) -> Value {
    json!({
        "path": e.path,
        "type": e.r#type,
        "mode": format!("{:04o}", e.mode),
        "uid": e.uid,
        "gid": e.gid,
        "size": e.size,
        "mtime": time_ns(e.mtime_ns),
        "target": (e.r#type == "symlink").then(|| e.target.clone()),
    })
}

fn entry_line(e: &TreeEntryInfo, long: bool) -> String {
    let mut line = String::new();
    if long {
        line.push_str(&format!(
            "{} {:>6} {:>6} {:>12} {} ",
            mode_string(&e.r#type, e.mode),
            e.uid,
            e.gid,
            e.size,
            time_ns(e.mtime_ns)
        ));
    }
    line.push_str(&e.path);
    if e.r#type == "dir" && e.path != "/" {
        line.push('/');
    }
    if long && e.r#type == "symlink" {
        line.push_str(&format!(" -> {}", e.target));
    }
    line
}

/// `trireme ls`.
///
/// # Errors
/// RPC errors (an unknown snapshot or path: not found).
pub async fn ls(c: &mut Controller, format: Format, a: LsArgs) -> anyhow::Result<()> {
    let r = c
        .operator
        .list_tree(ListTreeRequest {
            snapshot: a.snapshot,
            path: a.path,
            recursive: a.recursive,
            limit: a.limit.unwrap_or(0),
        })
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    if format == Format::Json {
        return print_json(
            &json!({
                "snapshot": r.snapshot,
                "location": r.location,
                "entries": r.entries.iter().map(entry_json).collect::<Vec<_>>(),
                "truncated": r.truncated,
                "note": (!r.note.is_empty()).then_some(&r.note),
            }),
            false,
        );
    }
    let mut lines: Vec<String> = r.entries.iter().map(|e| entry_line(e, a.long)).collect();
    if r.truncated {
        lines.push(format!("note: {}", r.note));
    }
    println(&lines.join("\n"))
}

fn diff_text(r: &DiffSnapshotsReply) -> String {
    let mut lines = Vec::new();
    for c in &r.changes {
        let mark = match c.what.as_str() {
            "added" => '+',
            "removed" => '-',
            "modified" => 'M',
            _ => 'm',
        };
        let size = match mark {
            '+' => format!("{}", c.new_size),
            '-' => format!("{}", c.old_size),
            _ if c.old_size != c.new_size => format!("{} -> {}", c.old_size, c.new_size),
            _ => format!("{}", c.new_size),
        };
        lines.push(format!("{mark} {}  ({size} bytes)", c.path));
    }
    if r.truncated {
        lines.push(format!("note: {}", r.note));
    }
    lines.push(format!(
        "{} added, {} removed, {} modified, {} metadata only; +{} -{} ({} -> {})",
        r.added,
        r.removed,
        r.modified,
        r.metadata,
        size(r.added_bytes),
        size(r.removed_bytes),
        short(&r.from),
        short(&r.to)
    ));
    lines.join("\n")
}

/// `trireme diff`.
///
/// # Errors
/// RPC errors.
pub async fn diff(c: &mut Controller, format: Format, a: DiffArgs) -> anyhow::Result<()> {
    let r = c
        .operator
        .diff_snapshots(DiffSnapshotsRequest {
            from: a.from,
            to: a.to,
        })
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    let v = json!({
        "from": r.from,
        "to": r.to,
        "location": r.location,
        "changes": r.changes.iter().map(|c| json!({
            "path": c.path, "what": c.what, "old_size": c.old_size, "new_size": c.new_size,
        })).collect::<Vec<_>>(),
        "summary": {
            "added": r.added, "removed": r.removed, "modified": r.modified,
            "metadata": r.metadata, "added_bytes": r.added_bytes,
            "removed_bytes": r.removed_bytes,
        },
        "truncated": r.truncated,
    });
    one(format, v, || diff_text(&r))
}

fn find_text(r: &FindFilesReply) -> String {
    let mut lines = Vec::new();
    for v in &r.versions {
        let ids: Vec<&str> = v.snapshots.iter().map(|s| short(&s.id)).collect();
        lines.push(format!(
            "{}  {} bytes, modified {}  in {} snapshot(s): {}",
            v.path,
            v.size,
            time_ns(v.mtime_ns),
            ids.len(),
            ids.join(" ")
        ));
    }
    if r.truncated {
        lines.push(format!("note: {}", r.note));
    }
    let paths: std::collections::BTreeSet<&str> =
        r.versions.iter().map(|v| v.path.as_str()).collect();
    lines.push(format!(
        "{} version(s) of {} path(s) in {} snapshot(s) searched",
        r.versions.len(),
        paths.len(),
        r.snapshots_searched
    ));
    lines.join("\n")
}

/// `trireme find`.
///
/// # Errors
/// RPC errors (invalid globs).
pub async fn find(c: &mut Controller, format: Format, a: FindArgs) -> anyhow::Result<()> {
    let r = c
        .operator
        .find_files(FindFilesRequest {
            patterns: a.patterns,
            source: a.source.map(Into::into),
            since_unix: a.since.map_or(0, |t| t.timestamp()),
            until_unix: a.until.map_or(0, |t| t.timestamp()),
        })
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    if format == Format::Json {
        let v: Vec<Value> = r
            .versions
            .iter()
            .map(|v| {
                json!({
                    "path": v.path,
                    "type": v.r#type,
                    "size": v.size,
                    "mtime": time_ns(v.mtime_ns),
                    "snapshots": v.snapshots.iter().map(|s| {
                        let src = s.source.clone().unwrap_or_default();
                        json!({
                            "id": s.id,
                            "source": format!("{}/{}", src.agent, src.source),
                            "time": unix_time(s.time_unix),
                        })
                    }).collect::<Vec<_>>(),
                })
            })
            .collect();
        return print_json(&Value::Array(v), false);
    }
    println(&find_text(&r))
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

fn stats_text(st: &SnapshotStatsReply) -> String {
    [
        format!("snapshots          {}", st.snapshots),
        format!(
            "files              {} ({} dirs, {} symlinks)",
            st.files, st.dirs, st.symlinks
        ),
        format!(
            "logical size       {} ({} bytes)",
            size(st.logical_bytes),
            st.logical_bytes
        ),
        format!(
            "unique data        {} in {} chunks",
            size(st.unique_bytes),
            st.unique_chunks
        ),
        format!("stored             {}", size(st.stored_bytes)),
        format!(
            "deduplication      {:.2}x",
            ratio(st.logical_bytes, st.unique_bytes)
        ),
        format!(
            "compression        {:.2}x",
            ratio(st.unique_bytes, st.stored_bytes)
        ),
    ]
    .join("\n")
}

/// `trireme stats`.
///
/// # Errors
/// RPC errors (no snapshot to count: not found).
pub async fn stats(c: &mut Controller, format: Format, a: StatsArgs) -> anyhow::Result<()> {
    let st = c
        .operator
        .snapshot_stats(SnapshotStatsRequest {
            snapshot: a.snapshot.unwrap_or_default(),
            source: a.source.map(Into::into),
        })
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    let v = json!({
        "snapshots": st.snapshots,
        "files": st.files,
        "dirs": st.dirs,
        "symlinks": st.symlinks,
        "logical_bytes": st.logical_bytes,
        "unique_chunks": st.unique_chunks,
        "unique_bytes": st.unique_bytes,
        "stored_bytes": st.stored_bytes,
        "dedup_ratio": ratio(st.logical_bytes, st.unique_bytes),
        "compression_ratio": ratio(st.unique_bytes, st.stored_bytes),
        "location": st.location,
    });
    one(format, v, || stats_text(&st))
}

/// `trireme dump`: the file's bytes (or a directory's tar archive, built by
/// the controller) to stdout as they arrive.
///
/// # Errors
/// RPC errors (not found, a link, refusals, no or a wrong TOTP code),
/// a stream that stops early, stdout closed.
pub async fn dump(c: &mut Controller, a: DumpArgs, totp: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stream = c
        .operator
        .dump_file(with_totp(
            DumpFileRequest {
                snapshot: a.snapshot,
                path: a.path,
            },
            totp,
        )?)
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(block) = stream.message().await.map_err(|s| c.error(s))? {
        match out.write_all(&block.data) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Err(crate::output::BrokenPipe.into())
            }
            r => r?,
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_strings_match_ls() {
        assert_eq!(mode_string("file", 0o644), "-rw-r--r--");
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_string("symlink", 0o777), "lrwxrwxrwx");
        assert_eq!(mode_string("file", 0o4755), "-rwsr-xr-x");
        assert_eq!(mode_string("dir", 0o1777), "drwxrwxrwt");
        assert_eq!(mode_string("file", 0o2640), "-rw-r-S---");
    }
}
