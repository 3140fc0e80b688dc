//! `trireme ls | diff | find | stats` end to end: a real controller with
//! three `file://` locations, a real agent backing up a directory twice
//! (changed between), and the real `trireme` binary. The answers are
//! compared with the directory itself (walkdir, sizes on disk, GNU
//! `ls -l`'s mode string); a missing path is a clear error with a nonzero
//! exit; every look is in the audit log, by who and on which snapshot.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use support::fleet::{wait_for, AgentSpec, Fleet};
use support::totp::Codes;
use trireme_testkit::{metadata, sha256sums};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Run a backup of web-1/files and wait for it; its snapshot id.
fn backup(f: &Fleet) -> String {
    let job = f.cli_json(&["backup", "run", "web-1/files"]);
    let id = job["id"].as_str().unwrap().to_string();
    let done = wait_for("the backup", Duration::from_secs(90), || {
        let j = f.cli_json(&["jobs", "show", &id]);
        matches!(j["state"].as_str()?, "succeeded" | "failed").then_some(j)
    });
    assert_eq!(done["state"], "succeeded", "{done}");
    done["snapshot_id"].as_str().unwrap().to_string()
}

/// Every path below `dir`, as `/rel/path`.
fn paths_of(dir: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            format!(
                "/{}",
                e.unwrap().path().strip_prefix(dir).unwrap().display()
            )
        })
        .collect()
}

/// Files below `dir` and the sum of their sizes.
fn files_and_bytes(dir: &Path) -> (u64, u64) {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .fold((0, 0), |(n, b), e| (n + 1, b + e.metadata().unwrap().len()))
}

fn gnu_mode(path: &Path) -> String {
    let out = Command::new("ls").arg("-ld").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// GNU tar with `args`, then `path`; its stdout (panics if it fails).
fn gnu_tar(args: &[&str], path: &Path) -> String {
    let out = Command::new("tar").args(args).arg(path).output().unwrap();
    assert!(out.status.success(), "tar {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ls_diff_find_stats_through_the_controller() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    std::fs::create_dir_all(data.join("conf")).unwrap();
    std::fs::create_dir_all(data.join("exports")).unwrap();
    std::fs::write(data.join("conf/app.conf"), "a = 1\n").unwrap();
    std::fs::set_permissions(
        data.join("conf/app.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(data.join("exports/monday.json"), vec![7u8; 200_000]).unwrap();
    std::fs::write(data.join("exports/keep.json"), b"{\"keep\": true}\n").unwrap();
    std::fs::write(data.join("run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(data.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::symlink("run.sh", data.join("latest")).unwrap();
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);

    let first = backup(&f);
    let first_paths = paths_of(&data);
    let (first_files, first_bytes) = files_and_bytes(&data);

    // ls -R -o json: every path the directory has, each with its size.
    let v = f.cli_json(&["ls", &first, "-R"]);
    assert_eq!(v["snapshot"], first.as_str(), "{v}");
    assert_eq!(v["truncated"], false);
    let entries = v["entries"].as_array().unwrap();
    let got: BTreeSet<String> = entries
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got, first_paths);
    for e in entries {
        let p = data.join(e["path"].as_str().unwrap().trim_start_matches('/'));
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_file() {
            assert_eq!(e["type"], "file", "{e}");
            assert_eq!(e["size"], m.len(), "{e}");
            assert_eq!(
                e["mode"],
                format!("{:04o}", m.permissions().mode() & 0o7777)
            );
        }
    }
    let link = entries.iter().find(|e| e["path"] == "/latest").unwrap();
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "run.sh");

    // ls without -R: the root's children only; ls -l: GNU ls's mode
    // strings and sizes.
    let top = f.cli(&["ls", &first]);
    let top: BTreeSet<&str> = top.lines().collect();
    assert_eq!(
        top,
        BTreeSet::from(["/conf/", "/exports/", "/latest", "/run.sh"]),
        "{top:?}"
    );
    let long = f.cli(&["ls", &first[..10], "/", "-l"]);
    for (name, path) in [
        ("/run.sh", data.join("run.sh")),
        ("/conf/", data.join("conf")),
        ("/latest -> run.sh", data.join("latest")),
    ] {
        let line = long
            .lines()
            .find(|l| l.ends_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {long}"));
        assert!(
            line.starts_with(&gnu_mode(&path)),
            "{line} vs {}",
            gnu_mode(&path)
        );
    }
    let conf = f.cli(&["ls", &first, "/conf", "-l"]);
    assert!(
        conf.starts_with(&gnu_mode(&data.join("conf/app.conf"))),
        "{conf}"
    );
    assert!(
        conf.contains(" 6 ") && conf.trim_end().ends_with("/conf/app.conf"),
        "{conf}"
    );
    // The cap: a limit leaves entries out and says so.
    let capped = f.cli_json(&["ls", &first, "-R", "--limit", "2"]);
    assert_eq!(capped["entries"].as_array().unwrap().len(), 2);
    assert_eq!(capped["truncated"], true);
    assert!(
        capped["note"].as_str().unwrap().contains("narrow PATH"),
        "{capped}"
    );

    // A path that is not there: an error naming it, a nonzero exit.
    let out = f.cli_as("op", &["ls", &first, "/nope"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("/nope"), "{}", text(&out));
    // An unknown snapshot likewise.
    let out = f.cli_as("op", &["ls", "0123456789ab"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not found"), "{}", text(&out));

    // Change the directory: add, remove, modify, chmod; back up again.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(data.join("exports/tuesday.json"), vec![9u8; 100_000]).unwrap();
    std::fs::remove_file(data.join("exports/monday.json")).unwrap();
    std::fs::write(data.join("conf/app.conf"), "a = 22\n").unwrap();
    std::fs::set_permissions(data.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let second = backup(&f);
    assert_ne!(first, second);

    // diff: text marks and summary, and JSON.
    let d = f.cli(&["diff", &first, &second]);
    for want in [
        "+ /exports/tuesday.json  (100000 bytes)",
        "- /exports/monday.json  (200000 bytes)",
        "M /conf/app.conf  (6 -> 7 bytes)",
        "m /run.sh",
        "1 added, 1 removed, 1 modified, 1 metadata only",
    ] {
        assert!(d.contains(want), "{want:?} missing: {d}");
    }
    assert!(!d.contains("keep.json"), "{d}");
    let dj = f.cli_json(&["diff", &first, &second]);
    assert_eq!(dj["summary"]["added"], 1, "{dj}");
    assert_eq!(dj["summary"]["removed"], 1);
    assert_eq!(dj["summary"]["modified"], 1);
    assert_eq!(dj["summary"]["metadata"], 1);
    let what = |p: &str| {
        dj["changes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["path"] == p)
            .map(|c| c["what"].as_str().unwrap().to_string())
    };
    assert_eq!(what("/exports/tuesday.json").as_deref(), Some("added"));
    assert_eq!(what("/exports/monday.json").as_deref(), Some("removed"));
    assert_eq!(what("/conf/app.conf").as_deref(), Some("modified"));
    assert_eq!(what("/run.sh").as_deref(), Some("metadata"));
    // The directories whose mtimes changed are metadata changes, nothing else.
    for c in dj["changes"].as_array().unwrap() {
        let p = c["path"].as_str().unwrap();
        assert!(
            [
                "/exports/tuesday.json",
                "/exports/monday.json",
                "/conf/app.conf",
                "/run.sh"
            ]
            .contains(&p)
                || c["what"] == "metadata",
            "{c}"
        );
    }

    // find: which snapshots hold which version, newest first.
    let fj = f.cli_json(&["find", "*.json"]);
    let rows = fj.as_array().unwrap();
    let holders = |path: &str| -> Vec<Vec<String>> {
        rows.iter()
            .filter(|r| r["path"] == path)
            .map(|r| {
                r["snapshots"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["id"].as_str().unwrap().to_string())
                    .collect()
            })
            .collect()
    };
    assert_eq!(
        holders("/exports/keep.json"),
        vec![vec![second.clone(), first.clone()]]
    );
    assert_eq!(holders("/exports/monday.json"), vec![vec![first.clone()]]);
    assert_eq!(holders("/exports/tuesday.json"), vec![vec![second.clone()]]);
    assert_eq!(rows.len(), 3, "{fj}");
    let monday = rows
        .iter()
        .find(|r| r["path"] == "/exports/monday.json")
        .unwrap();
    assert_eq!(monday["size"], 200_000);
    assert_eq!(monday["snapshots"][0]["source"], "web-1/files");
    // Two versions of app.conf, the newer first.
    let fc = f.cli_json(&["find", "/conf/*.conf"]);
    let sizes: Vec<u64> = fc
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![7, 6], "{fc}");
    let ft = f.cli(&["find", "monday.json", "--source", "web-1/files"]);
    assert!(
        ft.contains("/exports/monday.json  200000 bytes")
            && ft.contains(&format!("in 1 snapshot(s): {}", &first[..12]))
            && ft.contains("1 version(s) of 1 path(s) in 2 snapshot(s) searched"),
        "{ft}"
    );
    assert!(f
        .cli_json(&["find", "*.json", "--source", "web-9/none"])
        .as_array()
        .unwrap()
        .is_empty());

    // stats: files and bytes as in the directory.
    let s1 = f.cli_json(&["stats", &first]);
    assert_eq!(s1["snapshots"], 1, "{s1}");
    assert_eq!(s1["files"], first_files, "{s1}");
    assert_eq!(s1["logical_bytes"], first_bytes, "{s1}");
    assert_eq!(s1["symlinks"], 1, "{s1}");
    let (files, bytes) = files_and_bytes(&data);
    let s2 = f.cli_json(&["stats", &second]);
    assert_eq!(s2["files"], files, "{s2}");
    assert_eq!(s2["logical_bytes"], bytes, "{s2}");
    let all = f.cli_json(&["stats", "--source", "web-1/files"]);
    assert_eq!(all["snapshots"], 2, "{all}");
    assert_eq!(all["files"], first_files + files);
    assert_eq!(all["logical_bytes"], first_bytes + bytes);
    // keep.json, run.sh's data are shared: deduplication shows.
    assert!(all["dedup_ratio"].as_f64().unwrap() > 1.0, "{all}");
    let st = f.cli(&["stats", &second]);
    assert!(
        st.contains("logical size") && st.contains(&format!("({bytes} bytes)")),
        "{st}"
    );

    // A viewer may look too.
    let out = f.cli_as("viewer", &["ls", &second, "/exports"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("/exports/tuesday.json"),
        "{}",
        text(&out)
    );

    // dump: one file's bytes through the controller (a sensitive action:
    // operator role; no code needed here, op never enrolled).
    let out = f.cli_as("op", &["dump", &first, "/exports/monday.json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == vec![7u8; 200_000],
        "{} bytes",
        out.stdout.len()
    );
    let out = f.cli_as("op", &["dump", &second[..12], "conf/app.conf"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"a = 22\n");
    // A directory comes as a tar archive, read back by GNU tar: the
    // subtree's names, types, modes, owners and sizes; extracted, it is the
    // directory (diff -r, sha256sum of every file, modes, owners, mtimes).
    let out = f.cli_as("op", &["dump", &first, "/exports"]);
    assert!(out.status.success(), "{}", text(&out));
    let archive = f.dir.join("exports.tar");
    std::fs::write(&archive, &out.stdout).unwrap();
    let listing = gnu_tar(&["--numeric-owner", "-tvf"], &archive);
    let names: BTreeSet<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["exports", "exports/keep.json", "exports/monday.json"]),
        "{listing}"
    );
    let monday = listing
        .lines()
        .find(|l| l.ends_with("exports/monday.json"))
        .unwrap();
    assert!(monday.starts_with("-rw-r--r-- "), "{monday}");
    assert!(monday.contains(" 200000 "), "{monday}");
    let out = f.cli_as("op", &["dump", &second[..12], "/"]);
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(&archive, &out.stdout).unwrap();
    let listing = gnu_tar(&["--numeric-owner", "-tvf"], &archive);
    let run = listing
        .lines()
        .find(|l| l.ends_with(" run.sh") && !l.contains(" -> "))
        .unwrap();
    let meta = std::fs::metadata(data.join("run.sh")).unwrap();
    assert!(
        run.starts_with(&format!(
            "{} {}/{} ",
            gnu_mode(&data.join("run.sh")),
            std::os::unix::fs::MetadataExt::uid(&meta),
            std::os::unix::fs::MetadataExt::gid(&meta)
        )),
        "{run}"
    );
    assert!(
        listing.lines().any(|l| l.ends_with("latest -> run.sh")),
        "{listing}"
    );
    let extracted = f.dir.join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    gnu_tar(
        &["--numeric-owner", "-xpf", archive.to_str().unwrap(), "-C"],
        &extracted,
    );
    let same = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&data)
        .arg(&extracted)
        .output()
        .unwrap();
    assert!(same.status.success(), "{}", text(&same));
    assert_eq!(sha256sums(&extracted), sha256sums(&data));
    assert_eq!(metadata(&extracted), metadata(&data));
    // A link is refused, naming its target.
    let out = f.cli_as("op", &["dump", &first, "/latest"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("symlink to run.sh")
            && text(&out).contains("dump takes a file or a directory"),
        "{}",
        text(&out)
    );
    let out = f.cli_as("op", &["dump", &first, "/exports/nope.json"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("/exports/nope.json"), "{}", text(&out));
    let out = f.cli_as("viewer", &["dump", &first, "/run.sh"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(out.stdout.is_empty());

    // Every look is audited: who, what, on which snapshot; the failed one too.
    let out = f.cli_as("viewer", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", text(&out));
    let audit: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let has = |actor: &str, action: &str, outcome: &str, parts: &[&str]| {
        audit.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"] == outcome
                && parts
                    .iter()
                    .all(|p| e["target"].as_str().unwrap_or("").contains(p))
        })
    };
    assert!(
        has("op", "ls", "ok", &[&first, "path / (recursive)"]),
        "{audit:#?}"
    );
    // The tar dump, with its counts and the bytes sent.
    let tar_bytes = std::fs::metadata(&archive).unwrap().len();
    assert!(
        has(
            "op",
            "dump",
            "ok",
            &[
                &second[..8],
                "path / at ",
                "a tar archive of ",
                &format!("{tar_bytes} bytes sent"),
            ]
        ),
        "{audit:#?}"
    );
    assert!(
        has("op", "dump", "problem", &[&first, "path /latest"]),
        "{audit:#?}"
    );
    assert!(has("op", "ls", "problem", &[&first, "/nope"]), "{audit:#?}");
    assert!(
        has("viewer", "ls", "ok", &[&second, "/exports"]),
        "{audit:#?}"
    );
    assert!(
        has(
            "op",
            "diff",
            "ok",
            &[&first, &second, "1 added, 1 removed, 1 modified"]
        ),
        "{audit:#?}"
    );
    assert!(
        has("op", "find", "ok", &["*.json", "3 versions in 2 snapshots"]),
        "{audit:#?}"
    );
    assert!(
        has("op", "stats", "ok", &["snapshot ", &first]),
        "{audit:#?}"
    );
    assert!(
        has(
            "op",
            "stats",
            "ok",
            &["every snapshot of web-1/files", "2 snapshots"]
        ),
        "{audit:#?}"
    );

    // Once op enrolled, a dump needs a code (as a restore does).
    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let mut codes = Codes::for_secret(enrolled["secret"].as_str().unwrap());
    f.cli(&["mfa", "confirm", &codes.next()]);
    let out = f.cli_as("op", &["dump", &first, "/run.sh"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(out.stdout.is_empty());
    assert!(text(&out).to_lowercase().contains("totp"), "{}", text(&out));
    let out = f.cli_as("op", &["dump", &first, "/run.sh", "--totp", &codes.next()]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(out.stdout, b"#!/bin/sh\necho hi\n");
    let out = f.cli_as("viewer", &["audit", "ls", "--json", "--limit", "1000"]);
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "dump"
                && e["outcome"] == "ok"
                && e["target"].as_str().unwrap_or("").contains("/run.sh")
                && e["target"]
                    .as_str()
                    .unwrap_or("")
                    .contains("with a TOTP code")),
        "{audit:#}"
    );
}
