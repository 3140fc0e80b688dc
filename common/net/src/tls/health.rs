//! The `Health` service: `Ping` answers any valid Trireme certificate with
//! the name, role and serial the server read from it.

use tonic::{Request, Response, Status};
use trireme_proto::v1::health_server::Health;
use trireme_proto::v1::{PingReply, PingRequest};

use super::{Authorizer, Role};

/// Implementation of `trireme.v1.Health`; mount it with
/// `trireme_proto::v1::health_server::HealthServer::new(HealthService::new(authz))`.
#[derive(Debug, Clone)]
pub struct HealthService {
    authz: Authorizer,
}

impl HealthService {
    /// A health service that checks callers with `authz`.
    pub fn new(authz: Authorizer) -> Self {
        Self { authz }
    }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        let id = self.authz.authorize(&request, Role::ALL)?;
        Ok(Response::new(PingReply {
            name: id.name,
            role: id.role.to_string(),
            serial: id.serial,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }
}
