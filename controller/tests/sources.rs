//! End-to-end with a datastore: a real controller and agent back up a real
//! `redis-server`, and restore it into a second (staging) redis-server
//! through `--to agent:source:<name>`, where the agent checks the keys.

mod support;

use std::path::PathBuf;

use support::fleet::{AgentSpec, Fleet};
use support::redis::Redis;

#[test]
fn redis_backup_and_restore_into_a_staging_instance_through_the_controller() {
    let mut f = Fleet::new();
    let (main_dir, staging_dir): (PathBuf, PathBuf) =
        (f.dir.join("redis-main"), f.dir.join("redis-staging"));
    let main = Redis::start(&main_dir);
    let staging = Redis::start(&staging_dir);
    for i in 0..500 {
        main.cli(&["SET", &format!("session:{i}"), &format!("token-{i}")]);
    }
    main.cli(&["HSET", "room:1", "topic", "backups", "members", "3"]);
    staging.cli(&["SET", "stale", "from an old test"]);

    f.start_controller();
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut spec = AgentSpec::volume("cache-1", "unused", &empty);
    spec.extra = main.source("redis", &main_dir) + &staging.source("redis-staging", &staging_dir);
    f.start_agent(&spec);
    f.wait_connected(&["cache-1"]);

    let sources = f.cli_json(&["sources", "ls"]);
    assert!(sources.to_string().contains("\"redis\""), "{sources}");

    let out = f.cli(&["backup", "run", "cache-1/redis", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "cache-1/redis"]);
    let snap = snaps[0]["id"].as_str().unwrap().to_string();
    // The controller keeps the datastore position the agent recorded.
    let shown = f.cli_json(&["snapshots", "show", &snap]);
    assert_eq!(
        shown["datastore_position"]["redis.keys_max"], "501",
        "{shown}"
    );

    let out = f.cli(&[
        "restore",
        &snap[..12],
        "--to",
        "cache-1:source:redis-staging",
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(staging.cli(&["DBSIZE"]), "501");
    assert_eq!(staging.cli(&["GET", "session:321"]), "token-321");
    assert_eq!(
        staging.cli(&["GET", "stale"]),
        "",
        "the staging data was replaced"
    );
    let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded"]);
    let restore_job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "restore")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = f.cli(&["jobs", "show", &restore_job]);
    assert!(shown.contains("501 keys (backup: 501)"), "{shown}");
    assert!(
        shown.contains("sampled keys have their backed-up values"),
        "{shown}"
    );

    // The datastore down: the job fails with the reason, and no snapshot is added.
    drop(main);
    let out = f.cli_as("op", &["backup", "run", "cache-1/redis", "--wait"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("cannot connect to redis at 127.0.0.1"),
        "{text}"
    );
    let snaps = f.cli_json(&["snapshots", "ls", "cache-1/redis"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1);

    // An unknown source as a restore target is refused by the agent, by name.
    let out = f.cli_as(
        "op",
        &[
            "restore",
            &snap[..12],
            "--to",
            "cache-1:source:nope",
            "--wait",
        ],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("no source \"nope\""),
        "{text}"
    );
}
