//! The browse RPCs' work (`trireme ls | diff | find | stats`): resolve the
//! snapshots in the catalog, read their tree objects at the first location
//! that answers (the index the controller believes, as for key scopes and
//! result checks: [`Shared::keyed_index`]), run [`trireme_common::browse`],
//! cap the answer, and put who looked at what into the audit chain (a
//! failed look too). No file data is read and no agent is involved. The
//! handlers in [`super::operator`] check the role (viewer or operator).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use trireme_common::browse::{display_path, DiffSummary};
use trireme_common::glob::PathGlobs;
use trireme_common::manifest::{EntryKind, TreeEntry};
use trireme_common::{IndexedRepo, Snapshot};
use trireme_proto::v1 as pb;

use super::actions::Caller;
use super::{blocking, Shared};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::snapshots::SnapshotRecord;
use crate::views::{self, SnapshotFilter};

/// Most entries, changes or found versions one answer carries.
pub const MAX_ENTRIES: usize = 100_000;

/// The audit log's action names.
pub const LS: &str = "ls";
/// See [`LS`].
pub const DIFF: &str = "diff";
/// See [`LS`].
pub const FIND: &str = "find";
/// See [`LS`].
pub const STATS: &str = "stats";

/// The snapshots' manifests and the index, read at the first location (in
/// the configured order, primary first) where all of them can be read.
async fn open(
    shared: &Shared,
    records: &[SnapshotRecord],
) -> Result<(String, IndexedRepo, Vec<Snapshot>)> {
    let mut errors = Vec::new();
    for loc in &shared.locations {
        let read = async {
            let ix = shared.keyed_index(&loc.name, None).await?.indexed().clone();
            let mut snaps = Vec::with_capacity(records.len());
            for r in records {
                snaps.push(ix.repo.read_snapshot(&r.id).await?);
            }
            Ok::<_, trireme_common::Error>((ix, snaps))
        }
        .await;
        match read {
            Ok((ix, snaps)) => return Ok((loc.name.clone(), ix, snaps)),
            Err(e) => errors.push(format!("{}: {e}", loc.name)),
        }
    }
    Err(Error::Unavailable(format!(
        "no location could be read: {}",
        errors.join("; ")
    )))
}

/// Run `work`, auditing it as `action` by `caller` on `target`: `detail`
/// of its answer when it worked, the error when not.
async fn audited<T>(
    shared: &Shared,
    caller: &Caller,
    action: &str,
    target: String,
    work: impl std::future::Future<Output = Result<T>>,
    detail: impl FnOnce(&T) -> String,
) -> Result<T> {
    let out = work.await;
    let event = match &out {
        Ok(v) => Event::by(&caller.id, action, format!("{target}: {}", detail(v))),
        Err(e) => Event::by(&caller.id, action, target).problem(e.to_string()),
    };
    shared.audit(event.from_peer(caller.peer));
    out
}

/// A snapshot path that is not there, as "not found".
fn missing(e: trireme_common::Error) -> Error {
    match e {
        trireme_common::Error::Snapshot(m) => Error::Missing(m),
        e => e.into(),
    }
}

fn kind_name(k: EntryKind) -> &'static str {
    match k {
        EntryKind::File => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink => "symlink",
    }
}

fn entry_info(e: &TreeEntry) -> pb::TreeEntryInfo {
    pb::TreeEntryInfo {
        path: display_path(e),
        r#type: kind_name(e.kind).into(),
        mode: e.mode & 0o7777,
        uid: e.uid,
        gid: e.gid,
        size: e.size,
        mtime_ns: e.mtime_ns,
        target: if e.kind == EntryKind::Symlink {
            String::from_utf8_lossy(&e.target).into_owned()
        } else {
            String::new()
        },
    }
}

/// `trireme ls`: the entries of `path` in snapshot `spec` (at most `limit`,
/// and never more than [`MAX_ENTRIES`]).
///
/// # Errors
/// An unknown snapshot or path (not found); no location readable.
pub async fn list(
    shared: &Shared,
    caller: &Caller,
    req: pb::ListTreeRequest,
) -> Result<pb::ListTreeReply> {
    let path = if req.path.is_empty() {
        "/".to_string()
    } else {
        req.path.clone()
    };
    let target = format!(
        "snapshot {} path {path}{}",
        req.snapshot,
        if req.recursive { " (recursive)" } else { "" }
    );
    let max = match req.limit as usize {
        0 => MAX_ENTRIES,
        n => n.min(MAX_ENTRIES),
    };
    let work = async {
        let rec = blocking(|| views::find_snapshot(&shared.catalog, &req.snapshot))?;
        let (location, ix, snaps) = open(shared, std::slice::from_ref(&rec)).await?;
        let (entries, truncated) = ix
            .list_at_most(&snaps[0], &path, req.recursive, max)
            .await
            .map_err(missing)?;
        Ok(pb::ListTreeReply {
            snapshot: rec.id.to_hex(),
            location,
            entries: entries.iter().map(entry_info).collect(),
            truncated,
            note: if truncated {
                format!(
                    "truncated at {max} entries: narrow PATH, or use --recursive on a subdirectory"
                )
            } else {
                String::new()
            },
        })
    };
    audited(shared, caller, LS, target, work, |r| {
        format!(
            "{} entries from {} at {}{}",
            r.entries.len(),
            short(&r.snapshot),
            r.location,
            if r.truncated { " (truncated)" } else { "" }
        )
    })
    .await
}

fn short(hex: &str) -> &str {
    &hex[..hex.len().min(12)]
}

/// `trireme diff`: what differs between snapshots `from` and `to`.
///
/// # Errors
/// As [`list`].
pub async fn diff(
    shared: &Shared,
    caller: &Caller,
    req: pb::DiffSnapshotsRequest,
) -> Result<pb::DiffSnapshotsReply> {
    let target = format!("snapshots {} -> {}", req.from, req.to);
    let work = async {
        let (a, b) = blocking(|| {
            Ok::<_, Error>((
                views::find_snapshot(&shared.catalog, &req.from)?,
                views::find_snapshot(&shared.catalog, &req.to)?,
            ))
        })?;
        let (location, ix, snaps) = open(shared, &[a.clone(), b.clone()]).await?;
        let (changes, sum, truncated) = ix.diff_at_most(&snaps[0], &snaps[1], MAX_ENTRIES).await?;
        let DiffSummary {
            added,
            removed,
            modified,
            metadata,
            added_bytes,
            removed_bytes,
        } = sum;
        Ok(pb::DiffSnapshotsReply {
            from: a.id.to_hex(),
            to: b.id.to_hex(),
            location,
            changes: changes
                .into_iter()
                .map(|c| pb::ChangeInfo {
                    path: c.path,
                    what: serde_json::to_value(c.what)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    old_size: c.old_size,
                    new_size: c.new_size,
                })
                .collect(),
            added,
            removed,
            modified,
            metadata,
            added_bytes,
            removed_bytes,
            truncated,
            note: if truncated {
                format!("only the first {MAX_ENTRIES} changes are listed (the counts cover all)")
            } else {
                String::new()
            },
        })
    };
    audited(shared, caller, DIFF, target, work, |r| {
        format!(
            "{} -> {} at {}: {} added, {} removed, {} modified, {} metadata",
            short(&r.from),
            short(&r.to),
            r.location,
            r.added,
            r.removed,
            r.modified,
            r.metadata
        )
    })
    .await
}

fn unix(t: i64) -> Option<DateTime<Utc>> {
    (t != 0).then(|| DateTime::from_timestamp(t, 0)).flatten()
}

/// The snapshots `source` (either name may be empty) selects, newest first.
fn chosen(
    shared: &Shared,
    source: Option<&pb::SourceRef>,
    since: i64,
    until: i64,
) -> Result<Vec<SnapshotRecord>> {
    let filter = SnapshotFilter {
        agent: source.map(|s| s.agent.clone()).unwrap_or_default(),
        source: source.map(|s| s.source.clone()).unwrap_or_default(),
        since: unix(since),
        until: unix(until),
        limit: usize::MAX,
        ..SnapshotFilter::default()
    };
    Ok(blocking(|| views::snapshots(&shared.catalog, &filter))?
        .into_iter()
        .map(|v| v.record)
        .collect())
}

fn source_text(s: Option<&pb::SourceRef>) -> String {
    match s {
        Some(s) if !(s.agent.is_empty() && s.source.is_empty()) => {
            format!(" of {}/{}", s.agent, s.source)
        }
        _ => String::new(),
    }
}

/// `trireme find`: the versions of the paths matching `patterns` in the
/// chosen snapshots, each with the snapshots holding it, newest first.
///
/// # Errors
/// Invalid globs; as [`list`].
pub async fn find(
    shared: &Shared,
    caller: &Caller,
    req: pb::FindFilesRequest,
) -> Result<pb::FindFilesReply> {
    let target = format!(
        "{}{}",
        req.patterns.join(" "),
        source_text(req.source.as_ref())
    );
    let work = async {
        let globs =
            PathGlobs::new("find", &req.patterns).map_err(|e| Error::BadRequest(e.to_string()))?;
        let records = chosen(shared, req.source.as_ref(), req.since_unix, req.until_unix)?;
        let (location, ix, snaps) = if records.is_empty() {
            (String::new(), None, Vec::new())
        } else {
            let (l, ix, s) = open(shared, &records).await?;
            (l, Some(ix), s)
        };
        // (path, type, size, mtime) -> the snapshots holding that version.
        type Version = (String, &'static str, u64, i64);
        let mut versions: BTreeMap<Version, Vec<pb::FoundSnapshot>> = BTreeMap::new();
        let mut truncated = false;
        if let Some(ix) = &ix {
            'snaps: for (rec, snap) in records.iter().zip(&snaps) {
                let (found, cut) = ix.find_at_most(snap, &globs, MAX_ENTRIES).await?;
                truncated |= cut;
                for e in found {
                    let key = (display_path(&e), kind_name(e.kind), e.size, e.mtime_ns);
                    if !versions.contains_key(&key) && versions.len() >= MAX_ENTRIES {
                        truncated = true;
                        break 'snaps;
                    }
                    versions.entry(key).or_default().push(pb::FoundSnapshot {
                        id: rec.id.to_hex(),
                        source: Some(pb::SourceRef {
                            agent: rec.source.agent.clone(),
                            source: rec.source.name.clone(),
                        }),
                        time_unix: rec.time.timestamp(),
                    });
                }
            }
        }
        let mut rows: Vec<_> = versions.into_iter().collect();
        // By path; within a path, the newest version first.
        rows.sort_by(|x, y| x.0 .0.cmp(&y.0 .0).then(y.0 .3.cmp(&x.0 .3)));
        Ok(pb::FindFilesReply {
            versions: rows
                .into_iter()
                .map(
                    |((path, kind, size, mtime_ns), snapshots)| pb::FoundVersion {
                        path,
                        r#type: kind.into(),
                        size,
                        mtime_ns,
                        snapshots,
                    },
                )
                .collect(),
            snapshots_searched: records.len() as u64,
            location,
            truncated,
            note: if truncated {
                format!("truncated at {MAX_ENTRIES} versions: narrow the patterns, --source or --since/--until")
            } else {
                String::new()
            },
        })
    };
    audited(shared, caller, FIND, target, work, |r| {
        format!(
            "{} versions in {} snapshots{}",
            r.versions.len(),
            r.snapshots_searched,
            if r.location.is_empty() {
                String::new()
            } else {
                format!(" at {}", r.location)
            }
        )
    })
    .await
}

/// `trireme stats`: one snapshot's counts, or those of every snapshot (of
/// a source).
///
/// # Errors
/// No snapshot to count; as [`list`].
pub async fn stats(
    shared: &Shared,
    caller: &Caller,
    req: pb::SnapshotStatsRequest,
) -> Result<pb::SnapshotStatsReply> {
    let target = if req.snapshot.is_empty() {
        format!("every snapshot{}", source_text(req.source.as_ref()))
    } else {
        format!("snapshot {}", req.snapshot)
    };
    let work = async {
        let records = if req.snapshot.is_empty() {
            chosen(shared, req.source.as_ref(), 0, 0)?
        } else {
            vec![blocking(|| {
                views::find_snapshot(&shared.catalog, &req.snapshot)
            })?]
        };
        if records.is_empty() {
            return Err(Error::Missing(format!(
                "no snapshot to count{}; see `trireme snapshots ls`",
                source_text(req.source.as_ref())
            )));
        }
        let (location, ix, snaps) = open(shared, &records).await?;
        let st = ix.stats(&snaps).await?;
        Ok(pb::SnapshotStatsReply {
            snapshots: st.snapshots,
            files: st.files,
            dirs: st.dirs,
            symlinks: st.symlinks,
            logical_bytes: st.logical_bytes,
            unique_chunks: st.unique_chunks,
            unique_bytes: st.unique_bytes,
            stored_bytes: st.stored_bytes,
            location,
        })
    };
    audited(shared, caller, STATS, target, work, |r| {
        format!(
            "{} snapshots, {} files, {} bytes at {}",
            r.snapshots, r.files, r.logical_bytes, r.location
        )
    })
    .await
}

/// The audit log's action name of `trireme dump`.
pub const DUMP: &str = "dump";

/// Bytes of one streamed message of a dump.
const DUMP_BLOCK: usize = 1 << 20;

/// The stream of a dump: the file's bytes (or the tar archive's) in
/// order, or the error that stopped it.
pub type DumpStream =
    tokio::sync::mpsc::Receiver<std::result::Result<pb::DumpChunk, tonic::Status>>;

/// Writes a dump into the stream in blocks of [`DUMP_BLOCK`] bytes; fails
/// once the client is gone. Memory: one block here and the channel's few.
struct Blocks {
    tx: tokio::sync::mpsc::Sender<std::result::Result<pb::DumpChunk, tonic::Status>>,
    buf: Vec<u8>,
    /// Bytes handed to the stream so far.
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Blocks {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(DUMP_BLOCK));
        let n = data.len() as u64;
        self.tx
            .blocking_send(Ok(pb::DumpChunk { data }))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        self.sent.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

impl std::io::Write for Blocks {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(DUMP_BLOCK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == DUMP_BLOCK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `trireme dump`: the data of file `path` of snapshot `snapshot`, or the
/// subtree of directory `path` as a tar archive
/// ([`trireme_common::dump`]), read at the first location that answers
/// and streamed in blocks. Audited when it ends, with the bytes sent (and
/// why it stopped early, if it did); `mfa` says how the second factor was
/// passed. A path that is not there, or is a link, is refused (audited as
/// a problem).
///
/// # Errors
/// An unknown snapshot or path (not found), a link (bad request), no
/// location readable.
pub async fn dump(
    shared: std::sync::Arc<Shared>,
    caller: Caller,
    mfa: &'static str,
    req: pb::DumpFileRequest,
) -> Result<DumpStream> {
    let target = format!("snapshot {} path {}", req.snapshot, req.path);
    let found = async {
        let rec = blocking(|| views::find_snapshot(&shared.catalog, &req.snapshot))?;
        let (location, ix, snaps) = open(&shared, std::slice::from_ref(&rec)).await?;
        let entry = ix.entry_at(&snaps[0], &req.path).await.map_err(missing)?;
        if entry.kind == EntryKind::Symlink {
            return Err(Error::BadRequest(format!(
                "{} is a symlink to {} in snapshot {}: dump takes a file or a directory (dump the target)",
                display_path(&entry),
                String::from_utf8_lossy(&entry.target),
                rec.id.short()
            )));
        }
        let snap = snaps.into_iter().next().expect("one snapshot");
        Ok((rec, location, ix, snap, entry))
    }
    .await;
    let (rec, location, ix, snap, entry) = match found {
        Ok(x) => x,
        Err(e) => {
            shared.audit(
                Event::by(&caller.id, DUMP, target)
                    .problem(e.to_string())
                    .from_peer(caller.peer),
            );
            return Err(e);
        }
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let out = Blocks {
        tx: tx.clone(),
        buf: Vec::with_capacity(DUMP_BLOCK),
        sent: sent.clone(),
    };
    let shown = display_path(&entry);
    let what = if entry.kind == EntryKind::Dir {
        "a tar archive of "
    } else {
        ""
    };
    tokio::spawn(async move {
        let result = ix.dump(&snap, entry, out).await;
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        let detail = |counts: String| {
            format!(
                "snapshot {} path {shown} at {location}: {what}{counts}{sent} bytes sent{mfa}",
                rec.id.short()
            )
        };
        let event = match result {
            Ok(s) if s.tar => Event::by(
                &caller.id,
                DUMP,
                detail(format!(
                    "{} entries, {} bytes of file data, ",
                    s.entries, s.file_bytes
                )),
            ),
            Ok(_) => Event::by(&caller.id, DUMP, detail(String::new())),
            Err(e) => {
                let why = match &e {
                    trireme_common::Error::Io { error, .. }
                        if error.kind() == std::io::ErrorKind::BrokenPipe =>
                    {
                        "the client went away".to_string()
                    }
                    _ => {
                        let why = format!("reading the data at {location}: {e}");
                        let status = match e {
                            trireme_common::Error::Corrupt { .. } => tonic::Status::data_loss(&why),
                            _ => tonic::Status::internal(&why),
                        };
                        let _ = tx.send(Err(status)).await;
                        why
                    }
                };
                Event::by(&caller.id, DUMP, detail("stopped after ".into())).problem(why)
            }
        };
        shared.audit(event.from_peer(caller.peer));
    });
    Ok(rx)
}
