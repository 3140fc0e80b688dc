use std::time::Duration;

use chrono::{DateTime, Utc};

use super::*;
use crate::sources::SourceRecord;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

const FULL: &str = r#"
[[policy]]
source = "host-a/redis-main"
schedule = "0 2 * * *"
mode = "incremental"
full_every = "7d"
retention = "daily-30"
timezone = "Europe/Paris"
max_retries = 5
retry_backoff = "10m"

[[policy]]
source = "host-b/kafka"
schedule = "@hourly"
retention = "hourly-48"
"#;

#[test]
fn a_full_file_parses_with_defaults() {
    let ps = parse_policies("p.toml", FULL).unwrap();
    assert_eq!(ps.len(), 2);
    let a = &ps[0];
    assert_eq!(a.source.to_string(), "host-a/redis-main");
    assert_eq!(a.schedule.as_str(), "0 2 * * *");
    assert_eq!(a.mode, BackupMode::Incremental);
    assert_eq!(a.full_every, Some(Duration::from_secs(7 * 86400)));
    assert_eq!(a.retention, "daily-30");
    assert_eq!(a.timezone.to_string(), "Europe/Paris");
    assert_eq!(a.max_retries, 5);
    assert_eq!(a.retry_backoff, Duration::from_secs(600));
    let b = &ps[1];
    assert_eq!(b.mode, BackupMode::Incremental);
    assert_eq!(b.full_every, None);
    assert_eq!(b.timezone.to_string(), "UTC");
    assert_eq!(b.max_retries, DEFAULT_MAX_RETRIES);
    assert_eq!(b.retry_backoff, DEFAULT_RETRY_BACKOFF);
}

/// Parse `body` after a valid preamble and return the error text.
fn err(body: &str) -> String {
    parse_policies("policies.toml", body)
        .unwrap_err()
        .to_string()
}

#[test]
fn errors_name_file_line_and_problem() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 25 * * *\"\nretention = \"r\"\n",
            "policies.toml:3:12:",
            &["hour field \"25\"", "e.g. \"0 2 * * *\""],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nshedule = \"x\"\n",
            "policies.toml:5:1:",
            &["unknown field `shedule`", "[[policy]] tables"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\n",
            "policies.toml:",
            &["missing field `retention`"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nmode = \"differential\"\n",
            "policies.toml:5:8:",
            &["unknown variant `differential`", "incremental", "full"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nmode = \"full\"\nfull_every = \"7d\"\n",
            "policies.toml:6:14:",
            &["only applies to mode = \"incremental\""],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nfull_every = \"7 dayz\"\n",
            "policies.toml:5:14:",
            &["full_every \"7 dayz\"", "\"7d\""],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\ntimezone = \"europe/paris\"\n",
            "policies.toml:5:12:",
            &["not a known time zone", "did you mean \"Europe/Paris\""],
        ),
        (
            "[[policy]]\nsource = \"redis\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n",
            "policies.toml:2:10:",
            &["agent/source", "host-a/redis-main"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\nmax_retries = 1000\n",
            "policies.toml:5:15:",
            &["at most 100"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n\n[[policy]]\nsource = \"h/x\"\nschedule = \"0 3 * * *\"\nretention = \"r\"\n",
            "policies.toml:7:10:",
            &["already has a policy at line 2"],
        ),
        (
            "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\nretention = \"r\"\n",
            "policies.toml:3:",
            &[],
        ),
        ("", "policies.toml:1:1:", &["no policies", "[[policy]]"]),
    ];
    for (body, at, wants) in cases {
        let e = err(body);
        assert!(e.starts_with(at), "want {at}, got: {e}");
        for w in *wants {
            assert!(e.contains(w), "want {w:?} in: {e}");
        }
    }
}

#[test]
fn reading_a_missing_file_names_it() {
    let e = read_policy_file(std::path::Path::new("/nonexistent/p.toml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/p.toml"), "{e}");
}

#[test]
fn retry_delay_doubles_up_to_a_day() {
    let p = &parse_policies("p", FULL).unwrap()[0];
    assert_eq!(p.retry_delay(1), Duration::from_secs(600));
    assert_eq!(p.retry_delay(2), Duration::from_secs(1200));
    assert_eq!(p.retry_delay(3), Duration::from_secs(2400));
    assert_eq!(p.retry_delay(12), MAX_RETRY_DELAY);
    assert_eq!(p.retry_delay(200), MAX_RETRY_DELAY);
}

#[test]
fn full_every_picks_the_mode() {
    let p = &parse_policies("p", FULL).unwrap()[0];
    let d = |days: i64| t("2025-01-01T01:00:00Z") + chrono::Duration::days(days);
    assert_eq!(p.mode_for(d(0), None), BackupMode::Full);
    assert_eq!(p.mode_for(d(1), Some(d(0))), BackupMode::Incremental);
    assert_eq!(p.mode_for(d(6), Some(d(0))), BackupMode::Incremental);
    assert_eq!(p.mode_for(d(7), Some(d(0))), BackupMode::Full);
    // A daylight saving change makes the week an hour short: still full.
    let short_week = d(7) - chrono::Duration::hours(1);
    assert_eq!(p.mode_for(short_week, Some(d(0))), BackupMode::Full);
    let b = &parse_policies("p", FULL).unwrap()[1];
    assert_eq!(b.mode_for(d(100), None), BackupMode::Incremental);
}

#[test]
fn apply_is_atomic_and_reports_changes() {
    let dir = tempfile::tempdir().unwrap();
    let c = Catalog::open(dir.path()).unwrap();
    let t0 = t("2025-03-01T10:00:00Z");
    c.register_agent(
        "host-a",
        "host-a",
        "1",
        &[(
            "redis-main".into(),
            SourceRecord {
                kind: "redis".into(),
                details: Default::default(),
                last_seen: t0,
                drill_rank: None,
            },
        )],
        t0,
    )
    .unwrap();
    let ps = parse_policies("p.toml", FULL).unwrap();
    let r = apply_policies(&c, &ps, "p.toml", t0).unwrap();
    assert_eq!(r.created.len(), 2);
    assert_eq!(r.unknown_sources, [ps[1].source.clone()]);
    let state = c.schedule().get(&ps[0].source).unwrap().unwrap();
    assert_eq!(state.handled_until, Some(t0));

    // Same again: unchanged. A retention change keeps the slot anchor; a
    // schedule change moves it to the apply time.
    let t1 = t0 + chrono::Duration::hours(1);
    let r = apply_policies(&c, &ps, "p.toml", t1).unwrap();
    assert_eq!(r.unchanged.len(), 2);
    let mut changed = ps.clone();
    changed[0].retention = "weekly".into();
    changed[1].schedule = "0 3 * * *".parse().unwrap();
    let r = apply_policies(&c, &changed, "p.toml", t1).unwrap();
    assert_eq!(r.updated.len(), 2);
    let s0 = c.schedule().get(&ps[0].source).unwrap().unwrap();
    let s1 = c.schedule().get(&ps[1].source).unwrap().unwrap();
    assert_eq!((s0.handled_until, s1.handled_until), (Some(t0), Some(t1)));
    let stored = c.policies().get(&ps[0].source).unwrap().unwrap();
    assert_eq!(stored.policy.retention, "weekly");
    assert_eq!(stored.origin, "p.toml");

    // A source listed twice changes nothing.
    let twice = vec![ps[0].clone(), ps[0].clone()];
    let e = apply_policies(&c, &twice, "x", t1).unwrap_err().to_string();
    assert!(e.contains("listed twice"), "{e}");

    remove_policy(&c, &ps[1].source).unwrap();
    assert!(c.policies().get(&ps[1].source).unwrap().is_none());
    let e = remove_policy(&c, &ps[1].source).unwrap_err().to_string();
    assert!(e.contains("no policy for source host-b/kafka"), "{e}");
}

#[test]
fn the_shipped_example_policy_parses() {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/examples/policy.toml"
    );
    let text = std::fs::read_to_string(p).unwrap();
    let file = crate::policy::parse_policy_file(p, &text).unwrap();
    assert_eq!(file.policies.len(), 4);
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    let mongo = &file.classes["mongodb"];
    assert_eq!(mongo.daily, Some(Duration::from_secs(30 * 86400)));
    assert_eq!(
        mongo.monthly,
        Some(humantime::parse_duration("1y").unwrap())
    );
    assert_eq!(mongo.keep_last, Some(3));
    assert_eq!(
        file.classes["redis"].daily,
        Some(Duration::from_secs(7 * 86400))
    );
    let redis = file
        .policies
        .iter()
        .find(|p| p.source.to_string() == "cache-1/redis")
        .unwrap();
    assert_eq!(redis.rpo, Some(Duration::from_secs(7 * 3600)));
    let t = redis.restore_test.as_ref().unwrap();
    assert_eq!(
        (t.agent.as_str(), t.target.as_str()),
        ("cache-1", "source:redis-staging")
    );
}

#[test]
fn objectives_and_restore_tests_are_checked() {
    let base = "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n";
    let e = |extra: &str| {
        crate::policy::parse_policies("p.toml", &format!("{base}{extra}"))
            .unwrap_err()
            .to_string()
    };
    assert!(e("rpo = \"soon\"\n").contains("rpo"));
    assert!(e("restore_test = { target = \"staging\" }\n").contains("AGENT:source:NAME"));
    assert!(e("restore_test = { target = \"h:relative/dir\" }\n").contains("AGENT:source:NAME"));
    let bad = e("restore_test = { target = \"h:source:s\", schedule = \"daily\" }\n");
    assert!(
        bad.starts_with("p.toml:5:") && bad.contains("invalid schedule \"daily\""),
        "{bad}"
    );
    assert!(e("restore_test = { target = \"h:source:s\", when = \"x\" }\n").contains("when"));
    let ok = crate::policy::parse_policies(
        "p.toml",
        &format!("{base}restore_test = {{ target = \"h:/srv/restore-test\" }}\n"),
    )
    .unwrap();
    let t = ok[0].restore_test.as_ref().unwrap();
    assert_eq!(t.target, "/srv/restore-test");
    assert_eq!(
        t.schedule,
        crate::policy::CronExpr::parse("0 4 1 * *").unwrap()
    );
}

const CLASS_POLICY: &str =
    "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n";

#[test]
fn retention_tables_parse_and_errors_name_line_and_column() {
    let f = parse_policy_file(
        "p.toml",
        &format!("{CLASS_POLICY}[retention.r]\nkeep_last = 2\nweekly = \"12w\"\n"),
    )
    .unwrap();
    assert_eq!(f.classes["r"].keep_last, Some(2));
    assert_eq!(f.classes["r"].weekly, Some(Duration::from_secs(84 * 86400)));
    assert!(f.warnings.is_empty());

    // A file without classes: accepted, with a warning per unknown class.
    let f = parse_policy_file("p.toml", CLASS_POLICY).unwrap();
    assert!(f.classes.is_empty());
    assert!(
        f.warnings[0].contains("retention class \"r\" is not defined"),
        "{:?}",
        f.warnings
    );

    let cases: &[(&str, &str, &[&str])] = &[
        (
            "[retention.daily]\ndaily = \"30d\"\n[retention.weekly]\nweekly = \"90d\"\n",
            "policies.toml:4:13:",
            &[
                "retention class \"r\" is not defined",
                "\"daily\", \"weekly\"",
                "[retention.r]",
            ],
        ),
        (
            "[retention.r]\ndaily = \"30 dayz\"\n",
            "policies.toml:6:9:",
            &["daily \"30 dayz\"", "\"7d\""],
        ),
        (
            "[retention.r]\nhourly = \"5m\"\n",
            "policies.toml:6:10:",
            &["must be between 1h and"],
        ),
        (
            "[retention.r]\nkeep_last = 0\n",
            "policies.toml:6:13:",
            &["at least 1"],
        ),
        (
            "[retention.r]\nmonthy = \"1y\"\n",
            "policies.toml:6:1:",
            &["unknown field `monthy`", "monthly"],
        ),
        (
            "[retention.r]\n",
            "policies.toml:5:",
            &["retention class \"r\" has no rule", "keep_last"],
        ),
    ];
    for (tail, at, wants) in cases {
        let e = err(&format!("{CLASS_POLICY}{tail}"));
        assert!(e.starts_with(at), "want {at}, got: {e}");
        for w in *wants {
            assert!(e.contains(w), "want {w:?} in: {e}");
        }
    }
}

#[test]
fn a_policy_can_limit_what_and_how_fast_its_source_is_backed_up() {
    let base = "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n";
    let parse = |extra: &str| crate::policy::parse_policies("p.toml", &format!("{base}{extra}"));
    let p = parse(
        "exclude = [\"*.tmp\", \"/cache\"]\nexclude_if_present = [\".nobackup\"]\none_file_system = true\nupload_bytes_per_sec = \"5 MiB\"\n",
    )
    .unwrap();
    let l = &p[0].limits;
    assert_eq!(l.exclude, ["*.tmp", "/cache"]);
    assert_eq!(l.exclude_if_present, [".nobackup"]);
    assert!(l.one_file_system);
    assert_eq!(l.upload_bytes_per_sec, Some(5 << 20));
    assert_eq!(parse("").unwrap()[0].limits, Default::default());
    let e = |extra: &str| parse(extra).unwrap_err().to_string();
    let bad = e("exclude = [\"[z-\"]\n");
    assert!(
        bad.starts_with("p.toml:5:") && bad.contains("not a valid glob"),
        "{bad}"
    );
    assert!(e("exclude_if_present = [\"a/b\"]\n").contains("file name"));
    assert!(e("upload_bytes_per_sec = \"fast\"\n").contains("e.g. \"20 MiB\""));
    assert!(e("upload_bytes_per_sec = 0\n").contains("upload_bytes_per_sec"));
}
