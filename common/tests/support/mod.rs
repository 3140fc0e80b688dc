//! Shared helpers of the integration tests.

pub mod garage;
pub mod moto;
pub mod openbao;
pub mod pki;
pub mod ports;
pub mod vault;
