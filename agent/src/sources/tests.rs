//! The sources against real processes: a real `redis-server`, a real
//! PostgreSQL for the `command` source, and, for mongodb and tidb whose
//! tools cannot run here, scripts that check the arguments they are given
//! and answer in the tools' documented formats.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use trireme_common::backend::FileBackend;
use trireme_common::{
    BackupOptions, ChunkerParams, DynBackend, IndexedRepo, LocalKeyFile, ObjectKind, Repository,
    Snapshot,
};

use super::*;

struct Fixture {
    dir: tempfile::TempDir,
    backend: DynBackend,
    repo: Arc<Repository>,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = LocalKeyFile::create(&dir.path().join("key")).unwrap();
        let backend: DynBackend = Arc::new(FileBackend::new(dir.path().join("repo")));
        let repo = Repository::init(backend.clone(), Arc::new(key), ChunkerParams::default())
            .await
            .unwrap();
        Fixture {
            dir,
            backend,
            repo: Arc::new(repo),
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    async fn indexed(&self) -> IndexedRepo {
        self.repo.load_index().await.unwrap()
    }

    fn job(&self, id: &str) -> JobContext {
        JobContext {
            job_id: id.into(),
            scratch: self.path("scratch"),
            progress: Arc::default(),
            hook_timeout: Duration::from_secs(5),
            tree: TreeRestore::default(),
        }
    }

    async fn backup(&self, s: &SourceConfig, parent: Option<Snapshot>) -> anyhow::Result<Snapshot> {
        let opts = BackupOptions::new(&s.name, s.kind(), "test-host");
        let req = BackupRequest { opts, parent };
        backup(s, &self.indexed().await, req, &self.job("job-1")).await
    }

    async fn restore(
        &self,
        snap: &Snapshot,
        target: RestoreTarget<'_>,
    ) -> anyhow::Result<RestoreReport> {
        restore(&self.indexed().await, snap, target, &self.job("job-2")).await
    }

    async fn snapshots(&self) -> usize {
        self.backend.list(ObjectKind::Snapshot).await.unwrap().len()
    }
}

/// A source from TOML text (the `[[source]]` table's body).
fn source(toml_text: &str) -> SourceConfig {
    parse_source(toml::from_str(toml_text).unwrap(), Path::new("/")).unwrap()
}

use trireme_testkit::noise;
use trireme_testkit::ports::free_port;

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/bash\nset -euo pipefail\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---------------------------------------------------------------- redis

/// A real redis-server on a free port, stopped on drop.
struct Redis {
    port: u16,
    password: Option<String>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl Redis {
    fn start(dir: PathBuf, extra: &[&str]) -> Redis {
        std::fs::create_dir_all(&dir).unwrap();
        let r = Redis {
            port: free_port(),
            password: extra
                .iter()
                .position(|a| *a == "--requirepass")
                .map(|i| extra[i + 1].to_string()),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        let st = Command::new("sh")
            .arg("-c")
            .arg(r.start_command())
            .status()
            .unwrap();
        assert!(
            st.success(),
            "redis-server did not start (is it installed? deploy/dev/prereqs.sh)"
        );
        wait_until("redis", Duration::from_secs(10), || {
            r.cli(&["PING"]).is_ok_and(|o| o == "PONG")
        });
        r
    }

    /// A shell command that starts this server in the background (also the
    /// sources' start_hook).
    fn start_command(&self) -> String {
        format!(
            "redis-server --port {} --dir {} --daemonize yes --save '' --appendonly no --pidfile {}/redis.pid --logfile {}/redis.log {}",
            self.port,
            self.dir.display(),
            self.dir.display(),
            self.dir.display(),
            self.extra.join(" ")
        )
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new("redis-cli");
        c.arg("-p").arg(self.port.to_string());
        if let Some(pw) = &self.password {
            c.args(["-a", pw, "--no-auth-warning"]);
        }
        let out = c.args(args).output()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || text.starts_with("ERR") || text.contains("Connection refused") {
            anyhow::bail!("redis-cli {args:?}: {text}");
        }
        Ok(text)
    }

    fn spec(&self, extra: &str) -> String {
        format!(
            "name = \"redis\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\nstart_hook = [\"sh\", \"-c\", {:?}]\n{extra}",
            self.port,
            self.start_command()
        )
    }

    fn fill(&self) {
        for i in 0..200 {
            self.cli(&[
                "SET",
                &format!("user:{i}"),
                &format!("value {i} {}", "x".repeat(i)),
            ])
            .unwrap();
        }
        self.cli(&["HSET", "profile:1", "name", "Ada", "lang", "en"])
            .unwrap();
        self.cli(&["RPUSH", "queue", "a", "b", "c"]).unwrap();
        self.cli(&["SADD", "tags", "x", "y"]).unwrap();
        self.cli(&["ZADD", "scores", "1", "one", "2", "two"])
            .unwrap();
        self.cli(&["-n", "1", "SET", "other-db", "1"]).unwrap();
    }

    fn dump(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        for db in ["0", "1"] {
            let keys = self.cli(&["-n", db, "KEYS", "*"]).unwrap();
            for k in keys.lines().filter(|l| !l.is_empty()) {
                let ty = self.cli(&["-n", db, "TYPE", k]).unwrap();
                let v = match ty.as_str() {
                    "string" => self.cli(&["-n", db, "GET", k]).unwrap(),
                    "hash" => self.cli(&["-n", db, "HGETALL", k]).unwrap(),
                    "list" => self.cli(&["-n", db, "LRANGE", k, "0", "-1"]).unwrap(),
                    "set" => {
                        let mut v: Vec<String> = self
                            .cli(&["-n", db, "SMEMBERS", k])
                            .unwrap()
                            .lines()
                            .map(String::from)
                            .collect();
                        v.sort();
                        v.join(",")
                    }
                    _ => self
                        .cli(&["-n", db, "ZRANGE", k, "0", "-1", "WITHSCORES"])
                        .unwrap(),
                };
                m.insert(format!("{db}/{k}"), v);
            }
        }
        m
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.cli(&["SHUTDOWN", "NOSAVE"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_backup_flush_restore_brings_keys_back() {
    let f = Fixture::new().await;
    let redis = Redis::start(f.path("redis"), &[]);
    redis.fill();
    let before = redis.dump();
    assert_eq!(before.len(), 205);
    let s = source(&redis.spec(&format!("data_dir = {:?}", redis.dir)));
    let snap = f.backup(&s, None).await.unwrap();
    assert_eq!(position(&snap, redis::KEYS_MIN), Some("205"));
    let samples = snap
        .manifest
        .position
        .keys()
        .filter(|k| k.starts_with(redis::SAMPLE))
        .count();
    assert!(samples >= 16, "sampled {samples} keys");

    redis.cli(&["FLUSHALL"]).unwrap();
    assert!(redis.dump().is_empty());
    let report = f.restore(&snap, RestoreTarget::Source(&s)).await.unwrap();
    assert_eq!(redis.dump(), before, "every key and value is back");
    assert!(
        report.checks.iter().any(|c| c.contains("205 keys")),
        "{:?}",
        report.checks
    );
    assert!(
        report.checks.iter().any(|c| c.contains("sampled keys")),
        "{:?}",
        report.checks
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_the_replication_stream_and_a_running_bgsave() {
    let f = Fixture::new().await;
    let redis = Redis::start(f.path("redis"), &[]);
    redis.fill();
    let before = redis.dump();
    // Without data_dir the RDB comes over SYNC.
    let stream = source(&redis.spec(""));
    let snap = f.backup(&stream, None).await.unwrap();
    assert!(snap.manifest.summary.bytes > 1000);

    // A BGSAVE already running (slowed to ~2 s) is waited for, not failed.
    redis
        .cli(&["CONFIG", "SET", "rdb-key-save-delay", "10000"])
        .unwrap();
    redis.cli(&["BGSAVE"]).unwrap();
    let started = Instant::now();
    let s = source(&redis.spec(&format!("data_dir = {:?}", redis.dir)));
    let snap2 = f.backup(&s, None).await.unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "it waited for the running save"
    );
    redis
        .cli(&["CONFIG", "SET", "rdb-key-save-delay", "0"])
        .unwrap();
    assert_eq!(position(&snap2, redis::KEYS_MAX), Some("205"));

    // The streamed RDB restores as well as the saved one.
    redis.cli(&["FLUSHALL"]).unwrap();
    f.restore(&snap, RestoreTarget::Source(&s)).await.unwrap();
    assert_eq!(redis.dump(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_are_clear_and_leave_no_snapshot() {
    let f = Fixture::new().await;
    // Down: nothing listens.
    let down = source(&format!(
        "name = \"r\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"",
        free_port()
    ));
    let e = format!("{:#}", f.backup(&down, None).await.unwrap_err());
    assert!(
        e.contains("cannot connect to redis at 127.0.0.1:") && e.contains("is Redis running"),
        "{e}"
    );

    // Wrong password, and none when one is needed.
    let redis = Redis::start(f.path("redis"), &["--requirepass", "right-password"]);
    let pw = f.path("pw");
    std::fs::write(&pw, "wrong-password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = source(&redis.spec(&format!("password_file = {pw:?}")));
    let e = format!("{:#}", f.backup(&wrong, None).await.unwrap_err());
    assert!(e.contains("refused the credentials"), "{e}");
    let none = source(&redis.spec(""));
    let e = format!("{:#}", f.backup(&none, None).await.unwrap_err());
    assert!(e.contains("needs a password"), "{e}");
    // A password file others can read is refused before use.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = format!(
        "{:#}",
        parse_source(
            toml::from_str(&redis.spec(&format!("password_file = {pw:?}"))).unwrap(),
            Path::new("/")
        )
        .unwrap_err()
    );
    assert!(e.contains("chmod 600"), "{e}");

    // A data_dir that is not where Redis saves.
    std::fs::write(&pw, "right-password\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let elsewhere = f.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let bad_dir = source(&redis.spec(&format!("password_file = {pw:?}\ndata_dir = {elsewhere:?}")));
    let e = format!("{:#}", f.backup(&bad_dir, None).await.unwrap_err());
    assert!(
        e.contains("cannot open the RDB") && e.contains("CONFIG GET dir"),
        "{e}"
    );
    assert_eq!(f.snapshots().await, 0);
}

// ---------------------------------------------------------------- postgres (command source)

/// A real PostgreSQL cluster in a temp directory, on a free port.
struct Postgres {
    dir: PathBuf,
    port: u16,
    bin: PathBuf,
}

impl Postgres {
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is not installed: run deploy/dev/prereqs.sh")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("postgres").exists())
            .collect();
        versions.sort();
        versions
            .pop()
            .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
    }

    /// The server refuses to run as root: run it as `postgres` then.
    fn as_server_user(&self, prog: &str) -> Command {
        let path = self.bin.join(prog);
        if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }

    fn start(dir: PathBuf) -> Postgres {
        std::fs::create_dir_all(&dir).unwrap();
        let pg = Postgres {
            port: free_port(),
            dir,
            bin: Self::bin_dir(),
        };
        if rustix::process::geteuid().is_root() {
            let uid = user_id("-u");
            let gid = user_id("-g");
            std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid)).unwrap();
            std::fs::set_permissions(
                pg.dir.parent().unwrap(),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        let st = pg
            .as_server_user("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(pg.dir.join("data"))
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        let st = pg
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(pg.dir.join("data"))
            .arg("-l")
            .arg(pg.dir.join("log"))
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                pg.port,
                pg.dir.display()
            ))
            .args(["-w", "start"])
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&st.stderr)
        );
        pg
    }

    fn env(&self) -> String {
        format!(
            "env = {{ PGHOST = \"127.0.0.1\", PGPORT = \"{}\", PGUSER = \"postgres\" }}",
            self.port
        )
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn user_id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self
            .as_server_user("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

const CHECK_SQL: &str = "select count(*) || ' ' || md5(string_agg(id || ':' || body || ':' || amount, ',' order by id)) from messages";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dump_and_restore_through_a_command_source() {
    let f = Fixture::new().await;
    let pg = Postgres::start(f.path("pg"));
    pg.psql("postgres", "create database app");
    pg.psql("postgres", "create database app_restore");
    pg.psql(
        "app",
        "create table messages (id int primary key, body text, amount numeric)",
    );
    pg.psql("app", "insert into messages select g, 'message ' || g || repeat('x', g % 50), g * 1.5 from generate_series(1, 5000) g");
    let want = pg.psql("app", CHECK_SQL);
    assert!(want.starts_with("5000 "), "{want}");

    let psql = pg.bin.join("psql");
    let src = source(&format!(
        "name = \"pg-app\"\nkind = \"command\"\nbackup = [{:?}, \"--format=custom\", \"--dbname=app\"]\ncheck = [{:?}, \"-At\", \"--dbname=app\", \"-c\", {CHECK_SQL:?}]\nstream_name = \"app.dump\"\n{}",
        pg.bin.join("pg_dump"), psql, pg.env()
    ));
    let snap = f.backup(&src, None).await.unwrap();
    assert_eq!(position(&snap, command::CHECK_OUTPUT), Some(want.as_str()));

    let target = source(&format!(
        "name = \"pg-staging\"\nkind = \"command\"\nbackup = [\"false\"]\nrestore = [{:?}, \"--single-transaction\", \"--no-owner\", \"--dbname=app_restore\"]\ncheck = [{:?}, \"-At\", \"--dbname=app_restore\", \"-c\", {CHECK_SQL:?}]\n{}",
        pg.bin.join("pg_restore"), psql, pg.env()
    ));
    let report = f
        .restore(&snap, RestoreTarget::Source(&target))
        .await
        .unwrap();
    assert_eq!(
        pg.psql("app_restore", CHECK_SQL),
        want,
        "row count and checksum equal"
    );
    assert!(report.checks[0].contains("matches"), "{:?}", report.checks);

    // A second restore into the now non-empty database fails inside the
    // single transaction: the tool's error is reported and nothing changes.
    let e = format!(
        "{:#}",
        f.restore(&snap, RestoreTarget::Source(&target))
            .await
            .unwrap_err()
    );
    assert!(
        e.contains("pg_restore") && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(pg.psql("app_restore", CHECK_SQL), want);

    // Wrong credentials (a role that does not exist): the tool's own
    // message, and no snapshot.
    let n = f.snapshots().await;
    let bad = source(&format!(
        "name = \"pg-bad\"\nkind = \"command\"\nbackup = [{:?}, \"--dbname=app\"]\nenv = {{ PGHOST = \"127.0.0.1\", PGPORT = \"{}\", PGUSER = \"nobody\" }}",
        pg.bin.join("pg_dump"), pg.port
    ));
    let e = format!("{:#}", f.backup(&bad, None).await.unwrap_err());
    assert!(
        e.contains("pg_dump") && e.contains("\"nobody\" does not exist"),
        "{e}"
    );
    assert_eq!(f.snapshots().await, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_failures_leave_no_snapshot() {
    let f = Fixture::new().await;
    // The tool is missing.
    let missing = source("name = \"x\"\nkind = \"command\"\nbackup = [\"/opt/nowhere/pg_dump\"]");
    let e = format!("{:#}", f.backup(&missing, None).await.unwrap_err());
    assert!(
        e.contains("not found") && e.contains("/opt/nowhere/pg_dump"),
        "{e}"
    );
    // The tool dies midway, after writing output.
    let dies = source("name = \"x\"\nkind = \"command\"\nbackup = [\"sh\", \"-c\", \"head -c 3000000 /dev/urandom; echo 'connection lost' >&2; exit 2\"]");
    let e = format!("{:#}", f.backup(&dies, None).await.unwrap_err());
    assert!(
        e.contains("exit status 2") && e.contains("connection lost"),
        "{e}"
    );
    assert_eq!(f.snapshots().await, 0);
    // Disk full on restore: the restore tool's error comes back.
    let ok = source("name = \"x\"\nkind = \"command\"\nbackup = [\"sh\", \"-c\", \"head -c 300000 /dev/urandom\"]");
    let snap = f.backup(&ok, None).await.unwrap();
    let full = source("name = \"y\"\nkind = \"command\"\nbackup = [\"true\"]\nrestore = [\"sh\", \"-c\", \"cat > /dev/full\"]");
    let e = format!(
        "{:#}",
        f.restore(&snap, RestoreTarget::Source(&full))
            .await
            .unwrap_err()
    );
    assert!(e.contains("No space left on device"), "{e}");
}

// ---------------------------------------------------------------- kafka

fn segment(dir: &Path, base: u64, len: usize, seed: u8) {
    let name = format!("{base:020}");
    let data: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    std::fs::write(dir.join(format!("{name}.log")), &data).unwrap();
    std::fs::write(dir.join(format!("{name}.index")), vec![seed; 4096]).unwrap();
    std::fs::write(dir.join(format!("{name}.timeindex")), vec![seed; 4096]).unwrap();
}

/// A log directory laid out as a broker lays it out.
fn kafka_dir(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(
        root.join("meta.properties"),
        "version=1\nbroker.id=1\ncluster.id=abc\n",
    )
    .unwrap();
    for f in [
        "recovery-point-offset-checkpoint",
        "replication-offset-checkpoint",
        "log-start-offset-checkpoint",
        "cleaner-offset-checkpoint",
    ] {
        std::fs::write(root.join(f), "0\n2\nchat-0 0\nchat-1 0\n").unwrap();
    }
    for p in ["chat-0", "chat-1"] {
        let d = root.join(p);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("leader-epoch-checkpoint"), "0\n1\n0 0\n").unwrap();
        std::fs::write(d.join("partition.metadata"), "version: 0\ntopic_id: x\n").unwrap();
    }
    segment(&root.join("chat-0"), 0, 2_000_000, 1);
    segment(&root.join("chat-0"), 1000, 1_500_000, 2); // active
    segment(&root.join("chat-1"), 0, 700_000, 3); // active
    std::fs::write(
        root.join("chat-0/00000000000000001000.snapshot"),
        "producer state",
    )
    .unwrap();
    let doomed = root.join("chat-2.0123456789abcdef-delete");
    std::fs::create_dir_all(&doomed).unwrap();
    segment(&doomed, 0, 1000, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backs_up_closed_segments_and_then_only_new_ones() {
    let f = Fixture::new().await;
    let root = f.path("kafka");
    kafka_dir(&root);
    let s = source(&format!(
        "name = \"kafka\"\nkind = \"kafka\"\npath = {root:?}"
    ));
    let first = f.backup(&s, None).await.unwrap();
    assert_eq!(position(&first, kafka::PARTITIONS), Some("2"));
    assert_eq!(
        position(&first, kafka::SEGMENTS),
        Some("1"),
        "only chat-0's first segment is closed"
    );

    // The broker rolls chat-0 (segment 1000 closes, 2500 is new) and chat-1.
    segment(&root.join("chat-0"), 2500, 800_000, 4);
    segment(&root.join("chat-1"), 900, 300_000, 5);
    let second = f.backup(&s, Some(first.clone())).await.unwrap();
    let m = &second.manifest.summary;
    assert_eq!(position(&second, kafka::SEGMENTS), Some("3"));
    // Read and uploaded: the two newly closed segments (1.5 MB + 0.7 MB plus
    // indexes), not the 2 MB segment the first backup has.
    assert!(
        m.bytes_read < 2_300_000 && m.bytes_read > 2_200_000,
        "read {}",
        m.bytes_read
    );
    assert!(m.files_unchanged >= 3, "{m:?}");

    // Restore into an empty log directory gives the closed segments and
    // every other file, and no active segment or doomed directory.
    let target_dir = f.path("restored");
    let target = source(&format!(
        "name = \"kafka-staging\"\nkind = \"kafka\"\npath = {target_dir:?}"
    ));
    let report = f
        .restore(&second, RestoreTarget::Source(&target))
        .await
        .unwrap();
    assert!(
        report
            .checks
            .contains(&"2 partitions, 3 segments".to_string()),
        "{:?}",
        report.checks
    );
    let listing = |r: &Path| -> Vec<String> {
        let mut v: Vec<String> = walkdir::WalkDir::new(r)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| e.path().strip_prefix(r).unwrap().display().to_string())
            .collect();
        v.sort();
        v
    };
    let got = listing(&target_dir);
    let want: Vec<String> = listing(&root)
        .into_iter()
        .filter(|p| {
            !p.contains("-delete")
                && !p.contains("00000000000000002500.")
                && !p.starts_with("chat-1/00000000000000000900.")
        })
        .collect();
    assert_eq!(got, want);
    for p in &got {
        assert_eq!(
            std::fs::read(target_dir.join(p)).unwrap(),
            std::fs::read(root.join(p)).unwrap(),
            "{p}"
        );
    }
    // A non-empty target is refused.
    let e = format!(
        "{:#}",
        f.restore(&second, RestoreTarget::Source(&target))
            .await
            .unwrap_err()
    );
    assert!(e.contains("not empty"), "{e}");

    // Offline (the broker stopped by hooks): active segments too.
    let offline = source(&format!(
        "name = \"kafka\"\nkind = \"kafka\"\npath = {root:?}\nonline = false"
    ));
    let all = f.backup(&offline, None).await.unwrap();
    assert_eq!(position(&all, kafka::SEGMENTS), Some("5"));
}

// ---------------------------------------------------------------- mongodb (scripted tools)

/// mongodump/mongorestore stand-ins that check their arguments as the real
/// tools take them and answer in their documented formats. mongorestore
/// reports the 1234 documents mongodump dumped, unless told to lie: the
/// file `mongo.restored` holds another count to report, `mongo.failed` a
/// count of failed documents, and `mongo.silent` makes it print no summary.
fn mongo_tools(dir: &Path, dump_exit: i32) -> (PathBuf, PathBuf) {
    let dump = dir.join("mongodump");
    write_script(
        &dump,
        &format!(
            r#"
echo "$@" > {args}
config=""; archive=0; gzip=0
for a in "$@"; do
  case "$a" in
    --config=*) config="${{a#--config=}}" ;;
    --archive) archive=1 ;;
    --gzip) gzip=1 ;;
    *password*|*:*@*) echo "credentials on the command line: $a" >&2; exit 64 ;;
  esac
done
[ "$archive" = 1 ] && [ "$gzip" = 1 ] || {{ echo "need --archive --gzip" >&2; exit 64; }}
[ -f "$config" ] || {{ echo "no --config file" >&2; exit 64; }}
[ "$(stat -c %a "$config")" = 600 ] || {{ echo "config readable by others" >&2; exit 64; }}
grep -q '^uri: mongodb://backup:' "$config" || {{ echo "Failed: error connecting to db server: auth error: sasl conversation error: unable to authenticate using mechanism \"SCRAM-SHA-256\": (AuthenticationFailed) Authentication failed." >&2; exit {dump_exit}; }}
echo "2024-05-01T10:00:00.000+0000	writing chat.messages to archive on stdout" >&2
head -c 2000000 /dev/urandom | tee {dumped}
echo "2024-05-01T10:00:01.000+0000	done dumping chat.messages (1200 documents)" >&2
echo "2024-05-01T10:00:01.000+0000	done dumping chat.users (34 documents)" >&2
"#,
            args = dir.join("dump.args").display(),
            dumped = dir.join("dumped").display()
        ),
    );
    let restore = dir.join("mongorestore");
    write_script(
        &restore,
        &format!(
            r#"
echo "$@" > {args}
for a in "$@"; do case "$a" in *password*) exit 64 ;; esac; done
cat > {restored}
cmp -s {restored} {dumped} || {{ echo "archive differs" >&2; exit 1; }}
[ -f {silent} ] && exit 0
echo "2024-05-01T11:00:00.000+0000	$(cat {count} 2>/dev/null || echo 1234) document(s) restored successfully. $(cat {failed} 2>/dev/null || echo 0) document(s) failed to restore." >&2
"#,
            args = dir.join("restore.args").display(),
            restored = dir.join("restored").display(),
            dumped = dir.join("dumped").display(),
            count = dir.join("mongo.restored").display(),
            failed = dir.join("mongo.failed").display(),
            silent = dir.join("mongo.silent").display()
        ),
    );
    (dump, restore)
}

/// A mongo tools config file (mode 0600) with the backup user's URI.
fn mongo_credentials(f: &Fixture) -> PathBuf {
    let creds = f.path("mongo.yaml");
    std::fs::write(
        &creds,
        "uri: mongodb://backup:s3cret@db-1:27017/?authSource=admin\n",
    )
    .unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    creds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_dump_streams_in_and_restores_with_the_counts_checked() {
    let f = Fixture::new().await;
    let (dump, restore_tool) = mongo_tools(f.dir.path(), 1);
    let creds = mongo_credentials(&f);
    let spec = |name: &str, extra: &str| {
        source(&format!(
            "name = \"{name}\"\nkind = \"mongodb\"\ncredentials_file = {creds:?}\nmongodump = {dump:?}\nmongorestore = {restore_tool:?}\n{extra}"
        ))
    };
    let s = spec("mongo", "dump_args = [\"--readPreference=secondary\"]");
    let snap = f.backup(&s, None).await.unwrap();
    assert_eq!(position(&snap, mongodb::DOCUMENTS), Some("1234"));
    assert_eq!(position(&snap, mongodb::COLLECTIONS), Some("2"));
    assert_eq!(snap.manifest.summary.bytes, 2_000_000);
    let args = std::fs::read_to_string(f.path("dump.args")).unwrap();
    assert!(
        args.contains("--archive --gzip --readPreference=secondary") && !args.contains("s3cret"),
        "{args}"
    );

    let staging = spec("mongo-staging", "restore_args = [\"--drop\"]");
    let report = f
        .restore(&snap, RestoreTarget::Source(&staging))
        .await
        .unwrap();
    assert!(
        report.checks[0].contains("1234 documents restored"),
        "{:?}",
        report.checks
    );
    assert!(std::fs::read_to_string(f.path("restore.args"))
        .unwrap()
        .ends_with("--archive --gzip --drop\n"));

    // Failed documents fail the restore loudly.
    std::fs::write(f.path("mongo.failed"), "3").unwrap();
    let e = format!(
        "{:#}",
        f.restore(&snap, RestoreTarget::Source(&staging))
            .await
            .unwrap_err()
    );
    std::fs::remove_file(f.path("mongo.failed")).unwrap();
    assert!(e.contains("could not restore 3 document(s)"), "{e}");

    // Wrong credentials: mongodump's message, no snapshot.
    std::fs::write(&creds, "uri: mongodb://intruder:nope@db-1:27017/\n").unwrap();
    let n = f.snapshots().await;
    let e = format!("{:#}", f.backup(&s, None).await.unwrap_err());
    assert!(
        e.contains("Authentication failed") && e.contains("mongodump"),
        "{e}"
    );
    assert_eq!(f.snapshots().await, n);

    // A password in the URI is refused at configuration time.
    let bad = parse_source(
        toml::from_str(&format!("name = \"m\"\nkind = \"mongodb\"\nuri = \"mongodb://u:p@h/\"\ncredentials_file = {creds:?}")).unwrap(),
        Path::new("/"),
    );
    assert!(format!("{:#}", bad.unwrap_err()).contains("must not hold a password"));
}

// ---------------------------------------------------------------- tidb (scripted br)

/// A `br` stand-in: `backup full` writes backupmeta and SST files under the
/// local:// storage and a TS, `validate decode --field=end-version` prints
/// it, `restore full` appends what it applied to a log. Told to lie (the
/// file `br.checksum` holds a backup TS), `restore full` of that backup
/// fails BR's checksum validation as BR reports it.
fn br_tool(dir: &Path) -> PathBuf {
    let br = dir.join("br");
    write_script(
        &br,
        &format!(
            r#"
echo "$@" >> {calls}
storage=""; last=""
for a in "$@"; do
  case "$a" in
    --storage=local://*) storage="${{a#--storage=local://}}" ;;
    --lastbackupts=*) last="${{a#--lastbackupts=}}" ;;
  esac
done
[ -n "$storage" ] || {{ echo "[error] --storage is required" >&2; exit 2; }}
case "$1 $2" in
  "backup full")
    grep -q -- '--pd=' <<<"$*" || {{ echo "need --pd" >&2; exit 2; }}
    [ -f {fail} ] && {{ echo "[ERROR] write sst: no space left on device" >&2; exit 1; }}
    mkdir -p "$storage/1"
    ts=$(( $(cat {counter} 2>/dev/null || echo 435000000000000000) + 1000 ))
    echo $ts > {counter}
    echo "ts=$ts last=$last" > "$storage/backupmeta"
    head -c 500000 /dev/urandom > "$storage/1/$ts.sst"
    echo "[INFO] [\"Full Backup success summary\"] [BackupTS=$ts]"
    ;;
  "validate decode") sed -n 's/^ts=\([0-9]*\).*/\1/p' "$storage/backupmeta" ;;
  "restore full")
    ts=$(sed -n 's/^ts=\([0-9]*\).*/\1/p' "$storage/backupmeta")
    if [ -f {checksum} ] && [ "$(cat {checksum})" = "$ts" ]; then
      echo "[2024/05/01 11:00:00.000 +00:00] [ERROR] [client.go:1422] [\"failed in validate checksum\"] [database=app] [table=orders] [\"origin tidb crc64\"=5473284912764323281] [\"calculated crc64\"=1160939187163729520] [\"origin tidb total kvs\"=5000] [\"calculated total kvs\"=4999] [\"origin tidb total bytes\"=412000] [\"calculated total bytes\"=411917]" >&2
      echo "Error: [BR:Restore:ErrRestoreChecksumMismatch]restore checksum mismatch" >&2
      exit 1
    fi
    head -1 "$storage/backupmeta" >> {restored} ;;
  *) echo "unknown command $1 $2" >&2; exit 2 ;;
esac
"#,
            calls = dir.join("br.calls").display(),
            counter = dir.join("br.ts").display(),
            restored = dir.join("br.restored").display(),
            fail = dir.join("br.fail").display(),
            checksum = dir.join("br.checksum").display()
        ),
    );
    br
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_full_then_incremental_and_a_chain_restore() {
    let f = Fixture::new().await;
    let br = br_tool(f.dir.path());
    let staging = f.path("br-staging");
    let s = source(&format!(
        "name = \"tidb\"\nkind = \"tidb\"\npd = \"pd-0:2379\"\nstaging_dir = {staging:?}\nbr = {br:?}\nratelimit = 64"
    ));
    let full = f.backup(&s, None).await.unwrap();
    let ts1 = position(&full, tidb::BACKUP_TS).unwrap().to_string();
    assert_eq!(ts1, "435000000000001000");
    assert_eq!(position(&full, tidb::MODE), Some("full"));
    let incr = f.backup(&s, Some(full.clone())).await.unwrap();
    assert_eq!(position(&incr, tidb::MODE), Some("incremental"));
    assert_eq!(position(&incr, tidb::LAST_BACKUP_TS), Some(ts1.as_str()));
    let calls = std::fs::read_to_string(f.path("br.calls")).unwrap();
    assert!(
        calls.contains("--ratelimit=64") && calls.contains(&format!("--lastbackupts={ts1}")),
        "{calls}"
    );
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staging cleaned"
    );

    let target = source(&format!(
        "name = \"tidb-staging\"\nkind = \"tidb\"\npd = \"staging-pd:2379\"\nstaging_dir = {staging:?}\nbr = {br:?}"
    ));
    let report = f
        .restore(&incr, RestoreTarget::Source(&target))
        .await
        .unwrap();
    let restored = std::fs::read_to_string(f.path("br.restored")).unwrap();
    assert_eq!(
        restored,
        format!("ts={ts1} last=\nts=435000000000002000 last={ts1}\n"),
        "the full backup first, then the incremental"
    );
    assert_eq!(report.checks.len(), 2);
    assert!(std::fs::read_to_string(f.path("br.calls"))
        .unwrap()
        .contains("restore full --pd=staging-pd:2379"));

    // BR failing (disk full): its message, staging cleaned, no snapshot.
    let n = f.snapshots().await;
    std::fs::write(f.path("br.fail"), "").unwrap();
    let e = format!("{:#}", f.backup(&s, None).await.unwrap_err());
    std::fs::remove_file(f.path("br.fail")).unwrap();
    assert!(
        e.contains("no space left on device") && e.contains("br backup"),
        "{e}"
    );
    assert_eq!(f.snapshots().await, n);
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    // br missing.
    let nobr = source(&format!("name = \"t\"\nkind = \"tidb\"\npd = \"pd:2379\"\nstaging_dir = {staging:?}\nbr = \"/opt/none/br\""));
    let e = format!("{:#}", f.backup(&nobr, None).await.unwrap_err());
    assert!(e.contains("not found") && e.contains("/opt/none/br"), "{e}");
}

#[test]
fn kinds_are_registered_once_and_rank_the_drill() {
    let names: Vec<_> = KINDS.iter().map(|k| k.name).collect();
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{names:?}");
    for k in KINDS {
        assert!(std::ptr::eq(kind(k.name).unwrap(), *k));
    }
    assert!(kind("oracle").is_none());
    // The order a drill restores in: the database of record first, caches
    // last, then what nothing depends on.
    let rank = |n: &str| kind(n).unwrap().drill_rank;
    assert!(rank("tidb") < rank("mongodb"));
    assert!(rank("mongodb") < rank("kafka"));
    assert!(rank("kafka") < rank("redis"));
    assert!(rank("redis") < rank("volume"));
    assert_eq!(rank("volume"), rank("command"));
    // A parsed source is of the kind it was parsed as.
    let v = source("name = \"v\"\nkind = \"volume\"\npath = \"/x\"");
    assert!(std::ptr::eq(v.spec.kind(), &volume::KIND));
    assert_eq!(
        v.spec_as::<volume::VolumeSpec>().unwrap().path,
        Path::new("/x")
    );
    assert!(v.spec_as::<redis::RedisSpec>().is_none());
}

#[test]
fn config_errors_name_the_key() {
    let e = |t: &str| {
        format!(
            "{:#}",
            parse_source(toml::from_str(t).unwrap(), Path::new("/")).unwrap_err()
        )
    };
    assert!(e("name = \"r\"\nkind = \"redis\"\naddress = \"localhost\"").contains("host:port"));
    assert!(
        e("name = \"r\"\nkind = \"redis\"\naddress = \"h:1\"\nfoo = 1")
            .contains("unknown field `foo`")
    );
    assert!(e("name = \"c\"\nkind = \"command\"\nbackup = []").contains("must name a program"));
    assert!(e("name = \"k\"\nkind = \"kafka\"").contains("missing field `path`"));
    assert!(
        e("name = \"t\"\nkind = \"tidb\"\npd = \"pd\"\nstaging_dir = \"/s\"")
            .contains("host:port of PD")
    );
    assert!(
        e("name = \"v\"\nkind = \"volume\"\npath = \"/x\"\ntimeout = \"soon\"")
            .contains("not a duration")
    );
    assert!(e("name = \"o\"\nkind = \"oracle\"")
        .contains("supported: volume, kafka, command, redis, mongodb, tidb"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_around_the_backup_and_post_hooks_always_run() {
    let f = Fixture::new().await;
    let data = f.path("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("a"), "a").unwrap();
    let post_ran = f.path("post-ran");
    let with_hooks = |pre: &str| {
        source(&format!(
            "name = \"v\"\nkind = \"volume\"\npath = {data:?}\npre_hook = [\"sh\", \"-c\", {pre:?}]\npost_hook = [\"touch\", {post_ran:?}]"
        ))
    };
    // A failing pre-hook fails the job with its stderr; the post-hook still runs.
    let e = format!(
        "{:#}",
        f.backup(
            &with_hooks("echo 'scale to 0 failed: no such service' >&2; exit 4"),
            None
        )
        .await
        .unwrap_err()
    );
    assert!(
        e.contains("pre_hook") && e.contains("no such service") && e.contains("exit status 4"),
        "{e}"
    );
    assert!(
        post_ran.exists(),
        "the post-hook ran after the failed pre-hook"
    );
    assert_eq!(f.snapshots().await, 0);
    std::fs::remove_file(&post_ran).unwrap();
    // A hook that hangs is killed at hook_timeout (5 s here).
    let started = Instant::now();
    let e = format!(
        "{:#}",
        f.backup(&with_hooks("sleep 60"), None).await.unwrap_err()
    );
    assert!(e.contains("did not finish within 5s"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(post_ran.exists());
    // Both hooks fine: a snapshot.
    f.backup(&with_hooks("true"), None).await.unwrap();
    assert_eq!(f.snapshots().await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_over_its_timeout_is_killed_and_leaves_no_snapshot() {
    let f = Fixture::new().await;
    let pid_file = f.path("dump.pid");
    let slow = source(&format!(
        "name = \"slow\"\nkind = \"command\"\ntimeout = \"2s\"\nbackup = [\"sh\", \"-c\", \"echo $$ > {}; printf start; exec sleep 120\"]",
        pid_file.display()
    ));
    let started = Instant::now();
    let e = format!("{:#}", f.backup(&slow, None).await.unwrap_err());
    assert!(e.contains("did not finish within its timeout (2s)"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    wait_until(
        "the dump program to be killed",
        Duration::from_secs(10),
        || {
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        },
    );
    assert_eq!(f.snapshots().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_over_tls_with_a_client_certificate() {
    use trireme_net::tls::{ca, Role};
    let f = Fixture::new().await;
    let pki = f.path("pki");
    ca::init_ca(&pki).unwrap();
    let server = ca::issue(&pki, Role::Controller, "localhost", 2, &pki).unwrap();
    let client = ca::issue(&pki, Role::Agent, "cache-1", 2, &pki).unwrap();
    let tls_port = free_port();
    let ca_pem = pki.join("ca.pem");
    let tls_args = format!(
        "--tls-port {tls_port} --tls-cert-file {} --tls-key-file {} --tls-ca-cert-file {} --tls-auth-clients yes",
        server.cert_path.display(),
        server.key_path.display(),
        ca_pem.display()
    );
    let args: Vec<&str> = tls_args.split(' ').collect();
    let redis = Redis::start(f.path("redis"), &args);
    redis.fill();
    let spec = |extra: &str| {
        format!(
            "name = \"redis-tls\"\nkind = \"redis\"\naddress = \"127.0.0.1:{tls_port}\"\ndata_dir = {:?}\n{extra}",
            redis.dir
        )
    };
    let with_cert = source(&spec(&format!(
        "tls = {{ ca = {ca_pem:?}, cert = {:?}, key = {:?}, server_name = \"localhost\" }}",
        client.cert_path, client.key_path
    )));
    let snap = f.backup(&with_cert, None).await.unwrap();
    assert_eq!(position(&snap, redis::KEYS_MAX), Some("205"));
    // Without the client certificate the server refuses the handshake.
    let without = source(&spec(&format!(
        "tls = {{ ca = {ca_pem:?}, server_name = \"localhost\" }}"
    )));
    assert!(f.backup(&without, None).await.is_err());
    // A server certificate from another CA is refused by the agent.
    let other = f.path("other-pki");
    ca::init_ca(&other).unwrap();
    let wrong_ca = source(&spec(&format!(
        "tls = {{ ca = {:?}, cert = {:?}, key = {:?}, server_name = \"localhost\" }}",
        other.join("ca.pem"),
        client.cert_path,
        client.key_path
    )));
    let e = format!("{:#}", f.backup(&wrong_ca, None).await.unwrap_err());
    assert!(e.to_lowercase().contains("certificate"), "{e}");
    assert_eq!(f.snapshots().await, 1);
}

// ---------------------------------------------------------------- restore safety

/// Every entry under `root` (itself included): a file's bytes, a link's
/// target, a directory's mode.
fn tree_state(root: &Path) -> BTreeMap<String, Vec<u8>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        let what = if e.file_type().is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            format!("link {}", t.display()).into_bytes()
        } else if e.file_type().is_dir() {
            format!("dir {:o}", e.metadata().unwrap().mode() & 0o7777).into_bytes()
        } else {
            std::fs::read(e.path()).unwrap()
        };
        out.insert(rel, what);
    }
    out
}

/// A live directory: data an application is using.
fn live_dir(root: &Path) {
    std::fs::create_dir_all(root.join("uploads")).unwrap();
    std::fs::write(root.join("app.db"), noise(11, 200_000)).unwrap();
    std::fs::write(root.join("uploads/photo.jpg"), noise(12, 50_000)).unwrap();
    std::fs::write(root.join(".lock"), b"4242\n").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_test_into_a_live_directory_is_refused_and_leaves_every_file() {
    let f = Fixture::new().await;
    let data = f.path("data");
    live_dir(&data);
    let vol = source(&format!("name = \"v\"\nkind = \"volume\"\npath = {data:?}"));
    let snap = f.backup(&vol, None).await.unwrap();
    let ix = f.indexed().await;
    let job = f.job("restore-test");
    let minute = Duration::from_secs(60);

    let live = f.path("live");
    live_dir(&live);
    std::fs::write(live.join("other"), b"not in the snapshot").unwrap();
    let before = tree_state(&live);
    let as_source = source(&format!(
        "name = \"live\"\nkind = \"volume\"\npath = {live:?}"
    ));
    for target in [
        RestoreTarget::Path(&live),
        RestoreTarget::Source(&as_source),
    ] {
        let e = format!(
            "{:#}",
            restore_job(&ix, &snap, target, &job, minute, true)
                .await
                .unwrap_err()
        );
        assert_eq!(e.matches("not empty").count(), 1, "said once: {e}");
        assert_eq!(
            e.matches(&live.display().to_string()).count(),
            1,
            "names the target once: {e}"
        );
        assert!(e.contains("new or empty directory"), "says what to do: {e}");
        assert_eq!(tree_state(&live), before, "every file in place: {e}");
    }

    // A live Kafka log directory as the target of a Kafka restore test.
    let kafka_src = f.path("kafka-src");
    kafka_dir(&kafka_src);
    let ks = source(&format!(
        "name = \"kafka\"\nkind = \"kafka\"\npath = {kafka_src:?}"
    ));
    let ksnap = f.backup(&ks, None).await.unwrap();
    let broker = f.path("kafka-live");
    kafka_dir(&broker);
    let before = tree_state(&broker);
    let staging = source(&format!(
        "name = \"kafka-staging\"\nkind = \"kafka\"\npath = {broker:?}"
    ));
    let e = format!(
        "{:#}",
        restore_job(
            &ix,
            &ksnap,
            RestoreTarget::Source(&staging),
            &job,
            minute,
            true
        )
        .await
        .unwrap_err()
    );
    assert_eq!(e.matches("not empty").count(), 1, "{e}");
    assert_eq!(tree_state(&broker), before, "the log directory is intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_test_removes_only_what_it_wrote() {
    let f = Fixture::new().await;
    let data = f.path("data");
    live_dir(&data);
    std::fs::write(data.join("uploads/second.bin"), noise(13, 3_000_000)).unwrap();
    // Small packs: file data in packs of their own, apart from the tree's.
    let mut opts = BackupOptions::new("v", "volume", "test-host");
    opts.pack_size = 256 * 1024;
    let snap = f
        .indexed()
        .await
        .backup(trireme_common::BackupInput::Tree(data.clone()), opts)
        .await
        .unwrap();
    let job = f.job("restore-test");
    let minute = Duration::from_secs(60);

    // The smoke test (another process) writes into the restored tree, then
    // fails: the restore's files go, the smoke test's stay.
    let staging = f.path("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o750)).unwrap();
    let script = format!(
        "test -f {s}/app.db && echo theirs > {s}/uploads/theirs.txt && echo also > {s}/mine.log && exit 3",
        s = staging.display()
    );
    let target = source(&format!(
        "name = \"staging\"\nkind = \"volume\"\npath = {staging:?}\nsmoke_test = [\"sh\", \"-c\", {script:?}]"
    ));
    let ix = f.indexed().await;
    let e = format!(
        "{:#}",
        restore_job(
            &ix,
            &snap,
            RestoreTarget::Source(&target),
            &job,
            minute,
            true
        )
        .await
        .unwrap_err()
    );
    assert!(
        e.contains("smoke_test") && e.contains("exit status 3"),
        "{e}"
    );
    let left = tree_state(&staging);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        ["", "mine.log", "uploads", "uploads/theirs.txt"],
        "{e}"
    );
    assert_eq!(left["uploads/theirs.txt"], b"theirs\n");
    assert_eq!(left[""], b"dir 750", "the staging directory's mode is back");

    // A restore test that passes cleans up after itself, too.
    let ok = f.path("ok");
    let report = restore_job(&ix, &snap, RestoreTarget::Path(&ok), &job, minute, true)
        .await
        .unwrap();
    assert!(!ok.exists(), "{:?}", report.checks);
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.starts_with("cleaned up: removed the 4 files and 2 directories")),
        "{:?}",
        report.checks
    );

    // Data damaged in a pack the tree does not use: the restore creates the
    // files, then fails on that pack.
    let tree_packs: std::collections::HashSet<_> = snap
        .manifest
        .tree
        .iter()
        .map(|c| ix.index.get(c).unwrap().0.id)
        .collect();
    let damaged = ix
        .index
        .packs()
        .iter()
        .map(|p| p.id)
        .find(|id| !tree_packs.contains(id))
        .expect("a pack of file data only");
    let pack = f
        .path("repo")
        .join(trireme_common::ObjectKey::new(ObjectKind::Pack, damaged.to_hex()).path());
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&pack, bytes).unwrap();
    // A plain restore shows what such a failure leaves: files were written.
    let witness = f.path("witness");
    let e = format!(
        "{:#}",
        f.restore(&snap, RestoreTarget::Path(&witness))
            .await
            .unwrap_err()
    );
    assert!(e.contains("corrupt"), "{e}");
    assert!(witness.join("app.db").exists(), "{e}");
    // As a restore test it removes them, and the directories it created.
    let parent = f.path("tests");
    std::fs::create_dir_all(&parent).unwrap();
    std::fs::write(parent.join("keep.txt"), b"keep").unwrap();
    let before = tree_state(&parent);
    let fresh = parent.join("run-1/target");
    let e = format!(
        "{:#}",
        restore_job(&ix, &snap, RestoreTarget::Path(&fresh), &job, minute, true)
            .await
            .unwrap_err()
    );
    assert!(e.contains("corrupt"), "{e}");
    assert_eq!(tree_state(&parent), before, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_restore_never_writes_through_a_symlink() {
    let f = Fixture::new().await;
    let dump = noise(21, 100_000);
    let snap = f
        .indexed()
        .await
        .backup(
            trireme_common::BackupInput::Stream {
                name: "dump.sql".into(),
                reader: Box::new(std::io::Cursor::new(dump.clone())),
            },
            BackupOptions::new("db", "command", "test-host"),
        )
        .await
        .unwrap();
    let job = f.job("restore-test");
    let minute = Duration::from_secs(60);
    let victim = f.path("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let link = f.path("restore.sql");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for test in [false, true] {
        let e = format!(
            "{:#}",
            restore_job(
                &f.indexed().await,
                &snap,
                RestoreTarget::Path(&link),
                &job,
                minute,
                test
            )
            .await
            .unwrap_err()
        );
        assert!(
            e.contains(&link.display().to_string()) && e.contains("symbolic link"),
            "{e}"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "{e}");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }
    // A dangling link: what it points to is not created.
    let nowhere = f.path("nowhere.sql");
    let dangling = f.path("dangling.sql");
    std::os::unix::fs::symlink(&nowhere, &dangling).unwrap();
    let e = format!(
        "{:#}",
        f.restore(&snap, RestoreTarget::Path(&dangling))
            .await
            .unwrap_err()
    );
    assert!(e.contains("symbolic link"), "{e}");
    assert!(!nowhere.exists(), "{e}");
    // A new name works; as a restore test, the file is removed afterwards.
    let fresh = f.path("fresh.sql");
    f.restore(&snap, RestoreTarget::Path(&fresh)).await.unwrap();
    assert!(std::fs::read(&fresh).unwrap() == dump);
    let tested = f.path("tested.sql");
    let ix = f.indexed().await;
    restore_job(&ix, &snap, RestoreTarget::Path(&tested), &job, minute, true)
        .await
        .unwrap();
    assert!(!tested.exists());
}

mod checks;
mod volume_filters;
