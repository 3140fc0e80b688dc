//! The `file://` backend: a repository in a local (or mounted) directory.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{Backend, ListedObject, ObjectKey, ObjectKind, ObjectMeta};
use crate::error::{Error, Result};

/// A repository in a directory. Writes go to a temporary file in the target
/// folder, are fsynced, then renamed into place, so readers never see a
/// partial object and concurrent writers of the same object are harmless.
#[derive(Debug, Clone)]
pub struct FileBackend {
    root: PathBuf,
    url: String,
}

impl FileBackend {
    /// A backend rooted at `root` (created on first write if missing).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let url = format!("file://{}", root.display());
        FileBackend { root, url }
    }

    /// The directory holding the repository.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.path())
    }

    fn storage_err(&self, key: &ObjectKey, e: std::io::Error) -> Error {
        Error::Storage {
            location: self.url.clone(),
            key: key.path(),
            message: e.to_string(),
            temporary: false,
        }
    }

    fn not_found(&self, key: &ObjectKey) -> Error {
        Error::NotFound {
            key: key.path(),
            location: self.url.clone(),
        }
    }

    fn write_atomic(&self, key: &ObjectKey, data: &[u8]) -> std::io::Result<()> {
        let path = self.path_of(key);
        let dir = path.parent().expect("object paths have a parent");
        fs::create_dir_all(dir)?;
        let mut tmp = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir)?;
        tmp.write_all(data)?;
        tmp.as_file().sync_all()?;
        tmp.persist(&path).map_err(|e| e.error)?;
        // Make the rename itself durable.
        fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn list_blocking(&self, kind: ObjectKind) -> std::io::Result<Vec<ListedObject>> {
        let mut out = Vec::new();
        if kind == ObjectKind::Config {
            if let Ok(m) = fs::metadata(self.root.join("config")) {
                out.push(ListedObject {
                    key: ObjectKey::config(),
                    size: m.len(),
                });
            }
            return Ok(out);
        }
        let dir = self.root.join(kind.prefix());
        if !dir.exists() {
            return Ok(out);
        }
        for entry in walkdir::WalkDir::new(&dir).min_depth(1) {
            let entry = entry.map_err(std::io::Error::other)?;
            if !entry.file_type().is_file() {
                continue;
            }
            let rel = entry
                .path()
                .strip_prefix(&self.root)
                .expect("walk stays under root");
            let Some(key) = rel.to_str().and_then(ObjectKey::from_path) else {
                continue; // temp files and strangers
            };
            out.push(ListedObject {
                key,
                size: entry.metadata().map_err(std::io::Error::other)?.len(),
            });
        }
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Pipeline(format!("file I/O task failed: {e}")))
}

#[async_trait]
impl Backend for FileBackend {
    fn location(&self) -> &str {
        &self.url
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, _sha256: [u8; 32]) -> Result<()> {
        let this = self.clone();
        let k = key.clone();
        blocking(move || this.write_atomic(&k, &data))
            .await?
            .map_err(|e| self.storage_err(key, e))
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        match tokio::fs::read(self.path_of(key)).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Bytes> {
        let path = self.path_of(key);
        let res = blocking(move || -> std::io::Result<Vec<u8>> {
            let f = fs::File::open(path)?;
            let mut buf = vec![0u8; length as usize];
            f.read_exact_at(&mut buf, offset)?;
            Ok(buf)
        })
        .await?;
        match res {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(self.not_found(key)),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Error::corrupt(
                key.path(),
                format!("truncated: cannot read {length} bytes at offset {offset}"),
            )),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        match tokio::fs::metadata(self.path_of(key)).await {
            Ok(m) => Ok(Some(ObjectMeta {
                size: m.len(),
                sha256: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ListedObject>> {
        let this = self.clone();
        blocking(move || this.list_blocking(kind))
            .await?
            .map_err(|e| Error::Storage {
                location: self.url.clone(),
                key: kind.prefix().to_string(),
                message: e.to_string(),
                temporary: false,
            })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match tokio::fs::remove_file(self.path_of(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.storage_err(key, e)),
        }
    }
}
