//! Proving recoverability end to end: restore tests into a real staging
//! redis-server and a staging directory, RPO/RTO in `status` and the
//! metrics, and DR drills from one location — passing, and failing on a
//! corrupted location — with their reports.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{make_data, sample, scrape, wait_for, wait_verified, AgentSpec, Fleet};
use support::redis::Redis;
use trireme_testkit::tree;

const POLICIES: &str = r#"
[[policy]]
source = "cache-1/redis"
schedule = "0 0 1 1 *"
retention = "r"
rpo = "1h"
rto = "5m"
restore_test = { target = "cache-1:source:redis-staging" }

[[policy]]
source = "cache-1/files"
schedule = "0 0 1 1 *"
retention = "r"
rto = "5m"
restore_test = { target = "cache-1:source:files-staging" }
"#;

fn apply(f: &Fleet, text: &str) {
    let p = f.dir.join("policy.toml");
    Fleet::write_file(&p, text);
    f.cli(&["policy", "apply", "-f", p.to_str().unwrap()]);
}

fn recovery_of<'a>(status: &'a Value, source: &str) -> &'a Value {
    status["recovery"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            format!(
                "{}/{}",
                r["source"]["agent"].as_str().unwrap(),
                r["source"]["name"].as_str().unwrap()
            ) == source
        })
        .unwrap_or_else(|| panic!("no {source} in {status}"))
}

/// Flip a byte in every pack of a `file://` location.
fn corrupt_packs(loc: &Path) {
    for e in walkdir::WalkDir::new(loc.join("packs"))
        .into_iter()
        .flatten()
    {
        if e.file_type().is_file() {
            let mut b = std::fs::read(e.path()).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x5a;
            std::fs::write(e.path(), &b).unwrap();
        }
    }
}

fn run_fails(f: &Fleet, args: &[&str]) -> String {
    let out = f.cli_as("op", args);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "trireme {args:?} should fail: {text}"
    );
    text
}

#[test]
fn restore_tests_objectives_and_drills() {
    let mut f = Fleet::new();
    // Passes only after backups (and verify): corruption made below stays.
    f.replication = "every = \"1h\"\n".into();
    let metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    // Told about restore tests, drills and sources turning red.
    let told = support::receiver::Receiver::start(Vec::new());
    f.controller_extra = format!(
        "metrics_listen = \"{metrics}\"\n[[notify]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/t\"\nevents = [\"restore_test\", \"drill\", \"recovery_red\"]\n",
        told.addr
    );
    let redis = Redis::start(&f.dir.join("redis-main"));
    let staging = Redis::start(&f.dir.join("redis-staging"));
    for i in 0..300 {
        redis.cli(&["SET", &format!("msg:{i}"), &format!("hello {i}")]);
    }
    let files = f.dir.join("files");
    make_data(&files, 6, 200_000, 7);
    let files_staging = f.dir.join("files-staging");
    std::fs::create_dir_all(&files_staging).unwrap();

    f.start_controller();
    let mut spec = AgentSpec::volume("cache-1", "files", &files);
    spec.extra = redis.source("redis", &f.dir.join("redis-main"))
        + &staging.source("redis-staging", &f.dir.join("redis-staging"))
        + &format!(
            "[[source]]\nname = \"files-staging\"\nkind = \"volume\"\npath = \"{}\"\nsmoke_test = [\"test\", \"-f\", \"{}/d0/f0.bin\"]\n",
            files_staging.display(),
            files_staging.display()
        );
    let agent_metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    spec.settings = format!("metrics_listen = \"{agent_metrics}\"\n");
    f.start_agent(&spec);
    f.wait_connected(&["cache-1"]);
    apply(&f, POLICIES);

    // Never tested: the RTO is not proven, the source is red.
    let st = f.cli_json(&["status"]);
    let r = recovery_of(&st, "cache-1/redis");
    assert_eq!(r["state"], "red", "{r}");
    assert!(
        r["problems"]
            .to_string()
            .contains("no snapshot is protected (verified at 3 locations, in 2 or more regions)"),
        "{r}"
    );

    // Backups, copied and verified at the three locations.
    for source in ["cache-1/redis", "cache-1/files"] {
        let out = f.cli(&["backup", "run", source, "--wait"]);
        assert!(out.contains("succeeded"), "{out}");
        let snaps = f.cli_json(&["snapshots", "ls", source]);
        wait_verified(
            &f,
            snaps[0]["id"].as_str().unwrap(),
            3,
            Duration::from_secs(60),
        );
    }
    let text = f.cli(&["restore-test", "run", "cache-1/redis", "--wait"]);
    assert!(
        text.contains("passed") && text.contains("300 keys (backup: 300)"),
        "{text}"
    );
    assert_eq!(staging.cli(&["GET", "msg:42"]), "hello 42");
    let tests = f.cli_json(&["restore-test", "ls", "cache-1/redis"]);
    assert_eq!(tests[0]["result"], "passed", "{tests}");
    assert!(tests[0]["duration_secs"].as_f64().unwrap() > 0.0, "{tests}");
    let st = f.cli_json(&["status"]);
    assert_eq!(recovery_of(&st, "cache-1/redis")["state"], "green", "{st}");
    // The agent's own metrics: its jobs, dedup, and its sources' volumes,
    // which it also reports to the controller with each heartbeat.
    let text = scrape(&agent_metrics);
    assert_eq!(
        sample(
            &text,
            "trireme_agent_jobs_total{kind=\"backup\",outcome=\"succeeded\"}"
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            "trireme_agent_jobs_total{kind=\"restore\",outcome=\"succeeded\"}"
        ),
        1.0
    );
    let dedup = sample(
        &text,
        "trireme_agent_backup_dedup_ratio{source=\"cache-1/files\"}",
    );
    // Its one backup was of random data new to the repository: almost
    // nothing was already there.
    assert!((0.0..0.05).contains(&dedup), "{dedup}");
    let used = sample(
        &text,
        "trireme_agent_source_volume_used_ratio{source=\"cache-1/files\"}",
    );
    assert!(used > 0.0 && used <= 1.0, "{used}");
    let text = scrape(&metrics);
    let reported = sample(
        &text,
        "trireme_source_volume_used_ratio{source=\"cache-1/files\"}",
    );
    assert!(
        (reported - used).abs() < 0.05,
        "controller {reported}, agent {used}"
    );
    assert_eq!(
        sample(
            &text,
            "trireme_location_snapshots_behind{location=\"loc2\"}"
        ),
        0.0
    );
    let text = scrape(&metrics);
    assert_eq!(
        sample(&text, "trireme_source_rpo_met{source=\"cache-1/redis\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "trireme_restore_test_success{source=\"cache-1/redis\"}"
        ),
        1.0
    );

    // The webhook was told the test passed; the controller then saw the
    // source green (it looks at both in the same pass).
    wait_for(
        "the passed test to be told",
        Duration::from_secs(30),
        || {
            told.requests()
                .iter()
                .any(|(_, _, b)| b.contains("\"title\":\"restore test of cache-1/redis passed\""))
                .then_some(())
        },
    );

    // The RPO tightened below the snapshot's age: red in status and metrics.
    apply(&f, &POLICIES.replacen("rpo = \"1h\"", "rpo = \"2s\"", 1));
    let r = wait_for("cache-1/redis to turn red", Duration::from_secs(30), || {
        let st = f.cli_json(&["status"]);
        let r = recovery_of(&st, "cache-1/redis").clone();
        (r["state"] == "red").then_some(r)
    });
    assert!(r["problems"].to_string().contains("RPO missed"), "{r}");
    assert!(f.cli(&["status"]).contains("RED"));
    let text = scrape(&metrics);
    assert_eq!(
        sample(&text, "trireme_source_rpo_met{source=\"cache-1/redis\"}"),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            "trireme_source_recovery_ok{source=\"cache-1/redis\"}"
        ),
        0.0
    );
    // And the webhook is told, once the controller looked (every 5 s).
    wait_for("the red source to be told", Duration::from_secs(30), || {
        told.requests()
            .iter()
            .any(|(_, _, body)| body.contains("\"title\":\"cache-1/redis is red\""))
            .then_some(())
    });
    apply(&f, POLICIES);

    // A drill from loc2 alone: TiDB, MongoDB, Kafka, Redis, then the rest.
    let out = f.cli(&["drill", "run", "--location", "loc2", "--wait"]);
    assert!(out.contains("**Result: PASSED**"), "{out}");
    for item in [
        "[x] Backups reachable at every location",
        "[x] Restore steps completed (2 of 2)",
        "[x] Data integrity validated",
        "[x] Restore times within RTO",
    ] {
        assert!(out.contains(item), "{item}: {out}");
    }
    let (r_at, f_at) = (
        out.find("| cache-1/redis |").unwrap(),
        out.find("| cache-1/files |").unwrap(),
    );
    assert!(r_at < f_at, "redis before the plain volume: {out}");
    assert!(out.contains("smoke test"), "{out}");
    assert!(
        tree(&files_staging).is_empty(),
        "the drill cleaned the staging directory"
    );
    // A restore test aimed at a live directory (here, the staging one now
    // holding three files) is refused, and every file stays as it was.
    std::fs::create_dir_all(files_staging.join("live")).unwrap();
    for (name, bytes) in [
        ("app.db", &b"rows"[..]),
        ("live/upload.jpg", &[0xff, 0xd8, 0xff][..]),
        (".lock", &b"4242"[..]),
    ] {
        std::fs::write(files_staging.join(name), bytes).unwrap();
    }
    let live = tree(&files_staging);
    let text = run_fails(&f, &["restore-test", "run", "cache-1/files", "--wait"]);
    assert!(text.contains("the directory is not empty"), "{text}");
    assert!(
        text.lines().all(|l| l.matches("not empty").count() <= 1),
        "each message says it once: {text}"
    );
    assert_eq!(tree(&files_staging), live, "every file in place: {text}");
    std::fs::remove_dir_all(&files_staging).unwrap();
    std::fs::create_dir_all(&files_staging).unwrap();
    let drills = f.cli_json(&["drill", "ls"]);
    let id = drills[0]["id"].as_str().unwrap().to_string();
    assert_eq!(drills[0]["result"], "passed");
    let html = f.cli(&["drill", "show", &id, "--html"]);
    assert!(
        html.starts_with("<!doctype html>") && html.contains("<h2>Checklist</h2>"),
        "{html}"
    );

    // loc2 damaged: the drill from it fails, and its report says where.
    corrupt_packs(&f.location(2));
    let text = run_fails(&f, &["drill", "run", "--location", "loc2", "--wait"]);
    assert!(text.contains("**Result: FAILED**"), "{text}");
    assert!(
        text.contains("[ ] Restore steps completed (0 of 2)"),
        "{text}"
    );
    assert!(
        text.contains("## What failed") && text.contains("- cache-1/redis:"),
        "{text}"
    );
    // The other locations are fine: a drill from loc3 passes.
    let out = f.cli(&["drill", "run", "--location", "loc3", "--wait"]);
    assert!(out.contains("**Result: PASSED**"), "{out}");

    // The primary damaged too: a restore test fails loudly, the source turns red.
    corrupt_packs(&f.location(1));
    let text = run_fails(&f, &["restore-test", "run", "cache-1/redis", "--wait"]);
    assert!(
        text.contains("FAILED") && text.to_lowercase().contains("corrupt"),
        "{text}"
    );
    let st = f.cli_json(&["status"]);
    let r = recovery_of(&st, "cache-1/redis");
    assert_eq!(r["state"], "red", "{r}");
    assert!(
        r["problems"].to_string().contains("the last restore test"),
        "{r}"
    );
    let text = scrape(&metrics);
    assert_eq!(
        sample(
            &text,
            "trireme_restore_test_success{source=\"cache-1/redis\"}"
        ),
        0.0
    );

    // What the webhook was told, in order: the tests and drills above, and
    // cache-1/redis turning red (the RPO at 2 s). Its first red, before any
    // restore test ("never tested"), was already so at start: not told.
    let want = [
        "restore test of cache-1/redis passed",
        "cache-1/redis is red",
        "DR drill",
        "restore test of cache-1/files failed",
        "DR drill",
        "DR drill",
        "restore test of cache-1/redis failed",
    ];
    let titles = || -> Vec<String> {
        told.requests()
            .iter()
            .map(|(_, _, body)| {
                serde_json::from_str::<serde_json::Value>(body).unwrap()["title"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while titles().len() < want.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let titles = titles();
    for w in want {
        assert!(
            titles.iter().any(|t| t.starts_with(w)),
            "{w:?} not told: {titles:#?}"
        );
    }
    let drills: Vec<&String> = titles
        .iter()
        .filter(|t| t.starts_with("DR drill"))
        .collect();
    assert_eq!(drills.len(), 3, "{titles:#?}");
    assert_eq!(
        drills.iter().filter(|t| t.ends_with("failed")).count(),
        1,
        "{titles:#?}"
    );
}

/// `trireme-controller check-config` on the fleet's controller config as it
/// would be written now.
fn check_config(f: &Fleet) -> std::process::Output {
    std::process::Command::new(support::fleet::bin("trireme-controller"))
        .args(["check-config", "--config"])
        .arg(f.write_controller_config())
        .output()
        .unwrap()
}

/// The `[protection]` rule: three copies in one region are not protected.
/// `status` is RED and names what is missing, `check-config` and the log
/// warn, `snapshots ls` and the metrics say "not protected"; once the
/// locations are labelled with two regions (and `provider` asked for too,
/// then dropped) the same verified copies count.
#[test]
fn protection_rule_counts_only_spread_copies() {
    let mut f = Fleet::new();
    f.regions = vec!["eu-west-1".into(); 3];
    let metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!("metrics_listen = \"{metrics}\"\n");
    let data = f.dir.join("data");
    make_data(&data, 3, 50_000, 11);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "www", &data));
    f.wait_connected(&["web-1"]);

    // The config cannot meet the rule: said at start and by check-config.
    let out = check_config(&f);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning       PROTECTION: the protection rule (verified at 3 locations, in 2 or more regions) cannot be met")
            && text.contains("every verified copy is in region \"eu-west-1\""),
        "{text}"
    );
    wait_for("the start-up warning", Duration::from_secs(10), || {
        std::fs::read_to_string(f.controller_log())
            .unwrap_or_default()
            .contains("PROTECTION: the protection rule")
            .then_some(())
    });

    f.cli(&["backup", "run", "web-1/www", "--wait"]);
    let id = f.cli_json(&["snapshots", "ls"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_verified(&f, &id, 3, Duration::from_secs(60));
    let snap = f.cli_json(&["snapshots", "show", &id]);
    assert_eq!(snap["protected"], false, "{snap}");
    let table = f.cli(&["snapshots", "ls"]);
    assert!(
        table.contains("PROTECTED") && table.contains(" 3/3 ") && table.contains(" no "),
        "{table}"
    );
    let st = f.cli_json(&["status"]);
    assert_eq!(st["state"], "RED", "{st}");
    assert_eq!(
        st["protection_rule"],
        "verified at 3 locations, in 2 or more regions"
    );
    assert!(
        st["rule_problems"].to_string().contains("cannot be met"),
        "{st}"
    );
    let p = &st["protection"][0];
    assert_eq!(p["newest_verified_copies"], 3, "{st}");
    assert_eq!(p["snapshot_id"], Value::Null, "{st}");
    assert!(
        p["newest_shortfall"]
            .to_string()
            .contains("every verified copy is in region \\\"eu-west-1\\\""),
        "{st}"
    );
    let text = f.cli(&["status"]);
    assert!(
        text.contains("state") && text.contains("RED") && text.contains("not protected"),
        "{text}"
    );
    let m = scrape(&metrics);
    assert_eq!(sample(&m, "trireme_protection_rule_satisfiable"), 0.0);
    assert_eq!(
        sample(
            &m,
            "trireme_source_newest_snapshot_protected{source=\"web-1/www\"}"
        ),
        0.0
    );

    // Two regions, and providers asked for too: still short (no provider
    // labels), and status names them.
    f.stop_controller();
    f.regions = vec!["eu-west-1".into(), "eu-west-1".into(), "us-east-1".into()];
    f.controller_extra = format!(
        "metrics_listen = \"{metrics}\"\n[protection]\ndistinct = [\"region\", \"provider\"]\n"
    );
    f.start_controller();
    let st = f.cli_json(&["status"]);
    assert_eq!(st["state"], "RED", "{st}");
    assert!(
        st["rule_problems"]
            .to_string()
            .contains("locations loc1, loc2, loc3 have no provider label"),
        "{st}"
    );

    // Regions only: the same three verified copies are protected now.
    f.stop_controller();
    f.controller_extra = format!("metrics_listen = \"{metrics}\"\n");
    f.start_controller();
    let snap = f.cli_json(&["snapshots", "show", &id]);
    assert_eq!(snap["protected"], true, "{snap}");
    let st = f.cli_json(&["status"]);
    assert_ne!(st["state"], "RED", "{st}");
    assert_eq!(st["protection"][0]["snapshot_id"], id.as_str(), "{st}");
    assert_eq!(st["rule_problems"], serde_json::json!([]), "{st}");
    let m = scrape(&metrics);
    assert_eq!(sample(&m, "trireme_protection_rule_satisfiable"), 1.0);
    assert_eq!(
        sample(
            &m,
            "trireme_source_newest_snapshot_protected{source=\"web-1/www\"}"
        ),
        1.0
    );

    // A bad rule is refused with what to write.
    f.stop_controller();
    f.controller_extra = "[protection]\ndistinct = [\"zone\"]\n".into();
    let out = check_config(&f);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("\"zone\" is not a location label; use \"region\" and/or \"provider\""),
        "{err}"
    );
}

/// `[drills] schedule`: drills start on their own, each from the next
/// location in turn, with the configured roles, channel, participants and
/// failover/rollback steps; `status` and the metrics say which location has
/// not been drilled; lessons are recorded with `drill annotate`; the HTML
/// report carries no raw Markdown.
#[test]
fn scheduled_drills_rotate_over_the_locations() {
    let mut f = Fleet::new();
    let metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!(
        "metrics_listen = \"{metrics}\"\n[drills]\nschedule = \"* * * * *\"\nchannel = \"#dr-war-room\"\nparticipants = [\"alice\", \"bob\"]\nroles = {{ incident_commander = \"alice\", restore_lead = \"bob\" }}\nfailover = [\"Point chat at the staging stores\"]\nrollback = [\"Point chat back at production\"]\n"
    );
    let files = f.dir.join("files");
    make_data(&files, 3, 100_000, 5);
    let staging = f.dir.join("files-staging");
    std::fs::create_dir_all(&staging).unwrap();
    f.start_controller();
    let mut spec = AgentSpec::volume("app-1", "files", &files);
    spec.extra = format!(
        "[[source]]\nname = \"files-staging\"\nkind = \"volume\"\npath = \"{}\"\n",
        staging.display()
    );
    f.start_agent(&spec);
    f.wait_connected(&["app-1"]);
    apply(
        &f,
        "[[policy]]\nsource = \"app-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"r\"\nrestore_test = { target = \"app-1:source:files-staging\" }\n",
    );
    let st = f.cli_json(&["status"]);
    assert!(
        st["problems"]
            .to_string()
            .contains("no DR drill has passed yet: run one (the next scheduled one"),
        "{st}"
    );
    assert_eq!(sample(&scrape(&metrics), "trireme_drill_stale"), 1.0);
    f.cli(&["backup", "run", "app-1/files", "--wait"]);
    let id = f.cli_json(&["snapshots", "ls"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_verified(&f, &id, 3, Duration::from_secs(60));

    // Two scheduled drills, one a minute: loc1, then loc2.
    let finished = |n: usize| {
        let d = f.cli_json(&["drill", "ls"]);
        let done: Vec<Value> = d
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["result"] != "running")
            .cloned()
            .collect();
        (done.len() >= n).then_some(done)
    };
    wait_for("a scheduled drill", Duration::from_secs(150), || {
        finished(1)
    });
    let drills = wait_for("a second scheduled drill", Duration::from_secs(90), || {
        finished(2)
    });
    let mut by_loc: Vec<(String, String)> = drills
        .iter()
        .map(|d| {
            assert_eq!(d["scheduled"], true, "{d}");
            assert_eq!(d["result"], "passed", "{d}");
            assert_eq!(d["by"], "drill schedule", "{d}");
            assert_eq!(d["channel"], "#dr-war-room", "{d}");
            assert_eq!(d["roles"]["incident_commander"], "alice", "{d}");
            (
                d["started"].as_str().unwrap().to_string(),
                d["location"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    by_loc.sort();
    assert_eq!(
        by_loc.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>()[..2],
        ["loc1", "loc2"],
        "{drills:?}"
    );
    let first = drills.iter().find(|d| d["location"] == "loc1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // loc3 has not been drilled yet: status and the metrics say so.
    let st = f.cli_json(&["status"]);
    assert!(
        st["problems"]
            .to_string()
            .contains("no passed DR drill read from loc3 in the last year"),
        "{st}"
    );
    let m = scrape(&metrics);
    assert!(sample(&m, "trireme_drill_last_success_timestamp_seconds") > 0.0);
    assert!(
        sample(
            &m,
            "trireme_drill_location_last_success_timestamp_seconds{location=\"loc1\"}"
        ) > 0.0
    );
    assert!(!m.contains("trireme_drill_location_last_success_timestamp_seconds{location=\"loc3\"}"));

    // Lessons learned: the last checklist item.
    let report = f.cli(&["drill", "show", &first]);
    assert!(report.contains("[ ] Lessons learned recorded"), "{report}");
    let a = f.cli_json(&[
        "drill",
        "annotate",
        &first,
        "--lessons",
        "Staging Redis needs more memory",
        "--participant",
        "carol",
    ]);
    assert_eq!(
        a["lessons"][0]["text"], "Staging Redis needs more memory",
        "{a}"
    );
    assert_eq!(a["lessons"][0]["by"], "op", "{a}");
    assert_eq!(
        a["participants"],
        serde_json::json!(["alice", "bob", "carol"]),
        "{a}"
    );
    let out = f.cli_as("op", &["drill", "annotate", &first]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing to record"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = f.cli(&["drill", "show", &first]);
    for item in [
        "[x] Lessons learned recorded",
        "[x] Roles and communication channel known",
        "[x] Failover and rollback steps written down",
        "[x] Application verified",
        "Started by the drill schedule; communication channel: #dr-war-room; participants: alice, bob, carol.",
        "| incident commander | alice |",
        "- 1. Point chat at the staging stores",
        "- 1. Point chat back at production",
        "- Staging Redis needs more memory (op, ",
    ] {
        assert!(report.contains(item), "{item}: {report}");
    }
    let html = f.cli(&["drill", "show", &first, "--html"]);
    for raw in ["**", "`", "[x]", "[ ]", "|---", "## "] {
        assert!(
            !html.contains(raw),
            "raw Markdown {raw:?} in the HTML: {html}"
        );
    }
    assert!(
        html.contains("<h2>Lessons learned</h2>")
            && html.contains("<td>incident commander</td><td>alice</td>")
            && html.contains("Staging Redis needs more memory"),
        "{html}"
    );
    // Audited: the schedule's runs and the annotation.
    let audit = f.cli(&["audit", "ls", "--limit", "1000"]);
    assert!(
        audit.contains("drill schedule") && audit.contains("drill annotate"),
        "{audit}"
    );
}

/// The growth projection: with a sample kept every second, a data volume
/// that grows by 256 MiB a second shows its rate and the days until 75%
/// full in the metrics, and `status` warns (under 30 days at that rate).
#[test]
fn volume_growth_is_projected() {
    use std::io::Write as _;
    let mut f = Fleet::new();
    let metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!("metrics_listen = \"{metrics}\"\nvolume_sample_every = \"1s\"\n");
    let data = f.dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    f.start_controller();
    f.start_agent(&AgentSpec::volume("db-1", "files", &data));
    f.wait_connected(&["db-1"]);
    let chunk = vec![0x5au8; 1 << 20];
    for i in 0..5 {
        let mut file = std::fs::File::create(data.join(format!("grow-{i}"))).unwrap();
        for _ in 0..256 {
            file.write_all(&chunk).unwrap();
        }
        file.sync_all().unwrap();
        std::thread::sleep(Duration::from_millis(1100));
    }
    let series = "trireme_source_volume_growth_bytes_per_day{source=\"db-1/files\"}";
    let m = wait_for("a growth rate", Duration::from_secs(30), || {
        let m = scrape(&metrics);
        m.lines().any(|l| l.starts_with(series)).then_some(m)
    });
    let rate = sample(&m, series);
    assert!(
        rate > 10.0 * (1u64 << 30) as f64,
        "about 256 MiB/s is more than 10 GiB a day: {rate}"
    );
    let days = sample(
        &m,
        "trireme_source_volume_days_until_warning{source=\"db-1/files\"}",
    );
    assert!((0.0..30.0).contains(&days), "{days}");
    let st = f.cli_json(&["status"]);
    let problems = st["problems"].to_string();
    assert!(
        problems.contains("db-1/files: its data volume grows")
            || (days == 0.0 && problems.contains("db-1/files: its data volume")),
        "{st}"
    );
    for i in 0..5 {
        std::fs::remove_file(data.join(format!("grow-{i}"))).unwrap();
    }
}

/// `trireme restore --platform`: every source with a staging target, in
/// dependency order (Redis before plain volumes), from one location; the
/// data stays at the targets; a report like a drill's. With `--at` before
/// any snapshot the first source cannot start, and the rest are not run.
#[test]
fn platform_restore_in_order_stopping_at_the_first_failure() {
    let mut f = Fleet::new();
    let redis = Redis::start(&f.dir.join("redis-main"));
    let staging = Redis::start(&f.dir.join("redis-staging"));
    for i in 0..200 {
        redis.cli(&["SET", &format!("msg:{i}"), &format!("hello {i}")]);
    }
    let (a, b) = (f.dir.join("a"), f.dir.join("b"));
    make_data(&a, 3, 50_000, 21);
    make_data(&b, 3, 50_000, 22);
    let (a_st, b_st) = (f.dir.join("a-staging"), f.dir.join("b-staging"));
    std::fs::create_dir_all(&a_st).unwrap();
    std::fs::create_dir_all(&b_st).unwrap();
    f.start_controller();
    let mut spec = AgentSpec::volume("app-1", "a", &a);
    spec.extra = redis.source("redis", &f.dir.join("redis-main"))
        + &staging.source("redis-staging", &f.dir.join("redis-staging"))
        + &format!(
            "[[source]]\nname = \"b\"\nkind = \"volume\"\npath = \"{}\"\n[[source]]\nname = \"a-staging\"\nkind = \"volume\"\npath = \"{}\"\n[[source]]\nname = \"b-staging\"\nkind = \"volume\"\npath = \"{}\"\n",
            b.display(),
            a_st.display(),
            b_st.display()
        );
    f.start_agent(&spec);
    f.wait_connected(&["app-1"]);
    let mut policies = String::new();
    for (s, t) in [
        ("redis", "redis-staging"),
        ("a", "a-staging"),
        ("b", "b-staging"),
    ] {
        policies.push_str(&format!(
            "[[policy]]\nsource = \"app-1/{s}\"\nschedule = \"0 0 1 1 *\"\nretention = \"r\"\nrestore_test = {{ target = \"app-1:source:{t}\" }}\n"
        ));
    }
    apply(&f, &policies);
    let before_any = chrono::Utc::now() - chrono::Duration::hours(1);
    for s in ["app-1/redis", "app-1/a", "app-1/b"] {
        f.cli(&["backup", "run", s, "--wait"]);
        let snaps = f.cli_json(&["snapshots", "ls", s]);
        wait_verified(
            &f,
            snaps[0]["id"].as_str().unwrap(),
            3,
            Duration::from_secs(60),
        );
    }

    let out = f.cli(&[
        "restore",
        "--platform",
        "--to",
        "staging",
        "--from",
        "loc2",
        "--wait",
    ]);
    assert!(
        out.contains("# Platform restore platform-") && out.contains("(staging)"),
        "{out}"
    );
    assert!(out.contains("**Result: PASSED**"), "{out}");
    let (r, x, y) = (
        out.find("| app-1/redis |").unwrap(),
        out.find("| app-1/a |").unwrap(),
        out.find("| app-1/b |").unwrap(),
    );
    assert!(r < x && x < y, "redis first, then by name: {out}");
    // The data stays at the targets, checked with redis-cli and the tree.
    assert_eq!(staging.cli(&["DBSIZE"]).trim(), "200");
    assert_eq!(staging.cli(&["GET", "msg:7"]).trim(), "hello 7");
    assert_eq!(tree(&a_st), tree(&a));
    assert_eq!(tree(&b_st), tree(&b));

    // Before every snapshot: the first source cannot start, nothing else runs.
    for d in [&a_st, &b_st] {
        std::fs::remove_dir_all(d).unwrap();
        std::fs::create_dir_all(d).unwrap();
    }
    let at = before_any.to_rfc3339();
    let text = run_fails(
        &f,
        &[
            "restore",
            "--platform",
            "--to",
            "staging",
            "--at",
            &at,
            "--wait",
        ],
    );
    assert!(
        text.contains("platform restore platform-") && text.contains("failed"),
        "{text}"
    );
    assert!(
        text.contains("taken at or before")
            && text.contains("not run: the platform restore stopped after app-1/redis failed"),
        "{text}"
    );
    assert!(tree(&a_st).is_empty() && tree(&b_st).is_empty());
    // Both are in the drill list, and audited as restores of the platform.
    let drills = f.cli_json(&["drill", "ls"]);
    assert_eq!(drills[0]["platform"], "staging", "{drills}");
    let audit = f.cli(&["audit", "ls", "--limit", "1000"]);
    assert!(audit.contains("restore platform"), "{audit}");
    // A bad target is refused with what to write.
    let text = run_fails(&f, &["restore", "--platform", "--to", "prod"]);
    assert!(
        text.contains("--to staging") && text.contains("--to in-place"),
        "{text}"
    );
}
