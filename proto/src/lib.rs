//! Trireme's gRPC API, generated from `proto/trireme/v1/*.proto` (one file
//! per service: `AgentService`, `OperatorService`, `KeyService`, `Health`,
//! `EnrollService`, `BootstrapTokenService`). Generated code
//! only, and the one metadata key the API uses besides its messages
//! ([`TOTP_HEADER`]): the logic lives in `trireme-common`, the agent and the
//! controller.

/// gRPC metadata key that carries an operator's current TOTP code for the
/// sensitive `OperatorService` calls (sent by the `trireme` CLI's `--totp`,
/// checked by the controller).
pub const TOTP_HEADER: &str = "x-trireme-totp";

/// Package `trireme.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("trireme.v1");
}
