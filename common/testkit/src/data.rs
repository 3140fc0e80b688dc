//! Test data: deterministic bytes to back up, and a directory's contents
//! (bytes, `sha256sum`, metadata) to compare a restore with its source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `len` deterministic, incompressible bytes (xorshift); different seeds
/// give different bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Relative path → contents of every regular file under `dir`.
pub fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.insert(
                e.path().strip_prefix(dir).unwrap().to_path_buf(),
                std::fs::read(e.path()).unwrap(),
            );
        }
    }
    out
}

/// The real `sha256sum` of every regular file below `dir`, one line per
/// file (`HASH  ./rel/path`) in path order: a check that reads the files
/// with an independent tool rather than Trireme's own code.
pub fn sha256sums(dir: &Path) -> String {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum")
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sha256sum in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a restore (or a tar extraction, or a mount) must keep of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The path from the directory compared.
    pub path: PathBuf,
    /// `file`, `dir` or `link`.
    pub kind: &'static str,
    /// Permission bits with setuid, setgid and sticky (0 for links).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size (files and links).
    pub size: u64,
    /// Modification time, whole seconds (0 for links).
    pub mtime: i64,
    /// A link's target.
    pub target: Option<PathBuf>,
}

/// [`Meta`] of everything below `dir` (not `dir` itself), in path order,
/// read with `lstat`.
pub fn metadata(dir: &Path) -> Vec<Meta> {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let m = e.path().symlink_metadata().unwrap();
            let link = m.file_type().is_symlink();
            Meta {
                path: e.path().strip_prefix(dir).unwrap().to_path_buf(),
                kind: if link {
                    "link"
                } else if m.is_dir() {
                    "dir"
                } else {
                    "file"
                },
                mode: if link { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                size: if m.is_dir() { 0 } else { m.size() },
                mtime: if link { 0 } else { m.mtime() },
                target: link.then(|| std::fs::read_link(e.path()).unwrap()),
            }
        })
        .collect()
}
