//! Trireme's gRPC API, generated from `proto/trireme/v1/*.proto` (one file
//! per service: `AgentService`, `OperatorService`, `KeyService`, `Health`). Generated code
//! only: the logic lives in `trireme-common`, the agent and the controller.

/// Package `trireme.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("trireme.v1");
}
