//! A limit on wrong TOTP codes, per certificate name.
//!
//! A name that gives `max_failures` wrong codes (wrong, malformed or
//! replayed) within [`FAILURE_WINDOW`] is backed off: until the back-off
//! ends, every code it sends is refused without being checked, so guessing
//! gains nothing. Each back-off in a row without an accepted code lasts
//! twice the one before, up to [`MAX_BACKOFF`] (or `backoff` when that is
//! longer); an accepted code, or a day without a back-off, starts again at
//! `backoff`.
//!
//! The audit chain sees the wrong codes up to the limit one by one (the one
//! that starts a back-off says so), then one [`Burst`] entry per back-off
//! with how many attempts it refused unchecked, so a flood of guesses adds
//! a bounded number of entries. State is kept in memory: a controller
//! restart ends back-offs (an attacker cannot restart the controller).
//!
//! The times are the controller's clock, passed in, so the rules are
//! tested without waiting.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wrong codes count towards a back-off when they fall within this window
/// of the first of them.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Longest back-off reached by doubling (unless `backoff` itself is longer).
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// A back-off that ended this long ago no longer doubles the next one.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// The limits (`[mfa] max_failures` and `backoff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Wrong codes within [`FAILURE_WINDOW`] that start a back-off.
    pub max_failures: u32,
    /// The first back-off's length.
    pub backoff: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_failures: 5,
            backoff: Duration::from_secs(5 * 60),
        }
    }
}

/// A name being backed off: codes are refused unchecked until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// When codes are checked again.
    pub until: DateTime<Utc>,
    /// The wrong codes that started it.
    pub failures: u32,
}

/// Attempts refused unchecked during one back-off, to audit once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Burst {
    /// The certificate name.
    pub name: String,
    /// When the back-off started.
    pub since: DateTime<Utc>,
    /// When it ends (or ended).
    pub until: DateTime<Utc>,
    /// Attempts refused without checking the code.
    pub refused: u64,
}

#[derive(Debug, Default)]
struct NameState {
    /// Wrong codes since `first_failure`.
    failures: u32,
    first_failure: Option<DateTime<Utc>>,
    /// The current or last back-off: (since, until).
    backoff: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Attempts refused unchecked during the current back-off.
    refused: u64,
    /// Back-offs in a row without an accepted code.
    in_a_row: u32,
}

/// Per-name counters of wrong codes and back-offs.
#[derive(Debug, Default)]
pub struct Throttle {
    limits: Limits,
    names: Mutex<HashMap<String, NameState>>,
}

fn delta(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Throttle {
    /// A throttle with `limits`.
    pub fn new(limits: Limits) -> Self {
        Throttle {
            limits,
            names: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NameState>> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Before a code of `name` is checked: when the back-off in force, if
    /// any, ends (the attempt is then counted as refused unchecked).
    pub fn admit(&self, name: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut names = self.lock();
        let st = names.get_mut(name)?;
        match st.backoff {
            Some((_, until)) if now < until => {
                st.refused += 1;
                Some(until)
            }
            _ => None,
        }
    }

    /// A wrong code from `name`: the back-off it starts, if it reaches
    /// the limit.
    pub fn failed(&self, name: &str, now: DateTime<Utc>) -> Option<Backoff> {
        let mut names = self.lock();
        let st = names.entry(name.to_string()).or_default();
        if st
            .first_failure
            .is_none_or(|t| now - t >= delta(FAILURE_WINDOW))
        {
            st.failures = 0;
            st.first_failure = Some(now);
        }
        st.failures += 1;
        if st.failures < self.limits.max_failures.max(1) {
            return None;
        }
        if st
            .backoff
            .is_some_and(|(_, until)| now - until >= delta(FORGET_AFTER))
        {
            st.in_a_row = 0;
        }
        let cap = MAX_BACKOFF.max(self.limits.backoff);
        let length = self
            .limits
            .backoff
            .saturating_mul(1u32.checked_shl(st.in_a_row).unwrap_or(u32::MAX))
            .min(cap);
        let until = now + delta(length);
        let failures = st.failures;
        st.in_a_row = st.in_a_row.saturating_add(1);
        st.backoff = Some((now, until));
        st.refused = 0;
        st.failures = 0;
        st.first_failure = None;
        Some(Backoff { until, failures })
    }

    /// An accepted code from `name`: its counters start again.
    pub fn succeeded(&self, name: &str) {
        let mut names = self.lock();
        // A back-off's refused attempts still wait for `take_bursts`.
        if let Some(st) = names.get_mut(name) {
            if st.refused == 0 {
                names.remove(name);
            } else {
                st.failures = 0;
                st.first_failure = None;
                st.in_a_row = 0;
            }
        }
    }

    /// The back-offs that have ended by `now` (all of them with `all`,
    /// e.g. when the controller stops) and refused attempts unchecked:
    /// each is returned once.
    pub fn take_bursts(&self, now: DateTime<Utc>, all: bool) -> Vec<Burst> {
        let mut out = Vec::new();
        let mut names = self.lock();
        for (name, st) in names.iter_mut() {
            let Some((since, until)) = st.backoff else {
                continue;
            };
            if st.refused > 0 && (all || now >= until) {
                out.push(Burst {
                    name: name.clone(),
                    since,
                    until,
                    refused: std::mem::take(&mut st.refused),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_failures: 3,
            backoff: Duration::from_secs(60),
        }
    }

    #[test]
    fn the_limit_backs_a_name_off_and_only_that_name() {
        let t = Throttle::new(limits());
        assert_eq!(t.admit("op", at(0)), None);
        assert_eq!(t.failed("op", at(0)), None);
        assert_eq!(t.failed("op", at(1)), None);
        let b = t
            .failed("op", at(2))
            .expect("the third wrong code backs off");
        assert_eq!(
            b,
            Backoff {
                until: at(62),
                failures: 3
            }
        );
        // Refused unchecked while it lasts, and counted; others unaffected.
        for s in 3..13 {
            assert_eq!(t.admit("op", at(s)), Some(at(62)));
        }
        assert_eq!(t.admit("op2", at(5)), None);
        // Nothing to report before it ends, then one burst, once.
        assert!(t.take_bursts(at(61), false).is_empty());
        let bursts = t.take_bursts(at(62), false);
        assert_eq!(
            bursts,
            vec![Burst {
                name: "op".into(),
                since: at(2),
                until: at(62),
                refused: 10
            }]
        );
        assert!(t.take_bursts(at(63), false).is_empty());
        assert_eq!(t.admit("op", at(62)), None);
    }

    #[test]
    fn back_offs_in_a_row_double_up_to_the_cap_and_a_success_resets() {
        let t = Throttle::new(limits());
        let mut now = 0;
        let mut lengths = Vec::new();
        for _ in 0..8 {
            let b = (0..3).find_map(|_| t.failed("op", at(now))).unwrap();
            lengths.push((b.until - at(now)).num_seconds());
            now = (b.until - at(0)).num_seconds();
        }
        assert_eq!(lengths, [60, 120, 240, 480, 960, 1920, 3600, 3600]);
        t.succeeded("op");
        let b = (0..3).find_map(|_| t.failed("op", at(now))).unwrap();
        assert_eq!((b.until - at(now)).num_seconds(), 60);
    }

    #[test]
    fn wrong_codes_far_apart_do_not_add_up() {
        let t = Throttle::new(limits());
        let window = FAILURE_WINDOW.as_secs() as i64;
        assert_eq!(t.failed("op", at(0)), None);
        assert_eq!(t.failed("op", at(1)), None);
        // The window has passed: this one starts a new count.
        assert_eq!(t.failed("op", at(window)), None);
        assert_eq!(t.failed("op", at(window + 1)), None);
        assert!(t.failed("op", at(window + 2)).is_some());
    }

    #[test]
    fn a_stop_reports_a_back_off_still_running() {
        let t = Throttle::new(limits());
        (0..3).for_each(|_| {
            t.failed("op", at(0));
        });
        t.admit("op", at(1));
        assert!(t.take_bursts(at(2), false).is_empty());
        let b = t.take_bursts(at(2), true);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].refused, 1);
    }
}
