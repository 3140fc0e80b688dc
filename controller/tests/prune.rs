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
use support::fleet::{location_tree, make_data, tree, wait_for, AgentSpec, Fleet};

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

    let mut snaps = Vec::new();
    for i in 0..4 {
        snaps.push(change_and_backup(&f, &data, i));
    }
    for (id, _) in &snaps {
        wait_verified(&f, id, 3);
    }
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
    std::thread::sleep(Duration::from_secs(5));
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
    std::thread::sleep(Duration::from_secs(5));
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
    let mut snaps = Vec::new();
    for i in 0..3 {
        snaps.push(change_and_backup(&f, &data, i));
    }
    for (id, _) in &snaps {
        wait_verified(&f, id, 3);
    }
    // No policy yet: the scheduled prunes keep everything, and runs that
    // delete nothing are not audited.
    std::thread::sleep(Duration::from_secs(3));
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
    std::thread::sleep(Duration::from_secs(4));
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
