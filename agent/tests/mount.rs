//! `trireme-agent mount`: a real FUSE mount of a real repository, read
//! from other processes (diff -r, sha256sum, dd, lstat) and never through
//! Trireme. Skips (saying why) only where this host cannot mount FUSE at all.
#![cfg(feature = "mount")]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use trireme_testkit::{metadata, noise, sha256sums};

const AGENT: &str = env!("CARGO_BIN_EXE_trireme-agent");
const MIB: u64 = 1 << 20;
/// The largest chunk the default chunker cuts.
const MAX_CHUNK: u64 = 4 * MIB;

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Why FUSE cannot be mounted here at all, if it cannot.
fn no_fuse() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse does not exist (no fuse kernel module or device)".into());
    }
    let fs = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if !fs
        .lines()
        .any(|l| l.trim_end().ends_with("\tfuse") || l.trim() == "nodev\tfuse")
    {
        return Some("the kernel lists no fuse file system in /proc/filesystems".into());
    }
    if !is_root() && Command::new("fusermount3").arg("-V").output().is_err() {
        return Some("not root, and fusermount3 (package fuse3) is not installed".into());
    }
    None
}

fn is_mounted(at: &Path) -> bool {
    let at = at.canonicalize().unwrap_or_else(|_| at.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(at.to_str().unwrap()))
}

fn unmount(at: &Path) -> Output {
    if is_root() {
        Command::new("umount").arg(at).output().unwrap()
    } else {
        Command::new("fusermount3")
            .arg("-u")
            .arg(at)
            .output()
            .unwrap()
    }
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
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
        let out = self.cmd(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        out
    }
}

/// A running `trireme-agent mount`; killed and lazily unmounted if a test
/// fails while it runs, so no mount is left behind.
struct Mounted {
    child: Child,
    at: PathBuf,
    lines: mpsc::Receiver<String>,
    stderr: Vec<String>,
}

impl Mounted {
    fn start(env: &Env, at: &Path) -> Mounted {
        std::fs::create_dir_all(at).unwrap();
        let mut child = env
            .cmd(&["mount", at.to_str().unwrap(), "--cache-size", "64MiB"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(l);
            }
        });
        let mut m = Mounted {
            child,
            at: at.to_path_buf(),
            lines,
            stderr: Vec::new(),
        };
        m.wait_line("serving ", Duration::from_secs(60));
        assert!(is_mounted(at), "{} is not in mountinfo", at.display());
        m
    }

    /// The first stderr line containing `want` (panics after `limit`).
    fn wait_line(&mut self, want: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stderr.push(l.clone());
                    if l.contains(want) {
                        return l;
                    }
                }
                Err(_) => panic!(
                    "no {want:?} from trireme-agent mount within {limit:?}; stderr: {:#?}; status {:?}",
                    self.stderr,
                    self.child.try_wait()
                ),
            }
        }
    }

    /// Wait for the process to exit; its status.
    fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < end,
                "trireme-agent mount still runs {limit:?} after it was told to stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Bytes the mount process has read with read(2)/pread(2) so far
    /// (the kernel's count in /proc/PID/io: the file location's packs).
    fn rchar(&self) -> u64 {
        let io = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())).unwrap();
        io.lines()
            .find_map(|l| l.strip_prefix("rchar: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.at) {
            let _ = Command::new("umount").arg("-l").arg(&self.at).output();
            let _ = Command::new("fusermount3")
                .args(["-u", "-z"])
                .arg(&self.at)
                .output();
        }
    }
}

/// `dd` of `len` bytes at `offset` of `path`, in its own process.
fn dd(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    let out = Command::new("dd")
        .arg(format!("if={}", path.display()))
        .args(["iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={offset}"))
        .arg(format!("count={len}"))
        .arg("bs=65536")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    out.stdout
}

/// The number before `unit` in `line` (`… fetched 2 chunk(s), …`).
fn number_before(line: &str, unit: &str) -> u64 {
    let at = line
        .find(unit)
        .unwrap_or_else(|| panic!("{unit:?} in {line:?}"));
    line[..at]
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn mount_serves_snapshots_read_only_and_reads_only_what_is_asked() {
    if let Some(why) = no_fuse() {
        eprintln!("SKIPPED mount test: {why}; the dump and browse tests cover the same reads");
        return;
    }
    let env = Env {
        dir: tempfile::tempdir().unwrap(),
    };
    env.run(&["keygen"]);
    env.run(&["init"]);

    // The tree: a 40 MiB file, small files with odd modes and owners, an
    // old mtime, links, an empty directory, a name that is not UTF-8.
    let src = env.path("src");
    std::fs::create_dir_all(src.join("etc/app")).unwrap();
    std::fs::create_dir_all(src.join("var/empty")).unwrap();
    let big = noise(11, 40 * MIB as usize);
    std::fs::write(src.join("var/big.bin"), &big).unwrap();
    std::fs::write(src.join("etc/app/app.conf"), "a = 1\n").unwrap();
    std::fs::set_permissions(
        src.join("etc/app/app.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::fs::write(src.join("etc/tool"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        src.join("etc/tool"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    for i in 0..50 {
        std::fs::write(
            src.join(format!("etc/app/f{i:02}")),
            noise(i, 5_000 + i as usize * 3_000),
        )
        .unwrap();
    }
    std::os::unix::fs::symlink("app/app.conf", src.join("etc/conf")).unwrap();
    std::os::unix::fs::symlink("/does/not/exist", src.join("dangling")).unwrap();
    {
        use std::os::unix::ffi::OsStrExt;
        let odd = std::ffi::OsStr::from_bytes(b"odd-\xff-name");
        std::fs::write(src.join(odd), "bytes\n").unwrap();
    }
    if is_root() {
        let ok = Command::new("chown")
            .args(["1234:5678"])
            .arg(src.join("etc/app/app.conf"))
            .arg(src.join("var/empty"))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let ok = Command::new("touch")
        .args(["-h", "-d", "2020-01-02 03:04:05"])
        .arg(src.join("etc/tool"))
        .arg(src.join("etc/conf"))
        .status()
        .unwrap();
    assert!(ok.success());
    let other = env.path("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("note.txt"), "other source\n").unwrap();

    // Two snapshots of "data" (app.conf changed between), one of "other".
    let snap = |source: &str, dir: &Path| -> String {
        let out = env.run(&[
            "backup",
            "--source",
            source,
            "--json",
            dir.to_str().unwrap(),
        ]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["snapshot"].as_str().unwrap()[..8].to_string()
    };
    let first = snap("data", &src);
    let old_conf = sha256sums(&src.join("etc/app"));
    std::fs::write(src.join("etc/app/app.conf"), "a = 2, changed\n").unwrap();
    let second = snap("data", &src);
    let third = snap("other", &other);

    // Session 1: one read in the middle of the big file fetches a chunk or
    // two, not the snapshot; then SIGTERM unmounts and ends the process.
    let mnt = env.path("mnt");
    let mut m = Mounted::start(&env, &mnt);
    let snapshots: Vec<String> = std::fs::read_dir(mnt.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(snapshots.len(), 3, "{snapshots:?}");
    for id in [&first, &second, &third] {
        assert!(
            snapshots.iter().any(|s| s.ends_with(&format!("Z-{id}"))),
            "{id} in {snapshots:?}"
        );
    }
    let second_dir = snapshots.iter().find(|s| s.ends_with(&second)).unwrap();
    let latest = std::fs::read_link(mnt.join("by-source/data/latest")).unwrap();
    assert_eq!(latest, Path::new("../../snapshots").join(second_dir));
    let sources: Vec<String> = std::fs::read_dir(mnt.join("by-source"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(sources.len(), 2, "{sources:?}");
    let big_at = mnt.join("by-source/data/latest/var/big.bin");
    assert_eq!(std::fs::metadata(&big_at).unwrap().len(), big.len() as u64);
    let before = m.rchar();
    let offset = 23 * MIB + 12_345;
    assert_eq!(
        dd(&big_at, offset, 4096),
        &big[offset as usize..offset as usize + 4096]
    );
    let read = m.rchar() - before;
    assert!(
        read <= 2 * MAX_CHUNK + MIB && read < big.len() as u64 / 4,
        "a 4 KiB read made the mount read {read} bytes"
    );
    let pid = m.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = m.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {:#?}", m.stderr);
    let last = m.wait_line("unmounted ", Duration::from_secs(5));
    assert!(!is_mounted(&mnt));
    let chunks = number_before(&last, " chunk(s),");
    let bytes = number_before(&last, " bytes (");
    assert!((1..=2).contains(&chunks), "{last}");
    assert!((4096..=2 * MAX_CHUNK + 4096).contains(&bytes), "{last}");
    eprintln!("one 4 KiB read at offset {offset}: {read} bytes read by the mount process; {last}");
    drop(m);

    // Session 2: every file, mode, owner, mtime and link as the source
    // has them, through other processes; read-only; unmounted from outside.
    let mut m = Mounted::start(&env, &mnt);
    let tree = mnt.join("snapshots").join(second_dir);
    for view in [tree.clone(), mnt.join("by-source/data/latest/")] {
        let diff = Command::new("diff")
            .args(["-r", "--no-dereference"])
            .arg(&src)
            .arg(&view)
            .output()
            .unwrap();
        assert!(diff.status.success(), "{}", text(&diff));
        assert_eq!(sha256sums(&view), sha256sums(&src));
    }
    assert_eq!(metadata(&tree), metadata(&src));
    let ls = Command::new("ls")
        .arg("-ln")
        .arg(tree.join("etc"))
        .output()
        .unwrap();
    assert!(text(&ls).contains("-rwsr-xr-x"), "{}", text(&ls));
    // The first snapshot has the old app.conf.
    let first_dir = snapshots.iter().find(|s| s.ends_with(&first)).unwrap();
    assert_eq!(
        sha256sums(&mnt.join("snapshots").join(first_dir).join("etc/app")),
        old_conf
    );
    assert_eq!(
        std::fs::read_to_string(mnt.join("by-source/other/latest/note.txt")).unwrap(),
        "other source\n"
    );
    // The same middle of the big file through dd, now from the cache or not.
    assert_eq!(
        dd(&tree.join("var/big.bin"), offset, 100_000),
        &big[offset as usize..offset as usize + 100_000]
    );

    // Read-only: no write, create, remove, rename or mkdir.
    let refused = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert!(
            matches!(e.raw_os_error(), Some(30) | Some(13)),
            "{what}: {e} (want EROFS or EACCES)"
        );
    };
    refused(
        std::fs::OpenOptions::new()
            .write(true)
            .open(tree.join("etc/app/app.conf"))
            .map(drop),
        "open for writing",
    );
    refused(std::fs::write(tree.join("etc/new"), "x"), "create a file");
    refused(std::fs::remove_file(tree.join("etc/tool")), "remove");
    refused(
        std::fs::rename(tree.join("etc/tool"), tree.join("etc/tool2")),
        "rename",
    );
    refused(std::fs::create_dir(tree.join("newdir")), "mkdir");
    let touch = Command::new("touch")
        .arg(tree.join("etc/tool"))
        .output()
        .unwrap();
    assert!(!touch.status.success(), "touch worked");
    assert_eq!(sha256sums(&tree), sha256sums(&src));

    let out = unmount(&mnt);
    assert!(out.status.success(), "{}", text(&out));
    let status = m.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "{status:?}: {:#?}", m.stderr);
    m.wait_line("unmounted ", Duration::from_secs(5));
    assert!(!is_mounted(&mnt));
    // The mountpoint is an empty directory again.
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0);
}
