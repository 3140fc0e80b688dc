//! `AgentService`: agents register and hold one `Session` stream each. This
//! module also keeps the table of connected agents, sends them their queued
//! jobs, fails the jobs of agents that stay away too long, and ends the
//! session of an agent whose certificate is revoked (the watchdog checks
//! every connected agent's serial against the CRL each second, and each
//! session checks its own before it handles a message), audited.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use trireme_common::Id;
use trireme_net::wire::summary_from_wire;
use trireme_net::{Identity, Role};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_server::AgentService;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{
    AgentMessage, CancelJob, ControllerMessage, JobAssignment, JobKind as WireJobKind, JobResult,
    LocationRef, RegisterReply, RegisterRequest, ResultAck, SourceInfo,
};

use super::Shared;
use crate::attribution::{CheckSite, Refusal};
use crate::catalog::SourceRecord;
use crate::error::{Error, Result};
use crate::jobs::{self, Job, JobEvent, JobId, JobKind, JobState, Progress};
use crate::policy::BackupMode;

/// How long a new session may take to send its `Hello`.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the watchdog looks for lost agents and undelivered jobs.
const WATCHDOG_EVERY: Duration = Duration::from_secs(1);

type Outbound = mpsc::UnboundedSender<Result<ControllerMessage, Status>>;

/// One connected agent.
struct Conn {
    session: u64,
    /// The certificate it connected with (its serial is checked against
    /// the CRL while the session lasts).
    identity: trireme_net::Identity,
    peer: Option<std::net::SocketAddr>,
    tx: Outbound,
    /// Tells the session's reader to end (and drop its sender).
    stop: Arc<tokio::sync::Notify>,
    connected_at: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    running: Vec<String>,
}

#[derive(Default)]
struct RegistryInner {
    conns: HashMap<String, Conn>,
    /// Agents that were connected and are not: since when.
    gone_since: HashMap<String, Instant>,
    next_session: u64,
}

/// The agents connected now.
pub struct Registry {
    inner: Mutex<RegistryInner>,
    started: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            inner: Mutex::default(),
            started: Instant::now(),
        }
    }
}

/// What the registry knows about a connected agent.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// When its session started.
    pub connected_at: DateTime<Utc>,
    /// Its last message.
    pub last_seen: DateTime<Utc>,
    /// The jobs its last heartbeat said it runs.
    pub running: Vec<String>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn connect(
        &self,
        identity: &trireme_net::Identity,
        peer: Option<std::net::SocketAddr>,
        tx: Outbound,
        stop: Arc<tokio::sync::Notify>,
        now: DateTime<Utc>,
    ) -> u64 {
        let agent = identity.name.as_str();
        let mut g = self.lock();
        g.next_session += 1;
        let session = g.next_session;
        g.gone_since.remove(agent);
        if let Some(old) = g.conns.insert(
            agent.to_string(),
            Conn {
                session,
                identity: identity.clone(),
                peer,
                tx,
                stop,
                connected_at: now,
                last_seen: now,
                running: Vec::new(),
            },
        ) {
            // The old stream ends when its reader drops the last sender.
            old.stop.notify_one();
            tracing::info!(%agent, "agent opened a new session; closing its previous one");
        }
        session
    }

    fn disconnect(&self, agent: &str, session: u64) -> bool {
        let mut g = self.lock();
        if g.conns.get(agent).is_some_and(|c| c.session == session) {
            g.conns.remove(agent);
            g.gone_since.insert(agent.to_string(), Instant::now());
            true
        } else {
            false
        }
    }

    fn touch(&self, agent: &str, session: u64, now: DateTime<Utc>, running: Option<Vec<String>>) {
        let mut g = self.lock();
        if let Some(c) = g.conns.get_mut(agent).filter(|c| c.session == session) {
            c.last_seen = now;
            if let Some(r) = running {
                c.running = r;
            }
        }
    }

    fn sender(&self, agent: &str) -> Option<Outbound> {
        self.lock().conns.get(agent).map(|c| c.tx.clone())
    }

    /// Whether `agent` has a session now.
    pub fn is_connected(&self, agent: &str) -> bool {
        self.lock().conns.contains_key(agent)
    }

    /// The connected agents' names.
    pub fn connected(&self) -> Vec<String> {
        self.lock().conns.keys().cloned().collect()
    }

    /// Details of a connected agent.
    pub fn info(&self, agent: &str) -> Option<ConnInfo> {
        self.lock().conns.get(agent).map(|c| ConnInfo {
            connected_at: c.connected_at,
            last_seen: c.last_seen,
            running: c.running.clone(),
        })
    }

    /// How long `agent` has been away: `None` while connected; since the
    /// controller started for an agent not seen since.
    fn absent_for(&self, agent: &str) -> Option<Duration> {
        let g = self.lock();
        if g.conns.contains_key(agent) {
            return None;
        }
        Some(
            g.gone_since
                .get(agent)
                .map_or(self.started, |t| *t)
                .elapsed(),
        )
    }

    /// End every session (shutdown): agents see their stream end and
    /// reconnect to the next controller.
    pub fn close_all(&self) {
        let mut g = self.lock();
        let conns: Vec<(String, Conn)> = g.conns.drain().collect();
        for (n, c) in conns {
            c.stop.notify_one();
            g.gone_since.insert(n, Instant::now());
        }
    }

    /// End the sessions whose certificate serial is in `revoked`; who they
    /// were and where from.
    fn close_revoked(
        &self,
        revoked: &HashSet<String>,
    ) -> Vec<(trireme_net::Identity, Option<std::net::SocketAddr>)> {
        if revoked.is_empty() {
            return Vec::new();
        }
        let mut g = self.lock();
        let names: Vec<String> = g
            .conns
            .iter()
            .filter(|(_, c)| revoked.contains(&c.identity.serial))
            .map(|(n, _)| n.clone())
            .collect();
        let mut closed = Vec::new();
        for n in names {
            if let Some(c) = g.conns.remove(&n) {
                // The agent learns why; the stream ends when its reader
                // drops the last sender.
                let _ = c.tx.send(Err(Status::unauthenticated(format!(
                    "the certificate of {} has been revoked: session closed",
                    c.identity
                ))));
                c.stop.notify_one();
                g.gone_since.insert(n, Instant::now());
                closed.push((c.identity, c.peer));
            }
        }
        closed
    }

    /// Send a message to a connected agent; false when it is not connected.
    fn send(&self, agent: &str, msg: CtlMsg) -> bool {
        self.sender(agent)
            .is_some_and(|tx| tx.send(Ok(ControllerMessage { msg: Some(msg) })).is_ok())
    }
}

/// Run a catalog operation that may wait for the disk without stalling the
/// runtime's other tasks.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Ask agent `agent` to stop job `job`.
pub(crate) fn send_cancel(shared: &Shared, agent: &str, job: &JobId, reason: &str) -> bool {
    shared.agents.send(
        agent,
        CtlMsg::Cancel(CancelJob {
            job_id: job.to_string(),
            reason: reason.to_string(),
        }),
    )
}

/// Send `agent` its queued jobs, in the background.
pub fn dispatch_soon(shared: &Arc<Shared>, agent: String) {
    let s = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = dispatch(&s, &agent) {
            tracing::error!(%agent, error = %e, "cannot send queued jobs to the agent");
        }
    });
}

/// Send `agent` its queued jobs now, when it is connected.
fn dispatch(shared: &Shared, agent: &str) -> Result<()> {
    // A prune is running: its end dispatches again.
    let Ok(_no_prune) = shared.prune_gate.try_read() else {
        return Ok(());
    };
    let Some(tx) = shared.agents.sender(agent) else {
        return Ok(());
    };
    let queued = blocking(|| jobs::queued_for_agent(&shared.catalog, agent))?;
    for job in queued {
        let assignment = assignment(shared, &job)?;
        let assigned = blocking(|| {
            jobs::update_job(
                &shared.catalog,
                &job.id,
                &JobEvent::Assign {
                    agent: agent.to_string(),
                },
                shared.now(),
            )
        });
        match assigned {
            Ok(_) => {}
            // Another dispatch got there first.
            Err(Error::IllegalTransition { .. }) => continue,
            Err(e) => return Err(e),
        }
        shared.job_changed(job.id);
        tracing::info!(job = %job.id, %agent, source = %job.source, "sent a job to its agent");
        if tx
            .send(Ok(ControllerMessage {
                msg: Some(CtlMsg::Assign(assignment)),
            }))
            .is_err()
        {
            // The session ended: the agent will not confirm the job when it
            // reconnects, which fails it cleanly (and retries it).
            break;
        }
    }
    Ok(())
}

/// The snapshot an incremental backup job compares against: its source's
/// latest (none for a full backup or a first one).
///
/// # Errors
/// Catalog errors.
pub(crate) fn backup_parent(shared: &Shared, job: &Job) -> Result<Option<trireme_common::Id>> {
    if job.mode == BackupMode::Full || !job.is_backup() {
        return Ok(None);
    }
    Ok(shared
        .catalog
        .schedule()
        .get(&job.source)?
        .and_then(|s| s.last_snapshot)
        .map(|(_, id)| id))
}

fn assignment(shared: &Shared, job: &Job) -> Result<JobAssignment> {
    let locations = shared
        .locations
        .iter()
        .map(|l| LocationRef {
            name: l.name.clone(),
            url: l.agent_url.clone(),
            config_sha256: shared.custody.config_sha256().to_vec(),
        })
        .collect();
    let mut a = JobAssignment {
        job_id: job.id.to_string(),
        source_name: job.source.name.clone(),
        attempt: job.attempt,
        locations,
        ..Default::default()
    };
    match &job.kind {
        JobKind::Backup => {
            a.set_kind(WireJobKind::Backup);
            a.full = job.mode == BackupMode::Full;
            a.parent_snapshot_id = backup_parent(shared, job)?
                .map(|id| id.to_hex())
                .unwrap_or_default();
        }
        JobKind::Restore {
            snapshot,
            target,
            purpose,
            only_location,
            ..
        } => {
            a.set_kind(WireJobKind::Restore);
            a.snapshot_id = snapshot.to_hex();
            a.restore_target = target.clone();
            a.restore_test = !matches!(purpose, crate::jobs::RestorePurpose::Restore);
            if let Some(only) = only_location {
                a.locations.retain(|l| &l.name == only);
            }
        }
    }
    Ok(a)
}

/// Record what an agent reports about itself and its sources.
fn register(
    shared: &Shared,
    agent: &str,
    hostname: &str,
    version: &str,
    sources: &[SourceInfo],
) -> Result<()> {
    let now = shared.now();
    let records: Vec<(String, SourceRecord)> = sources
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SourceRecord {
                    kind: s.kind.clone(),
                    details: s.details.clone().into_iter().collect(),
                    last_seen: now,
                },
            )
        })
        .collect();
    blocking(|| {
        shared
            .catalog
            .register_agent(agent, hostname, version, &records, now)
    })?;
    Ok(())
}

/// Store a job result an agent reports. A backup's result is believed only
/// after [`crate::attribution::check_backup`] confirmed it at the location;
/// a refused one fails the job (audited) and nothing of it is recorded.
/// Results for jobs that already ended (cancelled, or failed while the agent
/// was away) go through the same check and are kept when it passes: the
/// data is in the repository and valid.
///
/// # Errors
/// A result that cannot be checked now (location unreachable, catalog
/// errors): it is not acknowledged, so the agent reports it again.
async fn handle_result(
    shared: &Shared,
    agent: &Identity,
    peer: Option<std::net::SocketAddr>,
    r: &JobResult,
) -> Result<()> {
    let name = agent.name.as_str();
    let id: JobId = r.job_id.parse()?;
    let Some(job) = shared.catalog.jobs().get(&id)? else {
        tracing::warn!(agent = %name, job = %r.job_id, "result for a job the catalog does not know; ignored");
        return Ok(());
    };
    if job.agent() != name {
        return Err(Error::WrongAgent {
            job: id.to_string(),
            expected: job.agent().to_string(),
            got: name.to_string(),
        });
    }
    let now = shared.now();
    if r.ok && matches!(job.state, JobState::Assigned { .. }) {
        // Finished before its first progress report: it did start.
        start(shared, &id, name, now)?;
    }
    if r.ok {
        let outcome = match &job.kind {
            JobKind::Backup => match check_result(shared, &job, name, r).await {
                Ok(checked) => {
                    blocking(|| {
                        crate::attribution::believe(
                            &shared.catalog,
                            checked.index_objects.clone(),
                            Some(id),
                            now,
                        )
                    })?;
                    let record = checked.record;
                    let snapshot = record.id;
                    match blocking(|| jobs::complete_job(&shared.catalog, &id, name, &record, now))
                    {
                        Err(Error::IllegalTransition { from, .. }) => {
                            if shared.catalog.snapshots().get(&snapshot)?.is_none() {
                                blocking(|| shared.catalog.record_snapshot(&record))?;
                            }
                            tracing::warn!(job = %id, agent = %name, state = %from, snapshot = %snapshot,
                                "late result: the job had already ended; its snapshot was checked at the location and is kept in the catalog");
                            Ok(snapshot)
                        }
                        other => other.map(|_| snapshot),
                    }
                }
                Err(Refusal::Later(why)) => {
                    return Err(Error::Unavailable(format!(
                        "cannot check the result of job {id} now: {why}"
                    )))
                }
                Err(Refusal::Refused(why)) => {
                    tracing::warn!(target: "trireme::audit", job = %id, agent = %name, reason = %why, "backup result refused");
                    shared.record(
                        crate::audit::Event::by(
                            agent,
                            "backup result",
                            format!("job {id} source {}", job.source),
                        )
                        .refused(why.clone())
                        .from_peer(peer),
                    );
                    let event = JobEvent::Fail {
                        agent: Some(name.to_string()),
                        reason: why,
                    };
                    match blocking(|| jobs::update_job(&shared.catalog, &id, &event, now)) {
                        Ok(_) | Err(Error::IllegalTransition { .. }) => {}
                        Err(e) => return Err(e),
                    }
                    shared.job_changed(id);
                    shared.scheduler.wake();
                    return Ok(());
                }
            },
            JobKind::Restore { snapshot, .. } => {
                let snapshot = *snapshot;
                blocking(|| {
                    jobs::update_job(
                        &shared.catalog,
                        &id,
                        &JobEvent::Succeed {
                            agent: name.to_string(),
                            snapshot,
                        },
                        now,
                    )?;
                    // What the agent checked after restoring (key counts, row checksums, ...).
                    if let Some(mut j) = shared.catalog.jobs().get(&id)? {
                        j.checks.clone_from(&r.checks);
                        j.took_ms = r
                            .summary
                            .as_ref()
                            .map(|s| (s.duration_secs * 1000.0) as u64);
                        shared.catalog.jobs().insert(&id, &j)?;
                    }
                    Ok(snapshot)
                })
            }
        };
        match outcome {
            Ok(snapshot) => {
                tracing::info!(job = %id, agent = %name, snapshot = %snapshot.short(), "job succeeded");
            }
            Err(Error::IllegalTransition { from, .. }) => {
                tracing::info!(job = %id, agent = %name, state = %from, "result for a job that had already ended; ignored");
            }
            Err(e) => return Err(e),
        }
    } else {
        let event = JobEvent::Fail {
            agent: Some(name.to_string()),
            reason: r.error_message.clone(),
        };
        match blocking(|| jobs::update_job(&shared.catalog, &id, &event, now)) {
            Ok(u) => {
                tracing::warn!(job = %id, agent = %name, reason = %r.error_message, follow_up = ?u.follow_up, "job failed");
            }
            Err(Error::IllegalTransition { from, .. }) => {
                tracing::info!(job = %id, agent = %name, state = %from, "failure report for a job that had already ended; ignored");
            }
            Err(e) => return Err(e),
        }
    }
    shared.job_changed(id);
    shared.scheduler.wake();
    if r.ok && job.is_backup() {
        shared.replicate_now.notify_one();
    }
    Ok(())
}

/// Check a backup result at the location the agent names (see
/// [`crate::attribution::check_backup`]).
async fn check_result(
    shared: &Shared,
    job: &Job,
    agent: &str,
    r: &JobResult,
) -> std::result::Result<crate::attribution::Checked, Refusal> {
    let refused = |why: String| {
        Refusal::Refused(format!(
            "the result of job {} was not recorded: {why}",
            job.id
        ))
    };
    let snapshot = Id::from_hex(&r.snapshot_id).ok_or_else(|| {
        refused(format!(
            "the agent reported success without a valid snapshot id ({:?})",
            r.snapshot_id
        ))
    })?;
    let Some((name, backend)) = shared.audit_mirrors.iter().find(|(n, _)| *n == r.location) else {
        return Err(refused(format!(
            "the agent names location {:?}, which is not one of this controller's",
            r.location
        )));
    };
    let writer = trireme_common::attribution::Writer {
        job: *job.id.0.as_bytes(),
        agent: agent.to_string(),
    };
    let index = shared
        .keyed_index(name, Some(writer))
        .await
        .map_err(|e| Refusal::Later(format!("cannot read the index at {name}: {e}")))?;
    let site = CheckSite {
        name,
        backend,
        index: &index,
        custody: &shared.custody,
    };
    crate::attribution::check_backup(&shared.catalog, &site, job, agent, snapshot, shared.now())
        .await
}

/// Mark an assigned job as started by `agent`.
fn start(shared: &Shared, id: &JobId, agent: &str, now: DateTime<Utc>) -> Result<()> {
    let event = JobEvent::Start {
        agent: agent.to_string(),
    };
    blocking(|| jobs::update_job(&shared.catalog, id, &event, now)).map(|_| ())
}

fn handle_progress(shared: &Shared, agent: &str, p: &trireme_proto::v1::JobProgress) -> Result<()> {
    let id: JobId = p.job_id.parse()?;
    let event = JobEvent::Progress {
        agent: agent.to_string(),
        progress: Progress {
            bytes_done: p.bytes_read,
            bytes_total: (p.bytes_total > 0).then_some(p.bytes_total),
            files_done: p.files,
            bytes_uploaded: p.bytes_uploaded,
        },
    };
    let now = shared.now();
    match jobs::update_job(&shared.catalog, &id, &event, now) {
        Ok(_) => {}
        // The first progress report is the agent's "started".
        Err(Error::IllegalTransition { from, .. }) if from == "assigned" => {
            start(shared, &id, agent, now)?;
            jobs::update_job(&shared.catalog, &id, &event, now)?;
        }
        // Cancelled or failed meanwhile: the cancel is on its way.
        Err(Error::IllegalTransition { .. }) => return Ok(()),
        Err(e) => return Err(e),
    }
    shared.job_changed(id);
    Ok(())
}

/// End (and audit) the sessions of connected agents whose certificate the
/// CRL now lists. They cannot come back: the TLS handshake checks the same
/// CRL.
pub fn close_revoked_sessions(shared: &Shared) {
    let revoked = shared.authz.revoked_serials();
    for (id, peer) in shared.agents.close_revoked(&revoked) {
        tracing::warn!(agent = %id.name, serial = %id.serial, "closed the session of an agent whose certificate was revoked");
        shared.record(
            crate::audit::Event::by(&id, "agent session", "session closed")
                .refused(format!(
                    "certificate serial {} is revoked (CRL): its open session was closed",
                    id.serial
                ))
                .from_peer(peer),
        );
    }
}

/// Fail the jobs of agents away longer than the agent timeout, close the
/// sessions of revoked agents, and send connected agents jobs that are
/// still queued. Runs until `stop`.
pub async fn watchdog(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(WATCHDOG_EVERY);
    let mut sweep = 0u32;
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = every.tick() => {}
        }
        close_revoked_sessions(&shared);
        if let Err(e) = fail_lost_jobs(&shared) {
            tracing::error!(error = %e, "watchdog: cannot check for lost jobs");
        }
        sweep += 1;
        if sweep % 5 == 0 {
            for agent in shared.agents.connected() {
                if let Err(e) = dispatch(&shared, &agent) {
                    tracing::error!(%agent, error = %e, "cannot send queued jobs to the agent");
                }
            }
        }
    }
}

fn fail_lost_jobs(shared: &Shared) -> Result<()> {
    for (_, id) in shared.catalog.active().entries()? {
        let Some(job) = shared.catalog.jobs().get(&id)? else {
            continue;
        };
        if !matches!(
            job.state,
            JobState::Assigned { .. } | JobState::Running { .. }
        ) {
            continue;
        }
        let agent = job.agent().to_string();
        let Some(away) = shared.agents.absent_for(&agent) else {
            continue;
        };
        if away < shared.agent_timeout {
            continue;
        }
        let reason = format!(
            "agent {agent} has not been connected for {}s (agent_timeout {}s): the job is considered lost",
            away.as_secs(),
            shared.agent_timeout.as_secs()
        );
        let event = JobEvent::Fail {
            agent: None,
            reason: reason.clone(),
        };
        match blocking(|| jobs::update_job(&shared.catalog, &id, &event, shared.now())) {
            Ok(u) => {
                tracing::warn!(job = %id, %agent, follow_up = ?u.follow_up, "{reason}");
                shared.job_changed(id);
                shared.scheduler.wake();
            }
            Err(Error::IllegalTransition { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Implementation of `trireme.v1.AgentService`.
pub struct AgentApi {
    shared: Arc<Shared>,
}

impl AgentApi {
    /// The service over the controller's shared state.
    pub fn new(shared: Arc<Shared>) -> Self {
        AgentApi { shared }
    }

    /// Audit an agent certificate speaking for another agent's name.
    fn audit_claim(
        &self,
        id: &trireme_net::Identity,
        peer: Option<std::net::SocketAddr>,
        action: &str,
        status: &Status,
    ) {
        self.shared.record(
            crate::audit::Event::by(id, action, "")
                .refused(status.message())
                .from_peer(peer),
        );
    }
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let id = self.shared.authorize_audited(
            &request,
            &[Role::Agent],
            "agent register",
            "AgentService.Register",
        )?;
        let peer = request.remote_addr();
        let r = request.into_inner();
        check_claimed_name(&id.name, &r.agent_name)
            .inspect_err(|s| self.audit_claim(&id, peer, "agent register", s))?;
        register(
            &self.shared,
            &id.name,
            &r.hostname,
            &r.agent_version,
            &r.sources,
        )?;
        tracing::info!(agent = %id.name, host = %r.hostname, sources = r.sources.len(), "agent registered");
        Ok(Response::new(RegisterReply {
            agent_name: id.name,
            heartbeat_interval_secs: u32::try_from(self.shared.heartbeat_interval.as_secs())
                .unwrap_or(u32::MAX),
        }))
    }

    type SessionStream = SessionStream;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let id = self.shared.authorize_audited(
            &request,
            &[Role::Agent],
            "agent session",
            "AgentService.Session",
        )?;
        let peer = request.remote_addr();
        let agent = id.name.clone();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Hello within 30 s of opening the session")
            })??;
        let Some(AgentMessage {
            msg: Some(AgentMsg::Hello(hello)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "the first message of a Session must be Hello",
            ));
        };
        check_claimed_name(&agent, &hello.agent_name)
            .inspect_err(|s| self.audit_claim(&id, peer, "agent session", s))?;
        let shared = self.shared.clone();
        register(
            &shared,
            &agent,
            &hello.hostname,
            &hello.agent_version,
            &hello.sources,
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        for r in &hello.pending_results {
            match handle_result(&shared, &id, peer, r).await {
                Ok(()) => {
                    let _ = tx.send(Ok(ack(&r.job_id)));
                }
                Err(e) => {
                    tracing::error!(%agent, job = %r.job_id, error = %e, "cannot store a result the agent kept while away");
                }
            }
        }
        let mut running = HashSet::new();
        for j in &hello.running_job_ids {
            match j.parse::<JobId>() {
                Ok(id) => {
                    running.insert(id);
                }
                Err(_) => tracing::warn!(%agent, job = %j, "agent runs a job with a malformed id"),
            }
        }
        let settled =
            blocking(|| jobs::settle_agent(&shared.catalog, &agent, &running, shared.now()))?;
        for id in &settled.failed {
            tracing::warn!(%agent, job = %id, "{}", jobs::AGENT_LOST_JOB_REASON);
            shared.job_changed(*id);
        }
        if !settled.failed.is_empty() {
            shared.scheduler.wake();
        }
        for id in &settled.stray {
            let _ = tx.send(Ok(ControllerMessage {
                msg: Some(CtlMsg::Cancel(CancelJob {
                    job_id: id.to_string(),
                    reason: "the controller has no such unfinished job for this agent".into(),
                })),
            }));
        }
        let stop = Arc::new(tokio::sync::Notify::new());
        let session = shared
            .agents
            .connect(&id, peer, tx.clone(), stop.clone(), shared.now());
        shared.agents.touch(
            &agent,
            session,
            shared.now(),
            Some(hello.running_job_ids.clone()),
        );
        tracing::info!(%agent, host = %hello.hostname, version = %hello.agent_version,
            sources = hello.sources.len(), running = running.len(),
            resumed = settled.resumed.len(), failed = settled.failed.len(),
            "agent connected");
        let liveness = shared.heartbeat_interval * 3;
        let s = shared.clone();
        let name = agent.clone();
        let ident = id.clone();
        let serial = id.serial.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    m = tokio::time::timeout(liveness, inbound.message()) => m,
                    () = stop.notified() => {
                        tracing::info!(agent = %name, "closing the agent's session");
                        break;
                    }
                };
                let msg = match next {
                    Err(_) => {
                        tracing::warn!(agent = %name, "no message from the agent for {}s; closing its session", liveness.as_secs());
                        break;
                    }
                    Ok(Err(status)) => {
                        tracing::info!(agent = %name, reason = %status.message(), "agent session broke");
                        break;
                    }
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(m))) => m,
                };
                // Nothing from a certificate revoked meanwhile is believed.
                if s.authz.is_revoked(&serial) {
                    close_revoked_sessions(&s);
                    break;
                }
                s.agents.touch(&name, session, s.now(), None);
                match msg.msg {
                    Some(AgentMsg::Heartbeat(h)) => {
                        let now = s.now();
                        {
                            let mut vols = s.volumes.lock().unwrap_or_else(|e| e.into_inner());
                            for v in &h.volumes {
                                if let Ok(id) =
                                    crate::catalog::SourceId::new(name.clone(), v.source.clone())
                                {
                                    vols.insert(
                                        id,
                                        super::Volume {
                                            path: v.path.clone(),
                                            total_bytes: v.total_bytes,
                                            used_bytes: v.used_bytes,
                                            at: now,
                                        },
                                    );
                                }
                            }
                        }
                        s.agents.touch(&name, session, now, Some(h.running_job_ids));
                    }
                    Some(AgentMsg::Progress(p)) => {
                        if let Err(e) = handle_progress(&s, &name, &p) {
                            tracing::warn!(agent = %name, job = %p.job_id, error = %e, "cannot record progress");
                        }
                    }
                    Some(AgentMsg::Result(r)) => match handle_result(&s, &ident, peer, &r).await {
                        Ok(()) => {
                            let _ = tx.send(Ok(ack(&r.job_id)));
                        }
                        Err(e) => {
                            tracing::error!(agent = %name, job = %r.job_id, error = %e, "cannot store a job result; the agent keeps it and reports it again");
                        }
                    },
                    Some(AgentMsg::Hello(_)) => {
                        tracing::warn!(agent = %name, "ignoring a second Hello in one session");
                    }
                    None => {}
                }
            }
            if s.agents.disconnect(&name, session) {
                tracing::info!(agent = %name, "agent disconnected");
            }
        });
        dispatch_soon(&shared, agent);
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        )))
    }
}

fn ack(job_id: &str) -> ControllerMessage {
    ControllerMessage {
        msg: Some(CtlMsg::Ack(ResultAck {
            job_id: job_id.to_string(),
        })),
    }
}

/// Fuzzing entry point: given an `AgentMessage` as the `Session` stream
/// decodes it (prost, in the fuzz target), run the checks the handlers above apply to its fields
/// before anything reaches the catalog: the claimed name, agent and source
/// names, job ids, snapshot ids, volumes, and the conversions of a result
/// (summary, time, duration, position). Not part of the API.
///
/// # Errors
/// What a handler would refuse, as text.
#[doc(hidden)]
pub fn fuzz_agent_message(agent: &str, msg: AgentMessage) -> std::result::Result<(), String> {
    let result = |r: &JobResult| -> std::result::Result<(), String> {
        let _: JobId = r.job_id.parse().map_err(|e: Error| e.to_string())?;
        let _ = ack(&r.job_id);
        if r.ok {
            Id::from_hex(&r.snapshot_id).ok_or("no valid snapshot id")?;
        }
        let summary = r
            .summary
            .as_ref()
            .map(summary_from_wire)
            .unwrap_or_default();
        let _ = (
            summary.bytes,
            DateTime::from_timestamp_nanos(r.snapshot_time_ns),
        );
        let _ = r
            .summary
            .as_ref()
            .map(|s| (s.duration_secs * 1000.0) as u64);
        let _: std::collections::BTreeMap<String, String> =
            r.datastore_position.clone().into_iter().collect();
        Ok(())
    };
    match msg.msg {
        Some(AgentMsg::Hello(h)) => {
            check_claimed_name(agent, &h.agent_name).map_err(|s| s.message().to_string())?;
            crate::catalog::validate_name("agent name", agent).map_err(|e| e.to_string())?;
            for s in &h.sources {
                crate::catalog::SourceId::new(agent, s.name.clone()).map_err(|e| e.to_string())?;
            }
            for r in &h.pending_results {
                let _ = result(r);
            }
            for j in &h.running_job_ids {
                let _ = j.parse::<JobId>();
            }
            Ok(())
        }
        Some(AgentMsg::Heartbeat(h)) => {
            for v in &h.volumes {
                if let Ok(id) = crate::catalog::SourceId::new(agent, v.source.clone()) {
                    let vol = super::Volume {
                        path: v.path.clone(),
                        total_bytes: v.total_bytes,
                        used_bytes: v.used_bytes,
                        at: DateTime::UNIX_EPOCH,
                    };
                    let _ = super::volume_problems(&[(id, vol)].into_iter().collect());
                }
            }
            Ok(())
        }
        Some(AgentMsg::Progress(p)) => {
            let _: JobId = p.job_id.parse().map_err(|e: Error| e.to_string())?;
            Ok(())
        }
        Some(AgentMsg::Result(r)) => result(&r),
        None => Ok(()),
    }
}

/// An agent speaks for the name in its certificate only.
fn check_claimed_name(cert_name: &str, claimed: &str) -> Result<(), Status> {
    if claimed.is_empty() || claimed == cert_name {
        Ok(())
    } else {
        tracing::warn!(agent = %cert_name, claimed = %claimed, "refused an agent claiming another name");
        Err(Status::permission_denied(format!(
            "this certificate belongs to agent {cert_name:?} but the agent calls itself {claimed:?}: set `name` in the agent config to the certificate's name, or issue a certificate for {claimed:?}"
        )))
    }
}
