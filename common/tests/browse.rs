//! Looking inside snapshots (`ls`, `diff`, `find`, `stats`) on a real
//! `file://` repository. The expected answers come from the source
//! directories themselves (walkdir and std::fs metadata, and the sizes of
//! the pack files on disk for `stats`), not from Trireme's own bookkeeping.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use trireme_common::backend::FileBackend;
use trireme_common::browse::{display_path, ChangeKind};
use trireme_common::glob::PathGlobs;
use trireme_common::manifest::EntryKind;
use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, IndexedRepo, LocalKeyFile, Repository, Snapshot,
};
use trireme_testkit::noise;

const SMALL: ChunkerParams = ChunkerParams {
    min: 4 * 1024,
    avg: 16 * 1024,
    max: 64 * 1024,
};

async fn backup(repo: &Arc<Repository>, src: &Path) -> (IndexedRepo, Snapshot) {
    let mut o = BackupOptions::new("src", "volume", "test-host");
    o.pack_size = 256 * 1024;
    let snap = repo
        .load_index()
        .await
        .unwrap()
        .backup(BackupInput::Tree(src.to_path_buf()), o)
        .await
        .unwrap();
    (repo.load_index().await.unwrap(), snap)
}

/// Paths under `root` as `/a/b`, from walkdir.
fn walk(root: &Path, min_depth: usize, max_depth: usize) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .min_depth(min_depth)
        .max_depth(max_depth)
        .into_iter()
        .map(|e| {
            format!(
                "/{}",
                e.unwrap().path().strip_prefix(root).unwrap().display()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ls_diff_find_and_stats_agree_with_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for d in ["etc/app", "var/log/app", "srv/chat/exports", "empty"] {
        std::fs::create_dir_all(src.join(d)).unwrap();
    }
    std::fs::write(src.join("etc/app/app.conf"), "port = 1\n").unwrap();
    std::fs::write(src.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(src.join("var/log/app/a.log"), "x".repeat(10_000)).unwrap();
    std::fs::write(src.join("var/log/app/b.log"), noise(1, 300_000)).unwrap();
    std::fs::write(src.join("srv/chat/exports/tuesday.json"), noise(2, 500_000)).unwrap();
    // The same bytes twice: deduplicated.
    std::fs::write(src.join("srv/chat/exports/copy.json"), noise(2, 500_000)).unwrap();
    symlink("app/app.conf", src.join("etc/current.conf")).unwrap();
    std::fs::set_permissions(src.join("etc/hosts"), PermissionsExt::from_mode(0o600)).unwrap();

    let key = LocalKeyFile::create(&dir.path().join("key")).unwrap();
    let repo = Arc::new(
        Repository::init(
            Arc::new(FileBackend::new(dir.path().join("repo"))),
            Arc::new(key),
            SMALL,
        )
        .await
        .unwrap(),
    );
    let (ix, first) = backup(&repo, &src).await;

    // ls of the root: the top-level names, as walkdir sees them.
    let root: BTreeSet<String> = ix
        .list(&first, "/", false)
        .await
        .unwrap()
        .iter()
        .map(display_path)
        .collect();
    assert_eq!(root, walk(&src, 1, 1));
    // ls -R of a subtree; a trailing slash and no leading one are the same path.
    let sub: BTreeSet<String> = ix
        .list(&first, "var/log/", true)
        .await
        .unwrap()
        .iter()
        .map(display_path)
        .collect();
    let expected: BTreeSet<String> = walk(&src.join("var/log"), 1, 9)
        .into_iter()
        .map(|p| format!("/var/log{p}"))
        .collect();
    assert_eq!(sub, expected);
    // One file: its entry, with the size, mode and owner stat reports.
    let one = ix.list(&first, "/etc/hosts", false).await.unwrap();
    let m = std::fs::metadata(src.join("etc/hosts")).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(
        (one[0].size, one[0].mode & 0o7777, one[0].uid),
        (m.len(), 0o600, m.uid())
    );
    assert!(one[0].chunks.is_empty(), "listings carry no chunk lists");
    let link = ix.list(&first, "/etc/current.conf", false).await.unwrap();
    assert_eq!(
        (link[0].kind, link[0].target.as_slice()),
        (EntryKind::Symlink, &b"app/app.conf"[..])
    );
    // An empty directory lists as empty, a missing path is an error naming it.
    assert!(ix.list(&first, "/empty", false).await.unwrap().is_empty());
    let e = ix
        .list(&first, "/etc/nope", false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("/etc/nope") && e.contains("ls"), "{e}");

    // Change the tree: one added, one removed, one rewritten, one chmod.
    std::fs::write(
        src.join("srv/chat/exports/wednesday.json"),
        noise(3, 100_000),
    )
    .unwrap();
    std::fs::remove_file(src.join("var/log/app/a.log")).unwrap();
    std::fs::write(src.join("etc/app/app.conf"), "port = 2\n").unwrap();
    std::fs::set_permissions(src.join("etc/hosts"), PermissionsExt::from_mode(0o644)).unwrap();
    let (ix, second) = backup(&repo, &src).await;

    let (changes, sum) = ix.diff(&first, &second).await.unwrap();
    let got: Vec<(char, &str)> = changes
        .iter()
        .map(|c| (c.what.mark(), c.path.as_str()))
        .collect();
    assert!(
        got.contains(&('+', "/srv/chat/exports/wednesday.json")),
        "{got:?}"
    );
    assert!(got.contains(&('-', "/var/log/app/a.log")), "{got:?}");
    assert!(got.contains(&('M', "/etc/app/app.conf")), "{got:?}");
    assert!(got.contains(&('m', "/etc/hosts")), "{got:?}");
    // Nothing else changed but directories whose mtimes moved with their contents.
    for (mark, path) in &got {
        assert!(
            [
                "/srv/chat/exports/wednesday.json",
                "/var/log/app/a.log",
                "/etc/app/app.conf",
                "/etc/hosts"
            ]
            .contains(path)
                || (*mark == 'm' && std::fs::metadata(src.join(&path[1..])).unwrap().is_dir()),
            "unexpected change {mark} {path}"
        );
    }
    assert_eq!((sum.added, sum.removed, sum.modified), (1, 1, 1));
    assert_eq!(sum.added_bytes, 100_000 + 9);
    assert_eq!(sum.removed_bytes, 10_000 + 9);
    let modified = changes
        .iter()
        .find(|c| c.what == ChangeKind::Modified)
        .unwrap();
    assert_eq!((modified.old_size, modified.new_size), (9, 9));
    // A snapshot against itself: no change.
    let (none, _) = ix.diff(&second, &second).await.unwrap();
    assert!(none.is_empty(), "{none:?}");

    // find: by name anywhere, by anchored path; in each snapshot what it held.
    let json = PathGlobs::new("find", &["*.json".into()]).unwrap();
    let in_first: BTreeSet<String> = ix
        .find(&first, &json)
        .await
        .unwrap()
        .iter()
        .map(display_path)
        .collect();
    let in_second: BTreeSet<String> = ix
        .find(&second, &json)
        .await
        .unwrap()
        .iter()
        .map(display_path)
        .collect();
    assert_eq!(in_first.len(), 2, "{in_first:?}");
    assert_eq!(in_second.len(), 3, "{in_second:?}");
    assert!(
        in_second.contains("/srv/chat/exports/wednesday.json")
            && !in_first.contains("/srv/chat/exports/wednesday.json")
    );
    let logs = PathGlobs::new("find", &["/var/log/**/*.log".into()]).unwrap();
    let found: BTreeSet<String> = ix
        .find(&first, &logs)
        .await
        .unwrap()
        .iter()
        .map(display_path)
        .collect();
    assert_eq!(
        found,
        ["/var/log/app/a.log", "/var/log/app/b.log"]
            .map(String::from)
            .into()
    );

    // stats: files and bytes as the directory holds them; the copy
    // deduplicated; stored bytes as the pack files on disk hold them at most.
    let st = ix.stats(std::slice::from_ref(&second)).await.unwrap();
    let files: Vec<std::fs::Metadata> = walkdir::WalkDir::new(&src)
        .into_iter()
        .map(|e| e.unwrap().path().symlink_metadata().unwrap())
        .filter(|m| m.is_file())
        .collect();
    assert_eq!(st.files, files.len() as u64);
    assert_eq!(st.logical_bytes, files.iter().map(|m| m.len()).sum::<u64>());
    assert_eq!(st.symlinks, 1);
    assert_eq!(
        st.dirs,
        walkdir::WalkDir::new(&src)
            .into_iter()
            .filter(|e| e.as_ref().unwrap().file_type().is_dir())
            .count() as u64
    );
    // The 500,000-byte copy adds no unique bytes.
    assert_eq!(st.unique_bytes, st.logical_bytes - 500_000);
    assert!(st.dedup_ratio() > 1.0);
    let pack_bytes: u64 = walkdir::WalkDir::new(dir.path().join("repo/packs"))
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        st.stored_bytes > 0 && st.stored_bytes <= pack_bytes,
        "{st:?} vs {pack_bytes}"
    );
    let both = ix.stats(&[first.clone(), second.clone()]).await.unwrap();
    assert_eq!(both.snapshots, 2);
    // The second snapshot shares all but its new and changed data with the first.
    // Together: the second's unique data plus what only the first held
    // (a.log and the old app.conf).
    assert_eq!(both.unique_bytes, st.unique_bytes + 10_000 + 9, "{both:?}");
    assert_eq!(
        both.logical_bytes,
        st.logical_bytes
            + ix.stats(std::slice::from_ref(&first))
                .await
                .unwrap()
                .logical_bytes
    );
}
