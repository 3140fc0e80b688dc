//! `AgentService`: agents register and hold one `Session` stream each. This
//! module also keeps the table of connected agents, sends them their queued
//! jobs, fails the jobs of agents that stay away too long, and ends the
//! session of an agent whose certificate is revoked (the watchdog checks
//! every connected agent's serial against the CRL each second, and each
//! session checks its own before it handles a message), audited.
//!
//! The handlers decode what agents send ([`super::convert`]) and hand it to
//! [`super::reports`], which checks and records it.

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};
use trireme_net::Role;
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_server::AgentService;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{AgentMessage, ControllerMessage, RegisterReply, RegisterRequest};

use super::reports::{
    backup_parent, handle_progress, handle_result, register, settle, AgentReport,
};
use super::{blocking, convert, Shared};
use crate::error::{Error, Result};
use crate::jobs::{self, JobEvent, JobId, JobState};

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
            .is_some_and(|tx| tx.send(Ok(convert::message(msg))).is_ok())
    }
}

/// Ask agent `agent` to stop job `job`.
pub(crate) fn send_cancel(shared: &Shared, agent: &str, job: &JobId, reason: &str) -> bool {
    shared
        .agents
        .send(agent, convert::cancel(job.to_string(), reason.to_string()))
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
        let mut assignment = convert::assignment(
            &job,
            &shared.locations,
            &shared.custody.config_sha256(),
            backup_parent(shared, &job)?,
        );
        if job.kind == jobs::JobKind::Backup {
            if let Some(p) = blocking(|| shared.catalog.policies().get(&job.source))? {
                convert::with_limits(&mut assignment, &p.policy.limits);
            }
        }
        let assigned = blocking(|| {
            crate::lifecycle::update_job(
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
            .send(Ok(convert::message(CtlMsg::Assign(assignment))))
            .is_err()
        {
            // The session ended: the agent will not confirm the job when it
            // reconnects, which fails it cleanly (and retries it).
            break;
        }
    }
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
        match blocking(|| crate::lifecycle::update_job(&shared.catalog, &id, &event, shared.now()))
        {
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
        let certificate_not_after = trireme_net::tls::peer_not_after(&request);
        let r = request.into_inner();
        check_claimed_name(&id.name, &r.agent_name)
            .and_then(|()| check_agent_version(&r.agent_version))
            .inspect_err(|s| self.audit_claim(&id, peer, "agent register", s))?;
        let now = self.shared.now();
        let sources = convert::source_records(&r.sources, now);
        register(
            &self.shared,
            &id.name,
            &AgentReport {
                hostname: &r.hostname,
                version: &r.agent_version,
                sources: &sources,
                certificate_not_after,
            },
            now,
        )?;
        tracing::info!(agent = %id.name, host = %r.hostname, sources = r.sources.len(), "agent registered");
        Ok(Response::new(convert::register_reply(
            id.name,
            self.shared.heartbeat_interval,
        )))
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
        let certificate_not_after = trireme_net::tls::peer_not_after(&request);
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
            .and_then(|()| check_agent_version(&hello.agent_version))
            .inspect_err(|s| self.audit_claim(&id, peer, "agent session", s))?;
        let shared = self.shared.clone();
        let (tx, rx) = mpsc::unbounded_channel();
        let welcome = welcome(&shared, &id, peer, &hello, certificate_not_after).await?;
        for m in welcome.replies {
            let _ = tx.send(Ok(m));
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
            sources = hello.sources.len(), running = welcome.running,
            resumed = welcome.resumed, failed = welcome.failed,
            "agent connected");
        let liveness = shared.heartbeat_interval * 3;
        let s = shared.clone();
        let name = agent.clone();
        let ident = id.clone();
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
                if s.authz.is_revoked(&ident.serial) {
                    close_revoked_sessions(&s);
                    break;
                }
                if let Some(reply) = on_message(&s, &ident, peer, session, msg).await {
                    let _ = tx.send(Ok(reply));
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

/// What an agent's Hello led to.
struct Welcome {
    /// Acks for the results it kept while away, cancels for jobs it runs
    /// that the controller does not know as its unfinished jobs.
    replies: Vec<ControllerMessage>,
    running: usize,
    resumed: usize,
    failed: usize,
}

/// Admit a session's Hello (its claimed name already checked): record the
/// agent and its sources, take the results it kept while away, and settle
/// the jobs it says it runs. `certificate_not_after`: when the session's
/// client certificate expires.
async fn welcome(
    shared: &Arc<Shared>,
    id: &trireme_net::Identity,
    peer: Option<std::net::SocketAddr>,
    hello: &trireme_proto::v1::Hello,
    certificate_not_after: Option<i64>,
) -> Result<Welcome> {
    let agent = id.name.as_str();
    let now = shared.now();
    let sources = convert::source_records(&hello.sources, now);
    register(
        shared,
        agent,
        &AgentReport {
            hostname: &hello.hostname,
            version: &hello.agent_version,
            sources: &sources,
            certificate_not_after,
        },
        now,
    )?;
    let mut replies = Vec::new();
    for r in &hello.pending_results {
        match handle_result(shared, id, peer, &convert::job_report(r)).await {
            Ok(()) => replies.push(convert::ack(&r.job_id)),
            Err(e) => {
                tracing::error!(%agent, job = %r.job_id, error = %e, "cannot store a result the agent kept while away");
            }
        }
    }
    let (running, settled) = settle(shared, agent, &hello.running_job_ids)?;
    for id in &settled.stray {
        replies.push(convert::message(convert::cancel(
            id.to_string(),
            "the controller has no such unfinished job for this agent".into(),
        )));
    }
    Ok(Welcome {
        replies,
        running,
        resumed: settled.resumed.len(),
        failed: settled.failed.len(),
    })
}

/// One message of an open session (after the Hello); the reply to send, if
/// any (the ack of a stored result).
async fn on_message(
    s: &Arc<Shared>,
    id: &trireme_net::Identity,
    peer: Option<std::net::SocketAddr>,
    session: u64,
    msg: AgentMessage,
) -> Option<ControllerMessage> {
    let name = id.name.as_str();
    s.agents.touch(name, session, s.now(), None);
    match msg.msg {
        Some(AgentMsg::Heartbeat(h)) => {
            let now = s.now();
            let reported = convert::volumes(name, &h.volumes, now);
            for (source, v) in &reported {
                if let Err(e) = crate::growth::record(&s.catalog, source, v, s.volume_sample_every)
                {
                    tracing::warn!(source = %source, error = %e, "cannot keep a volume sample");
                }
            }
            s.volumes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(reported);
            s.agents.touch(name, session, now, Some(h.running_job_ids));
            None
        }
        Some(AgentMsg::Progress(p)) => {
            if let Err(e) = handle_progress(s, name, &p.job_id, convert::progress(&p)) {
                tracing::warn!(agent = %name, job = %p.job_id, error = %e, "cannot record progress");
            }
            None
        }
        Some(AgentMsg::Result(r)) => {
            match handle_result(s, id, peer, &convert::job_report(&r)).await {
                Ok(()) => Some(convert::ack(&r.job_id)),
                Err(e) => {
                    tracing::error!(agent = %name, job = %r.job_id, error = %e, "cannot store a job result; the agent keeps it and reports it again");
                    None
                }
            }
        }
        Some(AgentMsg::Hello(_)) => {
            tracing::warn!(agent = %name, "ignoring a second Hello in one session");
            None
        }
        None => None,
    }
}

/// Fuzzing and regression entry point: one `Session` of agent `agent` (an
/// agent certificate of that name) carrying `msgs`, through the same code
/// as a real session after the TLS and role checks: the first message must
/// be a Hello naming the agent, then each message goes through the
/// session's own handler ([`handle_result`] for results). Returns what the
/// controller sent back: acks and cancels, and the jobs dispatched to the
/// agent when it connected (after the session's own replies). Not part of
/// the API.
///
/// # Errors
/// What the session would refuse, as its status.
#[doc(hidden)]
pub async fn fuzz_session(
    shared: &Arc<Shared>,
    agent: &str,
    msgs: Vec<AgentMessage>,
) -> std::result::Result<Vec<ControllerMessage>, Status> {
    let id = trireme_net::Identity {
        name: agent.to_string(),
        role: Role::Agent,
        serial: "f0220".into(),
    };
    let mut msgs = msgs.into_iter();
    let Some(AgentMessage {
        msg: Some(AgentMsg::Hello(hello)),
    }) = msgs.next()
    else {
        return Err(Status::invalid_argument(
            "the first message of a Session must be Hello",
        ));
    };
    check_claimed_name(agent, &hello.agent_name)?;
    check_agent_version(&hello.agent_version)?;
    let welcome = welcome(shared, &id, None, &hello, None).await?;
    let mut replies = welcome.replies;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let stop = Arc::new(tokio::sync::Notify::new());
    let session = shared.agents.connect(&id, None, tx, stop, shared.now());
    // What a session start dispatches (in the background there).
    if let Err(e) = dispatch(shared, agent) {
        tracing::warn!(%agent, error = %e, "dispatch failed");
    }
    for msg in msgs {
        replies.extend(on_message(shared, &id, None, session, msg).await);
    }
    shared.agents.disconnect(agent, session);
    while let Ok(sent) = rx.try_recv() {
        replies.extend(sent.ok());
    }
    Ok(replies)
}

/// `major.minor` of a version string (`0.1.0`, `1.2.3-rc1`).
fn major_minor(v: &str) -> Option<(u64, u64)> {
    let mut parts = v.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The version skew the controller accepts at session start: an agent of
/// the same major version, not newer than the controller (upgrade the
/// controller first) and at most one minor version older (an older agent
/// would ignore fields newer jobs carry, e.g. a partial restore's paths).
pub fn check_agent_version(agent_version: &str) -> Result<(), Status> {
    check_version_against(agent_version, crate::VERSION)
}

fn check_version_against(agent_version: &str, ours: &str) -> Result<(), Status> {
    let (cm, cn) = major_minor(ours).expect("the crate version is semver");
    let refuse = |why: String| {
        Err(Status::failed_precondition(format!(
            "agent version {agent_version:?} and controller version {ours} do not work together: {why}"
        )))
    };
    match major_minor(agent_version) {
        None => refuse(
            "the agent sent no version this controller can read; run a trireme-agent release"
                .into(),
        ),
        Some(v) if v > (cm, cn) => {
            refuse("the agent is newer; upgrade the controller first, then the agents".into())
        }
        Some((am, an)) if am < cm || an + 1 < cn => refuse(format!(
            "the agent is more than one minor version older; upgrade it to {cm}.{cn}"
        )),
        Some(_) => Ok(()),
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

#[cfg(test)]
mod version_tests {
    use super::check_version_against as check;

    #[test]
    fn version_skew_rules() {
        for ok in ["1.4.0", "1.4.9", "1.3.2", "1.4.0-rc1"] {
            assert!(check(ok, "1.4.2").is_ok(), "{ok}");
        }
        for (agent, says) in [
            ("1.5.0", "upgrade the controller first"),
            ("2.0.0", "upgrade the controller first"),
            ("1.2.9", "upgrade it to 1.4"),
            ("0.9.0", "upgrade it to 1.4"),
            ("test", "no version this controller can read"),
            ("", "no version this controller can read"),
        ] {
            let e = check(agent, "1.4.2").unwrap_err();
            assert_eq!(e.code(), tonic::Code::FailedPrecondition);
            assert!(e.message().contains(says), "{agent}: {}", e.message());
            assert!(e.message().contains("1.4.2"), "{}", e.message());
        }
    }
}
