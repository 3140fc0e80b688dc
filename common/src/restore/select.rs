//! Which entries of a snapshot a restore writes: `--path`, `--include`,
//! `--exclude`.
//!
//! Patterns are globs (`*`, `?`, `[a-z]`, `{a,b}`, `**`); `*` never crosses
//! a `/`. A pattern with a `/` is matched against the path from the
//! snapshot's root (a leading `/` is ignored: `/etc/*.conf`); one without a
//! `/` against every name along the path (`*.log`, `cache`). A pattern that
//! matches a directory takes everything inside it along. An entry is
//! restored when it lies under `--path` (if given), matches an include (if
//! any are given), and matches no exclude: excludes win. The directories
//! that lead to a restored entry are created too.

use crate::error::{Error, Result};
use crate::glob::PathGlobs as Patterns;

/// What a restore writes; [`Selection::all`] by default.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only this subtree (canonical, no leading or trailing `/`).
    path: Option<Vec<u8>>,
    include: Patterns,
    exclude: Patterns,
}

impl Selection {
    /// Everything (a whole-snapshot restore).
    #[must_use]
    pub fn all() -> Self {
        Selection::default()
    }

    /// The entries under `path` (a path from the snapshot's root; `None` or
    /// `/`: all) that match an `include` (if any) and no `exclude`.
    ///
    /// # Errors
    /// [`Error::Selection`] naming a pattern that is not a valid glob, an
    /// empty pattern, or a `path` with `.`/`..` components.
    pub fn new(path: Option<&str>, include: &[String], exclude: &[String]) -> Result<Self> {
        let path = match path.map(|p| p.trim_matches('/')) {
            None | Some("") => None,
            Some(p) => {
                if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
                    return Err(Error::Selection(format!(
                        "--path {p:?} must be a plain path from the snapshot's root, without \".\", \"..\" or \"//\" (e.g. \"var/lib/app\")"
                    )));
                }
                Some(p.as_bytes().to_vec())
            }
        };
        Ok(Selection {
            path,
            include: Patterns::new("--include", include)?,
            exclude: Patterns::new("--exclude", exclude)?,
        })
    }

    /// Whether this selects the whole snapshot.
    #[must_use]
    pub fn is_all(&self) -> bool {
        self.path.is_none() && self.include.is_empty() && self.exclude.is_empty()
    }

    /// Whether the entry at `path` (from the snapshot's root, `""` for the
    /// root) is restored. Its enclosing directories are restored too, as
    /// containers, whether or not they are selected themselves.
    #[must_use]
    pub fn selects(&self, path: &[u8]) -> bool {
        if path.is_empty() {
            return self.is_all();
        }
        if let Some(sub) = &self.path {
            let inside = path == sub.as_slice()
                || (path.len() > sub.len() && path.starts_with(sub) && path[sub.len()] == b'/');
            if !inside {
                return false;
            }
        }
        if !self.include.is_empty() && !self.include.matches_or_inside(path) {
            return false;
        }
        !self.exclude.matches_or_inside(path)
    }

    /// A line for logs and reports, e.g. `--path var/lib --include "*.db"`;
    /// empty for a whole-snapshot restore.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.path {
            parts.push(format!("--path {}", String::from_utf8_lossy(p)));
        }
        for i in &self.include.texts {
            parts.push(format!("--include {i:?}"));
        }
        for e in &self.exclude.texts {
            parts.push(format!("--exclude {e:?}"));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(path: Option<&str>, include: &[&str], exclude: &[&str]) -> Selection {
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
        Selection::new(path, &s(include), &s(exclude)).unwrap()
    }

    #[test]
    fn names_paths_directories_and_excludes() {
        let all = Selection::all();
        assert!(all.is_all() && all.selects(b"") && all.selects(b"a/b"));

        let logs = sel(None, &["*.log"], &[]);
        assert!(logs.selects(b"a.log") && logs.selects(b"x/y/b.log"));
        assert!(!logs.selects(b"a.txt") && !logs.selects(b"") && !logs.selects(b"x"));
        // A matching directory takes its contents along.
        let cache = sel(None, &["cache"], &[]);
        assert!(cache.selects(b"a/cache") && cache.selects(b"a/cache/f.bin"));
        assert!(!cache.selects(b"a/caches/f"));
        // With a '/': from the root, '*' stays within one name.
        let conf = sel(None, &["/etc/*.conf"], &[]);
        assert!(conf.selects(b"etc/app.conf") && !conf.selects(b"etc/sub/x.conf"));
        assert!(!conf.selects(b"x/etc/app.conf"));
        let deep = sel(None, &["etc/**/*.conf"], &[]);
        assert!(deep.selects(b"etc/sub/x.conf") && deep.selects(b"etc/x.conf"));
        // Excludes win, and take whole directories out.
        let s = sel(None, &["data"], &["*.tmp", "data/skip"]);
        assert!(s.selects(b"data/a.bin") && !s.selects(b"data/a.tmp"));
        assert!(!s.selects(b"data/skip") && !s.selects(b"data/skip/x.bin"));
        // Only a subtree; a sibling with a common prefix is not in it.
        let p = sel(Some("/var/lib/"), &[], &[]);
        assert!(p.selects(b"var/lib") && p.selects(b"var/lib/x"));
        assert!(!p.selects(b"var/libx") && !p.selects(b"var") && !p.selects(b"etc"));
        assert_eq!(
            sel(Some("a"), &["*.db"], &["old*"]).describe(),
            "--path a --include \"*.db\" --exclude \"old*\""
        );
    }

    #[test]
    fn bad_patterns_and_paths_are_named() {
        let e = Selection::new(None, &["a[".into()], &[]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--include \"a[\" is not a valid glob"),
            "{e}"
        );
        let e = Selection::new(None, &[], &["/".into()]).unwrap_err();
        assert!(e.to_string().contains("--exclude \"/\" is empty"), "{e}");
        let e = Selection::new(Some("a/../b"), &[], &[]).unwrap_err();
        assert!(e.to_string().contains("--path \"a/../b\""), "{e}");
    }
}
