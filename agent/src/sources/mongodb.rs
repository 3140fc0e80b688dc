//! `mongodb` sources: `mongodump --archive --gzip` streamed straight into
//! the repository (no temporary copy), restored with `mongorestore
//! --archive --gzip` from a restore's stream.
//!
//! Credentials never appear on a command line: the source names a
//! `credentials_file` (mode 0600) in mongodump's `--config` YAML format,
//! holding `uri:` with the backup user and password, or `password:` for a
//! `uri` given in the source. mongodump reports `done dumping <ns> (<n>
//! documents)` per collection on stderr; the total is recorded, and a
//! restore must report as many documents restored and none failed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, IndexedRepo, RestoreLedger, Snapshot};

use super::process::Program;
use super::{
    absolute, check_secret_file, drill_rank, BackupRequest, JobContext, Kind, RestoreReport, Source,
};

/// The `mongodb` kind.
pub static KIND: Kind = Kind {
    name: "mongodb",
    drill_rank: drill_rank::DATABASE,
    parse: |t, base| Ok(Arc::new(MongoSpec::parse(t, base)?)),
};

/// Position key: documents dumped, summed over collections.
pub const DOCUMENTS: &str = "mongodb.documents";
/// Position key: collections dumped.
pub const COLLECTIONS: &str = "mongodb.collections";

/// A `mongodb` source.
#[derive(Debug, Clone)]
pub struct MongoSpec {
    /// Connection string without a password (shown to operators), if not in the credentials file.
    pub uri: Option<String>,
    /// mongodump `--config` YAML with the secret parts (mode 0600).
    pub credentials_file: PathBuf,
    /// The mongodump program.
    pub mongodump: String,
    /// The mongorestore program.
    pub mongorestore: String,
    /// Extra mongodump arguments (e.g. `--oplog`, `--readPreference=secondary`).
    pub dump_args: Vec<String>,
    /// Extra mongorestore arguments (e.g. `--drop`, `--nsFrom`/`--nsTo`).
    pub restore_args: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    uri: Option<String>,
    credentials_file: PathBuf,
    mongodump: Option<String>,
    mongorestore: Option<String>,
    #[serde(default)]
    dump_args: Vec<String>,
    #[serde(default)]
    restore_args: Vec<String>,
}

/// A URI with a password in it (`scheme://user:password@host`).
fn has_password(uri: &str) -> bool {
    let rest = uri.split_once("://").map_or(uri, |(_, r)| r);
    let userinfo = rest.split(['/', '?']).next().unwrap_or("");
    userinfo
        .rsplit_once('@')
        .is_some_and(|(user, _)| user.contains(':'))
}

impl MongoSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        if let Some(u) = &r.uri {
            if !u.starts_with("mongodb://") && !u.starts_with("mongodb+srv://") {
                bail!("uri {u:?} must start with mongodb:// or mongodb+srv://");
            }
            if has_password(u) {
                bail!("uri must not hold a password (it would show in process lists and logs): put `password: ...` in credentials_file");
            }
        }
        for a in r.dump_args.iter().chain(&r.restore_args) {
            if a.starts_with("--password") || a.starts_with("--uri") || a == "-p" {
                bail!("{a:?}: credentials and the URI go in credentials_file / uri, never in arguments");
            }
        }
        let credentials_file = absolute(base, &r.credentials_file);
        check_secret_file("credentials_file", &credentials_file)?;
        Ok(MongoSpec {
            uri: r.uri,
            credentials_file,
            mongodump: r.mongodump.unwrap_or_else(|| "mongodump".into()),
            mongorestore: r.mongorestore.unwrap_or_else(|| "mongorestore".into()),
            dump_args: r.dump_args,
            restore_args: r.restore_args,
        })
    }

    fn argv(&self, program: &str, extra: &[String]) -> Vec<String> {
        let mut argv = vec![
            program.to_string(),
            format!("--config={}", self.credentials_file.display()),
        ];
        if let Some(u) = &self.uri {
            argv.push(format!("--uri={u}"));
        }
        argv.push("--archive".into());
        argv.push("--gzip".into());
        argv.extend(extra.iter().cloned());
        argv
    }
}

#[async_trait]
impl Source for MongoSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([(
            "credentials_file".to_string(),
            self.credentials_file.display().to_string(),
        )]);
        if let Some(u) = &self.uri {
            d.insert("uri".into(), u.clone());
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
        check_secret_file("credentials_file", &self.credentials_file)?;
        let program = Program::new(
            format!("source {source}: mongodump"),
            self.argv(&self.mongodump, &self.dump_args),
        );
        let late = opts
            .late_position
            .get_or_insert_with(Default::default)
            .clone();
        let counts = Arc::new(Mutex::new((0u64, 0u64)));
        let c2 = counts.clone();
        let reader = program.reader(Some(Box::new(move |line| {
            if let Some(n) = dumped_documents(line) {
                let mut c = c2.lock().unwrap_or_else(|e| e.into_inner());
                c.0 += 1;
                c.1 += n;
            }
        })))?;
        let _kill = reader.kill_on_drop();
        let reader = super::command::AtEnd::new(reader, move || {
            let (collections, documents) = *counts.lock().unwrap_or_else(|e| e.into_inner());
            let mut l = late.lock().unwrap_or_else(|e| e.into_inner());
            l.insert(COLLECTIONS.into(), collections.to_string());
            l.insert(DOCUMENTS.into(), documents.to_string());
            Ok(())
        });
        Ok(repo
            .backup(
                BackupInput::Stream {
                    name: "mongodump.archive.gz".into(),
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
        check_secret_file("credentials_file", &self.credentials_file)?;
        let program = Program::new(
            format!("source {source}: mongorestore"),
            self.argv(&self.mongorestore, &self.restore_args),
        );
        let result = Arc::new(Mutex::new(None));
        let r2 = result.clone();
        let n = super::restore_into_program(
            repo,
            snap,
            &program,
            Some(Box::new(move |line| {
                if let Some(x) = restored_documents(line) {
                    *r2.lock().unwrap_or_else(|e| e.into_inner()) = Some(x);
                }
            })),
            &job.progress,
        )
        .await?;
        let mut report = RestoreReport {
            files: 1,
            bytes: n,
            ..Default::default()
        };
        let got = *result.lock().unwrap_or_else(|e| e.into_inner());
        let Some((ok, failed)) = got else {
            bail!("source {source}: mongorestore finished without its \"document(s) restored successfully\" summary; cannot confirm the restore");
        };
        if failed > 0 {
            bail!("source {source}: restore check failed: mongorestore could not restore {failed} document(s) ({ok} restored)");
        }
        match super::position(snap, DOCUMENTS).and_then(|v| v.parse::<u64>().ok()) {
            Some(want) if want != ok => bail!(
                "source {source}: restore check failed: {ok} documents restored, the dump had {want}"
            ),
            Some(want) => report
                .checks
                .push(format!("{ok} documents restored, as dumped ({want}), none failed")),
            None => report
                .checks
                .push(format!("{ok} documents restored, none failed (the dump recorded no count)")),
        }
        Ok(report)
    }
}

/// `... done dumping app.users (3 documents)` → 3.
fn dumped_documents(line: &str) -> Option<u64> {
    let rest = line.split("done dumping ").nth(1)?;
    let inner = rest.rsplit_once('(')?.1;
    let n = inner.split_whitespace().next()?;
    if !inner.contains("document") {
        return None;
    }
    n.parse().ok()
}

/// `... 5 document(s) restored successfully. 0 document(s) failed to restore.` → (5, 0).
fn restored_documents(line: &str) -> Option<(u64, u64)> {
    let (before, after) = line.split_once(" document(s) restored successfully.")?;
    let ok = before.split_whitespace().last()?.parse().ok()?;
    let failed = after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    Some((ok, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_output_is_read() {
        assert_eq!(
            dumped_documents(
                "2024-05-01T10:00:00.000+0000\tdone dumping chat.messages (1200 documents)"
            ),
            Some(1200)
        );
        assert_eq!(
            dumped_documents("2024-05-01T10:00:00.000+0000\tdone dumping chat.one (1 document)"),
            Some(1)
        );
        assert_eq!(
            dumped_documents("writing chat.messages to archive on stdout"),
            None
        );
        assert_eq!(
            restored_documents("2024-05-01T10:00:00.000+0000\t1201 document(s) restored successfully. 2 document(s) failed to restore."),
            Some((1201, 2))
        );
    }

    #[test]
    fn passwords_in_uris_are_found() {
        assert!(has_password(
            "mongodb://backup:s3cret@db-1:27017/?authSource=admin"
        ));
        assert!(!has_password(
            "mongodb://backup@db-1:27017/?authSource=admin"
        ));
        assert!(!has_password(
            "mongodb://db-1:27017,db-2:27017/?replicaSet=rs0"
        ));
    }
}
