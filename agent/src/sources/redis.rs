//! `redis` sources: a consistent RDB from `BGSAVE`, read from the data
//! directory when the agent sees it, or streamed over the replication
//! protocol (`SYNC`) when it does not. A BGSAVE (or AOF rewrite) already
//! running is waited for. At backup time the key count and a sample of keys
//! with their value digests are recorded; a restore into a target instance
//! (stop, place the RDB, start) checks them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use async_trait::async_trait;
use serde::Deserialize;
use trireme_common::{BackupInput, IndexedRepo, RestoreLedger, Snapshot};

use super::process::Program;
use super::resp::{Conn, ConnectSettings, TlsSettings, Value};
use super::{
    absolute, check_secret_file, drill_rank, parse_duration, BackupRequest, JobContext, Kind,
    RestoreReport, Source,
};

/// The `redis` kind.
pub static KIND: Kind = Kind {
    name: "redis",
    drill_rank: drill_rank::CACHE,
    parse: |t, base| Ok(Arc::new(RedisSpec::parse(t, base)?)),
};

/// Position keys recorded at backup time.
pub const KEYS_MIN: &str = "redis.keys_min";
/// The key count after the save (the count before is [`KEYS_MIN`] when lower).
pub const KEYS_MAX: &str = "redis.keys_max";
/// Keys with a time to live (they may be gone by the time of a restore).
pub const EXPIRES: &str = "redis.expires";
/// Prefix of the sampled keys: `redis.sample.<n>` = `<db>:<hex key>:<digest>`.
pub const SAMPLE: &str = "redis.sample.";

/// Collections larger than this are summarised by type and length.
const MAX_ELEMENTS: i64 = 10_000;
/// Strings larger than this are summarised by length.
const MAX_STRING: i64 = 4 << 20;

/// A `redis` source.
#[derive(Debug, Clone)]
pub struct RedisSpec {
    /// `host:port`.
    pub address: String,
    /// ACL user.
    pub username: Option<String>,
    /// File whose first line is the password (mode 0600).
    pub password_file: Option<PathBuf>,
    /// TLS settings.
    pub tls: Option<TlsSettings>,
    /// The directory Redis saves its RDB to, as this agent sees it; without
    /// it the RDB is streamed over the replication protocol.
    pub data_dir: Option<PathBuf>,
    /// The RDB's file name (default: `CONFIG GET dbfilename`, else `dump.rdb`).
    pub rdb_file: Option<String>,
    /// Keys sampled per backup.
    pub sample_keys: usize,
    /// Longest wait for a save.
    pub save_timeout: Duration,
    /// Restore: how to stop the instance (default: `SHUTDOWN NOSAVE`).
    pub stop_hook: Vec<String>,
    /// Restore: how to start it again (needed to restore into this source).
    pub start_hook: Vec<String>,
    /// Restore: longest wait for the instance to load the RDB.
    pub ready_timeout: Duration,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    address: String,
    username: Option<String>,
    password_file: Option<PathBuf>,
    tls: Option<RawTls>,
    data_dir: Option<PathBuf>,
    rdb_file: Option<String>,
    sample_keys: Option<usize>,
    save_timeout: Option<String>,
    #[serde(default)]
    stop_hook: Vec<String>,
    #[serde(default)]
    start_hook: Vec<String>,
    ready_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    server_name: Option<String>,
}

/// The keys of one database, from `INFO keyspace`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct DbKeys {
    db: u32,
    keys: u64,
    expires: u64,
}

impl RedisSpec {
    fn parse(t: toml::Table, base: &Path) -> Result<Self> {
        let r: Raw = t.try_into()?;
        match r.address.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => bail!(
                "address = {:?} is not host:port, e.g. \"127.0.0.1:6379\"",
                r.address
            ),
        }
        let password_file = r.password_file.map(|p| absolute(base, &p));
        if let Some(p) = &password_file {
            check_secret_file("password_file", p)?;
        }
        let tls = r.tls.map(|t| TlsSettings {
            ca: absolute(base, &t.ca),
            cert: t.cert.map(|p| absolute(base, &p)),
            key: t.key.map(|p| absolute(base, &p)),
            server_name: t.server_name,
        });
        if let Some(f) = &r.rdb_file {
            if f.is_empty() || f.contains('/') {
                bail!("rdb_file {f:?} must be a file name (Redis's `dbfilename`)");
            }
        }
        let dur = |v: &Option<String>, d: u64| {
            v.as_deref()
                .map_or(Ok(Duration::from_secs(d)), parse_duration)
        };
        Ok(RedisSpec {
            address: r.address,
            username: r.username,
            password_file,
            tls,
            data_dir: r.data_dir.map(|p| absolute(base, &p)),
            rdb_file: r.rdb_file,
            sample_keys: r.sample_keys.unwrap_or(32).min(1000),
            save_timeout: dur(&r.save_timeout, 3600).context("save_timeout")?,
            stop_hook: r.stop_hook,
            start_hook: r.start_hook,
            ready_timeout: dur(&r.ready_timeout, 600).context("ready_timeout")?,
        })
    }

    fn settings(&self) -> Result<ConnectSettings> {
        let password = match &self.password_file {
            None => None,
            Some(p) => {
                check_secret_file("password_file", p)?;
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read password_file {}", p.display()))?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
        };
        Ok(ConnectSettings {
            address: self.address.clone(),
            username: self.username.clone(),
            password,
            tls: self.tls.clone(),
            timeout: Duration::from_secs(10),
        })
    }

    fn connect(&self) -> Result<Conn> {
        Conn::open(&self.settings()?)
    }

    /// Save, sample, and open the RDB.
    #[allow(clippy::type_complexity)]
    fn prepare_backup(
        &self,
        source: &str,
    ) -> Result<(Box<dyn std::io::Read + Send>, BTreeMap<String, String>)> {
        let mut c = self.connect()?;
        let before = keyspace(&mut c)?;
        let samples = sample(&mut c, &before, self.sample_keys)?;
        let reader: Box<dyn std::io::Read + Send> = match &self.data_dir {
            Some(dir) => {
                let started = SystemTime::now();
                bgsave(&mut c, self.save_timeout, &self.address)?;
                let file = match &self.rdb_file {
                    Some(f) => f.clone(),
                    None => config_get(&mut c, "dbfilename")?.unwrap_or_else(|| "dump.rdb".into()),
                };
                let path = dir.join(&file);
                let f = std::fs::File::open(&path).with_context(|| {
                    format!(
                        "source {source}: cannot open the RDB {} after BGSAVE{}",
                        path.display(),
                        server_dir_hint(&mut c)
                    )
                })?;
                let mtime = f.metadata()?.modified()?;
                // Redis stamps whole seconds in its own clock; allow for both.
                if mtime + Duration::from_secs(2) < started {
                    bail!(
                        "source {source}: {} was not written by this BGSAVE (it is older than the save){}",
                        path.display(),
                        server_dir_hint(&mut c)
                    );
                }
                Box::new(f)
            }
            None => {
                let (len, r) = self.connect()?.sync(self.save_timeout)?;
                tracing::info!(%source, bytes = len, "receiving the RDB over the replication protocol");
                Box::new(r)
            }
        };
        let after = keyspace(&mut c)?;
        let mut position = BTreeMap::new();
        let total = |k: &[DbKeys]| k.iter().map(|d| d.keys).sum::<u64>();
        let (b, a) = (total(&before), total(&after));
        position.insert(KEYS_MIN.to_string(), b.min(a).to_string());
        position.insert(KEYS_MAX.to_string(), b.max(a).to_string());
        let expires = may_expire(&before, &after);
        position.insert(EXPIRES.to_string(), expires.to_string());
        // Keep the samples that did not change across the save: they are in the RDB as sampled.
        let mut n = 0;
        for (db, key, digest) in samples {
            if value_digest(&mut c, db, &key)?.as_deref() == Some(digest.as_str()) {
                position.insert(
                    format!("{SAMPLE}{n}"),
                    format!("{db}:{}:{digest}", hex::encode(&key)),
                );
                n += 1;
            }
        }
        Ok((reader, position))
    }

    /// The RDB file name and whether AOF is on, asked of the running target
    /// (defaults when it is down).
    fn target_facts(&self) -> Result<(String, bool)> {
        let default = self.rdb_file.clone().unwrap_or_else(|| "dump.rdb".into());
        let mut c = match self.connect() {
            Ok(c) => c,
            Err(e) => {
                tracing::info!(error = %format!("{e:#}"), "restore target not running; placing the RDB and starting it");
                return Ok((default, false));
            }
        };
        if let (Some(dir), Some(theirs)) = (&self.data_dir, config_get(&mut c, "dir")?) {
            let ours = std::fs::canonicalize(dir).unwrap_or(dir.clone());
            let theirs_p = PathBuf::from(&theirs);
            if theirs_p.is_absolute()
                && std::fs::canonicalize(&theirs_p).unwrap_or(theirs_p) != ours
            {
                // In a container the paths differ; say so but go on.
                tracing::warn!(data_dir = %dir.display(), server_dir = %theirs, "the target's `dir` differs from data_dir (fine if it is the same volume mounted elsewhere)");
            }
        }
        let file = match &self.rdb_file {
            Some(f) => f.clone(),
            None => config_get(&mut c, "dbfilename")?.unwrap_or(default),
        };
        let aof = config_get(&mut c, "appendonly")?.is_some_and(|v| v == "yes");
        Ok((file, aof))
    }

    fn stop_place_start(&self, source: &str, tmp: &Path, rdb: &Path) -> Result<()> {
        if !self.stop_hook.is_empty() {
            Program::new(
                format!("source {source}: stop_hook"),
                self.stop_hook.clone(),
            )
            .output()?;
        } else if let Ok(mut c) = self.connect() {
            // The reply is the connection closing.
            let _ = c.cmd_str(&["SHUTDOWN", "NOSAVE"]);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.connect().is_ok() {
            if Instant::now() > deadline {
                bail!("source {source}: redis at {} is still running 60 s after it was asked to stop; not replacing its RDB under it", self.address);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::rename(tmp, rdb)
            .with_context(|| format!("cannot move the restored RDB to {}", rdb.display()))?;
        Program::new(
            format!("source {source}: start_hook"),
            self.start_hook.clone(),
        )
        .output()?;
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let ready = self.connect().and_then(|mut c| {
                let info = c
                    .cmd_str(&["INFO", "persistence"])?
                    .text()
                    .unwrap_or_default();
                Ok(info_field(&info, "loading").as_deref() == Some("0"))
            });
            match ready {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) if Instant::now() > deadline => {
                    return Err(e.context(format!(
                        "source {source}: redis at {} did not come up within {}s after start_hook",
                        self.address,
                        self.ready_timeout.as_secs()
                    )))
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                bail!(
                    "source {source}: redis at {} was still loading after {}s",
                    self.address,
                    self.ready_timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Compare the restored instance with what the backup recorded.
    fn check_restored(&self, source: &str, snap: &Snapshot) -> Result<Vec<String>> {
        let mut c = self.connect()?;
        let mut checks = Vec::new();
        let num = |k: &str| super::position(snap, k).and_then(|v| v.parse::<u64>().ok());
        let keys: u64 = keyspace(&mut c)?.iter().map(|d| d.keys).sum();
        if let (Some(min), Some(max)) = (num(KEYS_MIN), num(KEYS_MAX)) {
            let low = min.saturating_sub(num(EXPIRES).unwrap_or(0));
            if keys < low || keys > max {
                bail!(
                    "source {source}: restore check failed: {keys} keys after the restore, the backup had {}",
                    if min == max { min.to_string() } else { format!("{min}–{max}") }
                );
            }
            checks.push(format!(
                "{keys} keys (backup: {})",
                if min == max {
                    min.to_string()
                } else {
                    format!("{min}–{max}")
                }
            ));
        }
        let mut sampled = 0;
        for (k, v) in &snap.manifest.position {
            if !k.starts_with(SAMPLE) {
                continue;
            }
            let mut parts = v.splitn(3, ':');
            let (Some(db), Some(key), Some(digest)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("snapshot {}: malformed sample {v:?}", snap.id.short());
            };
            let db: u32 = db.parse().map_err(|_| anyhow!("malformed sample {v:?}"))?;
            let key = hex::decode(key).map_err(|_| anyhow!("malformed sample {v:?}"))?;
            let got = value_digest(&mut c, db, &key)?;
            if got.as_deref() != Some(digest) {
                bail!(
                    "source {source}: restore check failed: key {:?} (db {db}) {} after the restore",
                    String::from_utf8_lossy(&key),
                    if got.is_none() { "is missing" } else { "has another value" }
                );
            }
            sampled += 1;
        }
        if sampled > 0 {
            checks.push(format!(
                "{sampled} sampled keys have their backed-up values"
            ));
        }
        Ok(checks)
    }
}

#[async_trait]
impl Source for RedisSpec {
    fn kind(&self) -> &'static Kind {
        &KIND
    }

    fn details(&self) -> BTreeMap<String, String> {
        let mut d = BTreeMap::from([("address".to_string(), self.address.clone())]);
        d.insert(
            "rdb".into(),
            match &self.data_dir {
                Some(p) => format!("from {}", p.display()),
                None => "streamed over the replication protocol".into(),
            },
        );
        if self.tls.is_some() {
            d.insert("tls".into(), "yes".into());
        }
        d
    }

    fn data_path(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    async fn backup(
        &self,
        source: &str,
        repo: &IndexedRepo,
        req: BackupRequest,
        _job: &JobContext,
    ) -> Result<Snapshot> {
        let mut opts = req.opts;
        let this = self.clone();
        let source = source.to_string();
        let (reader, position) = tokio::task::spawn_blocking(move || this.prepare_backup(&source))
            .await
            .context("redis backup task")??;
        opts.position.extend(position);
        Ok(repo
            .backup(
                BackupInput::Stream {
                    name: "dump.rdb".into(),
                    reader,
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
        let Some(dir) = self.data_dir.clone() else {
            bail!("restoring into redis source {source} needs its `data_dir`, where the RDB is placed before the instance starts");
        };
        if self.start_hook.is_empty() {
            bail!("restoring into redis source {source} needs `start_hook`, how to start the instance once the RDB is in place (e.g. [\"docker\", \"start\", \"redis-staging\"])");
        }
        let (file, aof) = {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.target_facts())
                .await
                .context("redis restore task")??
        };
        if aof {
            bail!("redis source {source} has `appendonly yes`: on start Redis would load its AOF, not the restored RDB; turn AOF off on this (staging) instance, or restore to a path and load the RDB by hand");
        }
        let tmp = dir.join(format!(".{file}.trireme-{}", job.job_id));
        let _ = std::fs::remove_file(&tmp);
        // Never through a link planted at the temporary name.
        let out = trireme_common::restore::create_new_file(&tmp, None)
            .with_context(|| format!("cannot write into data_dir {}", dir.display()))?;
        let n = match repo.restore_stream(snap, out).await {
            Ok(n) => n,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e.into());
            }
        };
        job.progress
            .bytes_read
            .store(n, std::sync::atomic::Ordering::Relaxed);
        let this = self.clone();
        let snap = snap.clone();
        let source = source.to_string();
        let checks = tokio::task::spawn_blocking(move || -> Result<Vec<String>> {
            let placed = this.stop_place_start(&source, &tmp, &dir.join(&file));
            let _ = std::fs::remove_file(&tmp);
            placed?;
            this.check_restored(&source, &snap)
        })
        .await
        .context("redis restore task")??;
        Ok(RestoreReport {
            files: 1,
            bytes: n,
            checks,
            ..Default::default()
        })
    }
}

fn server_dir_hint(c: &mut Conn) -> String {
    match config_get(c, "dir") {
        Ok(Some(d)) => format!("; Redis saves to {d} (CONFIG GET dir): is `data_dir` that directory as this agent sees it?"),
        _ => "; is `data_dir` the directory Redis saves to?".into(),
    }
}

/// `CONFIG GET name` (None when the server hides CONFIG or has no such setting).
fn config_get(c: &mut Conn, name: &str) -> Result<Option<String>> {
    match c.cmd_str(&["CONFIG", "GET", name]) {
        Ok(v) => Ok(v
            .items()
            .get(1)
            .map(|b| String::from_utf8_lossy(b).into_owned())),
        Err(e) if e.to_string().contains("unknown command") || e.to_string().contains("NOPERM") => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `field:value` from an INFO section.
fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.strip_prefix(field)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

/// How many keys may be gone by the time a restore is checked: those with
/// a time to live, across every database, before or after the save
/// (whichever is more).
fn may_expire(before: &[DbKeys], after: &[DbKeys]) -> u64 {
    let total = |k: &[DbKeys]| k.iter().map(|d| d.expires).sum::<u64>();
    total(before).max(total(after))
}

fn keyspace(c: &mut Conn) -> Result<Vec<DbKeys>> {
    let info = c.cmd_str(&["INFO", "keyspace"])?.text().unwrap_or_default();
    Ok(parse_keyspace(&info))
}

/// `db0:keys=3,expires=1,avg_ttl=0` lines.
fn parse_keyspace(info: &str) -> Vec<DbKeys> {
    info.lines()
        .filter_map(|l| {
            let (db, rest) = l.trim().split_once(':')?;
            let db: u32 = db.strip_prefix("db")?.parse().ok()?;
            let mut d = DbKeys {
                db,
                ..Default::default()
            };
            for kv in rest.split(',') {
                match kv.split_once('=') {
                    Some(("keys", v)) => d.keys = v.parse().ok()?,
                    Some(("expires", v)) => d.expires = v.parse().ok()?,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect()
}

/// Start a BGSAVE and wait for it; one already running (or an AOF
/// rewrite) is waited for first.
fn bgsave(c: &mut Conn, timeout: Duration, address: &str) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let persistence = |c: &mut Conn| -> Result<String> {
        Ok(c.cmd_str(&["INFO", "persistence"])?
            .text()
            .unwrap_or_default())
    };
    loop {
        match c.cmd_str(&["BGSAVE"]) {
            Ok(_) => break,
            Err(e) => {
                let msg = e.to_string();
                if !(msg.contains("in progress") || msg.contains("rewriting")) {
                    bail!("redis at {address}: BGSAVE failed: {msg}");
                }
                tracing::info!(%address, reason = %msg, "a save is already running; waiting for it before starting ours");
            }
        }
        loop {
            let p = persistence(c)?;
            let busy = info_field(&p, "rdb_bgsave_in_progress").as_deref() == Some("1")
                || info_field(&p, "aof_rewrite_in_progress").as_deref() == Some("1");
            if !busy {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "redis at {address}: the running save did not finish within {}s (save_timeout)",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    loop {
        let p = persistence(c)?;
        if info_field(&p, "rdb_bgsave_in_progress").as_deref() == Some("0") {
            if info_field(&p, "rdb_last_bgsave_status").as_deref() != Some("ok") {
                bail!("redis at {address}: BGSAVE failed on the server (rdb_last_bgsave_status is not ok); see the Redis log (disk full? permissions on its dir?)");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "redis at {address}: BGSAVE did not finish within {}s (raise save_timeout)",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Up to `n` random keys without a TTL, with their digests, across databases.
fn sample(c: &mut Conn, dbs: &[DbKeys], n: usize) -> Result<Vec<(u32, Vec<u8>, String)>> {
    let mut out = Vec::new();
    let populated: Vec<&DbKeys> = dbs.iter().filter(|d| d.keys > 0).take(16).collect();
    if populated.is_empty() || n == 0 {
        return Ok(out);
    }
    let per_db = n.div_ceil(populated.len());
    for d in populated {
        c.cmd_str(&["SELECT", &d.db.to_string()])?;
        let mut seen = std::collections::HashSet::new();
        for _ in 0..per_db * 3 {
            if seen.len() >= per_db {
                break;
            }
            let Value::Bulk(Some(key)) = c.cmd_str(&["RANDOMKEY"])? else {
                break;
            };
            if !seen.insert(key.clone()) {
                continue;
            }
            if c.cmd(&[b"PTTL", &key])?.int() != Some(-1) {
                continue;
            }
            if let Some(digest) = value_digest(c, d.db, &key)? {
                out.push((d.db, key, digest));
            }
        }
    }
    out.truncate(n);
    Ok(out)
}

/// A digest of a key's type and value (None: no such key, or a type this
/// agent does not read, e.g. a module's).
fn value_digest(c: &mut Conn, db: u32, key: &[u8]) -> Result<Option<String>> {
    c.cmd_str(&["SELECT", &db.to_string()])?;
    let ty = c.cmd(&[b"TYPE", key])?.text().unwrap_or_default();
    let len =
        |c: &mut Conn, cmd: &[u8]| -> Result<i64> { Ok(c.cmd(&[cmd, key])?.int().unwrap_or(0)) };
    let mut h = blake3::Hasher::new();
    h.update(ty.as_bytes());
    h.update(&[0]);
    let mut add_all = |items: Vec<Vec<u8>>| {
        for i in items {
            h.update(&(i.len() as u64).to_le_bytes());
            h.update(&i);
        }
    };
    match ty.as_str() {
        "none" => return Ok(None),
        "string" => {
            let n = len(c, b"STRLEN")?;
            if n > MAX_STRING {
                add_all(vec![n.to_string().into_bytes()]);
            } else {
                let Value::Bulk(Some(v)) = c.cmd(&[b"GET", key])? else {
                    return Ok(None);
                };
                add_all(vec![v]);
            }
        }
        "hash" | "set" | "list" | "zset" => {
            let (count, read): (&[u8], &[&[u8]]) = match ty.as_str() {
                "hash" => (b"HLEN", &[b"HGETALL"]),
                "set" => (b"SCARD", &[b"SMEMBERS"]),
                "list" => (b"LLEN", &[b"LRANGE", b"0", b"-1"]),
                _ => (b"ZCARD", &[b"ZRANGE", b"0", b"-1", b"WITHSCORES"]),
            };
            let n = len(c, count)?;
            if n > MAX_ELEMENTS {
                add_all(vec![n.to_string().into_bytes()]);
            } else {
                let mut args: Vec<&[u8]> = vec![read[0], key];
                args.extend_from_slice(&read[1..]);
                let mut items = c.cmd(&args)?.items();
                match ty.as_str() {
                    "set" => items.sort(),
                    "hash" => {
                        let mut pairs: Vec<Vec<u8>> = items
                            .chunks(2)
                            .map(|p| {
                                let mut v = p[0].clone();
                                v.push(0);
                                v.extend_from_slice(p.get(1).map_or(&[][..], |x| x));
                                v
                            })
                            .collect();
                        pairs.sort();
                        items = pairs;
                    }
                    _ => {}
                }
                add_all(items);
            }
        }
        "stream" => add_all(vec![len(c, b"XLEN")?.to_string().into_bytes()]),
        _ => return Ok(None),
    }
    Ok(Some(h.finalize().to_hex()[..32].to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_may_expire_are_counted_across_databases() {
        let db = |db, expires| DbKeys {
            db,
            keys: 10,
            expires,
        };
        // Three expiring keys in db0 and four in db1: seven may be gone.
        assert_eq!(may_expire(&[db(0, 3), db(1, 4)], &[db(0, 3), db(1, 2)]), 7);
        assert_eq!(may_expire(&[db(0, 1)], &[db(0, 2), db(3, 2)]), 4);
        assert_eq!(may_expire(&[], &[]), 0);
    }

    #[test]
    fn keyspace_lines_parse() {
        let info =
            "# Keyspace\r\ndb0:keys=3,expires=1,avg_ttl=0\r\ndb2:keys=10,expires=0,avg_ttl=0\r\n";
        assert_eq!(
            parse_keyspace(info),
            vec![
                DbKeys {
                    db: 0,
                    keys: 3,
                    expires: 1
                },
                DbKeys {
                    db: 2,
                    keys: 10,
                    expires: 0
                }
            ]
        );
        assert_eq!(
            info_field("a:1\r\nloading:0\r\n", "loading").as_deref(),
            Some("0")
        );
    }
}
