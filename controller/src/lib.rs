//! Trireme controller: scheduling, catalog, replication and verification.
//! The control plane is built on top of the repository engine in `trireme-common`.

pub mod attribution;
pub mod audit;
pub mod bootstrap;
pub mod catalog;
pub mod config;
pub mod custody;
pub mod drills;
pub mod error;
pub mod growth;
pub mod holds;
pub mod jobs;
pub mod lifecycle;
pub mod mfa;
pub mod notify;
pub mod policy;
pub mod protection;
pub mod prune;
pub mod rebuild;
pub mod recovery;
pub mod recovery_key;
pub mod replication;
pub mod retention;
pub mod rotation;
pub mod schedule;
pub mod scheduler;
pub mod server;
pub mod snapshots;
pub mod sources;
pub mod status;
pub mod views;

pub use catalog::Catalog;
pub use error::{Error, Result};
pub use jobs::BackupMode;
pub use jobs::{Job, JobEvent, JobId, JobState};
pub use policy::Policy;
pub use scheduler::{Clock, Scheduler, SystemClock};
pub use sources::SourceId;

/// This controller's version; agents of another major version, a newer
/// one, or more than one minor version older are refused at session start
/// ([`server::agents::check_agent_version`]).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
