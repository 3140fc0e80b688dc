//! What the controller tells `[[notify]]` targets, noticed by watching its
//! own state: job changes as they happen, and every few seconds the
//! locations, the sources' recovery objectives, restore tests and drills.
//! Only changes are told (a source that turns red, a location that becomes
//! unreachable); what was already so when the controller started is not.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, mpsc, watch, Semaphore};

use super::Shared;
use crate::config::{EventKind, NotifyTarget};
use crate::jobs::{JobKind, JobState, RestorePurpose};
use crate::notify::{deliver, Notice};

/// How often the locations (in memory) are looked at; the objectives,
/// restore tests and drills (catalog reads) every [`SLOW`] of these.
const EVERY: Duration = Duration::from_secs(1);
const SLOW: u32 = 5;
/// Deliveries in flight at once; notices beyond a full queue are dropped
/// (and logged).
const IN_FLIGHT: usize = 8;
const QUEUE: usize = 1000;

/// Watch and tell until `stop`.
pub async fn run(shared: Arc<Shared>, targets: Vec<NotifyTarget>, mut stop: watch::Receiver<bool>) {
    if targets.is_empty() {
        return;
    }
    let (tx, rx) = mpsc::channel::<Notice>(QUEUE);
    let sender = tokio::spawn(send_all(shared.clone(), targets, rx));
    let mut watcher = Watcher::new(&shared, tx);
    let mut jobs = shared.job_events.subscribe();
    let mut tick = tokio::time::interval(EVERY);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => break,
            id = jobs.recv() => match id {
                Ok(id) => watcher.job_changed(&shared, &id),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "notifications: missed job changes");
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                watcher.locations(&shared);
                if ticks % SLOW == 0 {
                    watcher.look(&shared);
                }
                ticks = ticks.wrapping_add(1);
            }
        }
    }
    drop(watcher);
    let _ = sender.await;
}

/// Deliver each notice to every target that wants it, a few at a time,
/// and record the outcome in the audit log.
async fn send_all(shared: Arc<Shared>, targets: Vec<NotifyTarget>, mut rx: mpsc::Receiver<Notice>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let targets = Arc::new(targets);
    while let Some(n) = rx.recv().await {
        for i in 0..targets.len() {
            if !targets[i].wants(n.kind) {
                continue;
            }
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (shared, targets, n) = (shared.clone(), targets.clone(), n.clone());
            tokio::spawn(async move {
                let t = &targets[i];
                let start = std::time::Instant::now();
                let d = deliver(t, &n).await;
                shared
                    .histograms
                    .notify
                    .with_label_values(&[
                        t.kind.name(),
                        if d.outcome.is_ok() {
                            "delivered"
                        } else {
                            "failed"
                        },
                    ])
                    .observe(start.elapsed().as_secs_f64());
                let what = format!("{} {} to {}", n.kind.name(), n.subject, t.name);
                let event =
                    crate::audit::Event::actor("notify", "controller", "notification", what);
                let event = match &d.outcome {
                    Ok(status) => {
                        tracing::info!(target_name = %t.name, event = n.kind.name(), subject = %n.subject, status, attempts = d.attempts, "notification delivered");
                        event
                    }
                    Err(e) => {
                        tracing::warn!(target_name = %t.name, event = n.kind.name(), subject = %n.subject, attempts = d.attempts, error = %e, "notification not delivered");
                        event.problem(format!("not delivered after {} attempts: {e}", d.attempts))
                    }
                };
                shared.record(event);
                drop(permit);
            });
        }
    }
}

/// What has been seen, to tell only changes.
struct Watcher {
    tx: mpsc::Sender<Notice>,
    started: DateTime<Utc>,
    told_jobs: HashSet<crate::jobs::JobId>,
    told_tests: HashSet<crate::jobs::JobId>,
    told_drills: HashSet<String>,
    reachable: BTreeMap<String, bool>,
    found: BTreeMap<String, u64>,
    red: Option<BTreeMap<String, bool>>,
    /// The audit chain break last told.
    told_break: Option<crate::audit::Broken>,
}

impl Watcher {
    fn new(shared: &Shared, tx: mpsc::Sender<Notice>) -> Self {
        Watcher {
            tx,
            started: shared.now(),
            told_jobs: HashSet::new(),
            told_tests: HashSet::new(),
            told_drills: HashSet::new(),
            reachable: BTreeMap::new(),
            found: BTreeMap::new(),
            red: None,
            told_break: None,
        }
    }

    fn tell(
        &self,
        kind: EventKind,
        subject: String,
        title: String,
        text: String,
        at: DateTime<Utc>,
    ) {
        let n = Notice {
            kind,
            subject,
            title,
            text,
            at,
        };
        if self.tx.try_send(n).is_err() {
            tracing::warn!(event = kind.name(), "notification queue full; dropped");
        }
    }

    /// A job changed: tell a failure (once).
    fn job_changed(&mut self, shared: &Shared, id: &crate::jobs::JobId) {
        let Ok(Some(job)) = shared.catalog.jobs().get(id) else {
            return;
        };
        let JobState::Failed { reason, finished } = &job.state else {
            return;
        };
        // Restore tests and drill steps are told as such.
        if let JobKind::Restore { purpose, .. } = &job.kind {
            if !matches!(purpose, RestorePurpose::Restore) {
                return;
            }
        }
        if !self.told_jobs.insert(job.id) {
            return;
        }
        let what = match &job.kind {
            JobKind::Backup => format!("backup of {}", job.source),
            JobKind::Restore { agent, target, .. } => {
                format!("restore of {} to {agent}:{target}", job.source)
            }
        };
        self.tell(
            EventKind::JobFailed,
            job.source.to_string(),
            format!("{what} failed"),
            format!(
                "job {} (attempt {}) failed: {reason}. `trireme jobs show {}` has the details; a scheduled backup is retried as its policy says.",
                job.id, job.attempt, job.id
            ),
            *finished,
        );
    }

    /// Locations that became unreachable or have new damaged copies.
    fn locations(&mut self, shared: &Shared) {
        let now = shared.now();
        for (name, st) in shared.replicator.states() {
            let was = self.reachable.insert(name.clone(), st.reachable);
            if was == Some(true) && !st.reachable {
                self.tell(
                    EventKind::LocationUnreachable,
                    name.clone(),
                    format!("location {name} is unreachable"),
                    format!(
                        "the last replication pass could not list {name}: copies there wait until it is back. `trireme locations ls` says why{}.",
                        if st.last_error.is_empty() { String::new() } else { format!(" ({})", st.last_error) }
                    ),
                    now,
                );
            }
            let before = self.found.insert(name.clone(), st.problems_found);
            if let Some(before) = before {
                if st.problems_found > before {
                    self.tell(
                        EventKind::DamagedCopy,
                        name.clone(),
                        format!("damaged copies found at {name}"),
                        format!(
                            "{} missing, truncated or corrupt copies found at {name} ({} repaired from good copies so far). `trireme verify --location {name}` repairs what it can and names what it cannot.",
                            st.problems_found - before,
                            st.problems_repaired
                        ),
                        now,
                    );
                }
            }
        }
    }

    /// A break in the audit chain (told also when it was there at start:
    /// it is checked at each start, and a break is never expected).
    fn audit_chain(&mut self, shared: &Shared) {
        let broken = shared.audit_chain.broken();
        if broken.is_some() && broken != self.told_break {
            if let Some(b) = &broken {
                self.tell(
                    EventKind::AuditChainBroken,
                    "audit".into(),
                    format!("the audit log's hash chain is broken at entry {}", b.seq),
                    format!(
                        "{}. The catalog's audit log was changed outside the controller. `trireme audit verify` compares it with the mirrors at the locations (docs/operations.md A11); keep the catalog as it is for the investigation.",
                        b.problem
                    ),
                    shared.now(),
                );
            }
        }
        self.told_break = broken;
    }

    /// Objectives, restore tests and drills.
    fn look(&mut self, shared: &Shared) {
        let now = shared.now();
        self.audit_chain(shared);
        if let Ok(health) = crate::recovery::health(&shared.catalog, &shared.protection, now) {
            let red: BTreeMap<String, bool> = health
                .iter()
                .map(|h| (h.source.to_string(), h.red()))
                .collect();
            if let Some(before) = &self.red {
                for h in &health {
                    let source = h.source.to_string();
                    if h.red() && before.get(&source) == Some(&false) {
                        self.tell(
                            EventKind::RecoveryRed,
                            source.clone(),
                            format!("{source} is red"),
                            format!(
                                "{}. `trireme status` shows every source's RPO and RTO.",
                                h.problems.join("; ")
                            ),
                            now,
                        );
                    }
                }
            }
            self.red = Some(red);
        }
        if let Ok(tests) = shared.catalog.restore_tests().values() {
            for t in tests {
                let Some(finished) = t.finished else { continue };
                if t.drill.is_some() || finished < self.started || !self.told_tests.insert(t.job) {
                    continue;
                }
                let (title, text) = if t.ok {
                    (
                        format!("restore test of {} passed", t.source),
                        format!(
                            "restored snapshot {} to {} and checked it in {:.0} s: {}",
                            t.snapshot.short(),
                            t.target,
                            t.duration_secs,
                            t.checks.join("; ")
                        ),
                    )
                } else {
                    (
                        format!("restore test of {} failed", t.source),
                        format!(
                            "{} (snapshot {} to {}). `trireme restore-test ls {}` has the history.",
                            t.error,
                            t.snapshot.short(),
                            t.target,
                            t.source
                        ),
                    )
                };
                self.tell(
                    EventKind::RestoreTest,
                    t.source.to_string(),
                    title,
                    text,
                    finished,
                );
            }
        }
        if let Ok(drills) = shared.catalog.drills().values() {
            for d in drills {
                let Some(finished) = d.finished else { continue };
                if finished < self.started || !self.told_drills.insert(d.id.clone()) {
                    continue;
                }
                let failed: Vec<String> = d
                    .steps
                    .iter()
                    .filter(|s| !s.ok())
                    .map(|s| s.source.to_string())
                    .collect();
                self.tell(
                    EventKind::Drill,
                    d.id.clone(),
                    format!(
                        "DR drill {} {}",
                        d.id,
                        if d.ok() { "passed" } else { "failed" }
                    ),
                    format!(
                        "{} sources restored{}{}. `trireme drill show {}` has the report.",
                        d.steps.len(),
                        d.location
                            .as_deref()
                            .map(|l| format!(" from {l}"))
                            .unwrap_or_default(),
                        if failed.is_empty() {
                            String::new()
                        } else {
                            format!("; failed: {}", failed.join(", "))
                        },
                        d.id
                    ),
                    finished,
                );
            }
        }
    }
}
