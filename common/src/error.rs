//! The one error type of `trireme-common`, which `trireme-net` (TLS, CA,
//! certificates) and `trireme-kms` (external key services) return too.
//!
//! Every message is written for the operator: it names the object, file or
//! setting at fault and, where there is one, what to do about it.

use std::path::PathBuf;

/// Result alias used throughout `trireme-common`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the repository engine, its storage backends and its keys.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A location URL or location setting could not be understood.
    #[error("invalid location {url:?}: {reason}")]
    InvalidLocation {
        /// The URL as given.
        url: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// An object the repository needs is not in the location.
    #[error("object {key} is missing from {location}")]
    NotFound {
        /// The object's key in the location, e.g. `packs/ab/ab12…`.
        key: String,
        /// The location that was asked.
        location: String,
    },

    /// The location could not be reached or refused the request.
    #[error("storage error at {location} on {key}: {message}")]
    Storage {
        /// The location that failed.
        location: String,
        /// The object concerned (empty for listings).
        key: String,
        /// The underlying error, as reported by the backend.
        message: String,
        /// Whether retrying later may succeed (network, throttling, 5xx).
        temporary: bool,
    },

    /// Local file system error (source files, restore targets, key files).
    ///
    /// The OS error is part of the message and deliberately not a `source`:
    /// error chains (`{:#}`) would print it a second time.
    #[error("{op} {path}: {error}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },

    /// A restore refused to write at a path: the target is not empty, or a
    /// symbolic link (or anything the restore did not create) stands where
    /// it was to write. Nothing was written there, nor through it.
    #[error("cannot restore into {path}: {reason}")]
    RestoreTarget {
        /// The path refused.
        path: PathBuf,
        /// What is there and what to do.
        reason: String,
    },

    /// An object's bytes do not match its name, checksum, or authentication tag.
    #[error("object {key} is corrupt: {reason}")]
    Corrupt {
        /// The object's key in the location.
        key: String,
        /// What did not match.
        reason: String,
    },

    /// The key given cannot open this repository's data.
    #[error("wrong key: {0}")]
    WrongKey(String),

    /// A key file or key service problem that is not a wrong key.
    #[error("key error: {0}")]
    Key(String),

    /// The key service (an external KMS) could not be reached or answered
    /// with a server error after retries: temporary, a later try may work.
    #[error("key service unavailable: {0}")]
    KeyUnavailable(String),

    /// The repository uses a format this build does not understand.
    #[error("unsupported format in {key}: {reason}")]
    UnsupportedFormat {
        /// The object concerned.
        key: String,
        /// What was found and what this build supports.
        reason: String,
    },

    /// The repository has not been initialised at this location.
    #[error("no Trireme repository at {0}: run `trireme-agent init --location {0} --key-file <file>` first")]
    NoRepository(String),

    /// A repository already exists where one was to be created.
    #[error("a Trireme repository already exists at {0}")]
    RepositoryExists(String),

    /// A restore's `--path`, `--include`, `--exclude` or `--overwrite` is
    /// not usable; the message names it and what is accepted.
    #[error("{0}")]
    Selection(String),

    /// A snapshot id (or prefix) matched nothing or more than one snapshot.
    #[error("snapshot {0}")]
    Snapshot(String),

    /// The repository check found problems; each is listed.
    #[error("repository check found {} problem(s):\n  {}", .0.len(), .0.join("\n  "))]
    CheckFailed(Vec<String>),

    /// A pipeline stage stopped unexpectedly (a worker thread panicked or a queue closed).
    #[error("backup pipeline failed: {0}")]
    Pipeline(String),

    /// A TLS certificate, key or CRL file is missing, unreadable, malformed or unusable.
    #[error("certificate file {path}: {reason}")]
    Certificate {
        /// The file at fault.
        path: PathBuf,
        /// What is wrong with it and what to do.
        reason: String,
    },

    /// A CA directory is missing, damaged, or would be overwritten.
    #[error("CA directory {dir}: {reason}")]
    Ca {
        /// The CA directory (`--dir`).
        dir: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },

    /// A `trireme cert` request cannot be carried out as asked (bad name,
    /// nothing to revoke, an output file that already exists).
    #[error("{0}")]
    CertRequest(String),

    /// A certificate is valid X.509 but does not identify a Trireme peer.
    #[error("certificate {subject} is not a Trireme identity: {reason}")]
    Identity {
        /// The certificate's subject.
        subject: String,
        /// What is missing and how to get a proper certificate.
        reason: String,
    },

    /// A TLS connection or server could not be set up.
    #[error("TLS: {0}")]
    Tls(String),
}

impl Error {
    /// Whether the operation may succeed if retried later (network outage,
    /// throttling, a 5xx from the object store). Everything else is permanent.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::Storage {
                temporary: true,
                ..
            } | Error::KeyUnavailable(_)
        )
    }

    /// Shorthand for an [`Error::Io`].
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            error: source,
        }
    }

    /// Shorthand for an [`Error::Corrupt`].
    pub fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            key: key.into(),
            reason: reason.into(),
        }
    }
}
