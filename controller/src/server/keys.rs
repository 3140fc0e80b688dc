//! `KeyService`: data keys for the jobs agents run. The master key never
//! leaves the controller. An agent gets keys only for a job the catalog has
//! assigned to it and that has not ended; every grant is logged on the
//! `trireme::audit` target.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_common::{KeyProvider, Role, WrappedKey};
use trireme_proto::v1::key_service_server::KeyService;
use trireme_proto::v1::{
    GenerateDataKeyReply, GenerateDataKeyRequest, UnwrapDataKeysReply, UnwrapDataKeysRequest,
};

use super::Shared;
use crate::jobs::{Job, JobId, JobState};

/// Most keys one `UnwrapDataKeys` call may ask for.
const MAX_UNWRAP: usize = 4096;

/// Implementation of `trireme.v1.KeyService`.
pub struct KeyApi {
    shared: Arc<Shared>,
}

impl KeyApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        KeyApi { shared }
    }

    /// The job `job_id`, if `agent` may have keys for it now.
    fn job_for(&self, agent: &str, job_id: &str, rpc: &str) -> Result<Job, Status> {
        let refuse = |why: String| {
            tracing::warn!(target: "trireme::audit", %agent, job = %job_id, rpc, reason = %why, "key request refused");
            Status::permission_denied(format!("no keys for job {job_id}: {why}"))
        };
        let id: JobId = job_id
            .parse()
            .map_err(|e: crate::Error| Status::invalid_argument(e.to_string()))?;
        let job = self
            .shared
            .catalog
            .jobs()
            .get(&id)
            .map_err(Status::from)?
            .ok_or_else(|| refuse("the controller has no such job".into()))?;
        if job.agent() != agent {
            return Err(refuse(format!(
                "it belongs to agent {}, not {agent}",
                job.agent()
            )));
        }
        if !matches!(
            job.state,
            JobState::Assigned { .. } | JobState::Running { .. }
        ) {
            return Err(refuse(format!("it is {}", job.state.name())));
        }
        Ok(job)
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_data_key(
        &self,
        request: Request<GenerateDataKeyRequest>,
    ) -> Result<Response<GenerateDataKeyReply>, Status> {
        let id = self.shared.authz.authorize(&request, &[Role::Agent])?;
        let r = request.into_inner();
        let job = self.job_for(&id.name, &r.job_id, "GenerateDataKey")?;
        if !job.is_backup() {
            return Err(Status::permission_denied(format!(
                "job {} is a restore: it reads keys, it does not make new ones",
                job.id
            )));
        }
        let (key, wrapped) = self
            .shared
            .master_key
            .generate()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(target: "trireme::audit", agent = %id.name, job = %job.id, source = %job.source, "data key generated");
        Ok(Response::new(GenerateDataKeyReply {
            data_key: key.as_bytes().to_vec(),
            wrapped_key: wrapped.0,
        }))
    }

    async fn unwrap_data_keys(
        &self,
        request: Request<UnwrapDataKeysRequest>,
    ) -> Result<Response<UnwrapDataKeysReply>, Status> {
        let id = self.shared.authz.authorize(&request, &[Role::Agent])?;
        let r = request.into_inner();
        let job = self.job_for(&id.name, &r.job_id, "UnwrapDataKeys")?;
        if r.wrapped_keys.len() > MAX_UNWRAP {
            return Err(Status::invalid_argument(format!(
                "{} keys in one call; ask for at most {MAX_UNWRAP}",
                r.wrapped_keys.len()
            )));
        }
        let mut keys = Vec::with_capacity(r.wrapped_keys.len());
        for w in r.wrapped_keys {
            let k = self
                .shared
                .master_key
                .unwrap(&WrappedKey(w))
                .await
                .map_err(|e| match e {
                    trireme_common::Error::WrongKey(m) => Status::failed_precondition(m),
                    e => Status::invalid_argument(e.to_string()),
                })?;
            keys.push(k.as_bytes().to_vec());
        }
        tracing::info!(target: "trireme::audit", agent = %id.name, job = %job.id, source = %job.source, keys = keys.len(), "data keys unwrapped");
        Ok(Response::new(UnwrapDataKeysReply { data_keys: keys }))
    }
}
