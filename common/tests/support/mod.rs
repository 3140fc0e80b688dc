//! Shared helpers of the integration tests.

pub mod garage;
pub mod pki;
