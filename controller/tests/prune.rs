//! Retention and prune end to end: a real controller with three `file://`
//! locations, a real agent and the CLI. A dry run deletes nothing; a prune
//! removes exactly the snapshots the retention class does not keep, at
//! every location, and every kept snapshot still restores byte for byte
//! from each location alone; a location that lags behind is skipped and
//! left untouched, replication does not bring pruned objects back from it,
//! and a later prune catches it up.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::fleet::{location_tree, make_data, wait_for, wait_replication_pass, AgentSpec, Fleet};
use trireme_testkit::garage::Garage;
use trireme_testkit::tree;

fn verified_copies(snap: &Value) -> usize {
    snap["copies"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["state"] == "verified").count())
}

fn wait_verified(f: &Fleet, id: &str, n: usize) {
    wait_for(
        &format!("snapshot {id} verified at {n} locations"),
        Duration::from_secs(90),
        || (verified_copies(&f.cli_json(&["snapshots", "show", id])) >= n).then_some(()),
    );
}

/// Scheduled prune runs that finished (deleting or not), as the controller
/// logged them.
fn scheduled_prune_runs(f: &Fleet) -> usize {
    Fleet::log_text(&f.controller_log())
        .lines()
        .filter(|l| l.contains("scheduled prune") && l.contains("removed"))
        .count()
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

/// New data only this backup holds (the previous change is deleted), then
/// a backup; its snapshot id and what it must restore to.
fn change_and_backup(f: &Fleet, data: &Path, i: usize) -> (String, BTreeMap<PathBuf, Vec<u8>>) {
    if i > 0 {
        let _ = std::fs::remove_file(data.join(format!("d0/change-{}.bin", i - 1)));
    }
    make_data(&data.join("tmp"), 1, 400_000, 100 + i as u64);
    std::fs::rename(
        data.join("tmp/d0/f0.bin"),
        data.join(format!("d0/change-{i}.bin")),
    )
    .unwrap();
    std::fs::remove_dir_all(data.join("tmp")).unwrap();
    let job = f.cli_json(&["backup", "run", "app-1/files"]);
    let id = wait_job(f, job["id"].as_str().unwrap());
    (id, tree(data))
}

/// `n` backups of `data` (each after [`change_and_backup`]), waited for
/// until verified at all three locations; their snapshot ids and trees.
fn verified_backups(f: &Fleet, data: &Path, n: usize) -> Vec<(String, BTreeMap<PathBuf, Vec<u8>>)> {
    let snaps: Vec<_> = (0..n).map(|i| change_and_backup(f, data, i)).collect();
    for (id, _) in &snaps {
        wait_verified(f, id, 3);
    }
    snaps
}

/// Restore `snap` from the `file://` location at `dir` alone (the agent's
/// local mode with the master key) and compare with `want`.
fn restores_from(f: &Fleet, dir: &Path, snap: &str, want: &BTreeMap<PathBuf, Vec<u8>>) {
    let target = f.dir.join(format!(
        "restore-{}-{}",
        dir.file_name().unwrap().to_str().unwrap(),
        &snap[..12]
    ));
    let _ = std::fs::remove_dir_all(&target);
    assert!(
        f.restore_alone(&format!("file://{}", dir.display()), snap, &target) == *want,
        "{snap} restored from {} differs",
        dir.display()
    );
}

fn manifests(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

fn catalog_ids(f: &Fleet) -> BTreeSet<String> {
    f.cli_json(&["snapshots", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

fn ids(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().or(s.as_str()).unwrap().to_string())
        .collect()
}

fn location<'a>(reply: &'a Value, name: &str) -> &'a Value {
    reply["locations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == name)
        .unwrap()
}

#[test]
fn retention_prunes_every_location_and_skips_a_lagging_one() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 4, 300_000, 21);
    f.start_controller();
    // A pre-hook holds each backup a moment, so a prune can be tried
    // while one runs.
    f.start_agent(&AgentSpec {
        name: "app-1".into(),
        sources: vec![(
            "files".into(),
            data.clone(),
            vec!["sleep".into(), "2".into()],
            Vec::new(),
        )],
        via: None,
        extra: String::new(),
        settings: String::new(),
    });
    f.wait_connected(&["app-1"]);

    let mut snaps = verified_backups(&f, &data, 4);
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"app-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"last-two\"\n\n[retention.last-two]\nkeep_last = 2\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);

    // Dry run: the list is right, nothing is deleted.
    let before: Vec<_> = (1..=3).map(|i| location_tree(&f.location(i))).collect();
    let dry = f.cli_json(&["prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let old: BTreeSet<String> = [snaps[0].0.clone(), snaps[1].0.clone()].into();
    assert_eq!(ids(&dry["removed"]), old, "{dry}");
    assert_eq!(
        ids(&dry["kept"]),
        [snaps[2].0.clone(), snaps[3].0.clone()].into(),
        "{dry}"
    );
    for i in 1..=3 {
        let l = location(&dry, &format!("loc{i}"));
        assert_eq!(l["skipped"], Value::Null, "{dry}");
        assert_eq!(ids(&l["snapshots_removed"]), old, "{dry}");
        assert!(l["packs_deleted"].as_u64().unwrap() >= 1, "{dry}");
        assert!(
            location_tree(&f.location(i)) == before[i - 1],
            "the dry run changed loc{i}"
        );
    }
    let text = f.cli(&["prune", "--dry-run"]);
    assert!(text.contains("would remove 2 snapshot(s)"), "{text}");
    assert_eq!(catalog_ids(&f).len(), 4);

    // Prune: gone everywhere, in the catalog too; the rest restores from
    // each location alone.
    let done = f.cli_json(&["prune"]);
    assert_eq!(done["dry_run"], false);
    for i in 1..=3 {
        let l = location(&done, &format!("loc{i}"));
        assert_eq!(l["skipped"], Value::Null, "{done}");
        assert_eq!(l["error"], Value::Null, "{done}");
        assert_eq!(ids(&l["snapshots_removed"]), old, "{done}");
        assert!(l["packs_deleted"].as_u64().unwrap() >= 1, "{done}");
        assert!(l["bytes_freed"].as_u64().unwrap() > 0, "{done}");
        let here = manifests(&f.location(i));
        assert_eq!(
            here,
            [snaps[2].0.clone(), snaps[3].0.clone()].into(),
            "loc{i}"
        );
    }
    assert_eq!(
        catalog_ids(&f),
        [snaps[2].0.clone(), snaps[3].0.clone()].into()
    );
    for i in 1..=3 {
        for (id, want) in &snaps[2..] {
            restores_from(&f, &f.location(i), id, want);
        }
    }
    // The locations stay identical (the replacement index is the same
    // object everywhere), and nothing is copied back by replication.
    wait_replication_pass(&f, Duration::from_secs(90));
    let one = location_tree(&f.location(1));
    assert!(one == location_tree(&f.location(2)) && one == location_tree(&f.location(3)));

    // No prune while a backup is under way.
    let job = f.cli_json(&["backup", "run", "app-1/files"]);
    let refused = f.cli_as("op", &["prune"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("prune refused") && err.contains("queued or running"),
        "{err}"
    );
    let unchanged = wait_job(&f, job["id"].as_str().unwrap());
    wait_verified(&f, &unchanged, 3);
    snaps.push((unchanged, tree(&data)));

    // loc3 lags: it cannot be reached when the next backup is made.
    let loc3 = f.location(3);
    let away = f.dir.join("loc3.away");
    std::fs::rename(&loc3, &away).unwrap();
    std::fs::write(&loc3, "not a directory").unwrap();
    let (newest, newest_tree) = change_and_backup(&f, &data, 5);
    wait_verified(&f, &newest, 2);
    snaps.push((newest.clone(), newest_tree));
    // Kept: the last two (snaps[4], snaps[5]); removed: snaps[2], snaps[3].
    let lag = f.cli_json(&["prune"]);
    let l3 = location(&lag, "loc3");
    let why = l3["skipped"].as_str().unwrap();
    assert!(
        why.contains("unreachable") || why.contains("behind"),
        "{lag}"
    );
    assert!(ids(&l3["snapshots_removed"]).is_empty(), "{lag}");
    let gone: BTreeSet<String> = [snaps[2].0.clone(), snaps[3].0.clone()].into();
    for i in 1..=2 {
        let l = location(&lag, &format!("loc{i}"));
        assert_eq!(l["skipped"], Value::Null, "{lag}");
        assert_eq!(ids(&l["snapshots_removed"]), gone, "{lag}");
    }
    assert!(lag.to_string().contains("still at loc3"), "{lag}");
    assert_eq!(
        catalog_ids(&f),
        [snaps[4].0.clone(), snaps[5].0.clone()].into()
    );
    // Nothing was deleted at loc3.
    std::fs::remove_file(&loc3).unwrap();
    let loc3_before = tree(&away);
    std::fs::rename(&away, &loc3).unwrap();
    assert!(
        manifests(&loc3).is_superset(&gone),
        "loc3 still holds the removed snapshots"
    );

    // loc3 is back and catches up; replication does not copy the pruned
    // objects back to loc1 and loc2.
    wait_verified(&f, &newest, 3);
    wait_replication_pass(&f, Duration::from_secs(90));
    for i in 1..=2 {
        assert!(
            manifests(&f.location(i)).is_disjoint(&gone),
            "a pruned snapshot came back to loc{i}"
        );
    }
    let t3 = tree(&loc3);
    assert!(
        loc3_before.keys().all(|k| t3.contains_key(k)),
        "objects were deleted at the lagging location"
    );

    // A later prune removes them at loc3 too.
    let catch_up = f.cli_json(&["prune"]);
    let l3 = location(&catch_up, "loc3");
    assert_eq!(l3["skipped"], Value::Null, "{catch_up}");
    assert_eq!(ids(&l3["snapshots_removed"]), gone, "{catch_up}");
    let kept: BTreeSet<String> = [snaps[4].0.clone(), snaps[5].0.clone()].into();
    for i in 1..=3 {
        assert_eq!(manifests(&f.location(i)), kept, "loc{i}");
    }
    let one = location_tree(&f.location(1));
    assert!(
        one == location_tree(&f.location(2)) && one == location_tree(&f.location(3)),
        "the locations hold the same objects after catching up"
    );
    for i in 1..=3 {
        for (id, want) in &snaps[4..] {
            restores_from(&f, &f.location(i), id, want);
        }
    }
    // Nothing left to do.
    let again = f.cli_json(&["prune"]);
    assert!(ids(&again["removed"]).is_empty(), "{again}");
    assert!(!again.to_string().contains("still to prune"), "{again}");
}

#[test]
fn scheduled_prune_applies_retention_on_its_own() {
    let mut f = Fleet::new();
    f.controller_extra = "[retention]\nprune_every = \"2s\"\n".into();
    let data = f.dir.join("data");
    make_data(&data, 2, 200_000, 31);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("app-1", "files", &data));
    f.wait_connected(&["app-1"]);
    let snaps = verified_backups(&f, &data, 3);
    // No policy yet: the scheduled prunes keep everything, and runs that
    // delete nothing are not audited (one has run since the backups).
    let runs = scheduled_prune_runs(&f);
    wait_for("a scheduled prune run", Duration::from_secs(60), || {
        (scheduled_prune_runs(&f) > runs).then_some(())
    });
    assert_eq!(catalog_ids(&f).len(), 3);
    assert!(scheduler_entries(&f).is_empty());
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"app-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let newest: BTreeSet<String> = [snaps[2].0.clone()].into();
    wait_for("the scheduled prune", Duration::from_secs(60), || {
        (catalog_ids(&f) == newest && (1..=3).all(|i| manifests(&f.location(i)) == newest))
            .then_some(())
    });
    for i in 1..=3 {
        restores_from(&f, &f.location(i), &snaps[2].0, &snaps[2].1);
    }
    assert!(Fleet::log_text(&f.controller_log()).contains("scheduled prune"));
    // The run that deleted is in the audit chain, as by the scheduler, with
    // what it deleted where; later runs with nothing to do are not.
    let runs = scheduled_prune_runs(&f);
    wait_for(
        "a later scheduled prune run",
        Duration::from_secs(60),
        || (scheduled_prune_runs(&f) > runs).then_some(()),
    );
    let entries = scheduler_entries(&f);
    assert_eq!(entries.len(), 1, "{entries:#?}");
    let e = &entries[0];
    assert_eq!(e["role"], "controller");
    assert_eq!(e["outcome"], "ok");
    let t = e["target"].as_str().unwrap();
    assert!(
        t.starts_with("prune of every source: removed 2 snapshot(s): ")
            && t.contains(&snaps[0].0)
            && t.contains(&snaps[1].0)
            && !t.contains(&snaps[2].0)
            && (1..=3).all(|i| t.contains(&format!("loc{i}: 2 snapshot(s)"))),
        "{t}"
    );
}

/// Snapshot manifests at an S3 location, listed with the engine's S3
/// backend.
fn s3_manifests(url: &str) -> BTreeSet<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = trireme_common::Location::parse(url)
            .unwrap()
            .open()
            .await
            .unwrap();
        b.list(trireme_common::ObjectKind::Snapshot)
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key.name)
            .collect()
    })
}

#[test]
fn prune_on_three_garage_locations() {
    let garage = Garage::start(3);
    let mut f = Fleet::new();
    f.locations = (1..=3).map(|i| garage.location_url(i, "trireme")).collect();
    let data = f.dir.join("data");
    make_data(&data, 2, 300_000, 41);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("app-1", "files", &data));
    f.wait_connected(&["app-1"]);
    let snaps = verified_backups(&f, &data, 3);
    let all: BTreeSet<String> = snaps.iter().map(|(id, _)| id.clone()).collect();
    for i in 1..=3 {
        assert_eq!(
            s3_manifests(&garage.location_url(i, "trireme")),
            all,
            "garage{i}"
        );
    }
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"app-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);

    let done = f.cli_json(&["prune"]);
    let old: BTreeSet<String> = [snaps[0].0.clone(), snaps[1].0.clone()].into();
    let newest: BTreeSet<String> = [snaps[2].0.clone()].into();
    assert_eq!(ids(&done["removed"]), old, "{done}");
    for i in 1..=3 {
        let l = location(&done, &format!("loc{i}"));
        assert_eq!(l["skipped"], Value::Null, "{done}");
        assert_eq!(l["error"], Value::Null, "{done}");
        assert_eq!(ids(&l["snapshots_removed"]), old, "{done}");
        assert!(l["packs_deleted"].as_u64().unwrap() >= 1, "{done}");
        assert!(l["bytes_freed"].as_u64().unwrap() > 0, "{done}");
    }
    assert_eq!(catalog_ids(&f), newest);
    // Gone from every bucket, as S3 lists it, and not copied back by a
    // later replication pass; the kept snapshot restores byte for byte from
    // each Garage location alone.
    wait_replication_pass(&f, Duration::from_secs(90));
    for i in 1..=3 {
        let url = garage.location_url(i, "trireme");
        assert_eq!(s3_manifests(&url), newest, "garage{i}");
        let target = f.dir.join(format!("restore-garage{i}"));
        let got = f.restore_alone(&url, &snaps[2].0, &target);
        assert!(
            got == snaps[2].1,
            "garage{i}: the kept snapshot restored other bytes"
        );
    }
}

/// The audit entries of scheduled prunes.
fn scheduler_entries(f: &Fleet) -> Vec<Value> {
    let out = f.cli(&["audit", "ls", "--json", "--limit", "1000"]);
    serde_json::from_str::<Value>(&out)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "scheduler" && e["action"] == "prune")
        .cloned()
        .collect()
}

/// Change the cluster `dir` for backup `i`: a new file, a changed one and,
/// from the third on, a deleted one; what it then holds.
fn change_cluster(dir: &Path, i: u64) -> BTreeMap<PathBuf, Vec<u8>> {
    make_data(&dir.join(format!("t{i}")), 1, 150_000, 500 + i);
    std::fs::write(dir.join("meta.txt"), format!("after change {i}\n")).unwrap();
    if i >= 2 {
        let _ = std::fs::remove_dir_all(dir.join(format!("t{}", i - 2)));
    }
    tree(dir)
}

/// Restore `snap` into the `tidb-staging` source through the controller
/// (the agent replays its chain with br) and compare the staging cluster
/// with `want`.
fn tidb_restores(f: &Fleet, br_root: &Path, snap: &str, want: &BTreeMap<PathBuf, Vec<u8>>) {
    let out = f.cli(&[
        "restore",
        &snap[..12],
        "--to",
        "db-1:source:tidb-staging",
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    let got = tree(&support::br::cluster(br_root, "staging"));
    assert!(
        got == *want,
        "snapshot {snap} restored to {:?}, not {:?}",
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
}

fn kept_by<'a>(reply: &'a Value, id: &str) -> &'a Value {
    reply["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not kept: {reply}"))
}

#[test]
fn a_tidb_chain_stays_restorable_after_prune_at_every_kept_point() {
    let mut f = Fleet::new();
    let br_root = f.dir.join("br");
    let br = support::br::install(&br_root);
    let main = support::br::cluster(&br_root, "main");
    std::fs::create_dir_all(&main).unwrap();
    let staging_dir = f.dir.join("br-staging");
    f.start_controller();
    let empty = f.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let mut spec = AgentSpec::volume("db-1", "unused", &empty);
    spec.extra = support::br::source("tidb", "main", &br, &staging_dir)
        + &support::br::source("tidb-staging", "staging", &br, &staging_dir);
    f.start_agent(&spec);
    f.wait_connected(&["db-1"]);

    // An old full backup, then a new chain: a full backup and two
    // incrementals on it.
    let backup = |full: bool| {
        let mut args = vec!["backup", "run", "db-1/tidb"];
        if full {
            args.push("--full");
        }
        let job = f.cli_json(&args);
        wait_job(&f, job["id"].as_str().unwrap())
    };
    let mut snaps: Vec<(String, BTreeMap<PathBuf, Vec<u8>>)> = Vec::new();
    for (i, full) in [(0u64, true), (1, true), (2, false), (3, false)] {
        let want = change_cluster(&main, i);
        snaps.push((backup(full), want));
    }
    for (id, _) in &snaps {
        wait_verified(&f, id, 3);
    }
    let id = |i: usize| snaps[i].0.clone();
    let show = f.cli_json(&["snapshots", "show", &id(3)]);
    assert_eq!(
        show["datastore_position"]["tidb.mode"], "incremental",
        "{show}"
    );
    assert_eq!(show["depends_on"][0]["id"], id(2), "{show}");
    assert_eq!(show["depends_on"][0]["chain"], "tidb", "{show}");
    let show = f.cli_json(&["snapshots", "show", &id(1)]);
    assert_eq!(show["depends_on"], serde_json::json!([]), "{show}");

    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"db-1/tidb\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);

    // keep_last = 1 keeps the newest incremental, and so its whole chain;
    // only the old full backup goes. The dry run says why each stays.
    let dry = f.cli_json(&["prune", "--dry-run"]);
    assert_eq!(ids(&dry["removed"]), [id(0)].into(), "{dry}");
    assert_eq!(ids(&dry["kept"]), [id(1), id(2), id(3)].into(), "{dry}");
    assert_eq!(kept_by(&dry, &id(3))["reason"], "newest, last 1", "{dry}");
    assert_eq!(kept_by(&dry, &id(3))["needed_by"], Value::Null, "{dry}");
    for i in [1, 2] {
        let k = kept_by(&dry, &id(i));
        assert_eq!(
            k["reason"],
            format!("needed by {} (tidb chain)", &id(3)[..8]),
            "{dry}"
        );
        assert_eq!(k["needed_by"], id(3), "{dry}");
        assert_eq!(k["chain"], "tidb", "{dry}");
    }
    let text = f.cli(&["prune", "--dry-run"]);
    assert!(
        text.contains("WHY KEPT")
            && text.contains(&format!("needed by {} (tidb chain)", &id(3)[..8]))
            && text.contains("newest, last 1"),
        "{text}"
    );

    let done = f.cli_json(&["prune"]);
    for i in 1..=3 {
        let l = location(&done, &format!("loc{i}"));
        assert_eq!(l["skipped"], Value::Null, "{done}");
        assert_eq!(l["error"], Value::Null, "{done}");
        assert_eq!(ids(&l["snapshots_removed"]), [id(0)].into(), "{done}");
        assert_eq!(
            manifests(&f.location(i)),
            [id(1), id(2), id(3)].into(),
            "loc{i}"
        );
    }
    assert_eq!(catalog_ids(&f), [id(1), id(2), id(3)].into());
    // Every kept point restores: the full backup alone, and each
    // incremental replayed on its chain.
    for (snap, want) in &snaps[1..] {
        tidb_restores(&f, &br_root, snap, want);
    }

    // A new chain: once nothing kept needs the old one, it goes whole.
    for (i, full) in [(4u64, true), (5, false)] {
        let want = change_cluster(&main, i);
        snaps.push((backup(full), want));
    }
    for (snap, _) in &snaps[4..] {
        wait_verified(&f, snap, 3);
    }
    let id = |i: usize| snaps[i].0.clone();
    let done = f.cli_json(&["prune"]);
    assert_eq!(
        ids(&done["removed"]),
        [id(1), id(2), id(3)].into(),
        "{done}"
    );
    assert_eq!(
        kept_by(&done, &id(4))["reason"],
        format!("needed by {} (tidb chain)", &id(5)[..8]),
        "{done}"
    );
    for i in 1..=3 {
        assert_eq!(manifests(&f.location(i)), [id(4), id(5)].into(), "loc{i}");
    }
    for (snap, want) in &snaps[4..] {
        tidb_restores(&f, &br_root, snap, want);
    }
    // The restores replayed exactly each chain, full backup first.
    let applied = std::fs::read_to_string(br_root.join("restored-staging")).unwrap();
    assert_eq!(applied.lines().count(), 1 + 2 + 3 + 1 + 2, "{applied}");
}
