//! Master-key rotation with real processes: back up, rotate to a new key
//! file (refused while the controller runs or a location is away), delete
//! the old key, run the controller on the new one, restore byte for byte,
//! back up incrementally against the pre-rotation parent, catch a tampered
//! key table, and rotate a second time.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::fleet::{bin, make_data, wait_verified, AgentSpec, Fleet};
use trireme_testkit::tree;

fn controller(args: &[&str]) -> Output {
    Command::new(bin("trireme-controller"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = controller(args);
    assert!(
        out.status.success(),
        "trireme-controller {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn refused(args: &[&str]) -> String {
    let out = controller(args);
    assert!(
        !out.status.success(),
        "trireme-controller {args:?} should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A new key file and a configuration naming it; the configuration's path.
fn new_key(f: &Fleet, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = f.dir.join(format!("{name}.key"));
    ok(&["keygen", "--key-file", s(&key)]);
    let cfg = f.dir.join(format!("{name}.toml"));
    f.write_config_with_key(&cfg, &key);
    (key, cfg)
}

fn backup(f: &Fleet) -> String {
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    snaps[0]["id"].as_str().unwrap().to_string()
}

fn restore(
    f: &Fleet,
    id: &str,
    to: &str,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let target = f.dir.join(to);
    let out = f.cli(&[
        "restore",
        &id[..12],
        "--to",
        &format!("web-1:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    tree(&target)
}

#[test]
fn a_rotated_controller_restores_with_only_the_new_key_and_rotates_again() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 10, 150_000, 7);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let first = backup(&f);
    wait_verified(&f, &first, 3, Duration::from_secs(60));
    let want = tree(&data);

    let old_cfg = f.controller_config();
    let (_k1, cfg1) = new_key(&f, "key1");
    let rotate = |new: &Path| {
        vec![
            "key".to_string(),
            "rotate".into(),
            "--config".into(),
            s(&old_cfg).into(),
            "--new-config".into(),
            s(new).into(),
        ]
    };
    let args1 = rotate(&cfg1);
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();

    // Not while the controller runs.
    let err = refused(&args1);
    assert!(err.contains("the controller is running"), "{err}");
    f.stop_controller();

    // Not while a location is away: named.
    let loc3 = f.location(3);
    std::fs::rename(&loc3, f.dir.join("loc3.away")).unwrap();
    std::fs::write(&loc3, "unmounted").unwrap();
    let err = refused(&args1);
    assert!(err.contains("location loc3"), "{err}");
    assert!(err.contains("--skip-location loc3"), "{err}");
    std::fs::remove_file(&loc3).unwrap();
    std::fs::rename(f.dir.join("loc3.away"), &loc3).unwrap();

    let out = ok(&args1);
    assert!(out.contains("rotated master key"), "{out}");
    assert!(
        out.contains("written to and read back from: loc1, loc2, loc3"),
        "{out}"
    );
    assert!(out.contains("next steps"), "{out}");
    let table = out
        .split_whitespace()
        .find(|w| w.starts_with("keys/table-"))
        .unwrap()
        .trim_end_matches(':')
        .to_string();
    for i in 1..=3 {
        assert!(f.location(i).join(&table).exists(), "{table} at loc{i}");
    }

    // Local mode reads no key tables, and says so.
    let out = Command::new(bin("trireme-agent"))
        .args(["restore", &first[..12], "--location"])
        .arg(format!("file://{}", f.location(1).display()))
        .arg("--key-file")
        .arg(f.dir.join("key1.key"))
        .arg("--target")
        .arg(f.dir.join("local-restore"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("rotated by trireme-controller"), "{err}");

    // The old key is destroyed; the controller runs on the new one.
    std::fs::remove_file(f.dir.join("master.key")).unwrap();
    let key = f.dir.join("key1.key");
    f.use_key_file(&key);
    f.start_controller();
    f.wait_connected(&["web-1"]);
    assert!(
        restore(&f, &first, "restored-1") == want,
        "the restore after the rotation differs from the data backed up"
    );

    // An incremental backup against the pre-rotation parent.
    std::fs::write(data.join("after-rotation.txt"), "new\n").unwrap();
    let second = backup(&f);
    let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded", "--limit", "5"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "backup" && j["snapshot_id"] == second.as_str())
        .unwrap();
    let unchanged = job["summary"]["files_unchanged"].as_u64().unwrap_or(0);
    assert!(
        unchanged >= 10,
        "files reused from the pre-rotation parent: {job}"
    );
    wait_verified(&f, &second, 3, Duration::from_secs(60));
    wait_verified(&f, &first, 3, Duration::from_secs(60));
    let want2 = tree(&data);
    assert!(restore(&f, &second, "restored-2") == want2);

    // A tampered copy of the table is refused, naming it.
    f.stop_controller();
    let at2 = f.location(2).join(&table);
    let good = std::fs::read(&at2).unwrap();
    let mut bad = good.clone();
    let n = bad.len() - 40;
    bad[n] ^= 0x20;
    std::fs::write(&at2, &bad).unwrap();
    let err = refused(&["key", "verify", "--config", s(&cfg1)]);
    assert!(err.contains("location loc2: PROBLEMS"), "{err}");
    assert!(
        err.contains(&table) && err.contains("MAC does not match"),
        "{err}"
    );
    std::fs::write(&at2, &good).unwrap();
    let out = ok(&["key", "verify", "--config", s(&cfg1)]);
    assert!(out.contains("verified: every stored key opens"), "{out}");

    // A second rotation: a complete new table that supersedes the first,
    // which `key verify` then removes.
    let (_k2, cfg2) = new_key(&f, "key2");
    let out = ok(&[
        "key",
        "rotate",
        "--config",
        s(&cfg1),
        "--new-config",
        s(&cfg2),
    ]);
    assert!(
        out.contains(&format!("supersedes {}", &table[5..])),
        "{out}"
    );
    let out = ok(&["key", "verify", "--config", s(&cfg2)]);
    assert!(out.contains("verified"), "{out}");
    assert!(
        out.contains(&format!("removed superseded key table loc1: {table}")),
        "{out}"
    );
    for i in 1..=3 {
        assert!(
            !f.location(i).join(&table).exists(),
            "{table} still at loc{i}"
        );
    }
    std::fs::remove_file(f.dir.join("key1.key")).unwrap();
    let key = f.dir.join("key2.key");
    f.use_key_file(&key);
    f.start_controller();
    f.wait_connected(&["web-1"]);
    assert!(restore(&f, &first, "restored-3") == want);
    assert!(restore(&f, &second, "restored-4") == want2);
    let third = backup(&f);
    wait_verified(&f, &third, 3, Duration::from_secs(60));

    // The rotations are in the audit log.
    let audit = f.cli(&["audit", "ls", "--limit", "1000"]);
    assert!(audit.matches("key rotate").count() >= 2, "{audit}");
}
