//! The Trireme agent: the daemon that runs the controller's jobs on this
//! host ([`daemon`]), the datastore integrations it backs up and restores
//! ([`sources`]), and local mode ([`local`]).

pub mod daemon;
pub mod local;
pub mod sources;
