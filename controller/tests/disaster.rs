//! Disaster recovery of the controller itself: back up, export the master
//! key for recovery, destroy the controller's state directory and key file,
//! import the key on a "new" controller on the same locations, rebuild the
//! catalog from one location, and restore byte for byte.

mod support;

use std::time::Duration;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::fleet::{bin, make_data, wait_verified, AgentSpec, Fleet};
use trireme_testkit::tree;

fn controller_cmd(args: &[&str]) {
    let out = Command::new(bin("trireme-controller"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "trireme-controller {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A passphrase file (mode 0600) in the fleet's directory.
fn passphrase_file(f: &Fleet) -> PathBuf {
    let pass = f.dir.join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    pass
}

/// `trireme-controller key export|import` between `key` and `export`.
fn key_cmd(verb: &str, key: &Path, export: &Path, pass: &Path) {
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let (from, to) = match verb {
        "export" => (("--key-file", key), ("--out", export)),
        _ => (("--in", export), ("--key-file", key)),
    };
    controller_cmd(&[
        "key",
        verb,
        from.0,
        &s(from.1),
        to.0,
        &s(to.1),
        "--passphrase-file",
        &s(pass),
    ]);
}

#[test]
fn a_new_controller_rebuilds_its_catalog_from_one_location_and_restores() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 10, 150_000, 3);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);

    let mut ids = Vec::new();
    for round in 0..2 {
        std::fs::write(
            data.join(format!("round-{round}.txt")),
            format!("round {round}\n"),
        )
        .unwrap();
        let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
        assert!(out.contains("succeeded"), "{out}");
        let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
        let id = snaps[0]["id"].as_str().unwrap().to_string();
        wait_verified(&f, &id, 3, Duration::from_secs(60));
        ids.push(id);
    }
    let want = tree(&data);

    // After install: the master key exported, wrapped by a passphrase.
    let key = f.dir.join("master.key");
    let export = f.dir.join("recovery.key");
    let pass = passphrase_file(&f);
    key_cmd("export", &key, &export, &pass);
    let original_key = std::fs::read(&key).unwrap();

    // The controller host is lost: its state directory and key file with it.
    f.kill_controller();
    std::fs::remove_dir_all(f.dir.join("controller")).unwrap();
    std::fs::remove_file(&key).unwrap();
    // A new host: the key back from the export, then the same configuration.
    key_cmd("import", &key, &export, &pass);
    assert_eq!(std::fs::read(&key).unwrap(), original_key);
    f.start_controller();
    f.wait_connected(&["web-1"]);
    let empty = f.cli_json(&["snapshots", "ls"]);
    assert_eq!(empty.as_array().unwrap().len(), 0, "{empty}");

    // Rebuild from the second location alone.
    let out = f.cli(&["catalog", "rebuild", "--from", "loc2"]);
    assert!(out.contains("2 snapshots found, 2 added"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    let mut got: Vec<String> = snaps
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut expect = ids.clone();
    expect.sort();
    assert_eq!(got, expect);
    // The replication pass finds the copies at the other locations.
    wait_verified(&f, &ids[1], 3, Duration::from_secs(60));
    // Rebuilding again adds nothing.
    let out = f.cli(&["catalog", "rebuild", "--from", "loc3"]);
    assert!(
        out.contains("2 snapshots found, 0 added, 2 already known"),
        "{out}"
    );

    // Restore the newest: byte-identical.
    let target = f.dir.join("restored");
    let out = f.cli(&[
        "restore",
        &ids[1][..12],
        "--to",
        &format!("web-1:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(
        tree(&target) == want,
        "the restore differs from the data backed up"
    );

    // Backups go on, incremental against the rebuilt newest snapshot.
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded", "--limit", "5"]);
    let backup = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "backup")
        .unwrap();
    let unchanged = backup["summary"]["files_unchanged"].as_u64().unwrap_or(0);
    assert!(
        unchanged >= 10,
        "unchanged files reused from the rebuilt parent: {backup}"
    );
}

/// The same disaster after a master-key rotation: only the new key is
/// exported and imported, the old one is gone, and the new controller finds
/// the key table at the locations.
#[test]
fn after_a_rotation_the_new_key_alone_rebuilds_and_restores() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 8, 120_000, 5);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    let id = snaps[0]["id"].as_str().unwrap().to_string();
    wait_verified(&f, &id, 3, Duration::from_secs(60));
    let want = tree(&data);

    // Rotate to a new key file (controller stopped).
    f.stop_controller();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let new_key = f.dir.join("new.key");
    controller_cmd(&["keygen", "--key-file", &s(&new_key)]);
    let new_cfg = f.dir.join("new.toml");
    f.write_config_with_key(&new_cfg, &new_key);
    controller_cmd(&[
        "key",
        "rotate",
        "--config",
        &s(&f.controller_config()),
        "--new-config",
        &s(&new_cfg),
    ]);

    // The new key's recovery export; then the host is lost with both keys.
    let export = f.dir.join("recovery.key");
    let pass = passphrase_file(&f);
    key_cmd("export", &new_key, &export, &pass);
    std::fs::remove_dir_all(f.dir.join("controller")).unwrap();
    std::fs::remove_file(f.dir.join("master.key")).unwrap();
    std::fs::remove_file(&new_key).unwrap();
    key_cmd("import", &new_key, &export, &pass);
    f.use_key_file(&new_key);
    f.start_controller();
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["catalog", "rebuild", "--from", "loc2"]);
    assert!(out.contains("1 snapshots found, 1 added"), "{out}");
    let target = f.dir.join("restored");
    let out = f.cli(&[
        "restore",
        &id[..12],
        "--to",
        &format!("web-1:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(
        tree(&target) == want,
        "the restore differs from the data backed up"
    );
    wait_verified(&f, &id, 3, Duration::from_secs(60));
}
