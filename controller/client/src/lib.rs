//! The client side of Trireme's control plane, shared by the `trireme`
//! operator CLI (crate `trireme-cli`) and the controller:
//!
//! - [`connect`](mod@connect): which certificate, which controller, dialling
//!   over mTLS, and gRPC statuses turned into operator-readable errors;
//! - [`recovery_key`]: the master key's recovery export (the file format,
//!   export and import, and asking for the passphrase), written by the
//!   controller for `key export` and read by `trireme key import` and
//!   `trireme-controller key import`.

pub mod connect;
pub mod recovery_key;

pub use connect::{with_totp, Controller, Failure, Settings, DEFAULT_CONTROLLER};
