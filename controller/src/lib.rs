//! Trireme controller: scheduling, catalog, replication and verification.
//! The control plane is built on top of the repository engine in `trireme-common`.
