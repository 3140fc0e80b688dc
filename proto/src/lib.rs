//! Trireme's gRPC API. The services are defined in `proto/trireme/v1/*.proto`;
//! the control-plane work adds them here.
