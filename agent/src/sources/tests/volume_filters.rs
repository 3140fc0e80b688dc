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

#[tokio::test]
async fn several_paths_each_under_its_full_path_and_incremental() {
    let f = Fixture::new().await;
    let data = f.path("data");
    for d in ["a/inner", "b/c", "b/not-this"] {
        std::fs::create_dir_all(data.join(d)).unwrap();
    }
    std::fs::write(data.join("a/one"), "one").unwrap();
    std::fs::write(data.join("a/inner/two"), "two").unwrap();
    std::fs::write(data.join("b/c/three"), noise(3, 300_000)).unwrap();
    std::fs::write(data.join("b/not-this/four"), "four").unwrap();
    // A path inside another is backed up once.
    let (a, bc, inner) = (data.join("a"), data.join("b/c"), data.join("a/inner"));
    let s = source(&format!(
        "name = \"v\"\nkind = \"volume\"\npaths = [{bc:?}, {a:?}, {inner:?}]"
    ));
    let first = f.backup(&s, None).await.unwrap();
    let out = f.path("out");
    f.restore(&first, RestoreTarget::Path(&out)).await.unwrap();
    // Everything above the paths, from the root: tmp/.../data/{a,b/c}.
    let rel = data.strip_prefix("/").unwrap();
    let under = out.join(rel);
    assert_eq!(
        entries(&under),
        [
            "a/",
            "a/inner/",
            "a/inner/two",
            "a/one",
            "b/",
            "b/c/",
            "b/c/three"
        ]
    );
    assert_eq!(
        std::fs::read(under.join("b/c/three")).unwrap(),
        std::fs::read(data.join("b/c/three")).unwrap()
    );
    let above: Vec<String> = rel
        .ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| format!("{}/", p.display()))
        .collect();
    let all = entries(&out);
    for dir in &above {
        assert!(all.contains(dir), "{dir} missing from {all:?}");
    }
    // The next backup reads only what changed.
    std::fs::write(data.join("a/one"), "one, changed").unwrap();
    let second = f.backup(&s, Some(first)).await.unwrap();
    assert_eq!(second.manifest.summary.files, 3);
    assert_eq!(second.manifest.summary.files_unchanged, 2);
    // Into the source itself it is refused: the paths are not one directory.
    let e = f
        .restore(&second, RestoreTarget::Source(&s))
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("several paths"), "{e:#}");
    // Both `path` and `paths`, or `/` among them, is named.
    let e = parse_source(
        toml::from_str(&format!(
            "name = \"v\"\nkind = \"volume\"\npath = {a:?}\npaths = [{bc:?}]"
        ))
        .unwrap(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(
        format!("{e:#}").contains("both `path` and `paths`"),
        "{e:#}"
    );
    let e = parse_source(
        toml::from_str("name = \"v\"\nkind = \"volume\"\npaths = [\"/\"]").unwrap(),
        Path::new("/"),
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("whole file system"), "{e:#}");
}
