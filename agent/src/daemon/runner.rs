//! Running the jobs the controller assigns: backups and restores against
//! the repository, with this host's sources, hooks and the controller's
//! keys. Jobs outlive sessions: a job keeps running while the agent
//! reconnects, and its result waits in the spool until acknowledged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use std::os::unix::ffi::OsStrExt;
use tokio::sync::{Notify, Semaphore};

use trireme_common::glob::PathGlobs;
use trireme_common::{
    BackupOptions, DynKeyProvider, Id, Location, Overwrite, PathFilter, Progress, Repository,
    Selection,
};
use trireme_net::tls::ClientTls;
use trireme_net::wire::summary_to_wire;
use trireme_proto::v1::{JobAssignment, JobKind, JobProgress, JobResult, JobSummary};

use super::config::{AgentConfig, SourceConfig};
use super::keys::ControllerKeys;
use super::limits::UploadBudget;
use super::spool::Spool;
use crate::sources::{self, JobContext, RestoreTarget};

/// A job this agent holds (waiting for a slot or running).
struct Running {
    progress: Arc<Progress>,
    bytes_total: u64,
    cancel: Arc<Notify>,
    cancel_reason: Arc<Mutex<Option<String>>>,
    last: (Instant, u64),
    /// Has a slot (not waiting behind other jobs).
    started: bool,
}

/// The jobs of this agent.
pub struct Runner {
    config: AgentConfig,
    tls: ClientTls,
    spool: Spool,
    slots: Arc<Semaphore>,
    running: Mutex<HashMap<String, Running>>,
    /// Wakes the session when a result is ready to send.
    pub results_ready: Notify,
    /// Wakes the session to report progress now (a job started).
    pub progress_now: Notify,
    /// Counters for `/metrics`.
    pub metrics: Arc<super::metrics::AgentMetrics>,
    /// The upload budget all jobs share, when the config sets one.
    budget: Option<UploadBudget>,
    /// A session with the controller is open (`/readyz`).
    pub connected: std::sync::atomic::AtomicBool,
}

impl Runner {
    /// A runner for `config`.
    pub fn new(config: AgentConfig, tls: ClientTls, spool: Spool) -> Self {
        Runner {
            metrics: Arc::new(super::metrics::AgentMetrics::for_agent(&config.name)),
            budget: config.upload_bytes_per_sec.map(UploadBudget::new),
            connected: std::sync::atomic::AtomicBool::new(false),
            slots: Arc::new(Semaphore::new(config.max_concurrent_jobs)),
            config,
            tls,
            spool,
            running: Mutex::default(),
            results_ready: Notify::new(),
            progress_now: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spool of unacknowledged results.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Ids of the jobs this agent holds.
    pub fn running_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Progress of every running job since the last call.
    pub fn progress(&self) -> Vec<JobProgress> {
        let mut out = Vec::new();
        for (id, r) in self.lock().iter_mut().filter(|(_, r)| r.started) {
            let read = r.progress.bytes_read.load(Ordering::Relaxed);
            let (t0, b0) = r.last;
            let secs = t0.elapsed().as_secs_f64().max(0.001);
            r.last = (Instant::now(), read);
            out.push(JobProgress {
                job_id: id.clone(),
                bytes_read: read,
                bytes_uploaded: r.progress.bytes_uploaded.load(Ordering::Relaxed),
                files: r.progress.files.load(Ordering::Relaxed),
                bytes_per_sec: read.saturating_sub(b0) as f64 / secs,
                bytes_total: r.bytes_total,
            });
        }
        out
    }

    /// Stop job `id` (if this agent holds it).
    pub fn cancel(&self, id: &str, reason: &str) {
        if let Some(r) = self.lock().get(id) {
            *r.cancel_reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
            r.cancel.notify_one();
            tracing::info!(job = %id, %reason, "cancelling job");
        }
    }

    /// Take on an assigned job: it runs when a slot is free.
    pub fn start(self: &Arc<Self>, a: JobAssignment) {
        let id = a.job_id.clone();
        if self.lock().contains_key(&id) || self.spool.contains(&id) {
            tracing::info!(job = %id, "job already taken; ignoring the repeated assignment");
            return;
        }
        let progress = Arc::new(Progress::default());
        let cancel = Arc::new(Notify::new());
        let cancel_reason = Arc::new(Mutex::new(None));
        self.lock().insert(
            id.clone(),
            Running {
                progress: progress.clone(),
                bytes_total: 0,
                cancel: cancel.clone(),
                cancel_reason: cancel_reason.clone(),
                last: (Instant::now(), 0),
                started: false,
            },
        );
        let this = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let work = async {
                let _slot = this
                    .slots
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| anyhow!("the agent is shutting down"))?;
                if let Some(r) = this.lock().get_mut(&id) {
                    r.started = true;
                    r.last = (Instant::now(), 0);
                }
                this.progress_now.notify_one();
                tracing::info!(job = %id, source = %a.source_name, kind = ?a.kind(), "job started");
                this.run(&a, progress.clone()).await
            };
            let outcome = tokio::select! {
                r = work => r,
                () = cancel.notified() => {
                    let why = cancel_reason.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    Err(anyhow!("cancelled: {}", why.unwrap_or_default()))
                }
            };
            let result = match outcome {
                Ok(mut r) => {
                    if let Some(s) = r.summary.as_mut() {
                        s.duration_secs = started.elapsed().as_secs_f64();
                    }
                    tracing::info!(job = %id, snapshot = %r.snapshot_id, "job succeeded");
                    r
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %format!("{e:#}"), "job failed");
                    JobResult {
                        job_id: id.clone(),
                        ok: false,
                        error_message: format!("{e:#}"),
                        ..Default::default()
                    }
                }
            };
            let kind = if a.kind() == JobKind::Restore {
                "restore"
            } else {
                "backup"
            };
            this.metrics
                .job_finished(kind, &a.source_name, &result, started.elapsed());
            // Spool first: the result must survive anything from here on.
            if let Err(e) = this.spool.put(&result) {
                tracing::error!(job = %id, error = %format!("{e:#}"), "cannot store the job result durably; it will be sent once and lost if that fails");
            }
            this.lock().remove(&id);
            this.results_ready.notify_one();
        });
    }

    async fn run(&self, a: &JobAssignment, progress: Arc<Progress>) -> Result<JobResult> {
        let source = self.config.source(&a.source_name);
        match a.kind() {
            JobKind::Backup => {
                let source = source.ok_or_else(|| {
                    anyhow!(
                        "this agent has no source {:?} in its configuration (it has: {})",
                        a.source_name,
                        self.config.source_names()
                    )
                })?;
                self.backup_inner(a, source, progress).await
            }
            JobKind::Restore => self.restore(a, progress).await,
            other => bail!("this agent cannot run {other:?} jobs"),
        }
    }

    fn keys(&self, job_id: &str) -> Arc<ControllerKeys> {
        Arc::new(ControllerKeys::new(
            self.config.controller.clone(),
            self.tls.clone(),
            job_id.to_string(),
        ))
    }

    /// Open the repository at the first location that answers.
    async fn open_repo(
        &self,
        a: &JobAssignment,
        keys: &Arc<ControllerKeys>,
    ) -> Result<(Arc<Repository>, String, bool)> {
        if a.locations.is_empty() {
            bail!("the controller sent no location for this job");
        }
        let provider: DynKeyProvider = keys.clone();
        let mut errors = Vec::new();
        for l in &a.locations {
            let attempt = async {
                let loc = Location::parse(&l.url)?;
                let remote = !matches!(loc, Location::File(_));
                let mut backend = loc.open().await?;
                if let Some(b) = &self.budget {
                    backend = b.wrap(backend);
                }
                // The policy's budget for this source's jobs, on top.
                if a.upload_bytes_per_sec > 0 {
                    backend = UploadBudget::new(a.upload_bytes_per_sec).wrap(backend);
                }
                let expected = <[u8; 32]>::try_from(l.config_sha256.as_slice()).ok();
                let repo = Repository::open_expecting(backend, provider.clone(), expected).await?;
                Ok::<_, trireme_common::Error>((Arc::new(repo), remote))
            };
            match attempt.await {
                Ok((repo, remote)) => return Ok((repo, l.name.clone(), remote)),
                // A key problem is not fixed by another location.
                Err(e @ (trireme_common::Error::WrongKey(_) | trireme_common::Error::Key(_))) => {
                    return Err(e.into())
                }
                Err(e) => {
                    tracing::warn!(location = %l.name, error = %e, "location unusable; trying the next");
                    errors.push(format!("{}: {e}", l.name));
                }
            }
        }
        bail!("no location is usable: {}", errors.join("; "))
    }

    fn job_context(&self, a: &JobAssignment, progress: Arc<Progress>) -> Result<JobContext> {
        Ok(JobContext {
            job_id: a.job_id.clone(),
            scratch: self.config.state_dir.join("work").join(&a.job_id),
            progress,
            hook_timeout: self.config.hook_timeout,
            tree: tree_restore(a)?,
        })
    }

    async fn backup_inner(
        &self,
        a: &JobAssignment,
        source: &SourceConfig,
        progress: Arc<Progress>,
    ) -> Result<JobResult> {
        let keys = self.keys(&a.job_id);
        let (repo, location, remote) = self.open_repo(a, &keys).await?;
        if let Some((key, agent)) = keys.attribution_key().await? {
            let job = uuid::Uuid::parse_str(&a.job_id)
                .map_err(|e| anyhow!("the controller sent job id {:?}: {e}", a.job_id))?;
            repo.set_attribution(trireme_common::attribution::Attribution {
                job: *job.as_bytes(),
                agent,
                key,
            });
        }
        let indexed = repo
            .load_index_limited(&keys.granted_keys().await?, &keys.index_limits().await?)
            .await?;
        let mut opts = BackupOptions::new(&source.name, source.kind(), &self.config.hostname);
        if remote {
            opts.uploads = 4;
        }
        // Small packs under a budget, so it spreads uploads evenly.
        if let Some(b) = &self.budget {
            opts.pack_size = b.pack_size(opts.pack_size);
        }
        if a.upload_bytes_per_sec > 0 {
            opts.pack_size = UploadBudget::new(a.upload_bytes_per_sec).pack_size(opts.pack_size);
        }
        policy_filters(a, source, &mut opts)?;
        opts.progress = progress.clone();
        opts.tags.push(format!("job:{}", a.job_id));
        // Names the agent in the repository itself, for a catalog rebuild.
        opts.tags.push(format!("agent:{}", self.config.name));
        let mut parent = None;
        if !a.full && !a.parent_snapshot_id.is_empty() {
            match Id::from_hex(&a.parent_snapshot_id) {
                Some(p) => match repo.read_snapshot(&p).await {
                    Ok(s) => parent = Some(s),
                    Err(e) => tracing::warn!(job = %a.job_id, parent = %a.parent_snapshot_id,
                        location = %location, error = %e, "parent snapshot not readable at this location; making a full backup"),
                },
                None => {
                    tracing::warn!(job = %a.job_id, parent = %a.parent_snapshot_id, "malformed parent snapshot id; making a full backup")
                }
            }
        }
        let job = self.job_context(a, progress)?;
        let req = sources::BackupRequest { opts, parent };
        let snap = sources::backup(source, &indexed, req, &job).await?;
        let m = &snap.manifest;
        Ok(JobResult {
            job_id: a.job_id.clone(),
            ok: true,
            snapshot_id: snap.id.to_hex(),
            summary: Some(summary_to_wire(&m.summary, 0.0)),
            datastore_position: m.position.clone().into_iter().collect(),
            snapshot_time_ns: m.started_ns,
            location,
            ..Default::default()
        })
    }

    async fn restore(&self, a: &JobAssignment, progress: Arc<Progress>) -> Result<JobResult> {
        let id = Id::from_hex(&a.snapshot_id)
            .with_context(|| format!("malformed snapshot id {:?}", a.snapshot_id))?;
        let target_path;
        let (target, timeout) = match a.restore_target.strip_prefix(SOURCE_TARGET) {
            Some(name) => {
                let s = self.config.source(name).ok_or_else(|| {
                    anyhow!(
                        "restore target {:?}: this agent has no source {name:?} (it has: {})",
                        a.restore_target,
                        self.config.source_names()
                    )
                })?;
                (RestoreTarget::Source(s), s.timeout)
            }
            None => {
                target_path = PathBuf::from(&a.restore_target);
                if !target_path.is_absolute() {
                    bail!(
                        "restore target {:?} must be an absolute path, or {SOURCE_TARGET}<name> for one of this agent's sources",
                        a.restore_target
                    );
                }
                (
                    RestoreTarget::Path(&target_path),
                    Duration::from_secs(24 * 3600),
                )
            }
        };
        let keys = self.keys(&a.job_id);
        let (repo, location, _) = self.open_repo(a, &keys).await?;
        let snap = repo.read_snapshot(&id).await?;
        if let Some(r) = self.lock().get_mut(&a.job_id) {
            r.bytes_total = snap.manifest.summary.bytes;
        }
        let indexed = repo
            .load_index_limited(&keys.granted_keys().await?, &keys.index_limits().await?)
            .await?;
        let job = self.job_context(a, progress)?;
        let report =
            sources::restore_job(&indexed, &snap, target, &job, timeout, a.restore_test).await?;
        tracing::info!(job = %a.job_id, snapshot = %id.short(), target = %a.restore_target,
            files = report.files, bytes = report.bytes, checks = ?report.checks, "restore finished");
        Ok(JobResult {
            job_id: a.job_id.clone(),
            ok: true,
            snapshot_id: id.to_hex(),
            summary: Some(JobSummary {
                files: report.files,
                dirs: report.dirs,
                others: report.symlinks,
                bytes: report.bytes,
                ..Default::default()
            }),
            checks: report.checks,
            location,
            ..Default::default()
        })
    }
}

/// What the source's policy leaves out (volume sources only), on top of the
/// source's own settings.
fn policy_filters(
    a: &JobAssignment,
    source: &SourceConfig,
    opts: &mut BackupOptions,
) -> Result<()> {
    if a.exclude.is_empty() && a.exclude_if_present.is_empty() && !a.one_file_system {
        return Ok(());
    }
    if source.kind() != "volume" {
        bail!(
            "the policy of {} sets exclude, exclude_if_present or one_file_system, which apply to volume sources only; this source is {}: remove them from its policy",
            source.name,
            source.kind()
        );
    }
    if !a.exclude.is_empty() {
        let globs = PathGlobs::new("exclude (from the policy)", &a.exclude)?;
        opts.exclude = Some(PathFilter(Arc::new(move |rel: &std::path::Path| {
            globs.matches_or_inside(rel.as_os_str().as_bytes())
        })));
    }
    opts.exclude_if_present.clone_from(&a.exclude_if_present);
    opts.one_file_system = a.one_file_system;
    Ok(())
}

/// Which part of a tree a restore assignment asks for, checked here too.
fn tree_restore(a: &JobAssignment) -> Result<sources::TreeRestore> {
    let path = (!a.restore_path.is_empty()).then_some(a.restore_path.as_str());
    let selection = Selection::new(path, &a.restore_include, &a.restore_exclude)?;
    let overwrite = match a.restore_overwrite.as_str() {
        "" => None,
        mode => Some(mode.parse::<Overwrite>()?),
    };
    Ok(sources::TreeRestore {
        selection,
        overwrite,
    })
}

/// Restore targets that name a source of the agent start with this.
pub const SOURCE_TARGET: &str = "source:";
