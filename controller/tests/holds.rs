//! Holds, tags, listing filters and forget, end to end: a real controller
//! with three `file://` locations, a real agent and the `trireme` CLI. A
//! held snapshot survives a prune whose policy would delete it (its
//! manifest is still in every location's directory, looked at directly),
//! holds and tags survive a controller restart and a catalog rebuild of
//! the snapshots it knows, forget needs a TOTP code,
//! deletes the snapshot's manifest from every location and is audited, and
//! is refused for a held snapshot and for a source's last verified one.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{make_data, wait_for, wait_verified, AgentSpec, Fleet};
use support::totp::Codes;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Wait for job `id` to end; its snapshot id.
fn wait_job(f: &Fleet, id: &str) -> String {
    let done = wait_for("the backup", Duration::from_secs(90), || {
        let j = f.cli_json(&["jobs", "show", id]);
        matches!(j["state"].as_str()?, "succeeded" | "failed").then_some(j)
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    done["snapshot_id"].as_str().unwrap().to_string()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn set(v: &[&String]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).clone()).collect()
}

/// `snapshots ls` with `filters`, as ids.
fn listed(f: &Fleet, filters: &[&str]) -> BTreeSet<String> {
    let mut args = vec!["snapshots", "ls"];
    args.extend_from_slice(filters);
    ids(&f.cli_json(&args))
}

/// At how many of the three locations snapshot `id`'s manifest file is.
fn manifests_at(f: &Fleet, id: &str) -> usize {
    (1..=3).filter(|i| manifest(&f.location(*i), id)).count()
}

fn manifest(dir: &Path, id: &str) -> bool {
    dir.join("snapshots").join(id).is_file()
}

fn audit(f: &Fleet) -> Vec<Value> {
    let out = f.cli_as("viewer", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn holds_tags_filters_and_forget_on_a_real_fleet() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 2, 50_000, 11);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);

    // Three backups: two tagged, one not, a second or more apart.
    let tags: [&[&str]; 3] = [
        &["--tag", "weekly", "--tag", "pre-upgrade"],
        &["--tag", "weekly"],
        &[],
    ];
    let mut snaps = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        std::fs::write(data.join(format!("change-{i}.txt")), format!("change {i}")).unwrap();
        let mut args = vec!["backup", "run", "web-1/files"];
        args.extend_from_slice(t);
        let job = f.cli_json(&args);
        snaps.push(wait_job(&f, job["id"].as_str().unwrap()));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let (a, b, c) = (&snaps[0], &snaps[1], &snaps[2]);
    for id in &snaps {
        wait_verified(&f, id, 3, Duration::from_secs(90));
    }

    // Tags and filters.
    let all = f.cli_json(&["snapshots", "ls"]);
    let shown = |id: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        shown(a)["tags"],
        serde_json::json!(["pre-upgrade", "weekly"])
    );
    assert_eq!(shown(c)["tags"], serde_json::json!([]));
    assert_eq!(shown(a)["held"], false);
    assert_eq!(listed(&f, &["--tag", "weekly"]), set(&[a, b]));
    assert_eq!(listed(&f, &["--tag", "pre-upgrade"]), set(&[a]));
    assert_eq!(
        listed(&f, &["--tag", "weekly", "--tag", "pre-upgrade"]),
        set(&[a])
    );
    assert!(listed(&f, &["--tag", "nope"]).is_empty());
    assert_eq!(listed(&f, &["--host", "web-1"]).len(), 3);
    assert!(listed(&f, &["--host", "db-9"]).is_empty());
    assert_eq!(listed(&f, &["--source", "files"]).len(), 3);
    assert_eq!(listed(&f, &["--source", "web-1/files"]).len(), 3);
    assert!(listed(&f, &["--source", "other"]).is_empty());
    let time_of = |id: &str| shown(id)["time"].as_str().unwrap().to_string();
    assert_eq!(listed(&f, &["--since", &time_of(b)]), set(&[b, c]));
    assert_eq!(listed(&f, &["--until", &time_of(a)]), set(&[a]));
    assert_eq!(
        listed(&f, &["--since", &time_of(b), "--until", &time_of(b)]),
        set(&[b])
    );
    assert_eq!(
        listed(&f, &["--since", "1h", "--tag", "weekly"]),
        set(&[a, b])
    );
    let table = f.cli(&["snapshots", "ls", "--tag", "pre-upgrade"]);
    assert!(
        table.contains("TAGS") && table.contains("pre-upgrade,weekly"),
        "{table}"
    );

    let tagged = f.cli_json(&["snapshots", "tag", c, "--add", "nightly", "--add", "x"]);
    assert_eq!(tagged["tags"], serde_json::json!(["nightly", "x"]));
    let tagged = f.cli_json(&["snapshots", "tag", c, "--remove", "x"]);
    assert_eq!(tagged["tags"], serde_json::json!(["nightly"]));
    assert_eq!(listed(&f, &["--tag", "nightly"]), set(&[c]));
    let out = f.cli_as("op", &["snapshots", "tag", c, "--add", "bad tag"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("invalid tag"), "{}", text(&out));

    // Hold the oldest; shown in the listing and in `show`.
    let held = f.cli_json(&["snapshots", "hold", a, "--reason", "case 42"]);
    assert_eq!(held["held"], true, "{held}");
    assert_eq!(held["hold"]["reason"], "case 42");
    assert_eq!(held["hold"]["by"], "op");
    assert_eq!(held["hold"]["until"], Value::Null);
    let out = f.cli_as("op", &["snapshots", "hold", b, "--reason", " "]);
    assert!(!out.status.success());
    assert!(text(&out).contains("needs a reason"), "{}", text(&out));

    // Holds and tags are controller state: they survive a restart.
    f.stop_controller();
    f.start_controller();
    f.wait_connected(&["web-1"]);
    let shown_a = f.cli_json(&["snapshots", "show", a]);
    assert_eq!(shown_a["held"], true, "{shown_a}");
    assert_eq!(shown_a["hold"]["reason"], "case 42");
    assert_eq!(listed(&f, &["--tag", "nightly"]), set(&[c]));
    // Rebuilding the catalog from a location leaves the known snapshots'
    // holds and tags alone.
    let rebuilt = f.cli_json(&["catalog", "rebuild", "--from", "loc2"]);
    assert_eq!(rebuilt["known"], 3, "{rebuilt}");
    assert_eq!(f.cli_json(&["snapshots", "show", a])["held"], true);
    assert_eq!(listed(&f, &["--tag", "weekly"]), set(&[a, b]));
    let text_a = f.cli(&["snapshots", "show", a]);
    assert!(
        text_a.contains("held by op") && text_a.contains("case 42"),
        "{text_a}"
    );

    // A policy that keeps only the newest: the held one stays, and says so.
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let dry = f.cli_json(&["prune", "--dry-run"]);
    assert_eq!(ids(&dry["removed"]), set(&[b]), "{dry}");
    let kept_a = dry["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == a.as_str())
        .unwrap_or_else(|| panic!("{a} not kept: {dry}"));
    assert_eq!(kept_a["held"], true, "{dry}");
    let reason = kept_a["reason"].as_str().unwrap();
    assert!(
        reason.contains("held by op") && reason.contains("case 42"),
        "{dry}"
    );
    let dry_text = f.cli(&["prune", "--dry-run"]);
    assert!(dry_text.contains("held by op"), "{dry_text}");

    // Enroll: from now on op's sensitive actions need a code.
    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let mut codes = Codes::for_secret(enrolled["secret"].as_str().unwrap());
    f.cli(&["mfa", "confirm", &codes.next()]);

    let done = f.cli_json(&["prune", "--totp", &codes.next()]);
    assert_eq!(ids(&done["removed"]), set(&[b]), "{done}");
    // Looked at directly: the held snapshot's manifest is at every
    // location, the pruned one's at none.
    assert_eq!(manifests_at(&f, a), 3, "the held snapshot was deleted");
    assert_eq!(manifests_at(&f, b), 0, "the pruned snapshot is still there");
    assert_eq!(manifests_at(&f, c), 3);
    assert_eq!(listed(&f, &[]), set(&[a, c]));

    // Forget: refused while held (with a good code), without a code, and
    // for the source's last verified snapshot.
    let out = f.cli_as("op", &["snapshots", "forget", a, "--totp", &codes.next()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("held by op") && text(&out).contains("unhold"),
        "{}",
        text(&out)
    );
    let out = f.cli_as("op", &["snapshots", "unhold", a]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("snapshot unhold is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    let unheld = f.cli_json(&["snapshots", "unhold", a, "--totp", &codes.next()]);
    assert_eq!(unheld["held"], false, "{unheld}");
    assert_eq!(unheld["hold"], Value::Null, "{unheld}");
    let out = f.cli_as("op", &["snapshots", "forget", a]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("snapshot forget is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    assert_eq!(manifests_at(&f, a), 3);
    let out = f.cli_as("op", &["snapshots", "forget", c, "--totp", &codes.next()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("verified at every location"),
        "{}",
        text(&out)
    );
    assert_eq!(manifests_at(&f, c), 3);

    // With a code: gone from every location's directory and the catalog.
    let forgot = f.cli_json(&["snapshots", "forget", a, "--totp", &codes.next()]);
    assert_eq!(forgot["id"], a.as_str(), "{forgot}");
    assert_eq!(
        forgot["removed_at"],
        serde_json::json!(["loc1", "loc2", "loc3"]),
        "{forgot}"
    );
    assert!(
        forgot["note"].as_str().unwrap().contains("next prune"),
        "{forgot}"
    );
    assert_eq!(
        manifests_at(&f, a),
        0,
        "the forgotten manifest is still there"
    );
    assert_eq!(manifests_at(&f, c), 3);
    assert_eq!(listed(&f, &[]), set(&[c]));
    // Replication does not bring it back.
    support::fleet::wait_replication_pass(&f, Duration::from_secs(60));
    assert_eq!(manifests_at(&f, a), 0, "replication copied it back");

    // Audited: the hold, the lifted hold, the forget, and the refusals.
    let entries = audit(&f);
    let by_op = |action: &str, outcome: &str| -> Vec<&Value> {
        entries
            .iter()
            .filter(|e| e["actor"] == "op" && e["action"] == action && e["outcome"] == outcome)
            .collect()
    };
    let holds = by_op("snapshot hold", "ok");
    assert_eq!(holds.len(), 1, "{entries:#?}");
    assert!(holds[0]["target"].as_str().unwrap().contains(a.as_str()));
    assert_eq!(by_op("snapshot hold", "refused").len(), 1, "{entries:#?}");
    assert_eq!(by_op("snapshot tag", "ok").len(), 2, "{entries:#?}");
    assert_eq!(by_op("snapshot unhold", "ok").len(), 1, "{entries:#?}");
    let forgets = by_op("snapshot forget", "ok");
    assert_eq!(forgets.len(), 1, "{entries:#?}");
    let target = forgets[0]["target"].as_str().unwrap();
    assert!(
        target.contains(a.as_str()) && target.contains("loc1, loc2, loc3"),
        "{target}"
    );
    assert!(target.contains("with a TOTP code"), "{target}");
    let refused = by_op("snapshot forget", "refused");
    // Held, no code, last verified.
    assert_eq!(refused.len(), 3, "{refused:#?}");
    assert!(refused
        .iter()
        .any(|e| e["reason"].as_str().unwrap().contains("held by op")));
    assert!(refused.iter().any(|e| e["reason"]
        .as_str()
        .unwrap()
        .contains("verified at every location")));
}
