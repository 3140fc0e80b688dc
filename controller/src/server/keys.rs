//! `KeyService`: data keys for the jobs agents run. The master key never
//! leaves the controller. An agent gets keys only for a job the catalog has
//! assigned to it and that has not ended, and only the keys in that job's
//! scope (`trireme_common::scope`): a restore gets exactly the keys of the
//! snapshot it restores. Every grant and refusal goes to the audit log (and
//! the `trireme::audit` log target).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};
use trireme_common::scope::KeyScope;
use trireme_common::{KeyProvider, WrappedKey};
use trireme_net::{Identity, Role};
use trireme_proto::v1::key_service_server::KeyService;
use trireme_proto::v1::{
    GenerateDataKeyReply, GenerateDataKeyRequest, JobKeysReply, JobKeysRequest, KeyPair,
    UnwrapDataKeysReply, UnwrapDataKeysRequest,
};

use super::Shared;
use crate::audit::Event;
use crate::jobs::{Job, JobId, JobKind, JobState};

/// Scopes kept in memory before ended jobs' are dropped.
const SCOPES_KEPT: usize = 256;

/// One job's key scope, worked out on its first key request.
#[derive(Default)]
struct JobScope {
    scope: tokio::sync::OnceCell<KeyScope>,
    /// Keys this job generated (a backup may read back what it wrote).
    generated: Mutex<HashSet<WrappedKey>>,
}

impl JobScope {
    fn allows(&self, key: &WrappedKey) -> bool {
        self.scope.get().is_some_and(|s| s.contains(key)) || lock(&self.generated).contains(key)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A short, stable name for a wrapped key in messages and the audit log.
fn fingerprint(key: &WrappedKey) -> String {
    hex::encode(&trireme_common::crypto::sha256(&key.0)[..8])
}

/// Most keys one `UnwrapDataKeys` call may ask for.
const MAX_UNWRAP: usize = 4096;

/// Implementation of `trireme.v1.KeyService`.
pub struct KeyApi {
    shared: Arc<Shared>,
    scopes: Mutex<HashMap<JobId, Arc<JobScope>>>,
    /// Stored keys unwrapped so far: every backup's scope holds every index
    /// key, and with a KMS each unwrap would be a call to it.
    unwrapped: trireme_common::keys::KeyCache,
}

impl KeyApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        let provider: trireme_common::DynKeyProvider = shared.master_key.clone();
        KeyApi {
            unwrapped: trireme_common::keys::KeyCache::new(provider),
            shared,
            scopes: Mutex::default(),
        }
    }

    /// The scope entry of `job` (made on first use; ended jobs' are dropped).
    fn job_scope(&self, job: &Job) -> Arc<JobScope> {
        let mut scopes = lock(&self.scopes);
        if scopes.len() >= SCOPES_KEPT && !scopes.contains_key(&job.id) {
            let jobs = self.shared.catalog.jobs();
            scopes.retain(|id, _| {
                matches!(
                    jobs.get(id),
                    Ok(Some(j)) if matches!(j.state, JobState::Assigned { .. } | JobState::Running { .. })
                )
            });
        }
        scopes.entry(job.id).or_default().clone()
    }

    /// Work out `job`'s key scope from the repository at the first location
    /// that can answer (the one a drill is pinned to, if any).
    async fn compute_scope(&self, job: &Job) -> Result<KeyScope, Status> {
        let (snapshot, only) = match &job.kind {
            JobKind::Restore {
                snapshot,
                only_location,
                ..
            } => (Some(*snapshot), only_location.clone()),
            JobKind::Backup => (None, None),
        };
        let parent = super::agents::backup_parent(&self.shared, job).map_err(Status::from)?;
        let mut errors = Vec::new();
        for (name, _) in &self.shared.audit_mirrors {
            if only.as_ref().is_some_and(|o| o != name) {
                continue;
            }
            let attempt = async {
                let index = self.shared.keyed_index(name, None).await?;
                match snapshot {
                    Some(s) => {
                        // Prefer the packs the snapshot's own agent wrote.
                        let owner = self
                            .shared
                            .catalog
                            .snapshots()
                            .get(&s)
                            .ok()
                            .flatten()
                            .map(|r| r.agent);
                        let ledger = crate::attribution::Ledger::new(&self.shared.catalog);
                        let prefer = |k: &WrappedKey| {
                            owner.as_ref().is_some_and(|a| ledger.issued_to_agent(k, a))
                        };
                        index.restore_scope(&s, &prefer).await
                    }
                    None => {
                        let mut scope = match index.backup_scope(parent.as_ref()).await {
                            // The agent makes a full backup when the parent is
                            // not readable where it writes.
                            Err(trireme_common::Error::NotFound { .. }) => {
                                index.backup_scope(None).await
                            }
                            r => r,
                        }?;
                        // Dedup only against this agent's own packs: a result
                        // referencing any other pack is refused.
                        let ledger = crate::attribution::Ledger::new(&self.shared.catalog);
                        scope.packs =
                            Some(index.packs_where(|k| ledger.issued_to_agent(k, job.agent())));
                        Ok(scope)
                    }
                }
            };
            match attempt.await {
                Ok(scope) => return Ok(scope),
                Err(e) => errors.push(format!("{name}: {e}")),
            }
        }
        let what = match snapshot {
            Some(s) => format!("the keys of snapshot {s}"),
            None => "the keys of this backup".into(),
        };
        Err(Status::unavailable(format!(
            "cannot work out {what} for job {}: {}",
            job.id,
            errors.join("; ")
        )))
    }

    /// `job`'s scope, computed on first use.
    async fn scope(&self, job: &Job) -> Result<Arc<JobScope>, Status> {
        let entry = self.job_scope(job);
        entry
            .scope
            .get_or_try_init(|| self.compute_scope(job))
            .await?;
        Ok(entry)
    }

    async fn unwrap_one(&self, w: WrappedKey) -> Result<(WrappedKey, Vec<u8>), Status> {
        let k = self.unwrapped.unwrap(&w).await.map_err(|e| match e {
            trireme_common::Error::WrongKey(m) => Status::failed_precondition(m),
            e @ trireme_common::Error::KeyUnavailable(_) => Status::unavailable(e.to_string()),
            e => Status::invalid_argument(e.to_string()),
        })?;
        Ok((w, k.as_bytes().to_vec()))
    }

    /// Check the caller's role; a refusal is audited.
    fn authorize<T>(&self, request: &Request<T>, rpc: &str) -> Result<Identity, Status> {
        self.shared
            .authorize_audited(request, &[Role::Agent], "key request", rpc)
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
            .map_err(|e| match e {
                e @ trireme_common::Error::KeyUnavailable(_) => Status::unavailable(e.to_string()),
                e => Status::internal(e.to_string()),
            })?;
        crate::attribution::Ledger::new(&self.shared.catalog)
            .record(&wrapped, &job, self.shared.now())
            .map_err(Status::from)?;
        lock(&self.job_scope(&job).generated).insert(wrapped.clone());
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
        let scope = self.scope(&job).await?;
        let wanted: Vec<WrappedKey> = r.wrapped_keys.into_iter().map(WrappedKey).collect();
        if let Some(outside) = wanted.iter().find(|w| !scope.allows(w)) {
            let why = format!(
                "key {} is outside the key scope of job {} ({}); an agent gets only the keys of the job it runs",
                fingerprint(outside),
                job.id,
                describe(&job, scope.scope.get()),
            );
            tracing::warn!(target: "trireme::audit", agent = %id.name, job = %job.id, reason = %why, "key request refused");
            self.shared.record(
                Event::by(
                    &id,
                    "key request",
                    format!("job {} (UnwrapDataKeys)", job.id),
                )
                .refused(why.clone())
                .from_peer(peer),
            );
            return Err(Status::permission_denied(why));
        }
        let mut keys = Vec::with_capacity(wanted.len());
        for w in wanted {
            keys.push(self.unwrap_one(w).await?.1);
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

    async fn job_keys(
        &self,
        request: Request<JobKeysRequest>,
    ) -> Result<Response<JobKeysReply>, Status> {
        let id = self.authorize(&request, "JobKeys")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let job = self.job_for(&id, peer, &r.job_id, "JobKeys")?;
        let entry = self.scope(&job).await?;
        let scope = entry.scope.get().expect("scope computed");
        let keys: Vec<KeyPair> = futures::stream::iter(scope.keys.iter().cloned())
            .map(|w| self.unwrap_one(w))
            .buffer_unordered(8)
            .map_ok(|(w, k)| KeyPair {
                wrapped_key: w.0,
                data_key: k,
            })
            .try_collect()
            .await?;
        let what = describe(&job, Some(scope));
        tracing::info!(target: "trireme::audit", agent = %id.name, job = %job.id, source = %job.source, keys = keys.len(), scope = %what, "data keys granted");
        self.shared.record(
            Event::by(
                &id,
                "data keys granted",
                format!(
                    "job {} source {}: {} keys ({what})",
                    job.id,
                    job.source,
                    keys.len()
                ),
            )
            .from_peer(peer),
        );
        Ok(Response::new(JobKeysReply {
            keys,
            snapshots: scope.snapshots.iter().map(|s| s.to_hex()).collect(),
            packs_limited: scope.packs.is_some(),
            packs: scope.packs.iter().flatten().map(|p| p.0.to_vec()).collect(),
            index_limited: scope.index_objects.is_some(),
            index_objects: scope.index_objects.iter().flatten().cloned().collect(),
            attribution_key: if job.is_backup() {
                self.shared
                    .custody
                    .job_mac_key(job.id.0.as_bytes(), job.agent())
                    .to_vec()
            } else {
                Vec::new()
            },
            attribution_agent: job.agent().to_string(),
        }))
    }
}

/// What a job's scope covers, in words.
fn describe(job: &Job, scope: Option<&KeyScope>) -> String {
    let snaps = scope
        .map(|s| {
            s.snapshots
                .iter()
                .map(|i| i.to_hex()[..8].to_string())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    match &job.kind {
        JobKind::Restore { snapshot, .. } => {
            format!(
                "restore of snapshot {}: its keys only [{snaps}]",
                &snapshot.to_hex()[..8]
            )
        }
        JobKind::Backup if snaps.is_empty() => "backup: index keys only".into(),
        JobKind::Backup => format!("backup: index keys and parent snapshot {snaps}"),
    }
}
