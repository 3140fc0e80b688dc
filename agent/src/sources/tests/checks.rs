//! Every branch where a restore's check fails, made to fail: a restore
//! whose counts, sampled values, check output or checksums do not match
//! the backup is reported as failed, naming what was expected and found.
//! The data is made to differ for real where the datastore runs here (a
//! redis-server started on another RDB, a PostgreSQL restore that loses a
//! row, a Kafka backup whose segment went while it was taken); the scripted
//! tools lie when told to (see `mongo_tools` and `br_tool`).

use super::*;

/// The restore's error, as an operator reads it.
async fn restore_error(f: &Fixture, snap: &Snapshot, target: &SourceConfig) -> String {
    format!(
        "{:#}",
        f.restore(snap, RestoreTarget::Source(target))
            .await
            .expect_err("the restore must fail its check")
    )
}

// ---------------------------------------------------------------- redis

/// The instance's data, saved as an RDB at `to`.
fn save_rdb(redis: &Redis, to: &Path) {
    redis.cli(&["SAVE"]).unwrap();
    std::fs::copy(redis.dir.join("dump.rdb"), to).unwrap();
}

/// A target whose start_hook puts `rdb` where the restore placed the
/// snapshot's RDB, then starts the server: it comes up with other data.
fn started_on(redis: &Redis, rdb: &Path) -> SourceConfig {
    let hook = format!(
        "cp {} {}/dump.rdb && {}",
        rdb.display(),
        redis.dir.display(),
        redis.start_command()
    );
    source(&format!(
        "name = \"redis-staging\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ndata_dir = {:?}\nstart_hook = [\"sh\", \"-c\", {hook:?}]",
        redis.port, redis.dir
    ))
}

fn keys(redis: &Redis) -> u64 {
    ["0", "1"]
        .iter()
        .map(|db| {
            redis
                .cli(&["-n", db, "DBSIZE"])
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restore_with_fewer_or_more_keys_than_backed_up_fails() {
    let f = Fixture::new().await;
    let redis = Redis::start(f.path("redis"), &[]);
    redis.fill();
    let s = source(&redis.spec(&format!("data_dir = {:?}", redis.dir)));
    let snap = f.backup(&s, None).await.unwrap();
    assert_eq!(position(&snap, redis::KEYS_MIN), Some("205"));
    assert_eq!(position(&snap, redis::KEYS_MAX), Some("205"));
    assert_eq!(position(&snap, redis::EXPIRES), Some("0"));

    // Fewer keys than the backup had (below its lowest count).
    redis.cli(&["FLUSHALL"]).unwrap();
    for i in 0..50 {
        redis.cli(&["SET", &format!("user:{i}"), "v"]).unwrap();
    }
    let fewer = f.path("fewer.rdb");
    save_rdb(&redis, &fewer);
    let e = restore_error(&f, &snap, &started_on(&redis, &fewer)).await;
    assert!(
        e.contains("source redis-staging: restore check failed: 50 keys after the restore, the backup had 205"),
        "{e}"
    );
    assert_eq!(keys(&redis), 50, "the target really holds other data");

    // More keys than the backup had (above its highest count).
    redis.cli(&["FLUSHALL"]).unwrap();
    redis.fill();
    for i in 0..5 {
        redis.cli(&["SET", &format!("extra:{i}"), "v"]).unwrap();
    }
    let more = f.path("more.rdb");
    save_rdb(&redis, &more);
    let e = restore_error(&f, &snap, &started_on(&redis, &more)).await;
    assert!(
        e.contains("restore check failed: 210 keys after the restore, the backup had 205"),
        "{e}"
    );
    assert_eq!(keys(&redis), 210);

    // The same snapshot restored honestly passes: the swapped RDB was the
    // only difference.
    let report = f.restore(&snap, RestoreTarget::Source(&s)).await.unwrap();
    assert!(
        report.checks.iter().any(|c| c == "205 keys (backup: 205)"),
        "{:?}",
        report.checks
    );
}

/// The first sample the check compares: its database and key.
fn first_sample(snap: &Snapshot) -> (String, String) {
    let v = position(snap, &format!("{}0", redis::SAMPLE)).expect("a sampled key");
    let mut parts = v.splitn(3, ':');
    let db = parts.next().unwrap().to_string();
    let key = hex::decode(parts.next().unwrap()).unwrap();
    (db, String::from_utf8(key).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restore_with_a_sampled_key_changed_or_missing_fails() {
    let f = Fixture::new().await;
    let redis = Redis::start(f.path("redis"), &[]);
    redis.fill();
    let s = source(&redis.spec(&format!("data_dir = {:?}", redis.dir)));
    let snap = f.backup(&s, None).await.unwrap();
    let (db, key) = first_sample(&snap);

    // The same 205 keys of the same types, each with another value: the
    // count passes, the first sampled key does not.
    for i in 0..200 {
        redis
            .cli(&["SET", &format!("user:{i}"), &format!("changed {i}")])
            .unwrap();
    }
    redis.cli(&["HSET", "profile:1", "name", "Grace"]).unwrap();
    redis.cli(&["RPUSH", "queue", "d"]).unwrap();
    redis.cli(&["SADD", "tags", "z"]).unwrap();
    redis.cli(&["ZADD", "scores", "3", "three"]).unwrap();
    redis.cli(&["-n", "1", "SET", "other-db", "2"]).unwrap();
    assert_eq!(keys(&redis), 205);
    let changed = f.path("changed.rdb");
    save_rdb(&redis, &changed);
    let e = restore_error(&f, &snap, &started_on(&redis, &changed)).await;
    assert!(
        e.contains(&format!(
            "source redis-staging: restore check failed: key {key:?} (db {db}) has another value after the restore"
        )),
        "{e}"
    );

    // As many keys, but not the backed-up ones: the first sample is missing.
    redis.cli(&["FLUSHALL"]).unwrap();
    for i in 0..205 {
        redis.cli(&["SET", &format!("stranger:{i}"), "v"]).unwrap();
    }
    let strangers = f.path("strangers.rdb");
    save_rdb(&redis, &strangers);
    let e = restore_error(&f, &snap, &started_on(&redis, &strangers)).await;
    assert!(
        e.contains(&format!(
            "restore check failed: key {key:?} (db {db}) is missing after the restore"
        )),
        "{e}"
    );
    assert!(
        !e.contains("keys after the restore"),
        "the count passed: {e}"
    );

    // A sample recorded in a form the check cannot read (too few fields, a
    // database that is not a number, a key that is not hex) fails the check
    // instead of being skipped.
    let rdb = std::fs::read(&strangers).unwrap();
    for bad in ["not-a-sample", "x:757365723a31:d", "0:zz:d"] {
        let mut opts = BackupOptions::new("redis", "redis", "test-host");
        opts.position = snap.manifest.position.clone();
        opts.position
            .insert(format!("{}0", redis::SAMPLE), bad.into());
        let malformed = f
            .indexed()
            .await
            .backup(
                trireme_common::BackupInput::Stream {
                    name: "dump.rdb".into(),
                    reader: Box::new(std::io::Cursor::new(rdb.clone())),
                },
                opts,
            )
            .await
            .unwrap();
        let e = restore_error(&f, &malformed, &s).await;
        assert!(e.contains(&format!("malformed sample {bad:?}")), "{e}");
    }

    // Restored honestly, every sample matches.
    let report = f.restore(&snap, RestoreTarget::Source(&s)).await.unwrap();
    assert!(
        report
            .checks
            .iter()
            .any(|c| c.contains("sampled keys have their backed-up values")),
        "{:?}",
        report.checks
    );
}

// ---------------------------------------------------------------- command

/// A check program printing a file's line count and digest.
fn rows_and_digest(file: &Path) -> String {
    format!(
        "printf '%s rows %s' $(wc -l < {0}) $(md5sum < {0} | cut -c1-32)",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_restore_whose_check_output_differs_fails() {
    let f = Fixture::new().await;
    let data = f.path("data.txt");
    let rows: String = (1..=100).map(|i| format!("row {i}\n")).collect();
    std::fs::write(&data, rows).unwrap();
    let src = source(&format!(
        "name = \"rows\"\nkind = \"command\"\nbackup = [\"cat\", {data:?}]\ncheck = [\"sh\", \"-c\", {:?}]",
        rows_and_digest(&data)
    ));
    let snap = f.backup(&src, None).await.unwrap();
    let want = position(&snap, command::CHECK_OUTPUT).unwrap().to_string();
    assert!(want.starts_with("100 rows "), "{want}");

    let restored = f.path("restored.txt");
    let target = |restore: &str, check: &str| {
        source(&format!(
            "name = \"rows-staging\"\nkind = \"command\"\nbackup = [\"false\"]\nrestore = [\"sh\", \"-c\", {restore:?}]\ncheck = [\"sh\", \"-c\", {check:?}]"
        ))
    };
    let into_file = format!("cat > {}", restored.display());

    // A restore that loses a row: the check prints other numbers.
    let lossy = target(
        &format!("sed 1d > {}", restored.display()),
        &rows_and_digest(&restored),
    );
    let e = restore_error(&f, &snap, &lossy).await;
    assert!(
        e.contains(
            "source rows-staging: restore check failed: the check command printed \"99 rows "
        ) && e.contains(&format!("after the restore, {want:?} at backup time")),
        "{e}"
    );

    // A check program that fails after the restore fails the restore.
    let broken = target(
        &into_file,
        "echo 'relation \"messages\" does not exist' >&2; exit 2",
    );
    let e = restore_error(&f, &snap, &broken).await;
    assert!(
        e.contains("source rows-staging: check command")
            && e.contains("exit status 2")
            && e.contains("does not exist"),
        "{e}"
    );

    // A check that prints more than a summary is refused, not compared.
    let chatty = target(&into_file, "head -c 5000 /dev/zero | tr '\\0' x");
    let e = restore_error(&f, &snap, &chatty).await;
    assert!(e.contains("the check command printed 5000 bytes"), "{e}");

    // The honest restore passes.
    let ok = target(&into_file, &rows_and_digest(&restored));
    let report = f.restore(&snap, RestoreTarget::Source(&ok)).await.unwrap();
    assert_eq!(
        report.checks,
        [format!("check command output matches the backup's: {want}")]
    );

    // A check that cannot be made is reported as not made, never as passed:
    // a target without `check` ...
    let unchecked = source(&format!(
        "name = \"rows-staging\"\nkind = \"command\"\nbackup = [\"false\"]\nrestore = [\"sh\", \"-c\", {into_file:?}]"
    ));
    let report = f
        .restore(&snap, RestoreTarget::Source(&unchecked))
        .await
        .unwrap();
    assert_eq!(
        report.checks,
        ["not checked: the target source has no `check` command"]
    );
    // ... and a backup during which the check output changed (a counter).
    let counter = f.path("counter");
    let moving = source(&format!(
        "name = \"rows\"\nkind = \"command\"\nbackup = [\"cat\", {data:?}]\ncheck = [\"sh\", \"-c\", {:?}]",
        format!("echo x >> {0}; wc -l < {0}", counter.display())
    ));
    let moved = f.backup(&moving, None).await.unwrap();
    assert_eq!(position(&moved, command::CHECK_OUTPUT), None);
    let report = f.restore(&moved, RestoreTarget::Source(&ok)).await.unwrap();
    assert_eq!(
        report.checks,
        ["not checked: the data changed while it was dumped (check output before and after differ)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restore_that_loses_a_row_fails_its_check() {
    let f = Fixture::new().await;
    let pg = Postgres::start(f.path("pg"));
    pg.psql("postgres", "create database app");
    pg.psql("postgres", "create database app_restore");
    pg.psql(
        "app",
        "create table messages (id int primary key, body text, amount numeric)",
    );
    pg.psql(
        "app",
        "insert into messages select g, 'message ' || g, g * 1.5 from generate_series(1, 5000) g",
    );
    let want = pg.psql("app", CHECK_SQL);
    let psql = pg.bin.join("psql");
    let src = source(&format!(
        "name = \"pg-app\"\nkind = \"command\"\nbackup = [{:?}, \"--format=custom\", \"--dbname=app\"]\ncheck = [{:?}, \"-At\", \"--dbname=app\", \"-c\", {CHECK_SQL:?}]\n{}",
        pg.bin.join("pg_dump"), psql, pg.env()
    ));
    let snap = f.backup(&src, None).await.unwrap();
    assert_eq!(position(&snap, command::CHECK_OUTPUT), Some(want.as_str()));

    // pg_restore, then a row deleted: the restored table really differs.
    let restore = format!(
        "{} --single-transaction --no-owner --dbname=app_restore && {} -v ON_ERROR_STOP=1 --dbname=app_restore -c 'delete from messages where id = 4242'",
        pg.bin.join("pg_restore").display(),
        psql.display()
    );
    let target = source(&format!(
        "name = \"pg-staging\"\nkind = \"command\"\nbackup = [\"false\"]\nrestore = [\"sh\", \"-c\", {restore:?}]\ncheck = [{:?}, \"-At\", \"--dbname=app_restore\", \"-c\", {CHECK_SQL:?}]\n{}",
        psql, pg.env()
    ));
    let e = restore_error(&f, &snap, &target).await;
    let got = pg.psql("app_restore", CHECK_SQL);
    assert!(got.starts_with("4999 "), "{got}");
    assert!(
        e.contains(&format!(
            "source pg-staging: restore check failed: the check command printed {got:?} after the restore, {want:?} at backup time"
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------- kafka

/// A snapshot of `root` as a kafka backup that recorded `partitions` and
/// `segments`: what a backup records when segments go (retention) between
/// its count and its walk of the directory.
async fn kafka_snapshot(f: &Fixture, root: &Path, partitions: u64, segments: u64) -> Snapshot {
    let mut opts = BackupOptions::new("kafka", "kafka", "test-host");
    opts.position
        .insert(kafka::PARTITIONS.into(), partitions.to_string());
    opts.position
        .insert(kafka::SEGMENTS.into(), segments.to_string());
    f.indexed()
        .await
        .backup(trireme_common::BackupInput::Tree(root.to_path_buf()), opts)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_restore_with_other_partition_or_segment_counts_fails() {
    let f = Fixture::new().await;
    // Two partitions, one closed segment (chat-0's first) as a backup takes them.
    let root = f.path("kafka");
    std::fs::create_dir_all(root.join("chat-0")).unwrap();
    std::fs::create_dir_all(root.join("chat-1")).unwrap();
    std::fs::write(root.join("meta.properties"), "version=1\nbroker.id=1\n").unwrap();
    segment(&root.join("chat-0"), 0, 100_000, 1);
    std::fs::write(root.join("chat-1/leader-epoch-checkpoint"), "0\n1\n0 0\n").unwrap();
    let target = |name: &str| {
        let dir = f.path(name);
        source(&format!(
            "name = \"kafka-staging\"\nkind = \"kafka\"\npath = {dir:?}"
        ))
    };

    // The backup counted a segment that was gone when it read the directory.
    let snap = kafka_snapshot(&f, &root, 2, 2).await;
    let e = restore_error(&f, &snap, &target("t1")).await;
    assert!(
        e.contains(
            "restore check failed: 2 partitions and 1 segments restored, the backup had 2 and 2"
        ),
        "{e}"
    );
    // ... or a partition.
    let snap = kafka_snapshot(&f, &root, 3, 1).await;
    let e = restore_error(&f, &snap, &target("t2")).await;
    assert!(
        e.contains(
            "restore check failed: 2 partitions and 1 segments restored, the backup had 3 and 1"
        ),
        "{e}"
    );

    // Counts that match pass.
    let snap = kafka_snapshot(&f, &root, 2, 1).await;
    let report = f
        .restore(&snap, RestoreTarget::Source(&target("t3")))
        .await
        .unwrap();
    assert!(
        report
            .checks
            .contains(&"2 partitions, 1 segments".to_string()),
        "{:?}",
        report.checks
    );
}

// ---------------------------------------------------------------- mongodb

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_restore_with_other_counts_or_failed_documents_fails() {
    let f = Fixture::new().await;
    let (dump, restore_tool) = mongo_tools(f.dir.path(), 1);
    let creds = mongo_credentials(&f);
    let spec = |name: &str| {
        source(&format!(
            "name = \"{name}\"\nkind = \"mongodb\"\ncredentials_file = {creds:?}\nmongodump = {dump:?}\nmongorestore = {restore_tool:?}"
        ))
    };
    let snap = f.backup(&spec("mongo"), None).await.unwrap();
    assert_eq!(position(&snap, mongodb::DOCUMENTS), Some("1234"));
    let staging = spec("mongo-staging");
    let lie = |file: &str, text: &str| std::fs::write(f.path(file), text).unwrap();
    let truth = |file: &str| std::fs::remove_file(f.path(file)).unwrap();

    // Fewer documents restored than dumped, and more.
    lie("mongo.restored", "1233");
    let e = restore_error(&f, &snap, &staging).await;
    assert!(
        e.contains("source mongo-staging: restore check failed: 1233 documents restored, the dump had 1234"),
        "{e}"
    );
    lie("mongo.restored", "1240");
    let e = restore_error(&f, &snap, &staging).await;
    assert!(
        e.contains("restore check failed: 1240 documents restored, the dump had 1234"),
        "{e}"
    );
    truth("mongo.restored");

    // Documents mongorestore could not restore.
    lie("mongo.failed", "3");
    let e = restore_error(&f, &snap, &staging).await;
    assert!(
        e.contains("source mongo-staging: restore check failed: mongorestore could not restore 3 document(s) (1234 restored)"),
        "{e}"
    );
    truth("mongo.failed");

    // No summary at all: the restore cannot be confirmed.
    lie("mongo.silent", "");
    let e = restore_error(&f, &snap, &staging).await;
    assert!(
        e.contains("finished without its \"document(s) restored successfully\" summary"),
        "{e}"
    );
    truth("mongo.silent");

    // Told the truth again, it passes.
    let report = f
        .restore(&snap, RestoreTarget::Source(&staging))
        .await
        .unwrap();
    assert_eq!(
        report.checks,
        ["1234 documents restored, as dumped (1234), none failed"]
    );
}

// ---------------------------------------------------------------- tidb

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tidb_restore_failing_brs_checksums_fails() {
    let f = Fixture::new().await;
    let br = br_tool(f.dir.path());
    let staging = f.path("br-staging");
    let s = source(&format!(
        "name = \"tidb\"\nkind = \"tidb\"\npd = \"pd-0:2379\"\nstaging_dir = {staging:?}\nbr = {br:?}"
    ));
    let full = f.backup(&s, None).await.unwrap();
    let incr = f.backup(&s, Some(full.clone())).await.unwrap();
    let ts1 = position(&full, tidb::BACKUP_TS).unwrap().to_string();
    let ts2 = position(&incr, tidb::BACKUP_TS).unwrap().to_string();
    let target = |extra: &str| {
        source(&format!(
            "name = \"tidb-staging\"\nkind = \"tidb\"\npd = \"staging-pd:2379\"\nstaging_dir = {staging:?}\nbr = {br:?}\n{extra}"
        ))
    };

    // The incremental's data fails BR's checksum validation: the restore
    // fails with BR's numbers, after the full backup was applied.
    std::fs::write(f.path("br.checksum"), &ts2).unwrap();
    let e = restore_error(&f, &incr, &target("")).await;
    assert!(
        e.contains("source tidb-staging: br restore")
            && e.contains("exit status 1")
            && e.contains("restore checksum mismatch")
            && e.contains("[\"origin tidb total kvs\"=5000] [\"calculated total kvs\"=4999]"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(f.path("br.restored")).unwrap(),
        format!("ts={ts1} last=\n"),
        "only the full backup was applied"
    );
    assert_eq!(
        std::fs::read_dir(&staging).unwrap().count(),
        0,
        "staging cleaned"
    );
    std::fs::remove_file(f.path("br.checksum")).unwrap();

    // BR's checksums turned off in restore_args: the report does not claim
    // they were verified.
    let report = f
        .restore(
            &full,
            RestoreTarget::Source(&target("restore_args = [\"--checksum=false\"]")),
        )
        .await
        .unwrap();
    assert_eq!(report.checks.len(), 1);
    assert!(
        report.checks[0].contains("not checked: restore_args turn BR's checksums off")
            && !report.checks[0].contains("verified"),
        "{:?}",
        report.checks
    );
    let report = f
        .restore(&full, RestoreTarget::Source(&target("")))
        .await
        .unwrap();
    assert!(
        report.checks[0].ends_with("BR checksums verified"),
        "{:?}",
        report.checks
    );
}
