//! Three locations end to end: a real controller replicates every snapshot
//! to every location, verifies each copy, and repairs damaged copies from
//! good ones; on `file://` directories and on three real Garage servers.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::fleet::{
    location_tree, make_data, sample, scrape, wait_for, wait_verified, AgentSpec, Fleet,
};
use trireme_testkit::garage::Garage;
use trireme_testkit::tree;

/// The state of a snapshot's copy at `location` ("" when it has none).
fn copy_state(snap: &Value, location: &str) -> String {
    snap["copies"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["location"] == location))
        .and_then(|c| c["state"].as_str())
        .unwrap_or_default()
        .to_string()
}

fn backup(f: &Fleet, source: &str) -> String {
    let out = f.cli(&["backup", "run", source, "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded", "--limit", "1"]);
    jobs[0]["snapshot_id"].as_str().unwrap().to_string()
}

/// Restore `snap` straight from one location with the agent's local mode
/// (no controller, no other location) and compare with `want`.
fn restore_from_location_alone(f: &Fleet, url: &str, snap: &str, want: &Path, tag: &str) {
    let target = f.dir.join(format!("alone-{tag}"));
    assert!(
        tree(want) == f.restore_alone(url, snap, &target),
        "restore from {url} differs from the source"
    );
}

#[test]
fn file_locations_three_verified_copies_and_self_healing() {
    let mut f = Fleet::new();
    let metrics = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    let told = support::receiver::Receiver::start(Vec::new());
    f.controller_extra = format!(
        "metrics_listen = \"{metrics}\"\n[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://{}/t\"\nevents = [\"damaged_copy\"]\n",
        told.addr
    );
    let data = f.dir.join("data");
    make_data(&data, 6, 700_000, 11);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("app-1", "files", &data));
    f.wait_connected(&["app-1"]);

    let snap = backup(&f, "app-1/files");
    wait_verified(&f, &snap, 3, Duration::from_secs(60));
    // Every location holds the same objects, byte for byte.
    let one = location_tree(&f.location(1));
    assert!(
        one.keys().any(|k| k.starts_with("packs")),
        "packs at the primary"
    );
    assert!(
        one == location_tree(&f.location(2)),
        "loc2 differs from loc1"
    );
    assert!(
        one == location_tree(&f.location(3)),
        "loc3 differs from loc1"
    );

    // A repeated replication copies nothing.
    let v = f.cli_json(&["verify"]);
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(v["bytes_copied"], 0, "{v}");

    // Damage: flip a byte in a pack at loc2, delete an index object at loc3.
    let pack = one.keys().find(|k| k.starts_with("packs")).unwrap().clone();
    let index = one.keys().find(|k| k.starts_with("index")).unwrap().clone();
    let p2 = f.location(2).join(&pack);
    let mut bytes = std::fs::read(&p2).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&p2, &bytes).unwrap();
    std::fs::remove_file(f.location(3).join(&index)).unwrap();

    let v = f.cli_json(&["verify", "--deep"]);
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let pack_name = pack.file_name().unwrap().to_str().unwrap();
    let index_name = index.file_name().unwrap().to_str().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("loc2") && p.contains(pack_name) && p.contains("corrupt")),
        "the corrupt pack is reported: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("loc3") && p.contains(index_name)),
        "the missing index is reported: {problems:?}"
    );
    let repaired = v["repaired"].as_array().unwrap();
    assert!(repaired.len() >= 2, "{v}");
    assert!(v["unrepaired"].as_array().unwrap().is_empty(), "{v}");
    assert_eq!(
        std::fs::read(&p2).unwrap(),
        one[&pack],
        "pack repaired at loc2"
    );
    assert!(
        f.location(3).join(&index).exists(),
        "index restored at loc3"
    );

    // Each location alone restores the snapshot byte for byte.
    for i in 1..=3 {
        let url = format!("file://{}", f.location(i).display());
        restore_from_location_alone(&f, &url, &snap, &data, &format!("loc{i}"));
    }
    // The incidents are visible per location.
    let locs = f.cli_json(&["locations", "ls"]);
    let found: u64 = locs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["problems_found"].as_u64().unwrap_or(0))
        .sum();
    assert!(found >= 2, "{locs}");
    // ...and exported as metrics.
    let text = scrape(&metrics);
    assert!(
        sample(
            &text,
            "trireme_location_damaged_copies_found_total{location=\"loc2\"}"
        ) >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "trireme_location_damaged_copies_repaired_total{location=\"loc3\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample(&text, "trireme_location_reachable{location=\"loc1\"}"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "trireme_source_newest_snapshot_verified_copies{source=\"app-1/files\"}"
        ),
        3.0
    );
    assert_eq!(sample(&text, "trireme_agents_connected"), 1.0);
    // The webhook was told about the damaged copies at loc2.
    let body = wait_for(
        "damaged copies at loc2 told",
        Duration::from_secs(30),
        || {
            told.requests()
                .into_iter()
                .map(|(_, _, b)| b)
                .find(|b| b.contains("\"subject\":\"loc2\""))
        },
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "damaged_copy", "{v}");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("trireme verify --location loc2"),
        "{v}"
    );
}

/// Relative paths of the packs under a `file://` location.
fn packs(dir: &Path) -> std::collections::BTreeSet<PathBuf> {
    location_tree(dir)
        .into_keys()
        .filter(|k| k.starts_with("packs"))
        .collect()
}

/// Make a `file://` location unreachable (a file where its directory was);
/// where its objects were put aside.
fn take_away(f: &Fleet, i: usize) -> PathBuf {
    let away = f.dir.join(format!("loc{i}.away"));
    std::fs::rename(f.location(i), &away).unwrap();
    std::fs::write(f.location(i), "not a directory").unwrap();
    away
}

fn bring_back(f: &Fleet, i: usize, away: &Path) {
    std::fs::remove_file(f.location(i)).unwrap();
    std::fs::rename(away, f.location(i)).unwrap();
}

#[test]
fn a_pack_lost_before_replication_never_makes_its_snapshot_verified() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 4, 400_000, 41);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("app-1", "files", &data));
    f.wait_connected(&["app-1"]);

    // The normal path: three verified copies.
    let first = backup(&f, "app-1/files");
    wait_verified(&f, &first, 3, Duration::from_secs(60));

    // loc2 and loc3 are out of reach while a backup of new data is made:
    // its objects are at the primary only.
    let away: Vec<PathBuf> = [2, 3].iter().map(|i| take_away(&f, *i)).collect();
    make_data(&data.join("new"), 2, 600_000, 42);
    let before = packs(&away[0]);
    let second = backup(&f, "app-1/files");
    let new_packs: Vec<PathBuf> = packs(&f.location(1)).difference(&before).cloned().collect();
    assert!(!new_packs.is_empty());
    // One of its packs is lost at the primary before any copy was made.
    let lost = &new_packs[0];
    std::fs::remove_file(f.location(1).join(lost)).unwrap();
    let lost_name = lost.file_name().unwrap().to_str().unwrap().to_string();
    bring_back(&f, 2, &away[0]);
    bring_back(&f, 3, &away[1]);

    // Replication copies what there is; the snapshot is verified nowhere,
    // and each copy says why.
    let shown = wait_for(
        "the second snapshot's copies to be found incomplete",
        Duration::from_secs(60),
        || {
            let s = f.cli_json(&["snapshots", "show", &second]);
            (1..=3)
                .all(|i| copy_state(&s, &format!("loc{i}")) == "incomplete")
                .then_some(s)
        },
    );
    for c in shown["copies"].as_array().unwrap() {
        let detail = c["detail"].as_str().unwrap();
        assert!(
            detail.contains(&lost_name) && detail.contains("cannot be completed"),
            "{shown}"
        );
    }
    let text = f.cli(&["snapshots", "show", &second]);
    assert!(
        text.contains("loc2: incomplete (") && text.contains(&lost_name),
        "{text}"
    );
    // The rest of it was copied: its manifest is everywhere.
    for i in 2..=3 {
        assert!(
            f.location(i).join("snapshots").join(&second).exists(),
            "loc{i}"
        );
    }
    // Later passes leave it so.
    support::fleet::wait_replication_pass(&f, Duration::from_secs(90));
    let s = f.cli_json(&["snapshots", "show", &second]);
    assert_eq!(support::fleet::verified_copies(&s), 0, "{s}");
    // Visible per location, in the audit log and the controller's log.
    let locs = f.cli_json(&["locations", "ls"]);
    for l in locs.as_array().unwrap() {
        assert!(
            l["incidents"].as_array().unwrap().iter().any(|i| i
                .as_str()
                .unwrap()
                .contains("is incomplete")
                && i.as_str().unwrap().contains(&lost_name)),
            "{locs}"
        );
    }
    let audit = f.cli_json(&["audit", "ls", "--limit", "500"]);
    assert!(audit.to_string().contains("copy incomplete"), "{audit}");
    let log = Fleet::log_text(&f.controller_log());
    assert!(log.contains("copy incomplete") && log.contains(&lost_name));
    // The primary's loss is not reported as a repair.
    assert!(!log.contains(&format!("{lost_name} repaired")), "{log}");

    // The first snapshot is verified everywhere again; a backup without
    // the lost data is verified at all three and restores from each.
    wait_verified(&f, &first, 3, Duration::from_secs(60));
    std::fs::remove_dir_all(data.join("new")).unwrap();
    let third = backup(&f, "app-1/files");
    wait_verified(&f, &third, 3, Duration::from_secs(60));
    for i in 1..=3 {
        let url = format!("file://{}", f.location(i).display());
        restore_from_location_alone(&f, &url, &third, &data, &format!("third-loc{i}"));
    }
}

#[test]
fn garage_three_locations_outage_delays_copies_only() {
    let garage = Garage::start(3);
    let mut f = Fleet::new();
    f.locations = (1..=3).map(|i| garage.location_url(i, "trireme")).collect();
    let told = support::receiver::Receiver::start(Vec::new());
    f.controller_extra = format!(
        "[[notify]]\nname = \"ops\"\nkind = \"webhook\"\nurl = \"http://{}/t\"\nevents = [\"location_unreachable\"]\n",
        told.addr
    );
    let data = f.dir.join("data");
    make_data(&data, 5, 600_000, 12);
    f.start_controller();
    // A pre-hook holds each backup for 4 s, so a location can be stopped
    // while a backup is under way.
    f.start_agent(&AgentSpec {
        name: "db-1".into(),
        sources: vec![(
            "db".into(),
            data.clone(),
            vec!["sleep".into(), "4".into()],
            Vec::new(),
        )],
        via: None,
        extra: String::new(),
        settings: String::new(),
    });
    f.wait_connected(&["db-1"]);

    let first = backup(&f, "db-1/db");
    wait_verified(&f, &first, 3, Duration::from_secs(90));

    // Objects at each location are byte-identical to the primary's.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let open = |i: usize| {
            let url = garage.location_url(i, "trireme");
            async move {
                trireme_common::Location::parse(&url)
                    .unwrap()
                    .open()
                    .await
                    .unwrap()
            }
        };
        let (b1, b2, b3) = (open(1).await, open(2).await, open(3).await);
        let l1 = trireme_common::replicate::list_all(&b1).await.unwrap();
        assert_eq!(l1, trireme_common::replicate::list_all(&b2).await.unwrap());
        assert_eq!(l1, trireme_common::replicate::list_all(&b3).await.unwrap());
        for key in l1.keys() {
            let a = b1.get(key).await.unwrap();
            assert_eq!(a, b2.get(key).await.unwrap(), "{key} at 2");
            assert_eq!(a, b3.get(key).await.unwrap(), "{key} at 3");
        }
    });

    // Stop the third location during a backup: it succeeds, its copy there waits.
    std::fs::write(data.join("d0/after-outage.txt"), "new data\n").unwrap();
    let job = f.cli_json(&["backup", "run", "db-1/db"]);
    let id = job["id"].as_str().unwrap();
    wait_for("the backup to start", Duration::from_secs(20), || {
        (f.cli_json(&["jobs", "show", id])["state"] == "running").then_some(())
    });
    garage.stop_instance(3);
    assert_eq!(
        f.cli_json(&["jobs", "show", id])["state"],
        "running",
        "the location went down during the backup"
    );
    let done = wait_for(
        "the backup during the outage",
        Duration::from_secs(90),
        || {
            let j = f.cli_json(&["jobs", "show", id]);
            matches!(j["state"].as_str()?, "succeeded" | "failed").then_some(j)
        },
    );
    assert_eq!(done["state"], "succeeded", "{done}");
    let second = done["snapshot_id"].as_str().unwrap().to_string();
    let s = wait_verified(&f, &second, 2, Duration::from_secs(90));
    assert_ne!(copy_state(&s, "loc3"), "verified", "{s}");
    let status = f.cli_json(&["status"]);
    assert!(
        status.to_string().contains("loc3"),
        "the outage shows in status: {status}"
    );
    // The on-call webhook is told, once, naming the location.
    let body = wait_for(
        "the location_unreachable notification",
        Duration::from_secs(60),
        || {
            told.requests()
                .into_iter()
                .map(|(_, _, b)| b)
                .find(|b| b.contains("location_unreachable"))
        },
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["subject"], "loc3", "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("trireme locations ls"),
        "{v}"
    );
    assert_eq!(
        told.requests()
            .iter()
            .filter(|(_, _, b)| b.contains("location_unreachable"))
            .count(),
        1,
        "told once per outage"
    );

    // The location comes back: the copy catches up without operator action.
    garage.start_instance(3);
    wait_verified(&f, &second, 3, Duration::from_secs(120));

    // The primary down: the agent writes to the next location, and the
    // primary's copy catches up when it returns.
    garage.stop_instance(1);
    std::fs::write(
        data.join("d1/primary-down.txt"),
        "written while loc1 is down\n",
    )
    .unwrap();
    let third = backup(&f, "db-1/db");
    let s = wait_verified(&f, &third, 2, Duration::from_secs(90));
    assert_ne!(copy_state(&s, "loc1"), "verified", "{s}");
    garage.start_instance(1);
    wait_verified(&f, &third, 3, Duration::from_secs(120));
    restore_from_location_alone(
        &f,
        &garage.location_url(1, "trireme"),
        &third,
        &data,
        "primary",
    );
    drop(rt);
}

#[test]
fn garage_corrupt_block_on_disk_and_deleted_object_are_repaired() {
    let garage = Garage::start(3);
    let mut f = Fleet::new();
    f.locations = (1..=3).map(|i| garage.location_url(i, "trireme")).collect();
    let data = f.dir.join("data");
    make_data(&data, 4, 3_000_000, 13);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("mq-1", "mq", &data));
    f.wait_connected(&["mq-1"]);
    let snap = backup(&f, "mq-1/mq");
    wait_verified(&f, &snap, 3, Duration::from_secs(90));

    // Flip a byte in one data block file on instance 2's disk (Garage keeps
    // object data in content-addressed block files), and delete an index
    // object at instance 3 through its S3 API.
    let blocks: Vec<PathBuf> = walkdir::WalkDir::new(&garage.instance(2).data_dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let victim = blocks
        .iter()
        .max_by_key(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
        .expect("block files at instance 2")
        .clone();
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deleted = rt.block_on(async {
        let b3 = trireme_common::Location::parse(&garage.location_url(3, "trireme"))
            .unwrap()
            .open()
            .await
            .unwrap();
        let idx = b3
            .list(trireme_common::ObjectKind::Index)
            .await
            .unwrap()
            .remove(0)
            .key;
        b3.delete(&idx).await.unwrap();
        idx
    });

    let v = f.cli_json(&["verify", "--deep"]);
    let problems: Vec<String> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        problems.iter().any(|p| p.starts_with("loc2")),
        "the corrupt block at instance 2 is found: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("loc3") && p.contains(&deleted.name)),
        "the deleted index at instance 3 is found: {problems:?}"
    );
    assert!(v["unrepaired"].as_array().unwrap().is_empty(), "{v}");
    // A second deep verification finds everything intact.
    let again = f.cli_json(&["verify", "--deep"]);
    assert!(again["problems"].as_array().unwrap().is_empty(), "{again}");
    // Each location alone restores the snapshot byte for byte.
    for i in 1..=3 {
        restore_from_location_alone(
            &f,
            &garage.location_url(i, "trireme"),
            &snap,
            &data,
            &format!("garage{i}"),
        );
    }
    drop(rt);
}
