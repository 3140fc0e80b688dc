//! `volume` sources: what `exclude`, `exclude_if_present` and
//! `one_file_system` leave out of a backup, on real directories (and a real
//! tmpfs mount for `one_file_system`). The expected trees are written by
//! hand; what a snapshot holds is read back by restoring it and listing the
//! result with `std::fs`.

use super::*;

/// Relative paths of every entry under `root` (dirs with a trailing `/`).
fn entries(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(root).unwrap().display().to_string();
        out.push(if e.file_type().is_dir() {
            format!("{rel}/")
        } else {
            rel
        });
    }
    out
}

async fn backed_up(f: &Fixture, s: &SourceConfig, name: &str) -> Vec<String> {
    let snap = f.backup(s, None).await.unwrap();
    let out = f.path(name);
    f.restore(&snap, RestoreTarget::Path(&out)).await.unwrap();
    entries(&out)
}

#[tokio::test]
async fn excludes_and_markers_leave_paths_out() {
    let f = Fixture::new().await;
    let data = f.path("data");
    for d in ["app/cache", "app/logs", "scratch/deep", "var/cache"] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    for file in [
        "app/main.db",
        "app/main.db.tmp",
        "app/cache/x",
        "app/logs/a.log",
        "scratch/deep/big",
        "var/cache/y",
        "var/keep",
    ] {
        std::fs::write(data.join(file), file).unwrap();
    }
    std::fs::write(data.join("scratch/.nobackup"), "").unwrap();
    let s = source(&format!(
        "name = \"v\"\nkind = \"volume\"\npath = {data:?}\nexclude = [\"*.tmp\", \"/var/cache\", \"cache\"]\nexclude_if_present = \".nobackup\""
    ));
    assert_eq!(
        backed_up(&f, &s, "out").await,
        [
            "app/",
            "app/logs/",
            "app/logs/a.log",
            "app/main.db",
            "var/",
            "var/keep"
        ]
    );
    let d = s.details();
    assert_eq!(d["exclude"], "*.tmp, /var/cache, cache", "{d:?}");
    assert_eq!(d["exclude_if_present"], ".nobackup", "{d:?}");

    // Bad settings are named.
    let e = parse_source(
        toml::from_str(&format!(
            "name = \"v\"\nkind = \"volume\"\npath = {data:?}\nexclude = [\"[z-\"]"
        ))
        .unwrap(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("exclude \"[z-\" is not a valid glob"),
        "{e:#}"
    );
    let e = parse_source(
        toml::from_str(&format!(
            "name = \"v\"\nkind = \"volume\"\npath = {data:?}\nexclude_if_present = \"a/b\""
        ))
        .unwrap(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("must be a file name"), "{e:#}");
}

/// A tmpfs mounted inside the source, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "trireme-test"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn one_file_system_keeps_a_mount_point_empty() {
    let f = Fixture::new().await;
    let data = f.path("data");
    std::fs::create_dir_all(data.join("sub")).unwrap();
    std::fs::write(data.join("sub/here"), "here").unwrap();
    let mnt = match Tmpfs::mount(&data.join("mnt")) {
        Ok(m) => m,
        Err(why) => {
            // The only skip: mounting needs CAP_SYS_ADMIN.
            eprintln!("SKIPPED one_file_system_keeps_a_mount_point_empty: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    std::fs::write(mnt.0.join("elsewhere"), "on another file system").unwrap();
    let all = source(&format!("name = \"v\"\nkind = \"volume\"\npath = {data:?}"));
    assert_eq!(
        backed_up(&f, &all, "all").await,
        ["mnt/", "mnt/elsewhere", "sub/", "sub/here"]
    );
    let one = source(&format!(
        "name = \"v\"\nkind = \"volume\"\npath = {data:?}\none_file_system = true"
    ));
    assert_eq!(
        backed_up(&f, &one, "one").await,
        ["mnt/", "sub/", "sub/here"]
    );
}
