//! The scheduler: when each source's next backup is due.
//!
//! The logic is pure and clock-injected: [`decide`] looks at a policy, the
//! source's [`SourceSchedule`] (kept in the catalog) and whether a job of
//! the source is unfinished, at a given `now`, and says what to do.
//! [`Scheduler::tick_at`] applies the decisions in catalog transactions;
//! [`Scheduler::run`] is the thin async loop that ticks on time.
//!
//! Rules:
//! - A slot fires once, at its time (or at the first tick after it).
//! - After downtime, all the slots missed are caught up by **one** run (the
//!   job's trigger says how many were missed), then the schedule goes on.
//! - Never two jobs of one source at once: a slot that comes while the
//!   previous job is unfinished is skipped and recorded as skipped.
//! - A failed run is retried after `retry_backoff × 2^(attempt-1)` (capped
//!   at a day), up to `max_retries` times, then given up. The next slot
//!   supersedes a pending retry.
//! - The state is in the catalog, updated in the same transaction as the
//!   job it creates, so a restarted controller neither repeats a slot nor
//!   loses one.

mod runner;

use chrono::{DateTime, Utc};

use crate::catalog::{Tx, TxResult};
use crate::jobs::{create_in, BackupMode, Job, JobId, JobState, Trigger};
use crate::policy::{Policy, PolicyRecord};
pub use crate::schedule::{Failure, GaveUp, PendingRetry, Skip, SourceSchedule};
use crate::sources::SourceId;

pub use runner::{Action, Clock, LoopOptions, ManualClock, Scheduler, SystemClock, Tick};

/// Most slots counted as missed (counting stops there; only the report is
/// affected).
pub const MISSED_COUNT_LIMIT: u64 = 100_000;

/// What to do for one source now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing before `until` (`None`: nothing scheduled, e.g. a retry that
    /// waits for the source to be free, or a schedule that never fires).
    Wait {
        /// When to look again.
        until: Option<DateTime<Utc>>,
    },
    /// Queue a run for `slot`; `missed` earlier slots are caught up by it.
    Fire {
        /// The latest due slot.
        slot: DateTime<Utc>,
        /// Earlier due slots this run covers.
        missed: u64,
        /// Full or incremental.
        mode: BackupMode,
    },
    /// Queue attempt `attempt` of the failed run for `slot`.
    Retry {
        /// The run's slot.
        slot: DateTime<Utc>,
        /// The new attempt's number.
        attempt: u32,
        /// The failed attempt's mode.
        mode: BackupMode,
        /// The failed attempt.
        previous: JobId,
    },
    /// `slots` slots, the latest `slot`, are due while `blocking` is
    /// unfinished: skip them.
    Skip {
        /// The latest due slot.
        slot: DateTime<Utc>,
        /// How many slots are skipped.
        slots: u64,
        /// The unfinished job.
        blocking: JobId,
    },
}

/// Slots in `[first, latest)`, counted up to [`MISSED_COUNT_LIMIT`].
fn count_slots(p: &Policy, first: DateTime<Utc>, latest: DateTime<Utc>) -> u64 {
    let mut n = 0;
    let mut t = first;
    while t < latest && n < MISSED_COUNT_LIMIT {
        n += 1;
        match p.next_slot_after(t) {
            Some(next) => t = next,
            None => break,
        }
    }
    n
}

/// Decide what to do for one source at `now`. `active` is the source's
/// unfinished job, if any. Pure: no clock, no catalog.
pub fn decide(
    record: &PolicyRecord,
    state: &SourceSchedule,
    active: Option<JobId>,
    now: DateTime<Utc>,
) -> Decision {
    let p = &record.policy;
    let anchor = state.handled_until.unwrap_or(record.applied_at);
    let next_slot = p.next_slot_after(anchor);
    if let Some(first) = next_slot.filter(|t| *t <= now) {
        let latest = p
            .last_slot_at_or_before(now)
            .filter(|l| *l >= first)
            .unwrap_or(first);
        let missed = count_slots(p, first, latest);
        return match active {
            Some(blocking) => Decision::Skip {
                slot: latest,
                slots: missed + 1,
                blocking,
            },
            None => Decision::Fire {
                slot: latest,
                missed,
                mode: p.mode_for(latest, state.last_full_slot),
            },
        };
    }
    match &state.retry {
        Some(r) if r.due <= now && active.is_none() => Decision::Retry {
            slot: r.slot,
            attempt: r.attempt,
            mode: r.mode,
            previous: r.previous,
        },
        // Due but the source is busy: it fires once the source is free.
        Some(r) if r.due <= now => Decision::Wait { until: next_slot },
        Some(r) => Decision::Wait {
            until: next_slot.map_or(Some(r.due), |n| Some(n.min(r.due))),
        },
        None => Decision::Wait { until: next_slot },
    }
}

/// What happens after a job finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowUp {
    /// Nothing (success, cancellation, a manual job, a job still running).
    None,
    /// Attempt `attempt` is scheduled at `at`.
    Retry {
        /// The next attempt's number.
        attempt: u32,
        /// When it is due.
        at: DateTime<Utc>,
    },
    /// The run failed `attempts` times and is given up until its next slot.
    GaveUp {
        /// Attempts made.
        attempts: u32,
    },
}

/// Record a finished job in its source's state: success times, or a retry
/// with backoff, or giving up. Manual jobs are not retried. Pure.
pub fn record_outcome(
    state: &mut SourceSchedule,
    job: &Job,
    policy: Option<&Policy>,
    now: DateTime<Utc>,
) -> FollowUp {
    match &job.state {
        JobState::Succeeded { finished, .. } => {
            state.last_success = Some(*finished);
            if job.mode == BackupMode::Full {
                let slot = job.slot();
                state.last_full_slot = Some(state.last_full_slot.map_or(slot, |t| t.max(slot)));
            }
            state.retry = None;
            FollowUp::None
        }
        JobState::Failed { reason, finished } => {
            state.last_failure = Some(Failure {
                job: job.id,
                at: *finished,
                reason: reason.clone(),
                attempt: job.attempt,
            });
            let Some(p) = policy else {
                return FollowUp::None;
            };
            if matches!(job.trigger, Trigger::Manual { .. }) {
                return FollowUp::None;
            }
            if job.attempt <= p.max_retries {
                let delay = chrono::Duration::from_std(p.retry_delay(job.attempt))
                    .unwrap_or(chrono::Duration::MAX);
                let at = finished.checked_add_signed(delay).unwrap_or(*finished);
                state.retry = Some(PendingRetry {
                    slot: job.slot(),
                    attempt: job.attempt + 1,
                    due: at,
                    mode: job.mode,
                    previous: job.id,
                });
                FollowUp::Retry {
                    attempt: job.attempt + 1,
                    at,
                }
            } else {
                state.retry = None;
                state.gave_up = Some(GaveUp {
                    slot: job.slot(),
                    at: now,
                    attempts: job.attempt,
                });
                FollowUp::GaveUp {
                    attempts: job.attempt,
                }
            }
        }
        JobState::Cancelled { .. } => {
            if state.retry.as_ref().is_some_and(|r| r.slot == job.slot()) {
                state.retry = None;
            }
            FollowUp::None
        }
        _ => FollowUp::None,
    }
}

/// Decide and act for one source inside a transaction: queue a job or
/// record a skip. Returns what was done.
pub(crate) fn apply_in(
    tx: &Tx<'_>,
    source: &SourceId,
    now: DateTime<Utc>,
) -> TxResult<Option<Action>> {
    let Some(record) = tx.policies().get(source)? else {
        return Ok(None);
    };
    let mut state = tx.schedule().get(source)?.unwrap_or_default();
    let active = tx.active().get(source)?;
    let action = match decide(&record, &state, active, now) {
        Decision::Wait { .. } => return Ok(None),
        Decision::Fire { slot, missed, mode } => {
            let job = Job::new(
                source.clone(),
                mode,
                Trigger::Schedule { slot, missed },
                1,
                now,
            );
            create_in(tx, &job)?;
            state.handled_until = Some(slot);
            state.retry = None;
            state.last_fired = Some(now);
            state.last_job = Some(job.id);
            Action::Queued(Box::new(job))
        }
        Decision::Retry {
            slot,
            attempt,
            mode,
            previous,
        } => {
            let job = Job::new(
                source.clone(),
                mode,
                Trigger::Retry { slot, previous },
                attempt,
                now,
            );
            create_in(tx, &job)?;
            state.retry = None;
            state.last_fired = Some(now);
            state.last_job = Some(job.id);
            Action::Queued(Box::new(job))
        }
        Decision::Skip {
            slot,
            slots,
            blocking,
        } => {
            state.handled_until = Some(slot);
            state.skipped += slots;
            state.last_skip = Some(Skip {
                slot,
                at: now,
                slots,
                blocked_by: blocking,
            });
            Action::Skipped {
                source: source.clone(),
                slot,
                slots,
                blocking,
            }
        }
    };
    tx.schedule().insert(source, &state)?;
    Ok(Some(action))
}

#[cfg(test)]
mod tests;
