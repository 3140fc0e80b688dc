//! The pure decision logic; `tests/scheduler.rs` drives it through the
//! catalog with a simulated clock.

use chrono::{DateTime, Duration, Utc};
use trireme_common::Id;

use super::*;
use crate::jobs::JobState;
use crate::policy::parse_policies;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn record(extra: &str, applied_at: &str) -> PolicyRecord {
    let text = format!(
        "[[policy]]\nsource = \"h/x\"\nschedule = \"0 2 * * *\"\nretention = \"r\"\n{extra}"
    );
    PolicyRecord {
        policy: parse_policies("p", &text).unwrap().remove(0),
        applied_at: t(applied_at),
        origin: "p".into(),
    }
}

fn id() -> JobId {
    JobId::new(t("2025-01-01T00:00:00Z"))
}

#[test]
fn waits_for_the_first_slot_then_fires_it() {
    let r = record("", "2025-03-01T10:00:00Z");
    let s = SourceSchedule::default();
    // Slots before the policy existed never fire.
    assert_eq!(
        decide(&r, &s, None, t("2025-03-01T10:00:00Z")),
        Decision::Wait {
            until: Some(t("2025-03-02T02:00:00Z"))
        }
    );
    assert_eq!(
        decide(&r, &s, None, t("2025-03-02T01:59:59Z")),
        Decision::Wait {
            until: Some(t("2025-03-02T02:00:00Z"))
        }
    );
    assert_eq!(
        decide(&r, &s, None, t("2025-03-02T02:00:00Z")),
        Decision::Fire {
            slot: t("2025-03-02T02:00:00Z"),
            missed: 0,
            mode: BackupMode::Incremental
        }
    );
}

#[test]
fn downtime_is_caught_up_by_one_run() {
    let r = record("", "2025-03-01T00:00:00Z");
    let s = SourceSchedule {
        handled_until: Some(t("2025-03-01T02:00:00Z")),
        ..Default::default()
    };
    assert_eq!(
        decide(&r, &s, None, t("2025-03-04T10:00:00Z")),
        Decision::Fire {
            slot: t("2025-03-04T02:00:00Z"),
            missed: 2,
            mode: BackupMode::Incremental
        }
    );
    // A year of a minutely schedule: still one decision, counted to a cap.
    let mut r = r;
    r.policy.schedule = "* * * * *".parse().unwrap();
    let d = decide(&r, &s, None, t("2026-03-04T10:00:00Z"));
    assert!(
        matches!(d, Decision::Fire { slot, missed: MISSED_COUNT_LIMIT, .. } if slot == t("2026-03-04T10:00:00Z")),
        "{d:?}"
    );
}

#[test]
fn a_busy_source_skips_the_slot() {
    let r = record("", "2025-03-01T00:00:00Z");
    let s = SourceSchedule {
        handled_until: Some(t("2025-03-01T02:00:00Z")),
        ..Default::default()
    };
    let busy = id();
    assert_eq!(
        decide(&r, &s, Some(busy), t("2025-03-03T02:00:00Z")),
        Decision::Skip {
            slot: t("2025-03-03T02:00:00Z"),
            slots: 2,
            blocking: busy
        }
    );
}

#[test]
fn retries_go_when_due_and_the_source_is_free() {
    let r = record("", "2025-03-01T00:00:00Z");
    let prev = id();
    let s = SourceSchedule {
        handled_until: Some(t("2025-03-01T02:00:00Z")),
        retry: Some(PendingRetry {
            slot: t("2025-03-01T02:00:00Z"),
            attempt: 2,
            due: t("2025-03-01T02:05:00Z"),
            mode: BackupMode::Full,
            previous: prev,
        }),
        ..Default::default()
    };
    assert_eq!(
        decide(&r, &s, None, t("2025-03-01T02:04:59Z")),
        Decision::Wait {
            until: Some(t("2025-03-01T02:05:00Z"))
        }
    );
    assert_eq!(
        decide(&r, &s, None, t("2025-03-01T02:05:00Z")),
        Decision::Retry {
            slot: t("2025-03-01T02:00:00Z"),
            attempt: 2,
            mode: BackupMode::Full,
            previous: prev
        }
    );
    assert_eq!(
        decide(&r, &s, Some(id()), t("2025-03-01T02:05:00Z")),
        Decision::Wait {
            until: Some(t("2025-03-02T02:00:00Z"))
        },
        "a busy source holds the retry back"
    );
    // The next slot supersedes the retry.
    assert!(matches!(
        decide(&r, &s, None, t("2025-03-02T02:00:00Z")),
        Decision::Fire { .. }
    ));
}

fn finished(state: JobState, attempt: u32, trigger: Trigger) -> Job {
    let mut j = Job::new(
        "h/x".parse().unwrap(),
        BackupMode::Full,
        trigger,
        attempt,
        t("2025-03-01T02:00:00Z"),
    );
    j.state = state;
    j
}

#[test]
fn outcomes_update_the_state() {
    let r = record(
        "max_retries = 2\nretry_backoff = \"1m\"\n",
        "2025-03-01T00:00:00Z",
    );
    let slot = t("2025-03-01T02:00:00Z");
    let trig = Trigger::Schedule { slot, missed: 0 };
    let at = t("2025-03-01T02:10:00Z");
    let failed = JobState::Failed {
        reason: "boom".into(),
        finished: at,
    };
    let mut s = SourceSchedule::default();
    let f = record_outcome(
        &mut s,
        &finished(failed.clone(), 1, trig.clone()),
        Some(&r.policy),
        at,
    );
    assert_eq!(
        f,
        FollowUp::Retry {
            attempt: 2,
            at: at + Duration::minutes(1)
        }
    );
    let f = record_outcome(
        &mut s,
        &finished(failed.clone(), 2, trig.clone()),
        Some(&r.policy),
        at,
    );
    assert_eq!(
        f,
        FollowUp::Retry {
            attempt: 3,
            at: at + Duration::minutes(2)
        }
    );
    let f = record_outcome(
        &mut s,
        &finished(failed.clone(), 3, trig.clone()),
        Some(&r.policy),
        at,
    );
    assert_eq!(f, FollowUp::GaveUp { attempts: 3 });
    assert!(s.retry.is_none());
    // Manual jobs and removed policies are not retried.
    let manual = Trigger::Manual { by: "op".into() };
    let f = record_outcome(
        &mut s,
        &finished(failed.clone(), 1, manual),
        Some(&r.policy),
        at,
    );
    assert_eq!(f, FollowUp::None);
    let f = record_outcome(&mut s, &finished(failed, 1, trig.clone()), None, at);
    assert_eq!(f, FollowUp::None);
    // Success records the full backup's slot.
    let ok = JobState::Succeeded {
        snapshot: Id([0; 32]),
        finished: at,
    };
    record_outcome(&mut s, &finished(ok, 1, trig), Some(&r.policy), at);
    assert_eq!((s.last_success, s.last_full_slot), (Some(at), Some(slot)));
}
