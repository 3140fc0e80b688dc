//! Durable job results: a result is written (and fsynced) here before it is
//! sent, and removed only when the controller acknowledges it, so a result
//! survives a lost connection, a controller restart and an agent restart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use prost::Message;
use trireme_proto::v1::JobResult;

/// The result spool: one file per unacknowledged result.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    /// Open (create) the spool under `state_dir`.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("results");
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the result spool {}", dir.display()))?;
        Ok(Spool { dir })
    }

    fn file(&self, job_id: &str) -> Option<PathBuf> {
        // Job ids are UUIDs; refuse anything that could leave the directory.
        (!job_id.is_empty() && job_id.chars().all(|c| c.is_ascii_hexdigit() || c == '-'))
            .then(|| self.dir.join(format!("{job_id}.result")))
    }

    /// Store a result durably.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put(&self, r: &JobResult) -> Result<()> {
        let path = self
            .file(&r.job_id)
            .with_context(|| format!("malformed job id {:?}", r.job_id))?;
        let tmp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&r.encode_to_vec())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().with_context(|| {
            format!(
                "cannot store the result of job {} in {}",
                r.job_id,
                self.dir.display()
            )
        })
    }

    /// Forget an acknowledged result.
    pub fn remove(&self, job_id: &str) {
        if let Some(p) = self.file(job_id) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(file = %p.display(), error = %e, "cannot remove an acknowledged result")
                }
            }
        }
    }

    /// Every stored result, oldest job first. Unreadable files are logged
    /// and left in place for an operator.
    pub fn all(&self) -> Vec<JobResult> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("result") {
                continue;
            }
            match std::fs::read(&p)
                .map_err(anyhow::Error::from)
                .and_then(|b| JobResult::decode(b.as_slice()).map_err(anyhow::Error::from))
            {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::error!(file = %p.display(), error = %e, "unreadable result in the spool; left in place")
                }
            }
        }
        out.sort_by(|a, b| a.job_id.cmp(&b.job_id));
        out
    }

    /// Whether a result for `job_id` is stored.
    pub fn contains(&self, job_id: &str) -> bool {
        self.file(job_id).is_some_and(|p| p.exists())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_all_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = Spool::open(d.path()).unwrap();
        let id = "0192e7a0-0000-7000-8000-000000000001";
        s.put(&JobResult {
            job_id: id.into(),
            ok: true,
            ..Default::default()
        })
        .unwrap();
        let s2 = Spool::open(d.path()).unwrap();
        assert_eq!(s2.all().len(), 1);
        assert!(s2.contains(id));
        s2.remove(id);
        assert!(s.all().is_empty());
        assert!(s
            .put(&JobResult {
                job_id: "../x".into(),
                ..Default::default()
            })
            .is_err());
    }
}
