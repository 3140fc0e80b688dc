//! `kafka` sources: segment-level backups of a Kafka log directory.
//!
//! Kafka keeps each partition in `<topic>-<partition>/` as segments named by
//! their base offset (`00000000000000000000.log` with its `.index`,
//! `.timeindex` and `.txnindex`), plus `leader-epoch-checkpoint`,
//! `partition.metadata` and producer `.snapshot` files; the directory root
//! holds the checkpoint files and `meta.properties`. Only the segment with
//! the highest base offset is written to; the others are closed and never
//! change. Online (the default), a backup takes the closed segments and
//! every other file and leaves the active segments out; offline (`online =
//! false`, with stop/start hooks around it) it takes everything. Closed
//! segments seen by the previous snapshot are skipped unread, so a backup
//! reads and uploads only the segments new since the last one.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, IndexedRepo, PathFilter, RestoreLedger, Snapshot};

use super::{absolute, drill_rank, BackupRequest, JobContext, Kind, RestoreReport, Source};

/// The `kafka` kind.
pub static KIND: Kind = Kind {
    name: "kafka",
    drill_rank: drill_rank::LOG,
    parse: |t, base| Ok(Arc::new(KafkaSpec::parse(t, base)?)),
};

/// Position keys recorded at backup time.
pub const PARTITIONS: &str = "kafka.partitions";
/// Closed segments in the snapshot.
pub const SEGMENTS: &str = "kafka.segments";

/// Extensions of a segment's files.
const SEGMENT_EXTS: &[&str] = &["log", "index", "timeindex", "txnindex"];
/// Files Kafka is in the middle of replacing or deleting.
const TRANSIENT_SUFFIXES: &[&str] = &[".deleted", ".cleaned", ".swap", ".tmp"];

/// A `kafka` source.
#[derive(Debug, Clone)]
pub struct KafkaSpec {
    /// The log directory (`log.dirs`).
    pub path: PathBuf,
    /// Leave the active segments out (the broker keeps running).
    pub online: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    path: PathBuf,
    online: Option<bool>,
}

/// A file's place in the layout.
#[derive(Debug, PartialEq, Eq)]
enum Entry<'a> {
    /// `<partition dir>/<base offset>.<ext>` of a segment.
    Segment { partition: &'a str, base: u64 },
    /// A partition directory being deleted or moved.
    Doomed,
    /// A file being replaced.
    Transient,
    /// Anything else (checkpoints, metadata, snapshots, directories).
    Other,
}

fn classify(rel: &Path) -> Entry<'_> {
    let mut parts = rel.iter();
    let (Some(dir), file) = (parts.next().and_then(|d| d.to_str()), parts.next()) else {
        return Entry::Other;
    };
    if dir.ends_with("-delete") || dir.ends_with("-future") {
        return Entry::Doomed;
    }
    let Some(file) = file.and_then(|f| f.to_str()) else {
        return Entry::Other;
    };
    if TRANSIENT_SUFFIXES.iter().any(|s| file.ends_with(s)) {
        return Entry::Transient;
    }
    match file.split_once('.') {
        Some((base, ext))
            if base.len() == 20
                && SEGMENT_EXTS.contains(&ext)
                && base.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Entry::Segment {
                partition: dir,
                base: base.parse().unwrap_or(0),
            }
        }
        _ => Entry::Other,
    }
}

/// The active (highest) base offset of each partition directory.
fn active_segments(root: &Path) -> Result<HashMap<String, u64>> {
    let mut active = HashMap::new();
    let dirs = std::fs::read_dir(root)
        .with_context(|| format!("cannot read the Kafka log directory {}", root.display()))?;
    for d in dirs {
        let d = d?;
        if !d.file_type()?.is_dir() {
            continue;
        }
        let name = d.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(d.path()) else {
            continue; // deleted meanwhile
        };
        for f in files.flatten() {
            let rel = PathBuf::from(&name).join(f.file_name());
            if let Entry::Segment { base, .. } = classify(&rel) {
                if rel.extension().is_some_and(|e| e == "log") {
                    let e = active.entry(name.clone()).or_insert(base);
                    *e = (*e).max(base);
                }
            }
        }
    }
    Ok(active)
}

impl KafkaSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        Ok(KafkaSpec {
            path: absolute(base, &r.path),
            online: r.online.unwrap_or(true),
        })
    }

    /// What a backup of `root` leaves out.
    fn filter(&self, root: &Path) -> Result<PathFilter> {
        let active = if self.online {
            Some(active_segments(root)?)
        } else {
            None
        };
        Ok(PathFilter(Arc::new(move |rel: &Path| {
            match classify(rel) {
                Entry::Doomed | Entry::Transient => true,
                Entry::Segment { partition, base } => match &active {
                    None => false,
                    // A partition that appeared after the listing has only its
                    // active segment: leave it out too.
                    Some(a) => a.get(partition).is_none_or(|&act| base >= act),
                },
                Entry::Other => false,
            }
        })))
    }
}

#[async_trait]
impl Source for KafkaSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("path".to_string(), self.path.display().to_string()),
            (
                "segments".to_string(),
                if self.online {
                    "closed only (online)".to_string()
                } else {
                    "all (offline: stop the broker in pre_hook)".to_string()
                },
            ),
        ])
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
        if !self.path.join("meta.properties").exists() {
            bail!(
                "{} has no meta.properties: is it a Kafka log directory (`log.dirs`)?",
                self.path.display()
            );
        }
        let filter = self.filter(&self.path)?;
        let (partitions, segments) = count(&self.path, &filter);
        opts.position
            .insert(PARTITIONS.into(), partitions.to_string());
        opts.position.insert(SEGMENTS.into(), segments.to_string());
        opts.exclude = Some(filter);
        opts.parent = parent.map(|p| p.id);
        Ok(repo
            .backup(BackupInput::Tree(self.path.clone()), opts)
            .await?)
    }

    /// Put the partition directories back into this source's (empty) path,
    /// recording what is created in `ledger` when given.
    async fn restore(
        &self,
        _name: &str,
        repo: &IndexedRepo,
        snap: &Snapshot,
        job: &JobContext,
        ledger: Option<&Arc<RestoreLedger>>,
    ) -> Result<RestoreReport> {
        if self.path.exists()
            && std::fs::read_dir(&self.path)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            bail!(
                "{} is not empty: stop the broker and move its log directory away before restoring into it, or restore to a path",
                self.path.display()
            );
        }
        let mut report = super::restore_to_path(repo, snap, &self.path, job, ledger).await?;
        let all = PathFilter(Arc::new(|_: &Path| false));
        let (partitions, segments) = count(&self.path, &all);
        let want = |k| super::position(snap, k).and_then(|v| v.parse::<u64>().ok());
        if let (Some(p), Some(s)) = (want(PARTITIONS), want(SEGMENTS)) {
            if (partitions, segments) != (p, s) {
                bail!(
                    "restore check failed: {partitions} partitions and {segments} segments restored, the backup had {p} and {s}"
                );
            }
            report
                .checks
                .push(format!("{partitions} partitions, {segments} segments"));
        }
        Ok(report)
    }
}

/// Partition directories and the segments (`.log` files) a filter keeps.
fn count(root: &Path, filter: &PathFilter) -> (u64, u64) {
    let (mut partitions, mut segments) = (0, 0);
    for d in std::fs::read_dir(root).into_iter().flatten().flatten() {
        if !d.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = PathBuf::from(d.file_name());
        if (filter.0)(&dir) || classify(&dir.join("x")) == Entry::Doomed {
            continue;
        }
        partitions += 1;
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let rel = dir.join(f.file_name());
            if rel.extension().is_some_and(|e| e == "log") && !(filter.0)(&rel) {
                segments += 1;
            }
        }
    }
    (partitions, segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_classified() {
        fn seg(p: &str) -> Entry<'_> {
            classify(Path::new(p))
        }
        assert_eq!(
            seg("chat-0/00000000000000001234.log"),
            Entry::Segment {
                partition: "chat-0",
                base: 1234
            }
        );
        assert_eq!(
            seg("chat-0/00000000000000001234.timeindex"),
            Entry::Segment {
                partition: "chat-0",
                base: 1234
            }
        );
        assert_eq!(seg("chat-0/00000000000000001234.snapshot"), Entry::Other);
        assert_eq!(seg("chat-0/leader-epoch-checkpoint"), Entry::Other);
        assert_eq!(
            seg("chat-0/00000000000000001234.log.deleted"),
            Entry::Transient
        );
        assert_eq!(
            seg("chat-0.abc-delete/00000000000000000000.log"),
            Entry::Doomed
        );
        assert_eq!(seg("recovery-point-offset-checkpoint"), Entry::Other);
    }
}
