//! Trireme's repository engine: the repository format, its crypto, storage
//! backends and location URLs. See `docs/format.md` for the on-disk format.
//!
//! Layers, bottom up: [`backend`] moves opaque objects; [`crypto`] and
//! [`keys`] seal and unwrap; [`format`], [`index`] and [`manifest`] define
//! the bytes; [`repo`] ties them to a location; [`backup`], [`restore`],
//! [`check`] and [`prune`] are the operations.
//!
//! The control plane's networking (mTLS, the metrics endpoint, proto
//! conversions) is `trireme-net`; the external key providers (Vault transit,
//! AWS KMS) are `trireme-kms`. Neither is needed to read or write a repository.

pub mod attribution;
pub mod backend;
pub mod backup;
pub mod browse;
pub mod check;
pub mod crypto;
pub mod dump;
pub mod error;
pub mod format;
pub mod glob;
pub mod index;
pub mod keys;
pub mod location;
pub mod manifest;
pub mod prune;
pub mod replicate;
pub mod repo;
pub mod restore;
pub mod scope;

pub use backend::{Backend, DynBackend, ListedObject, ObjectKey, ObjectKind, ObjectMeta};
pub use backup::{BackupInput, BackupOptions, LatePosition, PathFilter, Progress};
pub use check::CheckReport;
pub use crypto::Id;
pub use error::{Error, Result};
pub use format::ChunkerParams;
pub use keys::{DynKeyProvider, KeyProvider, KeyTable, LocalKeyFile, Rewrapped, WrappedKey};
pub use location::{CredentialSource, Location};
pub use manifest::{ContentKind, Dependency, SnapshotManifest, Summary, TreeEntry};
pub use repo::{IndexLimits, IndexedRepo, Repository, Snapshot};
pub use restore::{Overwrite, RestoreLedger, RestoreOptions, RestoreSummary, Selection};
