//! The controller daemon: the gRPC services over the catalog and the
//! scheduler.
//!
//! - [`agents`]: `AgentService` (registration, the `Session` stream), the
//!   table of connected agents, job dispatch, and the watchdog that fails
//!   the jobs of agents that stay away.
//! - [`operator`]: `OperatorService`, what the `trireme` CLI calls.
//! - [`keys`]: `KeyService`, data keys for the jobs agents run.
//!
//! Handlers are thin: each checks the caller's role (and second factor),
//! decodes the request ([`convert`]), makes one call into the domain —
//! [`actions`] for what operators change, [`crate::views`] and
//! [`crate::status`] for what they read, [`reports`] for what agents report
//! — and encodes the answer ([`convert`]). Every mapping between gRPC
//! messages and domain types is in [`convert`].

pub mod actions;
pub mod agents;
pub mod audit_check;
pub mod browse_rpc;
pub mod convert;
pub mod enroll;
pub mod grants;
pub mod key_health;
pub mod keys;
pub mod metrics;
pub mod notices;
pub mod operator;
pub mod prune_rpc;
pub mod recovery;
pub mod reports;
pub mod timing;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use trireme_net::tls::{Authorizer, HealthService, ReloadingServerConfig};
use trireme_proto::v1::agent_service_server::AgentServiceServer;
use trireme_proto::v1::bootstrap_token_service_server::BootstrapTokenServiceServer;
use trireme_proto::v1::health_server::HealthServer;
use trireme_proto::v1::key_service_server::KeyServiceServer;
use trireme_proto::v1::operator_service_server::OperatorServiceServer;

use crate::config::{ControllerConfig, KeySource, LocationConfig};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::jobs::JobId;
use crate::replication::{Replicator, Site};
use crate::scheduler::{Action, Clock, LoopOptions, Scheduler, SystemClock};

/// State shared by every service.
pub struct Shared {
    /// The catalog.
    pub catalog: Catalog,
    /// The scheduler (also the controller's clock).
    pub scheduler: Scheduler,
    /// The key service's master key, with the key table of its last
    /// rotation (see [`crate::rotation`]).
    pub master_key: Arc<trireme_common::Rewrapped>,
    /// Locations, primary first.
    pub locations: Vec<LocationConfig>,
    /// When a snapshot's copies count as protected (`[protection]`).
    pub protection: crate::protection::ProtectionRule,
    /// `[drills]`: the schedule and who takes part.
    pub drills: crate::drills::DrillSettings,
    /// See [`ControllerConfig::volume_sample_every`].
    pub volume_sample_every: Duration,
    /// Connected agents.
    pub agents: agents::Registry,
    /// "This job changed": wakes `WatchJob` streams.
    pub job_events: broadcast::Sender<JobId>,
    /// Timing settings.
    pub heartbeat_interval: Duration,
    /// See [`ControllerConfig::agent_timeout`].
    pub agent_timeout: Duration,
    /// Role checks (and the CRL).
    pub authz: Authorizer,
    /// Copies between locations and their verification.
    pub replicator: Arc<Replicator>,
    /// Wakes the replication loop (a snapshot was recorded).
    pub replicate_now: tokio::sync::Notify,
    /// TOTP second factor for sensitive operator actions.
    pub mfa: crate::mfa::Mfa,
    /// Where the audit log is mirrored: every location, by name.
    pub audit_mirrors: Vec<(String, trireme_common::DynBackend)>,
    /// The filesystems holding sources' data, as their agents last reported.
    pub volumes:
        std::sync::Mutex<std::collections::BTreeMap<crate::SourceId, crate::status::Volume>>,
    /// Held (write) by a prune: job dispatch (read) waits until it ends.
    pub prune_gate: tokio::sync::RwLock<()>,
    /// Where the master key comes from (`trireme key export` needs the
    /// local key file).
    pub key_source: KeySource,
    /// The last index read at each location (key scopes, result checks):
    /// the next read loads only index objects written since.
    pub indexes: tokio::sync::Mutex<
        std::collections::HashMap<String, Arc<trireme_common::scope::KeyedIndex>>,
    >,
    /// The controller key and the authentic repository config.
    pub custody: Arc<crate::custody::Custody>,
    /// Whether the master key's service answered the last probe.
    pub key_health: Arc<key_health::KeyHealth>,
    /// Whether the audit chain verified at the last check.
    pub audit_chain: audit_check::ChainHealth,
    /// RPC and notification latencies (`/metrics`).
    pub histograms: timing::Histograms,
}

impl Shared {
    /// The index of location `name`, brought up to date (only index
    /// objects written since the last read are fetched).
    ///
    /// # Errors
    /// An unknown location; storage, key and corruption errors.
    pub async fn keyed_index(
        &self,
        name: &str,
        job: Option<trireme_common::attribution::Writer>,
    ) -> trireme_common::Result<Arc<trireme_common::scope::KeyedIndex>> {
        let backend = self
            .audit_mirrors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| trireme_common::Error::InvalidLocation {
                url: name.to_string(),
                reason: "no location of this controller has that name".into(),
            })?;
        // Believed: the objects recorded as written by checked jobs or by
        // the controller; for a result check, also the job's own (verified
        // by their attribution MAC).
        let catalog = self.catalog.clone();
        let custody = self.custody.clone();
        let believe = move |n: &str, f: Option<&trireme_common::index::IndexFile>| {
            use trireme_common::attribution::Attributable;
            crate::attribution::believed(&catalog, n)
                || job.as_ref().is_some_and(|j| {
                    f.and_then(|f| f.attributed(|id, a| custody.job_mac_key(id, a)))
                        .as_ref()
                        == Some(j)
                })
        };
        let mut cache = self.indexes.lock().await;
        // The repository opened for the last read (config decoded, id key
        // unwrapped: with a KMS that is a call) serves the next one.
        let repo = match cache.get(name) {
            Some(previous) => previous.indexed().repo.clone(),
            None => Arc::new(
                trireme_common::Repository::from_config(
                    backend,
                    self.master_key.clone(),
                    self.custody.config_bytes(),
                )
                .await?,
            ),
        };
        let index = Arc::new(
            trireme_common::scope::KeyedIndex::refresh(
                &repo,
                cache.get(name).map(|i| &**i),
                &believe,
            )
            .await?,
        );
        cache.insert(name.to_string(), index.clone());
        Ok(index)
    }
}

/// Run a catalog operation that may wait for the disk without stalling the
/// runtime's other tasks.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl Shared {
    /// The controller's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.scheduler.now()
    }

    /// Tell watchers that `job` changed.
    pub fn job_changed(&self, job: JobId) {
        let _ = self.job_events.send(job);
    }

    /// Record `event` in the audit log and on the `trireme::audit` log
    /// target. A failure to record is logged, not returned: the action has
    /// happened or been refused already.
    pub fn audit(&self, event: crate::audit::Event) {
        let e = &event;
        match e.outcome {
            crate::audit::Outcome::Ok => {
                tracing::info!(target: "trireme::audit", who = %e.actor, role = %e.role, peer = %e.peer, action = %e.action, detail = %e.target, "audited action");
            }
            _ => {
                tracing::warn!(target: "trireme::audit", who = %e.actor, role = %e.role, peer = %e.peer, action = %e.action, detail = %e.target, outcome = e.outcome.as_str(), reason = %e.reason, "audited refusal or problem");
            }
        }
        self.record(event);
    }

    /// Check the caller's role for `action` (on `target`); a refusal goes
    /// into the audit chain, with the certificate's name and role when it
    /// showed one.
    ///
    /// # Errors
    /// The authorizer's refusal.
    pub fn authorize_audited<T>(
        &self,
        request: &tonic::Request<T>,
        roles: &[trireme_net::Role],
        action: &str,
        target: &str,
    ) -> std::result::Result<trireme_net::Identity, tonic::Status> {
        self.authz.authorize(request, roles).inspect_err(|status| {
            let who = request
                .peer_certs()
                .and_then(|c| c.first().cloned())
                .and_then(|leaf| trireme_net::tls::identity_from_cert(&leaf).ok());
            let event = match &who {
                Some(id) => crate::audit::Event::by(id, action, target),
                None => crate::audit::Event::actor("(no certificate)", "", action, target),
            };
            self.audit(
                event
                    .refused(status.message())
                    .from_peer(request.remote_addr()),
            );
        })
    }

    /// Append `event` to the audit log without a log line (for callers
    /// that log their own).
    pub fn record(&self, event: crate::audit::Event) {
        // The append flushes to disk: keep it off the async workers' hot path.
        let now = self.now();
        if let Err(err) = blocking(|| self.catalog.audit().append(event, now)) {
            tracing::error!(error = %err, "cannot append to the audit log");
        }
    }
}

/// Put each TOTP back-off that refused attempts unchecked into the audit
/// chain, once, with how many (those that ended; all with `all`, when the
/// controller stops). Second factors are asked of operators only.
pub fn audit_mfa_bursts(shared: &Shared, all: bool) {
    let t = |d: DateTime<Utc>| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for b in shared.mfa.take_bursts(shared.now(), all) {
        shared.audit(
            crate::audit::Event::actor(&b.name, "operator", "second factor", "TOTP back-off")
                .refused(format!(
                    "{} attempt(s) refused without checking the code during the back-off from {} to {} after too many wrong codes",
                    b.refused,
                    t(b.since),
                    t(b.until)
                )),
        );
    }
}

/// Open every location and make sure each holds the repository this
/// controller vouches for ([`crate::custody::prepare`]): create it at the
/// first location when there is none anywhere, copy its `config` to the
/// others that lack it, put back a config that was altered. A location that
/// holds another repository is an error (a wrong URL would otherwise mix
/// repositories).
///
/// # Errors
/// Storage and key errors; a location holding another repository.
pub async fn prepare_locations(
    locations: &[LocationConfig],
    keys: trireme_common::DynKeyProvider,
    catalog: &Catalog,
) -> Result<(
    Vec<trireme_common::DynBackend>,
    crate::custody::Custody,
    Vec<crate::custody::ConfigRepair>,
)> {
    let mut named = Vec::new();
    for l in locations {
        named.push((l.name.clone(), l.location.open().await?));
    }
    let (custody, repairs) = crate::custody::prepare(catalog, &named, keys, Utc::now()).await?;
    Ok((
        named.into_iter().map(|(_, b)| b).collect(),
        custody,
        repairs,
    ))
}

/// Puts connections refused at the TLS handshake (no certificate, another
/// CA, expired, revoked, too slow) into the audit chain: the first of each
/// peer address and reason per minute, then one entry with how many more
/// came, so a scanner cannot flood the chain.
fn handshake_audit(shared: std::sync::Weak<Shared>) -> trireme_net::tls::RefusalObserver {
    use std::collections::HashMap;
    use std::time::{Duration, Instant};
    const WINDOW: Duration = Duration::from_secs(60);
    let seen: std::sync::Mutex<HashMap<(std::net::IpAddr, String), (Instant, u64)>> =
        std::sync::Mutex::default();
    Arc::new(move |peer, reason| {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let repeats = {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() > 4096 {
                seen.retain(|_, (t, _)| now.duration_since(*t) < WINDOW);
            }
            match seen.get_mut(&(peer.ip(), reason.to_string())) {
                Some((t, n)) if now.duration_since(*t) < WINDOW => {
                    *n += 1;
                    return;
                }
                Some((t, n)) => {
                    let repeats = *n;
                    (*t, *n) = (now, 0);
                    repeats
                }
                None => {
                    seen.insert((peer.ip(), reason.to_string()), (now, 0));
                    0
                }
            }
        };
        let why = if repeats > 0 {
            format!("{reason} (and {repeats} more from this address in the minute before)")
        } else {
            reason.to_string()
        };
        shared.record(
            crate::audit::Event::actor("(tls handshake)", "", "connection refused", "")
                .refused(why)
                .from_peer(Some(peer)),
        );
    })
}

/// Run the controller until `shutdown` completes.
///
/// # Errors
/// Startup errors (configuration, key file, catalog, TLS files, listening
/// socket, locations) with what to do about them.
/// The controller's state from its configuration, without serving: the
/// key, the catalog, the locations (checked and repaired), the role checks.
/// [`run`] serves it; tests and fuzzing drive its handlers in process.
///
/// # Errors
/// As for [`run`], but for the listening socket.
pub async fn open(config: &ControllerConfig) -> Result<(Arc<Shared>, Arc<ReloadingServerConfig>)> {
    let provider = config.key_source.build().await?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| Error::Io {
        context: format!("creating data directory {}", config.data_dir.display()),
        source: e,
    })?;
    let catalog = Catalog::open(config.data_dir.join("catalog"))?;
    crate::snapshots::fill_dependencies(&catalog)?;
    crate::jobs::count_jobs(&catalog)?;
    let tls = Arc::new(ReloadingServerConfig::new(config.tls.clone())?);
    // Keys wrapped under a retired master key open through its key table.
    let master_key = Arc::new(
        crate::rotation::effective(&catalog, &config.locations, provider, Utc::now()).await?,
    );
    if let Some(t) = master_key.table() {
        tracing::info!(table = %t.name(), entries = t.len(), "using the key table of the last master-key rotation");
    }
    let (backends, custody, config_repairs) =
        prepare_locations(&config.locations, master_key.clone(), &catalog).await?;
    crate::attribution::adopt_existing(&catalog, &backends[0], Utc::now()).await?;
    let mirrors: Vec<(String, trireme_common::DynBackend)> = config
        .locations
        .iter()
        .zip(&backends)
        .map(|(l, b)| (l.name.clone(), b.clone()))
        .collect();
    let sites = config
        .locations
        .iter()
        .zip(backends)
        .map(|(l, backend)| Site {
            name: l.name.clone(),
            backend,
            pacer: l
                .max_bytes_per_sec
                .map(trireme_common::replicate::Pacer::new),
        })
        .collect();
    let replicator = Arc::new(Replicator::new(
        catalog.clone(),
        sites,
        config.replication,
        master_key.clone(),
    ));
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let (job_events, _) = broadcast::channel(4096);
    let authz = Authorizer::new(tls.clone());
    let shared = Arc::new(Shared {
        catalog: catalog.clone(),
        scheduler: Scheduler::new(catalog.clone(), clock),
        master_key: master_key.clone(),
        locations: config.locations.clone(),
        protection: config.protection.clone(),
        drills: config.drills.clone(),
        volume_sample_every: config.volume_sample_every,
        agents: agents::Registry::default(),
        job_events,
        heartbeat_interval: config.heartbeat_interval,
        agent_timeout: config.agent_timeout,
        authz: authz.clone(),
        replicator,
        replicate_now: tokio::sync::Notify::new(),
        mfa: crate::mfa::Mfa::new(catalog.clone(), master_key.clone(), config.mfa),
        audit_mirrors: mirrors,
        volumes: std::sync::Mutex::default(),
        prune_gate: tokio::sync::RwLock::new(()),
        key_source: config.key_source.clone(),
        indexes: tokio::sync::Mutex::default(),
        custody: Arc::new(custody),
        key_health: Arc::new(key_health::KeyHealth::new(config.key_source.provider())),
        audit_chain: audit_check::ChainHealth::default(),
        histograms: timing::Histograms::default(),
    });
    // A key table at a location that does not open (planted by an agent:
    // its MAC key is no controller key; or damaged) is never used: say so.
    for (name, b) in &shared.audit_mirrors {
        if let Err(e) = crate::rotation::table_at(b, shared.master_key.current().as_ref()).await {
            tracing::warn!(location = %name, error = %e, "refused a key table at this location");
            shared.record(
                crate::audit::Event::controller("key table refused", name.clone())
                    .problem(e.to_string()),
            );
        }
    }
    for r in config_repairs {
        shared
            .record(crate::audit::Event::controller("config repaired", r.location).problem(r.what));
    }
    tls.observe_refusals(handshake_audit(Arc::downgrade(&shared)));
    Ok((shared, tls))
}

pub async fn run(
    config: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::Io {
            context: format!("listening on {}", config.listen),
            source: e,
        })?;
    // The enrollment listener (no client certificates; its own port and
    // routes: `EnrollService` only).
    let enroll_listener = match &config.enroll {
        Some(e) => Some(TcpListener::bind(e.listen).await.map_err(|err| Error::Io {
            context: format!("listening on {} (enroll_listen)", e.listen),
            source: err,
        })?),
        None => None,
    };
    let (shared, tls) = open(&config).await?;
    let mirrors = shared.audit_mirrors.clone();
    tracing::info!(listen = %config.listen, locations = config.locations.len(), "trireme-controller started");
    for w in config.warnings() {
        tracing::warn!("{w}");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    {
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let s2 = s.clone();
            s.scheduler
                .run(
                    LoopOptions {
                        max_sleep: Duration::from_secs(5),
                        min_sleep: Duration::from_millis(50),
                    },
                    async move {
                        let _ = stop.wait_for(|v| *v).await;
                    },
                    move |tick| {
                        for (source, e) in &tick.errors {
                            tracing::error!(%source, error = %e, "scheduling failed for this source");
                        }
                        for a in tick.actions {
                            match a {
                                Action::Queued(job) => {
                                    tracing::info!(job = %job.id, source = %job.source, mode = %job.mode, attempt = job.attempt, "scheduled a backup");
                                    s2.job_changed(job.id);
                                    agents::dispatch_soon(&s2, job.agent().to_string());
                                }
                                Action::Skipped { source, slots, blocking, .. } => {
                                    tracing::warn!(%source, slots, %blocking, "skipped due backups: the previous one is still unfinished");
                                }
                            }
                        }
                    },
                )
                .await;
        }));
    }
    {
        let s = shared.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(agents::watchdog(s, stop)));
    }
    {
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let every = s.replicator.settings().every;
            loop {
                for r in crate::custody::check_configs(&s.custody, &s.audit_mirrors).await {
                    s.record(
                        crate::audit::Event::controller("config repaired", r.location)
                            .problem(r.what),
                    );
                }
                match s.replicator.pass(s.now()).await {
                    Ok(r) => {
                        if r.copied > 0 || !r.problems.is_empty() {
                            tracing::info!(
                                copied = r.copied,
                                bytes = r.copied_bytes,
                                checked = r.checked,
                                problems = r.problems.len(),
                                repaired = r.repaired.len(),
                                "replication pass"
                            );
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "replication pass failed"),
                }
                let woken = tokio::select! {
                    _ = stop.wait_for(|v| *v) => return,
                    () = tokio::time::sleep(every) => false,
                    () = s.replicate_now.notified() => true,
                };
                if woken {
                    // Let a burst of results settle into one pass.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }));
    }
    {
        // Mirror new audit entries to every location, as often as replication
        // runs, and the key table to locations that lack it.
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        let every = s.replicator.settings().every;
        tasks.push(tokio::spawn(async move {
            let mut stopping = false;
            let mut has_table = std::collections::HashSet::new();
            loop {
                for (name, backend) in &mirrors {
                    let mac_key = s.custody.audit_mirror_key();
                    if let Err(e) = s.catalog.audit().mirror_to(name, backend, Some(&mac_key)).await {
                        tracing::warn!(location = %name, error = %e, "cannot mirror the audit log; will retry");
                    }
                    if !has_table.contains(name) && s.master_key.table().is_some() {
                        match crate::rotation::mirror_to(&s.master_key, backend).await {
                            Ok(wrote) => {
                                if wrote {
                                    tracing::info!(location = %name, "wrote the key table to this location");
                                }
                                has_table.insert(name.clone());
                            }
                            Err(e) => tracing::warn!(location = %name, error = %e, "cannot write the key table; will retry"),
                        }
                    }
                }
                if stopping {
                    return;
                }
                // One more round after the stop signal: the last entries too.
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => stopping = true,
                    () = tokio::time::sleep(every) => {}
                }
            }
        }));
    }
    {
        // TOTP back-offs: one audit entry each, when they end.
        let s = shared.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                let stopping = tokio::select! {
                    _ = stop.wait_for(|v| *v) => true,
                    _ = every.tick() => false,
                };
                audit_mfa_bursts(&s, stopping);
                if stopping {
                    return;
                }
            }
        }));
    }
    tasks.push(tokio::spawn(recovery::run_loop(
        shared.clone(),
        stop_rx.clone(),
    )));
    if let Some(every) = config.prune_every {
        tasks.push(tokio::spawn(prune_rpc::scheduled(
            shared.clone(),
            every,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(key_health::run(
        shared.key_health.clone(),
        shared.master_key.clone(),
        config.key_check_interval,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(audit_check::run(
        shared.clone(),
        audit_check::EVERY,
        stop_rx.clone(),
    )));
    if !config.notify.is_empty() {
        tasks.push(tokio::spawn(notices::run(
            shared.clone(),
            config.notify.clone(),
            stop_rx.clone(),
        )));
    }
    if let (Some(settings), Some(listener)) = (config.enroll.clone(), enroll_listener) {
        tracing::info!(listen = %settings.listen, ca_dir = %settings.ca_dir.display(), "enrollment listener started (bootstrap tokens; no client certificates)");
        let s = shared.clone();
        let tls = tls.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let done = async move {
                let _ = stop.wait_for(|v| *v).await;
            };
            if let Err(e) = enroll::serve(s, settings, listener, tls, done).await {
                tracing::error!(error = %e, "enrollment listener stopped");
            }
        }));
    }
    if let Some(addr) = config.metrics_listen {
        let s = shared.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, s, stop).await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        }));
    }
    {
        let tls = tls.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.wait_for(|v| *v) => return,
                    _ = every.tick() => {}
                }
                match tls.reload_if_changed() {
                    Ok(true) => tracing::info!("reloaded the TLS certificate, key, CA or CRL"),
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %e, "cannot reload the TLS files; keeping the previous ones"),
                }
            }
        }));
    }

    // The standard grpc.health.v1 service (for load balancers and gRPC
    // probes that hold a client certificate): "" and each service SERVING
    // until shutdown.
    let (health, standard_health) = tonic_health::server::health_reporter();
    health
        .set_serving::<OperatorServiceServer<operator::OperatorApi>>()
        .await;
    health
        .set_serving::<AgentServiceServer<agents::AgentApi>>()
        .await;
    health.set_serving::<KeyServiceServer<keys::KeyApi>>().await;
    let mut routes = tonic::service::Routes::builder();
    routes
        .add_service(standard_health)
        .add_service(HealthServer::new(HealthService::new(shared.authz.clone())))
        .add_service(timing::Timed::new(
            AgentServiceServer::new(agents::AgentApi::new(shared.clone())),
            &shared.histograms,
        ))
        .add_service(timing::Timed::new(
            OperatorServiceServer::new(operator::OperatorApi::new(shared.clone())),
            &shared.histograms,
        ))
        .add_service(timing::Timed::new(
            KeyServiceServer::new(keys::KeyApi::new(shared.clone())),
            &shared.histograms,
        ));
    // Operators' bootstrap tokens (the enrollment itself is on its own listener).
    routes.add_service(BootstrapTokenServiceServer::new(enroll::TokenApi::new(
        shared.clone(),
    )));
    let mut stop = stop_rx.clone();
    let served = trireme_net::tls::serve(routes.routes(), listener, tls, async move {
        let _ = stop.wait_for(|v| *v).await;
    });
    tokio::pin!(served);
    let result = tokio::select! {
        r = &mut served => r,
        () = shutdown => {
            tracing::info!("shutting down");
            health.set_service_status("", tonic_health::ServingStatus::NotServing).await;
            let _ = stop_tx.send(true);
            // Sessions end only when their response streams do.
            shared.agents.close_all();
            match tokio::time::timeout(Duration::from_secs(10), &mut served).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("connections still open after 10 s; stopping anyway");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    shared.catalog.flush()?;
    result.map_err(Error::from)
}
