//! The one error type of `trireme-controller`'s domain core.
//!
//! Every message is written for the operator: it names the file, line,
//! source, job or catalog entry at fault and, where there is one, what to do
//! about it. [`Error::is_temporary`] tells retry loops whether trying again
//! later may help.

use std::path::PathBuf;

/// Result alias used throughout `trireme-controller`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the controller's catalog, policies, scheduler and job queue.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The catalog database could not be opened.
    #[error("cannot open the catalog at {path}: {source} (is another trireme-controller using this directory? is it writable?)")]
    CatalogOpen {
        /// The catalog directory.
        path: PathBuf,
        /// The database error.
        #[source]
        source: sled::Error,
    },

    /// The catalog database failed while reading or writing.
    #[error("catalog {op} failed: {source}")]
    Catalog {
        /// What was being done, e.g. `write jobs`.
        op: String,
        /// The database error.
        #[source]
        source: sled::Error,
    },

    /// A catalog entry cannot be decoded (damaged, or written by a newer
    /// controller).
    #[error("catalog entry {tree}/{key} cannot be read: {reason}")]
    CatalogCorrupt {
        /// The tree, e.g. `jobs`.
        tree: &'static str,
        /// The entry's key, printable.
        key: String,
        /// What went wrong.
        reason: String,
    },

    /// The catalog was written by a controller with a newer catalog format.
    #[error("the catalog at {path} has format version {found}; this controller reads version {supported} (upgrade trireme-controller)")]
    CatalogVersion {
        /// The catalog directory.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build writes.
        supported: u32,
    },

    /// A policy file could not be read.
    #[error("cannot read policy file {path}: {source}")]
    PolicyRead {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },

    /// A policy file is not valid: the message names the file, line and
    /// column, the problem and what to write instead.
    #[error("{file}:{line}:{column}: {message}")]
    Policy {
        /// The file name as given (or `<input>`).
        file: String,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// The problem and the fix.
        message: String,
    },

    /// A value of a policy is invalid (outside a file, e.g. from the API).
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        /// The setting, e.g. `schedule`.
        field: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and what to write instead.
        reason: String,
    },

    /// Something the operation refers to is not in the catalog.
    #[error("no {what} {id} in the catalog")]
    NotFound {
        /// `job`, `policy`, `agent`, `snapshot`, …
        what: &'static str,
        /// Its id or name.
        id: String,
    },

    /// A job cannot make the requested state change.
    #[error("job {job} is {from}; it cannot become {to}")]
    IllegalTransition {
        /// The job id.
        job: String,
        /// Its current state.
        from: String,
        /// The requested state.
        to: String,
    },

    /// A job update came from an agent the job does not belong to.
    #[error("job {job} belongs to agent {expected}, not {got}")]
    WrongAgent {
        /// The job id.
        job: String,
        /// The agent that owns the job's source.
        expected: String,
        /// The agent that sent the update.
        got: String,
    },

    /// Prune cannot run now (jobs under way); the message says why and what to do.
    #[error("prune refused: {0}")]
    PruneRefused(String),

    /// A source already has a job queued or running; two backups of one
    /// source never run at once.
    #[error("source {source_id} already has job {job} queued or running; wait for it or cancel it (`trireme job cancel {job}`)")]
    SourceBusy {
        /// The source, `agent/name`.
        source_id: String,
        /// The job that holds it.
        job: String,
    },

    /// A bad configuration file.
    #[error("configuration {path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        message: String,
    },

    /// The configured key provider cannot be built or failed its start-up
    /// check (generate a data key, unwrap it, wrap it again).
    #[error("key provider {provider}: {message}")]
    KeyProvider {
        /// The provider and its key, as [`crate::config::KeySource::describe`].
        provider: String,
        /// What failed and what to do.
        message: String,
    },

    /// An error from the repository engine, TLS or storage.
    #[error(transparent)]
    Common(#[from] trireme_common::Error),

    /// A master-key rotation or key check cannot go on; the message names
    /// the location, object or key at fault and what to do.
    #[error("{0}")]
    Rotation(String),

    /// Something the controller needs is out of reach for now (a location
    /// while it checks an agent's result); the message says what.
    #[error("{0}")]
    Unavailable(String),

    /// A request that cannot be acted on as given (a too short or ambiguous
    /// id prefix, a missing argument); the message says what to give.
    #[error("{0}")]
    BadRequest(String),

    /// Something a request names does not exist (outside the catalog's
    /// records: a location, an agent that never registered); the message
    /// says where to look.
    #[error("{0}")]
    Missing(String),

    /// A caller asked for what it may not have (an agent asking for the
    /// keys of another agent's job); the message says why.
    #[error("{0}")]
    Forbidden(String),

    /// A request that cannot be carried out in the controller's present
    /// setup or state; the message says why.
    #[error("{0}")]
    Precondition(String),

    /// An unexpected failure (a worker task that died); the message says what.
    #[error("{0}")]
    Internal(String),

    /// An I/O error outside the catalog.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the operation may succeed if retried later (a database I/O
    /// error). Invalid input, missing entries and illegal transitions are
    /// permanent; a busy source is temporary.
    pub fn is_temporary(&self) -> bool {
        match self {
            Error::Catalog { source, .. } => matches!(source, sled::Error::Io(_)),
            Error::SourceBusy { .. } | Error::Unavailable(_) => true,
            Error::Common(e) => e.is_temporary(),
            _ => false,
        }
    }

    /// Shorthand for an [`Error::Catalog`].
    pub(crate) fn catalog(op: impl Into<String>, source: sled::Error) -> Self {
        Error::Catalog {
            op: op.into(),
            source,
        }
    }

    /// Shorthand for an [`Error::NotFound`].
    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Error::NotFound {
            what,
            id: id.to_string(),
        }
    }

    /// Shorthand for an [`Error::InvalidValue`].
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidValue {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }
}

impl Error {
    /// Shorthand for an [`Error::PruneRefused`].
    pub fn prune_refused(reason: impl Into<String>) -> Self {
        Error::PruneRefused(reason.into())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic::Status;
        let msg = e.to_string();
        match e {
            Error::NotFound { .. } | Error::Missing(_) => Status::not_found(msg),
            Error::InvalidValue { .. } | Error::Policy { .. } | Error::BadRequest(_) => {
                Status::invalid_argument(msg)
            }
            Error::IllegalTransition { .. }
            | Error::SourceBusy { .. }
            | Error::PruneRefused(_)
            | Error::Precondition(_) => Status::failed_precondition(msg),
            Error::Internal(_) => Status::internal(msg),
            Error::WrongAgent { .. } | Error::Forbidden(_) => Status::permission_denied(msg),
            e if e.is_temporary() => Status::unavailable(msg),
            _ => Status::internal(msg),
        }
    }
}
