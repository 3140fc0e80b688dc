//! `OperatorService`: what the `trireme` CLI calls. Viewers read; operators
//! also change things. Ids may be given as unique prefixes.

use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use futures::Stream;
use tonic::{Request, Response, Status};
use trireme_common::Id;
use trireme_net::wire::summary_to_wire;
use trireme_net::Role;
use trireme_proto::v1::operator_service_server::OperatorService;
use trireme_proto::v1::{
    AgentInfo, ApplyPolicyReply, ApplyPolicyRequest, CancelJobRequest, DrillInfo, GetDrillRequest,
    GetJobRequest, GetSnapshotRequest, JobInfo, JobKind as WireJobKind, JobProgress,
    JobState as WireJobState, ListAgentsReply, ListAgentsRequest, ListAuditReply, ListAuditRequest,
    ListDrillsReply, ListDrillsRequest, ListJobsReply, ListJobsRequest, ListLocationsReply,
    ListLocationsRequest, ListPoliciesReply, ListPoliciesRequest, ListRestoreTestsReply,
    ListRestoreTestsRequest, ListSnapshotsReply, ListSnapshotsRequest, ListSourcesReply,
    ListSourcesRequest, LocationInfo, MfaConfirmReply, MfaConfirmRequest, MfaEnrollReply,
    MfaEnrollRequest, PolicyInfo, RestoreRequest, RestoreTestInfo, RunBackupRequest,
    RunDrillRequest, RunRestoreTestRequest, SnapshotCopy, SnapshotDependency, SnapshotInfo,
    SourceEntry, SourceInfo, SourceProtection, SourceRecovery, SourceRef, StatusReply,
    StatusRequest, VerifyAuditReply, VerifyAuditRequest, VerifyReply, VerifyRequest,
    WatchJobRequest,
};

use trireme_proto::v1::{PruneReply, PruneRequest};
use trireme_proto::v1::{RebuildCatalogReply, RebuildCatalogRequest};

use super::agents::{blocking, dispatch_soon, send_cancel};
use super::Shared;
use crate::catalog::{CopyState, SnapshotRecord, SourceId};
use crate::error::Error;
use crate::jobs::{self, Job, JobEvent, JobId, JobKind, JobState, Trigger};
use crate::policy::{self, BackupMode, Policy};
use security::mfa_note;

mod security;

const READ: &[Role] = &[Role::Operator, Role::Viewer];
const OPERATE: &[Role] = &[Role::Operator];
/// Default and largest page of `ListJobs` / `ListSnapshots`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 10_000;
/// Shortest prefix accepted for an id.
const MIN_PREFIX: usize = 4;

/// Implementation of `trireme.v1.OperatorService`.
pub struct OperatorApi {
    shared: Arc<Shared>,
}

impl OperatorApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        OperatorApi { shared }
    }

    fn find_job(&self, text: &str) -> Result<Job, Status> {
        if let Ok(id) = text.parse::<JobId>() {
            return self
                .shared
                .catalog
                .jobs()
                .get(&id)?
                .ok_or_else(|| Error::not_found("job", id).into());
        }
        let t = text.to_ascii_lowercase();
        check_prefix("job id", &t)?;
        let mut found: Vec<Job> = self
            .shared
            .catalog
            .jobs()
            .values()?
            .into_iter()
            .filter(|j| j.id.to_string().starts_with(&t))
            .collect();
        one_of("job", text, &mut found)
    }

    fn find_snapshot(&self, text: &str) -> Result<SnapshotRecord, Status> {
        let t = text.to_ascii_lowercase();
        if let Some(id) = Id::from_hex(&t) {
            return self
                .shared
                .catalog
                .snapshots()
                .get(&id)?
                .ok_or_else(|| Error::not_found("snapshot", &t).into());
        }
        check_prefix("snapshot id", &t)?;
        let mut found: Vec<SnapshotRecord> = self
            .shared
            .catalog
            .snapshots()
            .values()?
            .into_iter()
            .filter(|s| s.id.to_hex().starts_with(&t))
            .collect();
        one_of("snapshot", text, &mut found)
    }

    fn job_info(&self, job: &Job) -> JobInfo {
        job_info(
            job,
            self.shared
                .catalog
                .snapshots()
                .get(&snapshot_of(job))
                .ok()
                .flatten()
                .as_ref(),
        )
    }
}

fn snapshot_of(job: &Job) -> Id {
    match &job.state {
        JobState::Succeeded { snapshot, .. } => *snapshot,
        _ => Id([0; 32]),
    }
}

fn check_prefix(what: &str, t: &str) -> Result<(), Status> {
    if t.len() < MIN_PREFIX || !t.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(Status::invalid_argument(format!(
            "{what} {t:?}: give the full id or at least {MIN_PREFIX} of its first hex digits"
        )));
    }
    Ok(())
}

fn one_of<T>(what: &'static str, text: &str, found: &mut Vec<T>) -> Result<T, Status> {
    match found.len() {
        0 => Err(Error::not_found(what, text).into()),
        1 => Ok(found.remove(0)),
        n => Err(Status::invalid_argument(format!(
            "{what} id prefix {text:?} matches {n} {what}s; give more digits"
        ))),
    }
}

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

fn source_ref(s: &SourceId) -> SourceRef {
    SourceRef {
        agent: s.agent.clone(),
        source: s.name.clone(),
    }
}

fn parse_source(r: Option<&SourceRef>) -> Result<SourceId, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("give a source as agent/source"))?;
    Ok(SourceId::new(r.agent.clone(), r.source.clone())?)
}

/// A job as the CLI shows it.
pub fn job_info(job: &Job, snapshot: Option<&SnapshotRecord>) -> JobInfo {
    let mut info = JobInfo {
        id: job.id.to_string(),
        source: Some(source_ref(&job.source)),
        created_unix: unix(job.created),
        attempt: job.attempt,
        agent: job.agent().to_string(),
        trigger: match &job.trigger {
            Trigger::Schedule { missed, .. } if *missed > 0 => {
                format!("schedule (catching up {missed} missed)")
            }
            Trigger::Schedule { .. } => "schedule".into(),
            Trigger::Retry { previous, .. } => format!("retry of {previous}"),
            Trigger::Manual { by } => format!("manual by {by}"),
        },
        ..Default::default()
    };
    match &job.kind {
        JobKind::Backup => {
            info.set_kind(WireJobKind::Backup);
            info.mode = job.mode.to_string();
        }
        JobKind::Restore {
            snapshot, target, ..
        } => {
            info.set_kind(WireJobKind::Restore);
            info.restore_snapshot_id = snapshot.to_hex();
            info.restore_target = target.clone();
        }
    }
    let state = match &job.state {
        JobState::Queued => WireJobState::Queued,
        JobState::Assigned { .. } => WireJobState::Running,
        JobState::Running {
            started, progress, ..
        } => {
            info.started_unix = unix(*started);
            let secs = (Utc::now() - *started).num_milliseconds().max(1) as f64 / 1000.0;
            info.progress = Some(JobProgress {
                job_id: job.id.to_string(),
                bytes_read: progress.bytes_done,
                bytes_uploaded: progress.bytes_uploaded,
                files: progress.files_done,
                bytes_per_sec: progress.bytes_done as f64 / secs,
                bytes_total: progress.bytes_total.unwrap_or(0),
            });
            WireJobState::Running
        }
        JobState::Succeeded { snapshot, finished } => {
            info.finished_unix = unix(*finished);
            info.snapshot_id = snapshot.to_hex();
            WireJobState::Succeeded
        }
        JobState::Failed { reason, finished } => {
            info.finished_unix = unix(*finished);
            info.error_message = reason.clone();
            WireJobState::Failed
        }
        JobState::Cancelled { reason, finished } => {
            info.finished_unix = unix(*finished);
            info.error_message = reason.clone();
            WireJobState::Cancelled
        }
    };
    info.set_state(state);
    if let Some(s) = snapshot.filter(|_| job.is_backup()) {
        let secs = match &job.state {
            JobState::Succeeded { finished, .. } if s.job.is_some() => {
                (*finished - s.time).num_milliseconds().max(0) as f64 / 1000.0
            }
            _ => 0.0,
        };
        info.summary = Some(summary_to_wire(&s.summary, secs));
    }
    info.checks.clone_from(&job.checks);
    info
}

/// A snapshot as the CLI shows it.
pub fn snapshot_info(s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex(),
        source: Some(source_ref(&s.source)),
        time_unix: unix(s.time),
        parent_id: String::new(),
        summary: Some(summary_to_wire(&s.summary, 0.0)),
        datastore_position: s.position.clone().into_iter().collect(),
        copies: s
            .copies
            .iter()
            .map(|(loc, c)| {
                let (state, verified, at, detail) = match c {
                    CopyState::Verified { at } => ("verified", true, unix(*at), String::new()),
                    CopyState::Copied { at } => ("copied", false, unix(*at), String::new()),
                    CopyState::Copying { since } => ("copying", false, unix(*since), String::new()),
                    CopyState::Damaged { at, reason } => {
                        ("failed", false, unix(*at), reason.clone())
                    }
                    CopyState::Incomplete { at, reason } => {
                        ("incomplete", false, unix(*at), reason.clone())
                    }
                    CopyState::Pending => ("pending", false, 0, String::new()),
                };
                SnapshotCopy {
                    location: loc.clone(),
                    verified,
                    verified_unix: if verified { at } else { 0 },
                    state: state.to_string(),
                    detail,
                }
            })
            .collect(),
        agent: s.agent.clone(),
        size: s.size,
        depends_on: s
            .depends_on
            .iter()
            .map(|d| SnapshotDependency {
                id: d.snapshot.to_hex(),
                chain: d.chain.clone(),
            })
            .collect(),
    }
}

fn policy_toml(p: &Policy) -> String {
    let mut t = format!(
        "[[policy]]\nsource = {:?}\nschedule = {:?}\nmode = {:?}\n",
        p.source.to_string(),
        p.schedule.as_str(),
        p.mode.to_string()
    );
    if let Some(f) = p.full_every {
        t.push_str(&format!(
            "full_every = {:?}\n",
            humantime::format_duration(f).to_string()
        ));
    }
    t.push_str(&format!(
        "retention = {:?}\ntimezone = {:?}\nmax_retries = {}\nretry_backoff = {:?}\n",
        p.retention,
        p.timezone.to_string(),
        p.max_retries,
        humantime::format_duration(p.retry_backoff).to_string()
    ));
    t
}

fn wire_state_matches(filter: i32, state: &JobState) -> bool {
    let Ok(f) = WireJobState::try_from(filter) else {
        return true;
    };
    match f {
        WireJobState::Unspecified => true,
        WireJobState::Queued => matches!(state, JobState::Queued),
        WireJobState::Running => {
            matches!(state, JobState::Assigned { .. } | JobState::Running { .. })
        }
        WireJobState::Succeeded => matches!(state, JobState::Succeeded { .. }),
        WireJobState::Failed => matches!(state, JobState::Failed { .. }),
        WireJobState::Cancelled => matches!(state, JobState::Cancelled { .. }),
    }
}

fn limit(n: u32) -> usize {
    match n as usize {
        0 => DEFAULT_LIMIT,
        n => n.min(MAX_LIMIT),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<JobInfo, Status>> + Send>>;

#[tonic::async_trait]
impl OperatorService for OperatorApi {
    async fn list_agents(
        &self,
        request: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsReply>, Status> {
        self.authorize(&request, READ, "agents ls")?;
        let mut agents = Vec::new();
        for (name, a) in self.shared.catalog.agents().entries()? {
            let name: String = name;
            let conn = self.shared.agents.info(&name);
            let sources = self
                .shared
                .catalog
                .sources_of(&name)?
                .into_iter()
                .filter(|(id, _)| a.sources.contains(&id.name))
                .map(|(id, s)| SourceInfo {
                    name: id.name,
                    kind: s.kind,
                    details: s.details.into_iter().collect(),
                })
                .collect();
            agents.push(AgentInfo {
                connected: conn.is_some(),
                last_seen_unix: unix(conn.map_or(a.last_seen, |c| c.last_seen)),
                name,
                version: a.version,
                hostname: a.hostname,
                sources,
            });
        }
        Ok(Response::new(ListAgentsReply { agents }))
    }

    async fn list_sources(
        &self,
        request: Request<ListSourcesRequest>,
    ) -> Result<Response<ListSourcesReply>, Status> {
        self.authorize(&request, READ, "sources ls")?;
        let r = request.into_inner();
        let all = if r.agent.is_empty() {
            self.shared.catalog.sources().entries()?
        } else {
            self.shared.catalog.sources_of(&r.agent)?
        };
        let mut sources = Vec::new();
        for (id, s) in all {
            let policy = self
                .shared
                .catalog
                .policies()
                .get(&id)?
                .map(|p| p.policy.schedule.as_str().to_string())
                .unwrap_or_default();
            sources.push(SourceEntry {
                agent: id.agent.clone(),
                source: Some(SourceInfo {
                    name: id.name,
                    kind: s.kind,
                    details: s.details.into_iter().collect(),
                }),
                policy,
            });
        }
        Ok(Response::new(ListSourcesReply { sources }))
    }

    async fn apply_policy(
        &self,
        request: Request<ApplyPolicyRequest>,
    ) -> Result<Response<ApplyPolicyReply>, Status> {
        let id = self.authorize(&request, OPERATE, "policy apply")?;
        let peer = request.remote_addr();
        let passed = self.second_factor(&request, &id, "policy apply").await?;
        let r = request.into_inner();
        let file = policy::parse_policy_file("policy", &r.toml)?;
        let policies = &file.policies;
        let now = self.shared.now();
        let origin = format!("applied by {}", id.name);
        let report =
            blocking(|| policy::apply_policy_file(&self.shared.catalog, &file, &origin, now))?;
        self.audit_ok(
            &id,
            peer,
            "policy apply",
            format!(
                "{} policies: {}{}",
                policies.len(),
                policies
                    .iter()
                    .map(|p| p.source.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                mfa_note(passed)
            ),
        );
        self.shared.scheduler.wake();
        let applied = report
            .created
            .iter()
            .map(|s| format!("{s} (new)"))
            .chain(report.updated.iter().map(|s| format!("{s} (updated)")))
            .chain(report.unchanged.iter().map(|s| format!("{s} (unchanged)")))
            .collect();
        let warnings = report
            .unknown_sources
            .iter()
            .map(|s| format!("no agent has reported source {s} yet: its backups wait until one does (check the agent's config and name)"))
            .chain(file.warnings.iter().cloned())
            .collect();
        Ok(Response::new(ApplyPolicyReply { applied, warnings }))
    }

    async fn list_policies(
        &self,
        request: Request<ListPoliciesRequest>,
    ) -> Result<Response<ListPoliciesReply>, Status> {
        self.authorize(&request, READ, "policy ls")?;
        let now = self.shared.now();
        let mut policies = Vec::new();
        for (source, rec) in self.shared.catalog.policies().entries()? {
            let state = self
                .shared
                .catalog
                .schedule()
                .get(&source)?
                .unwrap_or_default();
            let from = state.handled_until.map_or(now, |t| t.max(now));
            let next = state
                .retry
                .as_ref()
                .map(|r| r.due)
                .or_else(|| rec.policy.next_slot_after(from));
            policies.push(PolicyInfo {
                name: source.to_string(),
                toml: policy_toml(&rec.policy),
                next_run_unix: next.map_or(0, unix),
            });
        }
        Ok(Response::new(ListPoliciesReply { policies }))
    }

    async fn run_backup(
        &self,
        request: Request<RunBackupRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let id = self.authorize(&request, OPERATE, "backup run")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let source = parse_source(r.source.as_ref())?;
        let mode = if r.full {
            BackupMode::Full
        } else {
            BackupMode::Incremental
        };
        let now = self.shared.now();
        let job =
            blocking(|| jobs::enqueue_manual(&self.shared.catalog, &source, mode, &id.name, now))?;
        self.audit_ok(
            &id,
            peer,
            "backup run",
            format!("{source} {mode} job {}", job.id),
        );
        self.shared.job_changed(job.id);
        dispatch_soon(&self.shared, job.agent().to_string());
        Ok(Response::new(self.job_info(&job)))
    }

    async fn list_jobs(
        &self,
        request: Request<ListJobsRequest>,
    ) -> Result<Response<ListJobsReply>, Status> {
        self.authorize(&request, READ, "jobs ls")?;
        let r = request.into_inner();
        let mut jobs: Vec<Job> = self
            .shared
            .catalog
            .jobs()
            .values()?
            .into_iter()
            .filter(|j| r.agent.is_empty() || j.agent() == r.agent || j.source.agent == r.agent)
            .filter(|j| {
                r.source.is_empty() || j.source.name == r.source || j.source.to_string() == r.source
            })
            .filter(|j| wire_state_matches(r.state, &j.state))
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
        jobs.truncate(limit(r.limit));
        let jobs = jobs.iter().map(|j| self.job_info(j)).collect();
        Ok(Response::new(ListJobsReply { jobs }))
    }

    async fn get_job(&self, request: Request<GetJobRequest>) -> Result<Response<JobInfo>, Status> {
        self.authorize(&request, READ, "jobs show")?;
        let job = self.find_job(&request.get_ref().id)?;
        Ok(Response::new(self.job_info(&job)))
    }

    async fn cancel_job(
        &self,
        request: Request<CancelJobRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let id = self.authorize(&request, OPERATE, "job cancel")?;
        let peer = request.remote_addr();
        let job = self.find_job(&request.get_ref().id)?;
        let reason = format!("cancelled by {}", id.name);
        let now = self.shared.now();
        let updated = blocking(|| {
            jobs::update_job(
                &self.shared.catalog,
                &job.id,
                &JobEvent::Cancel {
                    reason: reason.clone(),
                },
                now,
            )
        })?;
        self.audit_ok(&id, peer, "job cancel", job.id.to_string());
        send_cancel(&self.shared, job.agent(), &job.id, &reason);
        self.shared.job_changed(job.id);
        self.shared.scheduler.wake();
        Ok(Response::new(self.job_info(&updated.job)))
    }

    type WatchJobStream = WatchStream;

    async fn watch_job(
        &self,
        request: Request<WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let who = self.authorize(&request, READ, "jobs watch")?;
        let peer = request.remote_addr();
        let job = self.find_job(&request.get_ref().id)?;
        let shared = self.shared.clone();
        let mut events = shared.job_events.subscribe();
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let id = job.id;
            let mut last = None;
            loop {
                // A certificate revoked while it watches: the stream ends.
                if shared.authz.is_revoked(&who.serial) {
                    let why =
                        format!("the certificate of {who} has been revoked; the watch was closed");
                    shared.audit(
                        crate::audit::Event::by(&who, "jobs watch", id.to_string())
                            .refused(why.clone())
                            .from_peer(peer),
                    );
                    let _ = tx.send(Err(Status::unauthenticated(why))).await;
                    return;
                }
                let current = match shared.catalog.jobs().get(&id) {
                    Ok(Some(j)) => j,
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(Status::from(e))).await;
                        return;
                    }
                };
                let snapshot = shared
                    .catalog
                    .snapshots()
                    .get(&snapshot_of(&current))
                    .ok()
                    .flatten();
                let info = job_info(&current, snapshot.as_ref());
                if last.as_ref() != Some(&info) {
                    if tx.send(Ok(info.clone())).await.is_err() {
                        return;
                    }
                    last = Some(info);
                }
                if current.state.is_terminal() {
                    return;
                }
                // Wake on this job's events; at least every 2 s (the rate shown moves).
                let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        e = events.recv() => match e {
                            Ok(j) if j == id => break,
                            Ok(_) => {}
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                        },
                        () = tx.closed() => return,
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_snapshots(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsReply>, Status> {
        self.authorize(&request, READ, "snapshots ls")?;
        let r = request.into_inner();
        let mut snaps = match r
            .source
            .as_ref()
            .filter(|s| !s.agent.is_empty() || !s.source.is_empty())
        {
            Some(s) if !s.agent.is_empty() && !s.source.is_empty() => {
                self.shared.catalog.snapshots_of(&parse_source(Some(s))?)?
            }
            Some(s) => self
                .shared
                .catalog
                .snapshots()
                .values()?
                .into_iter()
                .filter(|x| {
                    (s.agent.is_empty() || x.source.agent == s.agent)
                        && (s.source.is_empty() || x.source.name == s.source)
                })
                .collect(),
            None => self.shared.catalog.snapshots().values()?,
        };
        snaps.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        snaps.truncate(limit(r.limit));
        Ok(Response::new(ListSnapshotsReply {
            snapshots: snaps.iter().map(snapshot_info).collect(),
        }))
    }

    async fn get_snapshot(
        &self,
        request: Request<GetSnapshotRequest>,
    ) -> Result<Response<SnapshotInfo>, Status> {
        self.authorize(&request, READ, "snapshots show")?;
        let s = self.find_snapshot(&request.get_ref().id)?;
        Ok(Response::new(snapshot_info(&s)))
    }

    async fn restore(&self, request: Request<RestoreRequest>) -> Result<Response<JobInfo>, Status> {
        let id = self.authorize(&request, OPERATE, "restore")?;
        let peer = request.remote_addr();
        // Every restore counts as sensitive: it writes onto a machine.
        let passed = self.second_factor(&request, &id, "restore").await?;
        let r = request.into_inner();
        let snap = self.find_snapshot(&r.snapshot_id)?;
        let to_agent = if r.to_agent.is_empty() {
            snap.agent.clone()
        } else {
            r.to_agent.clone()
        };
        if self.shared.catalog.agents().get(&to_agent)?.is_none() {
            return Err(Status::not_found(format!(
                "no agent named {to_agent:?} has registered; see `trireme agents ls`"
            )));
        }
        if r.target.is_empty() {
            return Err(Status::invalid_argument(
                "give a restore target: --to agent:/path/to/empty/dir, or --to agent:source:<name> to restore into one of the agent's datastores",
            ));
        }
        let job = Job::restore(
            snap.source.clone(),
            snap.id,
            to_agent.clone(),
            r.target.clone(),
            &id.name,
            self.shared.now(),
        );
        blocking(|| {
            self.shared
                .catalog
                .transaction_durable(|tx| jobs::create_in(tx, &job))
        })?;
        self.audit_ok(
            &id,
            peer,
            "restore",
            format!(
                "snapshot {} of {} to {to_agent}:{} job {}{}",
                snap.id.short(),
                snap.source,
                r.target,
                job.id,
                mfa_note(passed)
            ),
        );
        self.shared.job_changed(job.id);
        dispatch_soon(&self.shared, to_agent);
        Ok(Response::new(self.job_info(&job)))
    }

    async fn list_locations(
        &self,
        request: Request<ListLocationsRequest>,
    ) -> Result<Response<ListLocationsReply>, Status> {
        self.authorize(&request, READ, "locations ls")?;
        let states = self.shared.replicator.states();
        let locations = self
            .shared
            .locations
            .iter()
            .map(|l| {
                let st = states.get(&l.name).cloned().unwrap_or_default();
                let deep_progress = st.deep_progress;
                LocationInfo {
                    name: l.name.clone(),
                    url: l.location.to_string(),
                    reachable: st.reachable,
                    last_error: st.last_error.clone(),
                    objects: st.objects,
                    bytes: st.bytes,
                    last_sync_unix: st.last_sync.map_or(0, unix),
                    last_quick_verify_unix: st.last_quick_verify.map_or(0, unix),
                    last_deep_round_unix: st.last_deep_round.map_or(0, unix),
                    deep_round_progress: deep_progress,
                    problems_found: st.problems_found,
                    problems_repaired: st.problems_repaired,
                    incidents: st.incidents.iter().take(10).cloned().collect(),
                    role: l.role.clone(),
                    region: l.region.clone(),
                    provider: l.provider.clone(),
                }
            })
            .collect();
        Ok(Response::new(ListLocationsReply { locations }))
    }

    async fn rebuild_catalog(
        &self,
        request: Request<RebuildCatalogRequest>,
    ) -> Result<Response<RebuildCatalogReply>, Status> {
        let id = self.authorize(&request, OPERATE, "catalog rebuild")?;
        let peer = request.remote_addr();
        let passed = self.second_factor(&request, &id, "catalog rebuild").await?;
        let name = request.into_inner().location;
        let loc = self
            .shared
            .locations
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| {
                Status::not_found(format!("no location {name:?}; see `trireme locations ls`"))
            })?;
        let backend = loc.location.open().await.map_err(Error::from)?;
        // A rotated repository opens with its key table: the location's copy
        // when the controller has none yet (a new controller after a disaster).
        let adopted = crate::rotation::adopt_from(
            &self.shared.catalog,
            &self.shared.master_key,
            &name,
            &backend,
            self.shared.now(),
        )
        .await?;
        let keys: trireme_common::DynKeyProvider = self.shared.master_key.clone();
        let repo = trireme_common::Repository::from_config(
            backend,
            keys,
            self.shared.custody.config_bytes(),
        )
        .await
        .map_err(Error::from)?;
        let r = crate::rebuild::rebuild(
            &self.shared.catalog,
            &repo,
            &self.shared.custody,
            &name,
            self.shared.now(),
        )
        .await?;
        self.audit_ok(
            &id,
            peer,
            "catalog rebuild",
            format!(
                "from {name}: {} snapshots found, {} added, {} known, {} sources added{}{}",
                r.found,
                r.added,
                r.known,
                r.sources_added,
                adopted
                    .map(|t| format!(", key table keys/{t} loaded"))
                    .unwrap_or_default(),
                mfa_note(passed)
            ),
        );
        // Let the replication pass find and verify the other copies.
        self.shared.replicate_now.notify_one();
        Ok(Response::new(RebuildCatalogReply {
            found: r.found as u32,
            added: r.added as u32,
            known: r.known as u32,
            sources_added: r.sources_added as u32,
            skipped: r.skipped,
        }))
    }

    async fn run_restore_test(
        &self,
        request: Request<RunRestoreTestRequest>,
    ) -> Result<Response<JobInfo>, Status> {
        let id = self.authorize(&request, OPERATE, "restore-test run")?;
        let peer = request.remote_addr();
        // A restore test restores (onto a staging target): sensitive too.
        let passed = self
            .second_factor(&request, &id, "restore-test run")
            .await?;
        let source = parse_source(request.get_ref().source.as_ref())?;
        let job = super::recovery::run_test_now(&self.shared, &source, &id.name)?;
        self.audit_ok(
            &id,
            peer,
            "restore-test run",
            format!("{source} job {}{}", job.id, mfa_note(passed)),
        );
        Ok(Response::new(self.job_info(&job)))
    }

    async fn list_restore_tests(
        &self,
        request: Request<ListRestoreTestsRequest>,
    ) -> Result<Response<ListRestoreTestsReply>, Status> {
        self.authorize(&request, READ, "restore-test ls")?;
        let r = request.into_inner();
        let only = match &r.source {
            Some(s) if !s.agent.is_empty() => Some(parse_source(Some(s))?),
            _ => None,
        };
        let mut tests: Vec<RestoreTestInfo> = self
            .shared
            .catalog
            .restore_tests()
            .values()?
            .into_iter()
            .rev()
            .filter(|t| only.as_ref().is_none_or(|s| &t.source == s))
            .map(|t| restore_test_info(&t))
            .collect();
        if r.limit > 0 {
            tests.truncate(r.limit as usize);
        }
        Ok(Response::new(ListRestoreTestsReply { tests }))
    }

    async fn run_drill(
        &self,
        request: Request<RunDrillRequest>,
    ) -> Result<Response<DrillInfo>, Status> {
        let id = self.authorize(&request, OPERATE, "drill run")?;
        let peer = request.remote_addr();
        let passed = self.second_factor(&request, &id, "drill run").await?;
        let location = request.into_inner().location;
        let location = (!location.is_empty()).then_some(location);
        let drill = super::recovery::start_drill(&self.shared, location.clone(), &id.name)?;
        self.audit_ok(
            &id,
            peer,
            "drill run",
            format!(
                "{} from {} ({} sources){}",
                drill.id,
                location.as_deref().unwrap_or("the usual locations"),
                drill.steps.len(),
                mfa_note(passed)
            ),
        );
        Ok(Response::new(drill_info(&drill, false)))
    }

    async fn list_drills(
        &self,
        request: Request<ListDrillsRequest>,
    ) -> Result<Response<ListDrillsReply>, Status> {
        self.authorize(&request, READ, "drill ls")?;
        let drills = self
            .shared
            .catalog
            .drills()
            .values()?
            .iter()
            .rev()
            .map(|d| drill_info(d, false))
            .collect();
        Ok(Response::new(ListDrillsReply { drills }))
    }

    async fn get_drill(
        &self,
        request: Request<GetDrillRequest>,
    ) -> Result<Response<DrillInfo>, Status> {
        self.authorize(&request, READ, "drill show")?;
        let want = request.into_inner().id;
        let mut found: Vec<crate::recovery::DrillRecord> = self
            .shared
            .catalog
            .drills()
            .values()?
            .into_iter()
            .filter(|d| d.id == want || (want.len() >= 8 && d.id.starts_with(&want)))
            .collect();
        let d = one_of("drill", &want, &mut found)?;
        Ok(Response::new(drill_info(&d, true)))
    }

    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyReply>, Status> {
        let id = self.authorize(&request, OPERATE, "verify")?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        let only = (!r.location.is_empty()).then_some(r.location.as_str());
        if let Some(l) = only {
            if !self.shared.locations.iter().any(|x| x.name == l) {
                return Err(Status::not_found(format!(
                    "no location {l:?}; see `trireme locations ls`"
                )));
            }
        }
        let snapshot = if r.snapshot_id.is_empty() {
            None
        } else {
            Some(self.find_snapshot(&r.snapshot_id)?)
        };
        self.audit_ok(
            &id,
            peer,
            "verify",
            format!(
                "deep={} location={} snapshot={}",
                r.deep, r.location, r.snapshot_id
            ),
        );
        let report = self
            .shared
            .replicator
            .verify_now(r.deep, only, self.shared.now())
            .await?;
        let mut problems = report.problems;
        let sites: Vec<(String, trireme_common::DynBackend)> = self
            .shared
            .audit_mirrors
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o == n))
            .cloned()
            .collect();
        for p in crate::attribution::unbelieved_index_objects(&self.shared.catalog, &sites).await {
            self.shared.record(
                crate::audit::Event::controller("unattributed object", "verify").problem(p.clone()),
            );
            problems.push(p);
        }
        if let Some(s) = snapshot {
            // Report on this snapshot's copies after the repair pass.
            if let Some(rec) = self.shared.catalog.snapshots().get(&s.id)? {
                for (loc, c) in &rec.copies {
                    if !matches!(c, CopyState::Verified { .. }) {
                        problems.push(format!(
                            "snapshot {}: copy at {loc} is not verified ({c:?})",
                            s.id.short()
                        ));
                    }
                }
            }
        }
        Ok(Response::new(VerifyReply {
            objects_checked: report.checked,
            bytes_read: report.bytes_read,
            problems,
            repaired: report.repaired,
            unrepaired: report.unrepaired,
            objects_copied: report.copied,
            bytes_copied: report.copied_bytes,
        }))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        self.authorize(&request, READ, "status")?;
        let now = self.shared.now();
        let agents = self.shared.catalog.agents().entries()?;
        let mut reply = StatusReply {
            version: env!("CARGO_PKG_VERSION").to_string(),
            agents_total: agents.len() as u32,
            ..Default::default()
        };
        for (name, a) in &agents {
            if self.shared.agents.is_connected(name) {
                reply.agents_connected += 1;
            } else {
                reply.problems.push(format!(
                    "agent {name} ({}) is not connected (last seen {})",
                    a.hostname,
                    a.last_seen.format("%Y-%m-%d %H:%M:%S UTC")
                ));
            }
        }
        let day_ago = now - ChronoDuration::hours(24);
        for j in self.shared.catalog.jobs().values()? {
            match &j.state {
                JobState::Queued => reply.jobs_queued += 1,
                JobState::Assigned { .. } | JobState::Running { .. } => reply.jobs_running += 1,
                JobState::Failed { finished, .. } if finished >= &day_ago => {
                    reply.jobs_failed_24h += 1;
                }
                _ => {}
            }
        }
        let want = self.shared.locations.len();
        reply.locations_total = want as u32;
        for p in crate::replication::protection(&self.shared.catalog, want)? {
            if p.full.is_none() {
                reply.problems.push(format!(
                    "{}: no snapshot is verified at all {want} locations yet (newest {}: {}/{want})",
                    p.source,
                    p.newest.id.short(),
                    p.newest_verified
                ));
            }
            reply.protection.push(SourceProtection {
                source: Some(source_ref(&p.source)),
                snapshot_id: p.full.as_ref().map(|s| s.id.to_hex()).unwrap_or_default(),
                snapshot_time_unix: p.full.as_ref().map_or(0, |s| unix(s.time)),
                newest_snapshot_id: p.newest.id.to_hex(),
                newest_verified_copies: p.newest_verified as u32,
            });
        }
        reply.problems.extend(super::volume_problems(
            &self
                .shared
                .volumes
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ));
        for h in crate::recovery::health(&self.shared.catalog, want, now)? {
            for p in &h.problems {
                reply.problems.push(format!("{}: {p}", h.source));
            }
            let t = h.last_test.as_ref();
            reply.recovery.push(SourceRecovery {
                source: Some(source_ref(&h.source)),
                state: if h.red() { "red" } else { "green" }.to_string(),
                rpo_secs: h.rpo.map_or(0.0, |d| d.as_secs_f64()),
                age_secs: h.age.map_or(-1.0, |d| d.as_secs_f64()),
                rto_secs: h.rto.map_or(0.0, |d| d.as_secs_f64()),
                last_test_unix: t.and_then(|t| t.finished).map_or(0, unix),
                last_test_ok: t.is_some_and(|t| t.ok),
                last_test_secs: t.map_or(0.0, |t| t.duration_secs),
                problems: h.problems.clone(),
            });
        }
        for (name, st) in self.shared.replicator.states() {
            if !st.reachable || !st.last_error.is_empty() {
                reply.problems.push(format!(
                    "location {name}: {}",
                    if st.last_error.is_empty() {
                        "unreachable".to_string()
                    } else {
                        st.last_error.clone()
                    }
                ));
            }
        }
        for (source, state) in self.shared.catalog.schedule().entries()? {
            if let Some(g) = &state.gave_up {
                if state.last_success.is_none_or(|t| t < g.at) {
                    reply.problems.push(format!(
                        "{source}: the run for {} failed {} times and was given up",
                        g.slot.format("%Y-%m-%d %H:%M UTC"),
                        g.attempts
                    ));
                }
            }
        }
        Ok(Response::new(reply))
    }

    async fn prune(&self, request: Request<PruneRequest>) -> Result<Response<PruneReply>, Status> {
        let action = super::prune_rpc::ACTION;
        let id = self.authorize(&request, OPERATE, action)?;
        let peer = request.remote_addr();
        // Deleting backups is as sensitive as restoring them. A dry run
        // deletes nothing: the role suffices (it is still audited).
        let mfa = if request.get_ref().dry_run {
            " (dry run: no second factor needed)"
        } else {
            mfa_note(self.second_factor(&request, &id, action).await?)
        };
        let reply =
            super::prune_rpc::run(&self.shared, &id, peer, mfa, request.into_inner()).await?;
        Ok(Response::new(reply))
    }

    async fn list_audit(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditReply>, Status> {
        self.list_audit_rpc(request)
    }

    async fn verify_audit(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditReply>, Status> {
        self.verify_audit_rpc(request).await
    }

    async fn mfa_enroll(
        &self,
        request: Request<MfaEnrollRequest>,
    ) -> Result<Response<MfaEnrollReply>, Status> {
        self.mfa_enroll_rpc(request).await
    }

    async fn mfa_confirm(
        &self,
        request: Request<MfaConfirmRequest>,
    ) -> Result<Response<MfaConfirmReply>, Status> {
        self.mfa_confirm_rpc(request).await
    }

    async fn export_key(
        &self,
        request: Request<trireme_proto::v1::ExportKeyRequest>,
    ) -> Result<Response<trireme_proto::v1::ExportKeyReply>, Status> {
        self.export_key_rpc(request).await
    }
}

/// A restore test as the CLI shows it.
pub fn restore_test_info(t: &crate::recovery::RestoreTestRecord) -> RestoreTestInfo {
    RestoreTestInfo {
        job_id: t.job.to_string(),
        source: Some(source_ref(&t.source)),
        snapshot_id: t.snapshot.to_hex(),
        target: t.target.clone(),
        started_unix: unix(t.started),
        finished_unix: t.finished.map_or(0, unix),
        duration_secs: t.duration_secs,
        rto_secs: t.rto.map_or(0.0, |d| d.as_secs_f64()),
        ok: t.ok,
        checks: t.checks.clone(),
        error: t.error.clone(),
        drill_id: t.drill.clone().unwrap_or_default(),
        location: t.location.clone().unwrap_or_default(),
    }
}

/// A drill as the CLI shows it; `report`: with the Markdown and HTML.
pub fn drill_info(d: &crate::recovery::DrillRecord, report: bool) -> DrillInfo {
    DrillInfo {
        id: d.id.clone(),
        location: d.location.clone().unwrap_or_default(),
        by: d.by.clone(),
        started_unix: unix(d.started),
        finished_unix: d.finished.map_or(0, unix),
        ok: d.ok(),
        steps_total: d.steps.len() as u32,
        steps_failed: d
            .steps
            .iter()
            .filter(|s| {
                !s.ok()
                    && (s.result.as_ref().is_some_and(|r| r.finished.is_some())
                        || !s.error.is_empty())
            })
            .count() as u32,
        markdown: if report {
            crate::recovery::report_markdown(d)
        } else {
            String::new()
        },
        html: if report {
            crate::recovery::report_html(d)
        } else {
            String::new()
        },
    }
}
