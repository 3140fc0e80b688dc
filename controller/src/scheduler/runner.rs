//! The scheduler over the catalog, with an injected clock, and the thin
//! async loop that ticks it on time.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::{apply_in, decide, Decision};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobId};
use crate::sources::SourceId;

/// Where the scheduler gets the time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to (tests, simulations).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `t`.
    pub fn new(t: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(t))
    }

    /// Set the time.
    pub fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// Move the time forward by `d`.
    pub fn advance(&self, d: chrono::Duration) {
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *t += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Something the scheduler did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A job was queued (a slot fired, caught up, or a retry came due):
    /// send it to its agent.
    Queued(Box<Job>),
    /// Due slots were skipped because the source's job was unfinished.
    Skipped {
        /// The source.
        source: SourceId,
        /// The latest slot skipped.
        slot: DateTime<Utc>,
        /// How many slots.
        slots: u64,
        /// The unfinished job.
        blocking: JobId,
    },
}

/// The result of one tick.
#[derive(Debug, Default)]
pub struct Tick {
    /// The time the tick ran at.
    pub now: DateTime<Utc>,
    /// What it did.
    pub actions: Vec<Action>,
    /// Sources it could not handle (damaged catalog entries, I/O errors);
    /// the others were handled.
    pub errors: Vec<(SourceId, Error)>,
    /// When something is next due (`None`: nothing scheduled).
    pub next_wake: Option<DateTime<Utc>>,
}

/// Timing of [`Scheduler::run`].
#[derive(Debug, Clone, Copy)]
pub struct LoopOptions {
    /// Longest sleep between ticks, so changes made behind the scheduler's
    /// back (and clock jumps) are seen within this time.
    pub max_sleep: Duration,
    /// Shortest sleep between ticks.
    pub min_sleep: Duration,
}

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            max_sleep: Duration::from_secs(60),
            min_sleep: Duration::from_millis(50),
        }
    }
}

/// The scheduler: policies and state in the catalog, time from a [`Clock`].
pub struct Scheduler {
    catalog: Catalog,
    clock: Arc<dyn Clock>,
    wake: Notify,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("catalog", &self.catalog)
            .finish_non_exhaustive()
    }
}

fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Scheduler {
    /// A scheduler over `catalog` reading time from `clock`.
    pub fn new(catalog: Catalog, clock: Arc<dyn Clock>) -> Self {
        Scheduler {
            catalog,
            clock,
            wake: Notify::new(),
        }
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The scheduler's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Make [`Scheduler::run`] tick now: call it after applying policies or
    /// finishing a job (a waiting retry may now go).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// One tick at the clock's time.
    ///
    /// # Errors
    /// As [`Scheduler::tick_at`].
    pub fn tick(&self) -> Result<Tick> {
        self.tick_at(self.clock.now())
    }

    /// One tick at `now`: for every policy, fire a due slot (once, however
    /// many were missed), skip it if the source is busy, or queue a due
    /// retry. Each source's change is one durable transaction.
    ///
    /// # Errors
    /// Only when the policies cannot be listed; a source that fails is
    /// reported in [`Tick::errors`] and the others go on.
    pub fn tick_at(&self, now: DateTime<Utc>) -> Result<Tick> {
        let mut tick = Tick {
            now,
            ..Tick::default()
        };
        for (source, record) in self.catalog.policies().entries()? {
            let mut step = || -> Result<Option<DateTime<Utc>>> {
                let state = self.catalog.schedule().get(&source)?.unwrap_or_default();
                let active = self.catalog.active().get(&source)?;
                if let Decision::Wait { until } = decide(&record, &state, active, now) {
                    return Ok(until);
                }
                let action = self
                    .catalog
                    .transaction_durable(|tx| apply_in(tx, &source, now))?;
                if let Some(a) = action {
                    match &a {
                        Action::Queued(job) => tracing::info!(
                            source = %source, job = %job.id, mode = %job.mode,
                            attempt = job.attempt, trigger = ?job.trigger, "backup queued"
                        ),
                        Action::Skipped {
                            slot,
                            slots,
                            blocking,
                            ..
                        } => tracing::warn!(
                            source = %source, %slot, slots, blocking = %blocking,
                            "schedule slot skipped: the previous job is unfinished"
                        ),
                    }
                    tick.actions.push(a);
                }
                let state = self.catalog.schedule().get(&source)?.unwrap_or_default();
                let active = self.catalog.active().get(&source)?;
                Ok(match decide(&record, &state, active, now) {
                    Decision::Wait { until } => until,
                    _ => Some(now),
                })
            };
            match step() {
                Ok(until) => tick.next_wake = earliest(tick.next_wake, until),
                Err(e) => {
                    tracing::error!(source = %source, error = %e, "scheduler could not handle source");
                    tick.errors.push((source, e));
                }
            }
        }
        Ok(tick)
    }

    /// Tick on time until `shutdown` completes, handing each tick's result
    /// to `on_tick` (send queued jobs to agents, log, count). Sleeps until
    /// the next due time (between [`LoopOptions::min_sleep`] and
    /// [`LoopOptions::max_sleep`]) or until [`Scheduler::wake`].
    pub async fn run<F, T>(&self, opts: LoopOptions, shutdown: F, mut on_tick: T)
    where
        F: Future<Output = ()>,
        T: FnMut(Tick),
    {
        tokio::pin!(shutdown);
        loop {
            let result = match tokio::runtime::Handle::current().runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(|| self.tick())
                }
                _ => self.tick(),
            };
            let sleep = match result {
                Ok(tick) => {
                    let sleep = tick.next_wake.map_or(opts.max_sleep, |t| {
                        (t - tick.now).to_std().unwrap_or(Duration::ZERO)
                    });
                    on_tick(tick);
                    sleep
                }
                Err(e) => {
                    tracing::error!(error = %e, "scheduler tick failed; trying again");
                    opts.max_sleep
                }
            };
            let sleep = sleep.clamp(opts.min_sleep, opts.max_sleep.max(opts.min_sleep));
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(sleep) => {}
                () = self.wake.notified() => {}
            }
        }
    }
}
