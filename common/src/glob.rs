//! Path globs as Trireme takes them on the command line and in configs
//! (`--include`, `--exclude`, a volume source's `exclude`).
//!
//! `*`, `?`, `[a-z]`, `{a,b}`, `**`; `*` never crosses a `/`. A pattern with
//! a `/` is matched against the path from the tree's root (a leading `/` is
//! ignored: `/etc/*.conf`); one without a `/` against every name along the
//! path (`*.log`, `cache`), so a pattern that names a directory takes
//! everything inside it along.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use globset::{Candidate, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};

/// A list of path globs.
#[derive(Clone, Debug, Default)]
pub struct PathGlobs {
    /// Patterns with a `/`, matched against the whole path.
    paths: Option<GlobSet>,
    /// Patterns without, matched against each name.
    names: Option<GlobSet>,
    pub(crate) texts: Vec<String>,
}

impl PathGlobs {
    /// Compile `patterns`; `flag` names them in errors (`--include`).
    ///
    /// # Errors
    /// [`Error::Selection`] naming an empty or invalid pattern.
    pub fn new(flag: &str, patterns: &[String]) -> Result<Self> {
        let mut paths = GlobSetBuilder::new();
        let mut names = GlobSetBuilder::new();
        let (mut n_paths, mut n_names) = (0, 0);
        for p in patterns {
            let text = p.trim();
            let anchored = text.trim_start_matches('/').trim_end_matches('/');
            if anchored.is_empty() {
                return Err(Error::Selection(format!(
                    "{flag} {p:?} is empty: give a glob such as \"*.log\" or \"/var/lib/app/**\""
                )));
            }
            let glob = GlobBuilder::new(anchored)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| {
                    Error::Selection(format!(
                        "{flag} {p:?} is not a valid glob ({}): use *, ?, [a-z], {{a,b}} and ** (any depth)",
                        e.kind()
                    ))
                })?;
            if anchored.contains('/') {
                paths.add(glob);
                n_paths += 1;
            } else {
                names.add(glob);
                n_names += 1;
            }
        }
        let build = |b: GlobSetBuilder, n: usize| -> Result<Option<GlobSet>> {
            if n == 0 {
                return Ok(None);
            }
            b.build()
                .map(Some)
                .map_err(|e| Error::Selection(format!("{flag}: {e}")))
        };
        Ok(PathGlobs {
            paths: build(paths, n_paths)?,
            names: build(names, n_names)?,
            texts: patterns.to_vec(),
        })
    }

    /// The patterns as given, comma-separated.
    pub fn describe(&self) -> String {
        self.texts.join(", ")
    }

    /// No patterns.
    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    /// Whether `path` itself matches: its last name for a pattern without
    /// `/`, the whole path for one with (what `find` reports).
    pub fn matches(&self, path: &[u8]) -> bool {
        let name = path.rsplit(|c| *c == b'/').next().unwrap_or(path);
        self.names
            .as_ref()
            .is_some_and(|n| n.is_match_candidate(&candidate(name)))
            || self
                .paths
                .as_ref()
                .is_some_and(|p| p.is_match_candidate(&candidate(path)))
    }

    /// Whether `path` (relative, canonical) or a directory above it matches.
    pub fn matches_or_inside(&self, path: &[u8]) -> bool {
        if let Some(names) = &self.names {
            if path
                .split(|c| *c == b'/')
                .any(|name| names.is_match_candidate(&candidate(name)))
            {
                return true;
            }
        }
        if let Some(paths) = &self.paths {
            let mut end = 0;
            loop {
                end = match path[end..].iter().position(|c| *c == b'/') {
                    Some(i) => end + i,
                    None => path.len(),
                };
                if paths.is_match_candidate(&candidate(&path[..end])) {
                    return true;
                }
                if end == path.len() {
                    break;
                }
                end += 1;
            }
        }
        false
    }
}

fn candidate(bytes: &[u8]) -> Candidate<'_> {
    Candidate::new(OsStr::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_anywhere_paths_from_the_root() {
        let g = PathGlobs::new("exclude", &["*.tmp".into(), "/var/cache".into()]).unwrap();
        assert!(g.matches_or_inside(b"a/b/x.tmp") && g.matches_or_inside(b"var/cache/y"));
        assert!(!g.matches_or_inside(b"srv/var/cache") && !g.matches_or_inside(b"a/x.tmpl"));
        assert!(PathGlobs::new("exclude", &[]).unwrap().is_empty());
        // `matches`: the path itself, not what is inside a match.
        assert!(g.matches(b"a/b/x.tmp") && g.matches(b"var/cache"));
        assert!(!g.matches(b"var/cache/y") && !g.matches(b"x.tmp/inside"));
    }
}
