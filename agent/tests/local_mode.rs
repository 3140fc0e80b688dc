//! The agent's local mode, driven as an operator would: the real binary,
//! real files, real processes (including one killed mid-backup).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use trireme_testkit::{noise, tree};

const AGENT: &str = env!("CARGO_BIN_EXE_trireme-agent");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Self {
        let e = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = e.run(&["keygen"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let out = e.run(&["init"]);
        assert!(out.status.success(), "{}", stderr(&out));
        e
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(AGENT);
        c.args(args)
            .env("TRIREME_KEY_FILE", self.path("key"))
            .env(
                "TRIREME_LOCATION",
                format!("file://{}", self.path("repo").display()),
            )
            .env_remove("RUST_LOG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn snapshots(&self) -> Vec<serde_json::Value> {
        let out = self.run(&["snapshots", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn backup_snapshots_restore_check_through_the_cli() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.log"), "hello\n".repeat(10_000)).unwrap();
    std::fs::write(src.join("sub/b.bin"), noise(1, 3_000_000)).unwrap();

    let out = env.run(&["backup", "--source", "vol", "--json", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(first["parent"].is_null());

    std::fs::write(src.join("a.log"), "changed\n".repeat(10_000)).unwrap();
    let out = env.run(&["backup", "--source", "vol", "--json", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        second["parent"], first["snapshot"],
        "the previous snapshot is the parent"
    );
    assert_eq!(second["summary"]["files_unchanged"], 1);

    let snaps = env.snapshots();
    assert_eq!(snaps.len(), 2);
    assert_eq!(snaps[1]["id"], second["snapshot"]);

    let target = env.path("restored");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&src), tree(&target));

    // Restoring into a non-empty directory is refused, said once; nothing
    // is overwritten.
    std::fs::write(target.join("a.log"), "edited since\n").unwrap();
    let before = tree(&target);
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).matches("not empty").count(),
        1,
        "{}",
        stderr(&out)
    );
    assert_eq!(tree(&target), before);

    // With --overwrite if-changed the edited file is put back; only *.log
    // is restored with --include, into a new directory.
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "if-changed",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out)
            .contains("--overwrite if-changed: 1 existing files and links replaced, 1 kept"),
        "{}",
        stdout(&out)
    );
    assert_eq!(tree(&src), tree(&target));
    let logs = env.path("logs");
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        logs.to_str().unwrap(),
        "--include",
        "*.log",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got: Vec<PathBuf> = tree(&logs).into_keys().collect();
    assert_eq!(got, [PathBuf::from("a.log")]);
    let out = env.run(&[
        "restore",
        "latest",
        "--target",
        "/tmp/x",
        "--overwrite",
        "sometimes",
    ]);
    assert!(
        !out.status.success() && stderr(&out).contains("never, if-changed or always"),
        "{}",
        stderr(&out)
    );

    // A symlink as the target is refused, not followed.
    let elsewhere = env.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let link = env.path("link");
    std::os::unix::fs::symlink(&elsewhere, &link).unwrap();
    let out = env.run(&["restore", "latest", "--target", link.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);

    let out = env.run(&["check", "--deep"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("no problems found"));

    // A stream through stdin and back through stdout.
    let data = noise(2, 2_500_000);
    let mut child = env
        .cmd(&[
            "backup",
            "--source",
            "dump",
            "--stdin",
            "--stream-name",
            "db.sql",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&data).unwrap();
    assert!(child.wait_with_output().unwrap().status.success());
    let out = env.run(&["restore", "latest", "--source", "dump", "--stdout"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == data, "stream restored byte-identical");
}

#[test]
fn operator_errors_are_clear() {
    let env = Env::new();
    // Wrong key.
    let other = env.path("other-key");
    assert!(Command::new(AGENT)
        .args(["keygen", "--key-file", other.to_str().unwrap()])
        .status()
        .unwrap()
        .success());
    let out = env
        .cmd(&["snapshots"])
        .env("TRIREME_KEY_FILE", &other)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong key"), "{}", stderr(&out));
    // A key file others can read.
    std::fs::set_permissions(env.path("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["snapshots"]);
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    std::fs::set_permissions(env.path("key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // A bad location URL.
    let out = env
        .cmd(&["snapshots"])
        .env("TRIREME_LOCATION", "ftp://x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid location"),
        "{}",
        stderr(&out)
    );
    // No repository there.
    let out = env
        .cmd(&["snapshots"])
        .env(
            "TRIREME_LOCATION",
            format!("file://{}", env.path("nothing").display()),
        )
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("no Trireme repository"),
        "{}",
        stderr(&out)
    );
    // An unknown snapshot.
    let out = env.run(&[
        "restore",
        "abcdef12",
        "--target",
        env.path("t").to_str().unwrap(),
    ]);
    assert!(
        stderr(&out).contains("no such snapshot"),
        "{}",
        stderr(&out)
    );
    // A source directory that does not exist.
    let out = env.run(&[
        "backup",
        "--source",
        "x",
        env.path("missing").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    assert!(
        env.snapshots().is_empty(),
        "failed backups leave no snapshot"
    );
}

#[test]
fn a_backup_killed_mid_way_leaves_no_snapshot_and_the_next_one_works() {
    let env = Env::new();
    let mut child = env
        .cmd(&["backup", "--source", "big", "--stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Feed incompressible data until packs start to land, then kill -9.
    let packs = env.path("repo/packs");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut fed = 0u64;
    loop {
        stdin.write_all(&noise(fed + 1, 4 << 20)).unwrap();
        fed += 4 << 20;
        let landed = walkdir::WalkDir::new(&packs)
            .into_iter()
            .filter_map(|e| e.ok())
            .any(|e| e.file_type().is_file() && !e.file_name().to_string_lossy().starts_with('.'));
        if landed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no pack was written after {fed} bytes"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    assert!(
        env.snapshots().is_empty(),
        "a killed backup must not leave a snapshot"
    );
    let out = env.run(&["check"]);
    assert!(
        out.status.success(),
        "the repository stays consistent: {}{}",
        stdout(&out),
        stderr(&out)
    );

    // The next backup completes and restores byte-identical.
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), noise(9, 5_000_000)).unwrap();
    let out = env.run(&["backup", "--source", "big", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let target = env.path("out");
    let out = env.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(tree(&src), tree(&target));
    let out = env.run(&["check", "--deep"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}

#[test]
fn the_daemon_writes_json_log_lines_when_asked() {
    use std::io::BufRead;
    use trireme_net::tls::{ca, Role};
    let env = Env::new();
    let tls = env.path("tls");
    ca::init_ca(&tls).unwrap();
    ca::issue(&tls, Role::Agent, "web-1", 30, &tls).unwrap();
    let port = trireme_testkit::ports::free_port();
    let config = env.path("agent.toml");
    std::fs::write(
        &config,
        format!(
            "controller = \"127.0.0.1:{port}\"\nserver_name = \"localhost\"\nstate_dir = {:?}\n[tls]\ndir = {tls:?}\nname = \"web-1\"\n",
            env.path("state")
        ),
    )
    .unwrap();
    // Nothing listens there: the agent starts, logs, and keeps dialling.
    let mut child = env
        .cmd(&["run", "--config", config.to_str().unwrap()])
        .env("TRIREME_LOG", "info")
        .env("TRIREME_LOG_FORMAT", "json")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no \"trireme-agent started\" line in: {seen:#?}"));
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        if v["fields"]["message"] == "trireme-agent started" {
            break v;
        }
        seen.push(line);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(started["level"], "INFO", "{started}");
    assert_eq!(started["fields"]["agent"], "web-1", "{started}");
    assert!(started["timestamp"].is_string(), "{started}");
}

/// `ls`, `diff`, `find` and `stats` through the binary, answers compared
/// with the directory itself (std::fs, `stat`-like metadata) and with
/// GNU `ls -l`'s mode string.
#[test]
fn ls_diff_find_stats_through_the_cli() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("exports")).unwrap();
    std::fs::create_dir_all(src.join("conf")).unwrap();
    std::fs::write(src.join("exports/monday.json"), noise(5, 200_000)).unwrap();
    std::fs::write(src.join("conf/app.conf"), "a = 1\n").unwrap();
    std::fs::set_permissions(
        src.join("conf/app.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let backup = |env: &Env| -> String {
        let out = env.run(&["backup", "--source", "vol", "--json", src.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["snapshot"].as_str().unwrap().to_string()
    };
    let first = backup(&env);

    // ls -l: GNU ls's mode string and the file's size.
    let out = env.run(&["ls", &first, "/conf", "-l"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let gnu = Command::new("ls")
        .arg("-l")
        .arg(src.join("conf/app.conf"))
        .output()
        .unwrap();
    let gnu_mode = stdout(&gnu).split_whitespace().next().unwrap().to_string();
    assert!(line.starts_with(&gnu_mode), "{line} vs {gnu_mode}");
    assert!(
        line.contains(" 6 ") && line.trim_end().ends_with("/conf/app.conf"),
        "{line}"
    );
    // JSON ls -R of the root: every path the directory has.
    let out = env.run(&["ls", &first, "-R", "--json"]);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut got: Vec<String> = v
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = walkdir::WalkDir::new(&src)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            format!(
                "/{}",
                e.unwrap().path().strip_prefix(&src).unwrap().display()
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    // A path that is not there: an error naming it, exit 1.
    let out = env.run(&["ls", &first, "/nope"]);
    assert!(
        !out.status.success() && stderr(&out).contains("/nope"),
        "{}",
        stderr(&out)
    );

    std::fs::write(src.join("exports/tuesday.json"), noise(6, 100_000)).unwrap();
    std::fs::remove_file(src.join("exports/monday.json")).unwrap();
    let second = backup(&env);

    let out = env.run(&["diff", &first, &second]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("+ /exports/tuesday.json  (100000 bytes)"),
        "{text}"
    );
    assert!(
        text.contains("- /exports/monday.json  (200000 bytes)"),
        "{text}"
    );
    assert!(text.contains("1 added, 1 removed, 0 modified"), "{text}");

    // find across both snapshots, newest first: monday only in the first.
    let out = env.run(&["find", "*.json", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let holders = |path: &str| -> Vec<String> {
        let row = v
            .iter()
            .find(|r| r["path"] == path)
            .unwrap_or_else(|| panic!("{path}: {v:?}"));
        row["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(holders("/exports/monday.json"), vec![first.clone()]);
    assert_eq!(holders("/exports/tuesday.json"), vec![second.clone()]);
    // A window holding no snapshot: none searched.
    let out = env.run(&["find", "*.json", "--since", "1h", "--until", "2000-01-01"]);
    assert!(
        stdout(&out).contains("in 0 snapshot(s) searched"),
        "{}",
        stdout(&out)
    );
    let out = env.run(&["find", "*.json", "--since", "soon"]);
    assert!(
        !out.status.success() && stderr(&out).contains("--since \"soon\""),
        "{}",
        stderr(&out)
    );

    // stats of the second: its files' bytes as the directory has them.
    let out = env.run(&["stats", &second, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["files"], 2);
    assert_eq!(st["logical_bytes"], 100_000 + 6);
    assert!(st["stored_bytes"].as_u64().unwrap() > 0);
}

/// `trireme-agent dump`: a file's bytes, or a directory as a tar archive
/// that GNU tar lists and extracts into the same tree (diff -r, sha256sum,
/// modes with setuid, numeric owners, mtimes, links, long names).
#[test]
fn dump_writes_a_file_or_a_tar_archive_gnu_tar_reads() {
    use std::os::unix::ffi::OsStrExt;
    let env = Env::new();
    let src = env.path("src");
    let long_dir = "d".repeat(120);
    let long_target = format!("/nowhere/{}", "t".repeat(150));
    std::fs::create_dir_all(src.join("sub/empty")).unwrap();
    std::fs::create_dir_all(src.join(&long_dir)).unwrap();
    std::fs::write(src.join("big.bin"), noise(7, 3_000_000)).unwrap();
    std::fs::write(src.join("sub/a b.txt"), "hi\n").unwrap();
    std::fs::write(src.join(&long_dir).join("f".repeat(120)), "long\n").unwrap();
    let odd = std::ffi::OsStr::from_bytes(b"odd-\xff-name");
    std::fs::write(src.join("sub").join(odd), "bytes\n").unwrap();
    std::os::unix::fs::symlink("../big.bin", src.join("sub/link")).unwrap();
    std::os::unix::fs::symlink(&long_target, src.join("sub/long-link")).unwrap();
    let chown = |uid: &str, p: &str| {
        Command::new("chown")
            .args(["-h", uid])
            .arg(src.join(p))
            .status()
            .unwrap()
            .success()
    };
    let as_root = is_root();
    if as_root {
        assert!(chown("1234:5678", "sub/empty") && chown("42:43", "sub/a b.txt"));
    }
    // After chown, which clears setuid.
    std::fs::set_permissions(src.join("sub/a b.txt"), PermissionsExt::from_mode(0o4750)).unwrap();
    let touched = Command::new("touch")
        .args(["-h", "-d", "2020-01-02 03:04:05"])
        .arg(src.join("sub/a b.txt"))
        .arg(src.join("sub/empty"))
        .status()
        .unwrap();
    assert!(touched.success());
    let out = env.run(&["backup", "--source", "vol", src.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // A directory: GNU tar lists what the snapshot holds below it.
    let out = env.run(&["dump", "latest", "--source", "vol", "/sub"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("as a tar archive: 6 entries"),
        "{}",
        stderr(&out)
    );
    std::fs::write(env.path("sub.tar"), &out.stdout).unwrap();
    let list = Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(env.path("sub.tar"))
        .output()
        .unwrap();
    assert!(list.status.success(), "{}", stderr(&list));
    let listing = stdout(&list);
    assert_eq!(listing.lines().count(), 6, "{listing}");
    assert!(
        listing
            .lines()
            .all(|l| l.contains(" sub/") || l.ends_with(" sub")),
        "{listing}"
    );
    assert!(listing.contains("sub/link -> ../big.bin"), "{listing}");
    assert!(
        listing.contains(&format!("sub/long-link -> {long_target}")),
        "{listing}"
    );
    let a = listing
        .lines()
        .find(|l| l.ends_with("sub/a b.txt"))
        .unwrap();
    assert!(a.starts_with("-rwsr-x--- "), "{a}");
    assert!(a.contains(" 3 2020-01-02 03:04"), "{a}");
    if as_root {
        assert!(a.contains(" 42/43 "), "{a}");
        let e = listing.lines().find(|l| l.ends_with("sub/empty")).unwrap();
        assert!(e.starts_with("drwxr-xr-x 1234/5678 "), "{e}");
    }

    // The whole snapshot, extracted by GNU tar: the same tree.
    let out = env
        .cmd(&["dump", "latest", "--source", "vol", "/"])
        .stdout(std::fs::File::create(env.path("all.tar")).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let x = env.path("extracted");
    std::fs::create_dir_all(&x).unwrap();
    let ex = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(env.path("all.tar"))
        .arg("-C")
        .arg(&x)
        .output()
        .unwrap();
    assert!(ex.status.success(), "{}", stderr(&ex));
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(&src)
        .arg(&x)
        .output()
        .unwrap();
    assert!(diff.status.success(), "{}{}", stdout(&diff), stderr(&diff));
    assert_eq!(
        trireme_testkit::sha256sums(&x),
        trireme_testkit::sha256sums(&src)
    );
    assert_eq!(
        trireme_testkit::metadata(&x),
        trireme_testkit::metadata(&src)
    );

    // A file: its bytes, as sha256sum sees them.
    let mut dump = env
        .cmd(&["dump", "latest", "--source", "vol", "big.bin"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let sum = Command::new("sha256sum")
        .stdin(dump.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    let want = Command::new("sha256sum")
        .arg(src.join("big.bin"))
        .output()
        .unwrap();
    assert_eq!(
        stdout(&sum).split_whitespace().next(),
        stdout(&want).split_whitespace().next()
    );

    // A link, or a path that is not there: refused, naming it.
    let out = env.run(&["dump", "latest", "--source", "vol", "/sub/link"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/sub/link is a symbolic link to ../big.bin"),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
    let out = env.run(&["dump", "latest", "--source", "vol", "/sub/nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no path /sub/nope"),
        "{}",
        stderr(&out)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
