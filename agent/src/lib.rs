//! The Trireme agent: the daemon that runs the controller's jobs on this
//! host ([`daemon`]), the datastore integrations it backs up and restores
//! ([`sources`]), and local mode ([`local`]); [`cli_examples`] are the
//! examples its `--help` shows.

pub mod cli_examples;
pub mod daemon;
pub mod local;
pub mod sources;
