//! `KeyService`: data keys for the jobs agents run. Each handler checks
//! that the caller is an agent (a refusal is audited), decodes the request,
//! asks [`super::grants`] — which decides what the agent may have for the
//! job and audits every grant and refusal — and encodes the keys
//! ([`super::convert`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_net::{Identity, Role};
use trireme_proto::v1::key_service_server::KeyService;
use trireme_proto::v1::{
    GenerateDataKeyReply, GenerateDataKeyRequest, JobKeysReply, JobKeysRequest,
    UnwrapDataKeysReply, UnwrapDataKeysRequest,
};

use super::grants::KeyGrants;
use super::{convert, Shared};

/// Implementation of `trireme.v1.KeyService`.
pub struct KeyApi {
    shared: Arc<Shared>,
    grants: KeyGrants,
}

impl KeyApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        KeyApi {
            grants: KeyGrants::new(shared.clone()),
            shared,
        }
    }

    /// Check the caller's role; a refusal is audited.
    fn authorize<T>(&self, request: &Request<T>, rpc: &str) -> Result<Identity, Status> {
        self.shared
            .authorize_audited(request, &[Role::Agent], "key request", rpc)
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_data_key(
        &self,
        request: Request<GenerateDataKeyRequest>,
    ) -> Result<Response<GenerateDataKeyReply>, Status> {
        let id = self.authorize(&request, "GenerateDataKey")?;
        let peer = request.remote_addr();
        let job_id = &request.get_ref().job_id;
        let (key, wrapped) = self.grants.generate(&id, peer, job_id).await?;
        Ok(Response::new(convert::data_key_reply(
            key.as_bytes(),
            wrapped,
        )))
    }

    async fn unwrap_data_keys(
        &self,
        request: Request<UnwrapDataKeysRequest>,
    ) -> Result<Response<UnwrapDataKeysReply>, Status> {
        let id = self.authorize(&request, "UnwrapDataKeys")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let wanted = convert::wrapped_keys(r.wrapped_keys);
        let keys = self.grants.unwrap(&id, peer, &r.job_id, wanted).await?;
        Ok(Response::new(convert::unwrap_reply(keys)))
    }

    async fn job_keys(
        &self,
        request: Request<JobKeysRequest>,
    ) -> Result<Response<JobKeysReply>, Status> {
        let id = self.authorize(&request, "JobKeys")?;
        let peer = request.remote_addr();
        let grant = self
            .grants
            .job_keys(&id, peer, &request.get_ref().job_id)
            .await?;
        Ok(Response::new(convert::job_keys_reply(grant)))
    }
}
