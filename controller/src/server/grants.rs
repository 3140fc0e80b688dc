//! Key grants: which data keys an agent may have for a job, and the audit
//! of every grant and refusal. The master key never leaves the controller.
//! An agent gets keys only for a job the catalog has assigned to it and
//! that has not ended, and only the keys in that job's scope
//! (`trireme_common::scope`): a restore gets exactly the keys of the
//! snapshot it restores. Every grant and refusal goes to the audit log (and
//! the `trireme::audit` log target). [`super::keys`] serves these over
//! gRPC.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use trireme_common::crypto::DataKey;
use trireme_common::scope::KeyScope;
use trireme_common::{KeyProvider, WrappedKey};
use trireme_net::Identity;

use super::Shared;
use crate::audit::Event;
use crate::error::{Error, Result};
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

/// The key grants of every job.
pub struct KeyGrants {
    shared: Arc<Shared>,
    scopes: Mutex<HashMap<JobId, Arc<JobScope>>>,
    /// Stored keys unwrapped so far: every backup's scope holds every index
    /// key, and with a KMS each unwrap would be a call to it.
    unwrapped: trireme_common::keys::KeyCache,
}

impl KeyGrants {
    /// The grants over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        let provider: trireme_common::DynKeyProvider = shared.master_key.clone();
        KeyGrants {
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
    async fn compute_scope(&self, job: &Job) -> Result<KeyScope> {
        let (snapshot, only) = match &job.kind {
            JobKind::Restore {
                snapshot,
                only_location,
                ..
            } => (Some(*snapshot), only_location.clone()),
            JobKind::Backup => (None, None),
        };
        let parent = super::reports::backup_parent(&self.shared, job)?;
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
        Err(Error::Unavailable(format!(
            "cannot work out {what} for job {}: {}",
            job.id,
            errors.join("; ")
        )))
    }

    /// `job`'s scope, computed on first use.
    async fn scope(&self, job: &Job) -> Result<Arc<JobScope>> {
        let entry = self.job_scope(job);
        entry
            .scope
            .get_or_try_init(|| self.compute_scope(job))
            .await?;
        Ok(entry)
    }

    async fn unwrap_one(&self, w: WrappedKey) -> Result<(WrappedKey, Vec<u8>)> {
        let k = self.unwrapped.unwrap(&w).await.map_err(|e| match e {
            trireme_common::Error::WrongKey(m) => Error::Precondition(m),
            e @ trireme_common::Error::KeyUnavailable(_) => Error::Unavailable(e.to_string()),
            e => Error::BadRequest(e.to_string()),
        })?;
        Ok((w, k.as_bytes().to_vec()))
    }

    /// The job `job_id`, if `agent` may have keys for it now.
    fn job_for(
        &self,
        agent: &Identity,
        peer: Option<SocketAddr>,
        job_id: &str,
        rpc: &str,
    ) -> Result<Job> {
        let refuse = |why: String| {
            tracing::warn!(target: "trireme::audit", agent = %agent.name, job = %job_id, rpc, reason = %why, "key request refused");
            self.shared.record(
                Event::by(agent, "key request", format!("job {job_id} ({rpc})"))
                    .refused(why.clone())
                    .from_peer(peer),
            );
            Error::Forbidden(format!("no keys for job {job_id}: {why}"))
        };
        let agent = agent.name.as_str();
        let id: JobId = job_id
            .parse()
            .map_err(|e: Error| Error::BadRequest(e.to_string()))?;
        let job = self
            .shared
            .catalog
            .jobs()
            .get(&id)?
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

impl KeyGrants {
    /// A new data key for backup job `job_id` of `agent` (recorded as
    /// issued to the job; audited), in the clear and wrapped.
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited) when the job is not `agent`'s, has
    /// ended, or is a restore; the key provider's and catalog errors.
    pub async fn generate(
        &self,
        agent: &Identity,
        peer: Option<SocketAddr>,
        job_id: &str,
    ) -> Result<(DataKey, WrappedKey)> {
        let job = self.job_for(agent, peer, job_id, "GenerateDataKey")?;
        if !job.is_backup() {
            return Err(Error::Forbidden(format!(
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
                e @ trireme_common::Error::KeyUnavailable(_) => Error::Unavailable(e.to_string()),
                e => Error::Internal(e.to_string()),
            })?;
        crate::attribution::Ledger::new(&self.shared.catalog).record(
            &wrapped,
            &job,
            self.shared.now(),
        )?;
        lock(&self.job_scope(&job).generated).insert(wrapped.clone());
        tracing::info!(target: "trireme::audit", agent = %agent.name, job = %job.id, source = %job.source, "data key generated");
        self.shared.record(
            Event::by(
                agent,
                "data key generated",
                format!("job {} source {}", job.id, job.source),
            )
            .from_peer(peer),
        );
        Ok((key, wrapped))
    }

    /// The data keys `wanted` for job `job_id` of `agent`, in that order:
    /// all within the job's scope, or none (audited either way).
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited) when the job is not `agent`'s or has
    /// ended, or a key is outside its scope; too many keys; the scope
    /// cannot be worked out now; key errors.
    pub async fn unwrap(
        &self,
        agent: &Identity,
        peer: Option<SocketAddr>,
        job_id: &str,
        wanted: Vec<WrappedKey>,
    ) -> Result<Vec<Vec<u8>>> {
        let job = self.job_for(agent, peer, job_id, "UnwrapDataKeys")?;
        if wanted.len() > MAX_UNWRAP {
            return Err(Error::BadRequest(format!(
                "{} keys in one call; ask for at most {MAX_UNWRAP}",
                wanted.len()
            )));
        }
        let scope = self.scope(&job).await?;
        if let Some(outside) = wanted.iter().find(|w| !scope.allows(w)) {
            let why = format!(
                "key {} is outside the key scope of job {} ({}); an agent gets only the keys of the job it runs",
                fingerprint(outside),
                job.id,
                describe(&job, scope.scope.get()),
            );
            tracing::warn!(target: "trireme::audit", agent = %agent.name, job = %job.id, reason = %why, "key request refused");
            self.shared.record(
                Event::by(
                    agent,
                    "key request",
                    format!("job {} (UnwrapDataKeys)", job.id),
                )
                .refused(why.clone())
                .from_peer(peer),
            );
            return Err(Error::Forbidden(why));
        }
        let mut keys = Vec::with_capacity(wanted.len());
        for w in wanted {
            keys.push(self.unwrap_one(w).await?.1);
        }
        tracing::info!(target: "trireme::audit", agent = %agent.name, job = %job.id, source = %job.source, keys = keys.len(), "data keys unwrapped");
        self.shared.record(
            Event::by(
                agent,
                "data keys unwrapped",
                format!("job {} source {}: {} keys", job.id, job.source, keys.len()),
            )
            .from_peer(peer),
        );
        Ok(keys)
    }

    /// Every key in the scope of job `job_id` of `agent`, unwrapped
    /// (audited).
    ///
    /// # Errors
    /// [`Error::Forbidden`] (audited) when the job is not `agent`'s or has
    /// ended; the scope cannot be worked out now; key errors.
    pub async fn job_keys(
        &self,
        agent: &Identity,
        peer: Option<SocketAddr>,
        job_id: &str,
    ) -> Result<JobGrant> {
        let job = self.job_for(agent, peer, job_id, "JobKeys")?;
        let entry = self.scope(&job).await?;
        let scope = entry.scope.get().expect("scope computed");
        let keys: Vec<(WrappedKey, Vec<u8>)> = futures::stream::iter(scope.keys.iter().cloned())
            .map(|w| self.unwrap_one(w))
            .buffer_unordered(8)
            .try_collect()
            .await?;
        let what = describe(&job, Some(scope));
        tracing::info!(target: "trireme::audit", agent = %agent.name, job = %job.id, source = %job.source, keys = keys.len(), scope = %what, "data keys granted");
        self.shared.record(
            Event::by(
                agent,
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
        let attribution_key = if job.is_backup() {
            self.shared
                .custody
                .job_mac_key(job.id.0.as_bytes(), job.agent())
                .to_vec()
        } else {
            Vec::new()
        };
        Ok(JobGrant {
            keys,
            entry,
            attribution_key,
            agent: job.agent().to_string(),
        })
    }
}

/// What a job's agent is granted: the keys of its scope, and what else the
/// scope allows.
pub struct JobGrant {
    /// The keys, wrapped and in the clear.
    pub keys: Vec<(WrappedKey, Vec<u8>)>,
    entry: Arc<JobScope>,
    /// A backup's MAC key for its index objects' attribution (empty for a
    /// restore).
    pub attribution_key: Vec<u8>,
    /// The agent that runs the job.
    pub agent: String,
}

impl JobGrant {
    /// The job's scope.
    pub fn scope(&self) -> &KeyScope {
        self.entry.scope.get().expect("scope computed")
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
