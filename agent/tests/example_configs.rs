//! The shipped example configurations parse with the real loader.
//!
//! `deploy/examples/agent-platform.toml` names secret files under
//! `/run/secrets` (Docker secrets), which the loader requires to exist with
//! no group/other permission bits. The test copies the example into a
//! temporary directory, points those paths at files it creates there with
//! mode 0600, and loads the copy with `AgentConfig::load`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use trireme_agent::daemon::AgentConfig;

/// Keys whose values are secret files the loader checks.
const SECRET_KEYS: &[&str] = &["password_file", "credentials_file", "env_file"];

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/examples")
        .join(name)
}

/// The example's text with every secret file moved under `dir/secrets`
/// (created, mode 0600), and the secret paths found.
fn with_secrets_in(text: &str, dir: &Path) -> (String, Vec<String>) {
    let table: toml::Table = toml::from_str(text).expect("the example is TOML");
    let mut secrets = Vec::new();
    for s in table["source"].as_array().expect("[[source]] tables") {
        for key in SECRET_KEYS {
            if let Some(p) = s.get(*key).and_then(|v| v.as_str()) {
                secrets.push(p.to_string());
            }
        }
    }
    let mut out = text.to_string();
    for p in &secrets {
        let rel = p
            .strip_prefix("/run/secrets/")
            .unwrap_or_else(|| panic!("secret {p} is not under /run/secrets/"));
        let local = dir.join("secrets").join(rel);
        std::fs::create_dir_all(local.parent().unwrap()).unwrap();
        std::fs::write(&local, "not-a-real-secret\n").unwrap();
        std::fs::set_permissions(&local, std::fs::Permissions::from_mode(0o600)).unwrap();
        out = out.replace(
            &format!("\"{p}\""),
            &format!("{:?}", local.display().to_string()),
        );
    }
    (out, secrets)
}

#[test]
fn agent_platform_example_parses() {
    let text = std::fs::read_to_string(example("agent-platform.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (copy, secrets) = with_secrets_in(&text, dir.path());
    assert_eq!(secrets.len(), 6, "{secrets:?}");
    let path = dir.path().join("agent-platform.toml");
    std::fs::write(&path, copy).unwrap();

    let c = AgentConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(c.name, "db-1");
    assert_eq!(c.controller, "trireme.example.com:7443");
    assert_eq!(c.state_dir, Path::new("/var/lib/trireme-agent"));
    assert_eq!(c.tls.cert, Path::new("/etc/trireme/tls/db-1.pem"));
    assert_eq!(c.hook_timeout, std::time::Duration::from_secs(15 * 60));
    let got: Vec<(&str, &str)> = c
        .sources
        .iter()
        .map(|s| (s.name.as_str(), s.kind()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("tikv-data", "volume"),
            ("pd-data", "volume"),
            ("tidb", "tidb"),
            ("kafka", "kafka"),
            ("redis", "redis"),
            ("redis-staging", "redis"),
            ("mongodb", "mongodb"),
            ("mongo-staging", "mongodb"),
            ("pg-app", "command"),
            ("pg-staging", "command"),
        ]
    );

    let d = |name: &str| c.source(name).unwrap().details();
    assert_eq!(d("tikv-data")["path"], "/mnt/tikv");
    assert_eq!(d("tidb")["pd"], "pd0:2379,pd1:2379,pd2:2379");
    assert_eq!(d("tidb")["staging_dir"], "/mnt/br-staging");
    assert_eq!(d("tidb")["ratelimit"], "64 MiB/s per TiKV");
    assert_eq!(d("kafka")["segments"], "closed only (online)");
    assert_eq!(d("redis")["rdb"], "from /mnt/redis");
    assert_eq!(
        d("pg-staging")["restore"],
        "pg_restore --single-transaction --no-owner --dbname=app_staging"
    );
    assert!(d("pg-app")["check"].starts_with("psql -At"));

    let timeout = |name: &str| c.source(name).unwrap().timeout.as_secs();
    assert_eq!(timeout("tidb"), 12 * 3600);
    assert_eq!(timeout("kafka"), 24 * 3600, "the default");

    let redis_staging = c
        .source("redis-staging")
        .unwrap()
        .spec_as::<trireme_agent::sources::redis::RedisSpec>()
        .unwrap()
        .clone();
    assert_eq!(
        redis_staging.start_hook,
        ["docker", "start", "redis-staging"]
    );
    assert_eq!(redis_staging.ready_timeout.as_secs(), 600);
    let mongo = c.source("mongo-staging").unwrap();
    let m = mongo
        .spec_as::<trireme_agent::sources::mongodb::MongoSpec>()
        .unwrap_or_else(|| panic!("{:?}", mongo.spec));
    assert_eq!(m.restore_args, ["--drop"]);
    let pg = c.source("pg-app").unwrap();
    let cmd = pg
        .spec_as::<trireme_agent::sources::command::CommandSpec>()
        .unwrap_or_else(|| panic!("{:?}", pg.spec));
    assert_eq!(cmd.backup, ["pg_dump", "--format=custom", "--dbname=app"]);
    assert_eq!(cmd.stream_name, "app.dump");
    assert_eq!(cmd.env["PGHOST"], "postgres");
}

/// The commented-out variants parse too once uncommented (the offline
/// Kafka source with its hooks, the TiDB staging target).
#[test]
fn agent_platform_commented_variants_parse() {
    let text = std::fs::read_to_string(example("agent-platform.toml")).unwrap();
    let base = "controller = \"c:7443\"\nstate_dir = \"s\"\n[tls]\ndir = \"t\"\nname = \"a\"\n";
    for (marker, name, kind) in [
        ("# name = \"kafka-offline\"", "kafka-offline", "kafka"),
        ("# name = \"tidb-staging\"", "tidb-staging", "tidb"),
    ] {
        // The block starts at the `# [[source]]` line just before the name.
        let at = text.find(marker).unwrap();
        let start_line = text[..at].lines().last().unwrap();
        assert_eq!(start_line, "# [[source]]");
        let from = text[..at].rfind("# [[source]]").unwrap();
        let mut src = String::new();
        for l in text[from..].lines() {
            let Some(rest) = l.strip_prefix("# ") else {
                break;
            };
            src.push_str(rest);
            src.push('\n');
        }
        let c = AgentConfig::parse(
            Path::new("/etc/trireme/agent.toml"),
            &format!("{base}{src}"),
        )
        .unwrap_or_else(|e| panic!("{src}: {e:#}"));
        assert_eq!(c.sources.len(), 1);
        assert_eq!(
            (c.sources[0].name.as_str(), c.sources[0].kind()),
            (name, kind)
        );
        if name == "kafka-offline" {
            assert_eq!(
                c.sources[0].pre_hook,
                ["docker", "service", "scale", "kafka=0"]
            );
            assert_eq!(
                c.sources[0].post_hook,
                ["docker", "service", "scale", "kafka=1"]
            );
            assert_eq!(
                c.sources[0].details()["segments"],
                "all (offline: stop the broker in pre_hook)"
            );
        }
    }
}
