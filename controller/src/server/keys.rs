//! `KeyService`: data keys for the jobs agents run. The master key never
//! leaves the controller. An agent gets keys only for a job the catalog has
//! assigned to it and that has not ended; every grant and refusal goes to
//! the audit log (and the `trireme::audit` log target).

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::{Request, Response, Status};
use trireme_common::{Identity, KeyProvider, Role, WrappedKey};
use trireme_proto::v1::key_service_server::KeyService;
use trireme_proto::v1::{
    GenerateDataKeyReply, GenerateDataKeyRequest, UnwrapDataKeysReply, UnwrapDataKeysRequest,
};

use super::Shared;
use crate::audit::Event;
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

    /// Check the caller's role; a refusal is audited.
    fn authorize<T>(&self, request: &Request<T>, rpc: &str) -> Result<Identity, Status> {
        self.shared
            .authz
            .authorize(request, &[Role::Agent])
            .inspect_err(|status| {
                let who = request
                    .peer_certs()
                    .and_then(|c| c.first().cloned())
                    .and_then(|leaf| trireme_common::tls::identity_from_cert(&leaf).ok());
                let event = match &who {
                    Some(id) => Event::by(id, "key request", rpc),
                    None => Event::actor("(no certificate)", "", "key request", rpc),
                };
                self.shared.audit(
                    event
                        .refused(status.message())
                        .from_peer(request.remote_addr()),
                );
            })
    }

    /// The job `job_id`, if `agent` may have keys for it now.
    fn job_for(
        &self,
        agent: &Identity,
        peer: Option<SocketAddr>,
        job_id: &str,
        rpc: &str,
    ) -> Result<Job, Status> {
        let refuse = |why: String| {
            tracing::warn!(target: "trireme::audit", agent = %agent.name, job = %job_id, rpc, reason = %why, "key request refused");
            self.shared.record(
                Event::by(agent, "key request", format!("job {job_id} ({rpc})"))
                    .refused(why.clone())
                    .from_peer(peer),
            );
            Status::permission_denied(format!("no keys for job {job_id}: {why}"))
        };
        let agent = agent.name.as_str();
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
        let id = self.authorize(&request, "GenerateDataKey")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let job = self.job_for(&id, peer, &r.job_id, "GenerateDataKey")?;
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
        self.shared.record(
            Event::by(
                &id,
                "data key generated",
                format!("job {} source {}", job.id, job.source),
            )
            .from_peer(peer),
        );
        Ok(Response::new(GenerateDataKeyReply {
            data_key: key.as_bytes().to_vec(),
            wrapped_key: wrapped.0,
        }))
    }

    async fn unwrap_data_keys(
        &self,
        request: Request<UnwrapDataKeysRequest>,
    ) -> Result<Response<UnwrapDataKeysReply>, Status> {
        let id = self.authorize(&request, "UnwrapDataKeys")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let job = self.job_for(&id, peer, &r.job_id, "UnwrapDataKeys")?;
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
        self.shared.record(
            Event::by(
                &id,
                "data keys unwrapped",
                format!("job {} source {}: {} keys", job.id, job.source, keys.len()),
            )
            .from_peer(peer),
        );
        Ok(Response::new(UnwrapDataKeysReply { data_keys: keys }))
    }
}
