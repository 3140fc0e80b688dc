//! Trireme's control-plane networking, apart from the repository engine
//! (`trireme-common`) so that the engine builds without tonic, rustls or the
//! proto crate:
//!
//! - [`tls`]: mTLS for every Trireme link: roles and identities, the CA behind
//!   `trireme cert`, rustls configurations, the authorised gRPC server and
//!   the `Health` service.
//! - [`metrics_http`]: the plain-HTTP `/metrics` endpoint of the controller
//!   and the agents.
//! - [`wire`]: conversions between the engine's types and the gRPC messages.
//! - [`cli_examples`] and [`logging`]: what the three binaries share on the
//!   command line (examples in `--help` and man pages, log set-up).
//!
//! Errors are `trireme_common::Error` (its certificate, CA and TLS variants).

pub mod cli_examples;
pub mod http;
pub mod logging;
pub mod metrics_http;
pub mod tls;
pub mod wire;

pub use tls::{Identity, Role};
