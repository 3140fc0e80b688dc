//! Trireme controller: scheduling, catalog, replication and verification.
//! The control plane is built on top of the repository engine in `trireme-common`.

pub mod attribution;
pub mod audit;
pub mod catalog;
pub mod custody;
pub mod error;
pub mod jobs;
pub mod mfa;
pub mod policy;
pub mod prune;
pub mod rebuild;
pub mod recovery;
pub mod recovery_key;
pub mod replication;
pub mod retention;
pub mod rotation;
pub mod scheduler;
pub mod server;

pub use catalog::{Catalog, SourceId};
pub use error::{Error, Result};
pub use jobs::{Job, JobEvent, JobId, JobState};
pub use policy::{BackupMode, Policy};
pub use scheduler::{Clock, Scheduler, SystemClock};
