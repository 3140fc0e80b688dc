//! Helpers shared by Trireme's tests: a dev-dependency only, never a
//! dependency of a shipped crate.
//!
//! - Real servers, started the same way for every crate's tests: [`garage`]
//!   (S3), [`openbao`] (Vault transit), `moto` (AWS KMS; feature `kms`), and
//!   [`vault`], a small fake Vault for fault injection.
//! - `pki` (feature `pki`): a test CA and a `Health` server behind
//!   `trireme_net::tls`.
//! - [`ports`]: free loopback ports for those servers.
//! - [`data`]: deterministic test bytes ([`noise`]) and a directory's
//!   contents ([`tree`]) to compare a restore with its source.

pub mod data;
pub mod garage;
#[cfg(feature = "kms")]
pub mod moto;
pub mod openbao;
#[cfg(feature = "pki")]
pub mod pki;
pub mod ports;
pub mod vault;

pub use data::{metadata, noise, sha256sums, tree, Meta};
