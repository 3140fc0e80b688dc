//! Trireme's external key providers: [`KeyProvider`]s whose master key lives
//! in a key service and never leaves it.
//!
//! - [`vault`]: HashiCorp Vault's (or OpenBao's) transit secrets engine.
//! - [`aws_kms`]: AWS KMS, through the official SDK.
//!
//! The trait, the wrapped-key schemes and the local key file are in
//! `trireme-common` (`trireme_common::keys`); this crate keeps the KMS SDKs and
//! their HTTP clients out of the repository engine's build.
//!
//! [`KeyProvider`]: trireme_common::KeyProvider

pub mod aws_kms;
pub mod vault;
