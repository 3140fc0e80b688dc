//! Envelope encryption: a [`KeyProvider`] hands out data keys (plaintext and
//! wrapped) and unwraps stored ones. The master key never leaves the provider.
//!
//! [`LocalKeyFile`] is the provider for one machine: a master key in a file
//! kept apart from the backups. The controller's key service and the
//! external KMSs (`trireme_kms::vault::VaultTransit`,
//! `trireme_kms::aws_kms::AwsKms`) sit behind the same trait.
//!
//! The first byte of a wrapped key names the scheme, hence the provider that
//! made it (docs/format.md §3): 1 local key file, 2 Vault transit, 3 AWS KMS.
//!
//! A master-key rotation leaves a [`KeyTable`] (the stored data keys wrapped
//! again under the new master key); [`Rewrapped`] is the provider that reads
//! through it.

mod rewrapped;
mod table;

pub use rewrapped::Rewrapped;
pub use table::{
    entry_hash, find_table, table_name_for, KeyTable, SealedTable, TABLE_MAGIC, TABLE_PREFIX,
    TABLE_VERSION,
};

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::crypto::{random_bytes, DataKey, SEAL_OVERHEAD};
use crate::error::{Error, Result};

/// A data key wrapped (encrypted) by a master key: safe to store with the data.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct WrappedKey(pub Vec<u8>);

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WrappedKey({} bytes)", self.0.len())
    }
}

/// The key seam: generate and unwrap data keys.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// A new random data key, as plaintext (to use now) and wrapped (to store).
    ///
    /// # Errors
    /// When the key service cannot be reached or refuses.
    async fn generate(&self) -> Result<(DataKey, WrappedKey)>;

    /// Recover the plaintext of a stored data key.
    ///
    /// # Errors
    /// [`Error::WrongKey`] when the key was wrapped by another master key;
    /// [`Error::Key`] when it is damaged or the service refuses.
    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey>;

    /// Wrap an existing data key under this provider's (current) master key:
    /// what re-wrapping stored keys during a master-key rotation needs.
    ///
    /// # Errors
    /// When the key service cannot be reached or refuses, or the provider
    /// cannot wrap (an agent's view of the controller's key service).
    async fn wrap(&self, key: &DataKey) -> Result<WrappedKey>;

    /// A short, stable, non-secret name of the master key this provider
    /// wraps under (a local key file's fingerprint), when it has one. Key
    /// tables are named after it; without one they are found by trying them.
    fn master_key_id(&self) -> Option<String> {
        None
    }
}

/// A shared key provider.
pub type DynKeyProvider = Arc<dyn KeyProvider>;

/// Scheme byte of wrapped keys made by [`LocalKeyFile`]: AES-256-GCM under a
/// local master key.
pub const SCHEME_LOCAL_V1: u8 = 1;
/// Scheme byte of wrapped keys made by `trireme_kms::vault::VaultTransit`.
pub const SCHEME_VAULT_TRANSIT_V1: u8 = 2;
/// Scheme byte of wrapped keys made by `trireme_kms::aws_kms::AwsKms`.
pub const SCHEME_AWS_KMS_V1: u8 = 3;

/// The provider that makes wrapped keys of `scheme`, for messages, e.g.
/// `the local key file (key_file)`.
pub fn scheme_provider(scheme: u8) -> &'static str {
    match scheme {
        SCHEME_LOCAL_V1 => "the local key file (key_file)",
        SCHEME_VAULT_TRANSIT_V1 => {
            "HashiCorp Vault transit ([key_service] provider = \"vault-transit\")"
        }
        SCHEME_AWS_KMS_V1 => "AWS KMS ([key_service] provider = \"aws-kms\")",
        _ => "no provider this build knows (a newer Trireme, or damaged data)",
    }
}

/// The scheme byte of `wrapped`, refusing an empty key or one of another
/// scheme than `expected` with a message naming both providers. Every
/// [`KeyProvider`] calls it before unwrapping (the external ones too).
///
/// # Errors
/// [`Error::Key`] for an empty key; [`Error::WrongKey`] for another scheme.
pub fn check_scheme<'a>(wrapped: &'a WrappedKey, expected: u8, this: &str) -> Result<&'a [u8]> {
    match wrapped.0.split_first() {
        None => Err(Error::Key("empty wrapped key".into())),
        Some((&s, rest)) if s == expected => Ok(rest),
        Some((&s, _)) => Err(Error::WrongKey(format!(
            "this data key was wrapped under key scheme {s}, made by {}; {this} (scheme {expected}) cannot unwrap it: \
             configure the controller with the key provider that wrote this repository",
            scheme_provider(s)
        ))),
    }
}
const KEY_FILE_TAG: &str = "trireme-master-key-v1";
const WRAP_AAD: &[u8] = b"trireme wrapped data key v1";

/// A master key held in a local file (one line `trireme-master-key-v1:<64 hex>`).
///
/// Wrapped keys are `1 (scheme) || key id (8) || nonce || sealed key || tag`,
/// where the key id is a fingerprint of the master key, so a wrong key is told
/// apart from a damaged one.
pub struct LocalKeyFile {
    master: DataKey,
    id: [u8; 8],
    path: PathBuf,
}

impl LocalKeyFile {
    /// Create a new random master key at `path` (mode 0600). Refuses to
    /// overwrite an existing file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file exists or cannot be written.
    pub fn create(path: &Path) -> Result<Self> {
        let master = DataKey::generate();
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io("creating key file", path, e))?;
        let line = format!("{KEY_FILE_TAG}:{}\n", hex::encode(master.as_bytes()));
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("writing key file", path, e))?;
        Ok(Self::from_key(master, path))
    }

    /// Load a master key file. Refuses files that group or others can read.
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable, [`Error::Key`] when too open or malformed.
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| Error::io("reading key file", path, e))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::Key(format!(
                "key file {} is readable by group or others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io("reading key file", path, e))?;
        let malformed = || {
            Error::Key(format!(
                "key file {} is not a Trireme master key (expected one line `{KEY_FILE_TAG}:<64 hex digits>`; create one with `trireme-agent keygen`)",
                path.display()
            ))
        };
        let hexkey = text
            .trim()
            .strip_prefix(KEY_FILE_TAG)
            .and_then(|r| r.strip_prefix(':'))
            .ok_or_else(malformed)?;
        let mut raw = [0u8; 32];
        hex::decode_to_slice(hexkey, &mut raw).map_err(|_| malformed())?;
        Ok(Self::from_key(DataKey::from_bytes(raw), path))
    }

    fn from_key(master: DataKey, path: &Path) -> Self {
        let fp = blake3::derive_key("trireme master key id v1", master.as_bytes());
        let mut id = [0u8; 8];
        id.copy_from_slice(&fp[..8]);
        LocalKeyFile {
            master,
            id,
            path: path.to_path_buf(),
        }
    }

    /// The master key's fingerprint, 16 hex digits.
    pub fn key_id(&self) -> String {
        hex::encode(self.id)
    }
}

impl fmt::Debug for LocalKeyFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "LocalKeyFile({}, id {})",
            self.path.display(),
            self.key_id()
        )
    }
}

#[async_trait]
impl KeyProvider for LocalKeyFile {
    async fn generate(&self) -> Result<(DataKey, WrappedKey)> {
        let dek = DataKey::from_bytes(random_bytes());
        let wrapped = self.wrap(&dek).await?;
        Ok((dek, wrapped))
    }

    async fn wrap(&self, key: &DataKey) -> Result<WrappedKey> {
        let mut out = Vec::with_capacity(1 + 8 + 32 + SEAL_OVERHEAD);
        out.push(SCHEME_LOCAL_V1);
        out.extend_from_slice(&self.id);
        self.master.seal_into(WRAP_AAD, key.as_bytes(), &mut out);
        Ok(WrappedKey(out))
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        check_scheme(wrapped, SCHEME_LOCAL_V1, "the local key file")?;
        let w = &wrapped.0;
        if w.len() != 1 + 8 + 32 + SEAL_OVERHEAD {
            return Err(Error::Key(format!(
                "wrapped key has {} bytes, expected {}",
                w.len(),
                1 + 8 + 32 + SEAL_OVERHEAD
            )));
        }
        if w[1..9] != self.id {
            return Err(Error::WrongKey(format!(
                "the data was encrypted under master key {}, but {} holds master key {}",
                hex::encode(&w[1..9]),
                self.path.display(),
                self.key_id()
            )));
        }
        let raw = self
            .master
            .open(WRAP_AAD, &w[9..])
            .map_err(|_| Error::Key("wrapped data key failed authentication (damaged)".into()))?;
        let raw: [u8; 32] = raw
            .try_into()
            .map_err(|_| Error::Key("bad data key length".into()))?;
        Ok(DataKey::from_bytes(raw))
    }

    fn master_key_id(&self) -> Option<String> {
        Some(self.key_id())
    }
}

/// The first 8 bytes of every **controller key**: a data key the
/// controller makes for itself with [`KeyProvider::wrap`] (which no agent can
/// call) to authenticate objects only the controller writes (the config's
/// controller MAC, key tables, per-job attribution keys). Keys from
/// [`KeyProvider::generate`], the only kind an agent can obtain, are random:
/// one starts with these bytes with probability 2^-64. So an object whose
/// authenticating key, once unwrapped, lacks the mark was not made by a
/// controller, whatever else checks out.
pub const CONTROLLER_KEY_MARK: [u8; 8] = *b"TRCTRL01";

/// A new controller key (see [`CONTROLLER_KEY_MARK`]): 8 mark bytes and 24
/// random ones, wrapped with `provider`.
///
/// # Errors
/// When the provider cannot wrap (an agent's view of the key service).
pub async fn generate_controller_key(provider: &dyn KeyProvider) -> Result<(DataKey, WrappedKey)> {
    let mut raw: [u8; 32] = crate::crypto::random_bytes();
    raw[..8].copy_from_slice(&CONTROLLER_KEY_MARK);
    let key = DataKey::from_bytes(raw);
    let wrapped = provider.wrap(&key).await?;
    Ok((key, wrapped))
}

/// Whether an unwrapped key carries the controller mark.
pub fn is_controller_key(key: &DataKey) -> bool {
    key.as_bytes()[..8] == CONTROLLER_KEY_MARK
}

/// Unwrap a controller key, refusing a key without the mark (an ordinary
/// data key, as an agent could obtain and use to forge `what`).
///
/// # Errors
/// As [`KeyProvider::unwrap`]; [`Error::Key`] naming `what` when the key is
/// not a controller key.
pub async fn unwrap_controller_key(
    provider: &dyn KeyProvider,
    wrapped: &WrappedKey,
    what: &str,
) -> Result<DataKey> {
    let key = provider.unwrap(wrapped).await?;
    if !is_controller_key(&key) {
        return Err(Error::Key(format!(
            "{what} is authenticated with an ordinary data key, not a controller key: \
             agents can obtain data keys, so it may have been written by an agent and is not believed"
        )));
    }
    Ok(key)
}

/// Unwraps each distinct wrapped key once and remembers the result.
#[derive(Debug)]
pub struct KeyCache {
    provider: DynKeyProvider,
    cache: Mutex<HashMap<WrappedKey, Arc<DataKey>>>,
}

impl KeyCache {
    /// A cache in front of `provider`.
    pub fn new(provider: DynKeyProvider) -> Self {
        KeyCache {
            provider,
            cache: Mutex::default(),
        }
    }

    /// The provider behind the cache.
    pub fn provider(&self) -> &DynKeyProvider {
        &self.provider
    }

    /// Unwrap `wrapped`, from the cache when seen before.
    ///
    /// # Errors
    /// As [`KeyProvider::unwrap`].
    pub async fn unwrap(&self, wrapped: &WrappedKey) -> Result<Arc<DataKey>> {
        if let Some(k) = self.cache.lock().expect("key cache lock").get(wrapped) {
            return Ok(k.clone());
        }
        let key = Arc::new(self.provider.unwrap(wrapped).await?);
        self.cache
            .lock()
            .expect("key cache lock")
            .insert(wrapped.clone(), key.clone());
        Ok(key)
    }

    /// Remember a key this process generated, so reading back what it wrote
    /// needs no unwrap.
    pub fn insert(&self, wrapped: WrappedKey, key: Arc<DataKey>) {
        self.cache
            .lock()
            .expect("key cache lock")
            .insert(wrapped, key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_file_round_trip_and_wrong_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let kf = LocalKeyFile::create(&p).unwrap();
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(LocalKeyFile::create(&p).is_err(), "no overwrite");
        let (dek, wrapped) = kf.generate().await.unwrap();
        let loaded = LocalKeyFile::load(&p).unwrap();
        assert_eq!(loaded.key_id(), kf.key_id());
        assert_eq!(
            loaded.unwrap(&wrapped).await.unwrap().as_bytes(),
            dek.as_bytes()
        );

        let other = LocalKeyFile::create(&dir.path().join("k2")).unwrap();
        let err = other.unwrap(&wrapped).await.unwrap_err();
        assert!(matches!(err, Error::WrongKey(_)), "{err}");
        assert!(err.to_string().contains(&kf.key_id()), "{err}");

        let mut damaged = wrapped.clone();
        *damaged.0.last_mut().unwrap() ^= 1;
        let err = kf.unwrap(&damaged).await.unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
    }

    #[test]
    fn key_file_refused_when_world_readable_or_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        LocalKeyFile::create(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyFile::load(&p).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");

        let q = dir.path().join("bad");
        std::fs::write(&q, "hello").unwrap();
        std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = LocalKeyFile::load(&q).unwrap_err().to_string();
        assert!(err.contains("not a Trireme master key"), "{err}");
    }
}
