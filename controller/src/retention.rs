//! Retention classes and the choice of which snapshots a class keeps.
//!
//! A class is defined in a policy file as a `[retention.NAME]` table:
//!
//! ```toml
//! [retention.mongodb]
//! keep_last = 3        # the 3 newest snapshots
//! daily = "30d"        # the newest snapshot of each day of the last 30 days
//! monthly = "1y"       # the newest snapshot of each month of the last year
//! ```
//!
//! `hourly`, `daily`, `weekly` (ISO weeks, Monday to Sunday), `monthly` and
//! `yearly` each take a window: within it, the newest snapshot of each such
//! calendar period is kept. Periods are read in the policy's time zone. A
//! snapshot is kept when any rule keeps it; the newest snapshot of a source
//! is always kept. [`select`] is the pure function that decides.
//!
//! Keeping a snapshot keeps everything it depends on, transitively: a TiDB
//! incremental backup needs the full backup and every incremental between
//! them to restore, so with hourly incrementals and `daily = "30d"` each
//! kept evening incremental keeps its whole chain. [`needed`] finds, among
//! the snapshots a selection would remove, those that a staying snapshot
//! needs (dependencies as recorded in the catalog,
//! [`trireme_common::manifest::dependencies`]). A directory backup's parent
//! is only for change detection: tree snapshots stand alone.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::{Dependency, Id};

/// A retention class: which snapshots of a source to keep.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionClass {
    /// Keep the newest N snapshots.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each hour within this window.
    #[serde(default)]
    pub hourly: Option<Duration>,
    /// ... of each day.
    #[serde(default)]
    pub daily: Option<Duration>,
    /// ... of each ISO week.
    #[serde(default)]
    pub weekly: Option<Duration>,
    /// ... of each month.
    #[serde(default)]
    pub monthly: Option<Duration>,
    /// ... of each year.
    #[serde(default)]
    pub yearly: Option<Duration>,
}

/// A calendar period a window rule keeps one snapshot of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// A clock hour.
    Hour,
    /// A day.
    Day,
    /// An ISO week (Monday to Sunday).
    Week,
    /// A month.
    Month,
    /// A year.
    Year,
}

impl Period {
    /// Every period, shortest first.
    pub const ALL: [Period; 5] = [
        Period::Hour,
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
    ];

    /// The setting's name: `hourly`, `daily`, ...
    pub fn setting(self) -> &'static str {
        match self {
            Period::Hour => "hourly",
            Period::Day => "daily",
            Period::Week => "weekly",
            Period::Month => "monthly",
            Period::Year => "yearly",
        }
    }

    /// The period holding `t` in `tz`, as a label (`2026-03-08`,
    /// `2026-W10`, ...), which is also its identity.
    pub fn label(self, t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
        let l = t.with_timezone(&tz);
        match self {
            Period::Hour => format!("{} {:02}h", l.date_naive(), l.hour()),
            Period::Day => l.date_naive().to_string(),
            Period::Week => {
                let w = l.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Month => format!("{}-{:02}", l.year(), l.month()),
            Period::Year => l.year().to_string(),
        }
    }
}

impl RetentionClass {
    /// The window of one period's rule.
    pub fn window(&self, p: Period) -> Option<Duration> {
        match p {
            Period::Hour => self.hourly,
            Period::Day => self.daily,
            Period::Week => self.weekly,
            Period::Month => self.monthly,
            Period::Year => self.yearly,
        }
    }

    /// Whether the class has no rule at all.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none() && Period::ALL.iter().all(|p| self.window(*p).is_none())
    }
}

impl fmt::Display for RetentionClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(n) = self.keep_last {
            parts.push(format!("keep_last = {n}"));
        }
        for p in Period::ALL {
            if let Some(w) = self.window(p) {
                parts.push(format!(
                    "{} = \"{}\"",
                    p.setting(),
                    humantime::format_duration(w)
                ));
            }
        }
        f.write_str(&parts.join(", "))
    }
}

/// What [`select`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Kept snapshots, newest first, with every rule that keeps each.
    pub keep: Vec<(Id, Vec<String>)>,
    /// Snapshots to remove, newest first, with why.
    pub remove: Vec<(Id, String)>,
}

/// Which of `snapshots` (id and backup time) `class` keeps at `now`, with
/// periods read in `tz`. The newest snapshot is always kept; a snapshot
/// newer than `now` too. Ties in time are broken by id, so the result does
/// not depend on the input order.
pub fn select(
    snapshots: &[(Id, DateTime<Utc>)],
    class: &RetentionClass,
    now: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Selection {
    let mut snaps: Vec<(Id, DateTime<Utc>)> = snapshots.to_vec();
    snaps.sort_by_key(|s| std::cmp::Reverse((s.1, s.0)));
    snaps.dedup_by_key(|s| s.0);
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); snaps.len()];
    let mut in_window = vec![false; snaps.len()];
    if let Some(r) = reasons.first_mut() {
        r.push("newest".into());
    }
    if let Some(n) = class.keep_last {
        for r in reasons.iter_mut().take(n as usize) {
            r.push(format!("last {n}"));
        }
    }
    for (i, (_, t)) in snaps.iter().enumerate() {
        if *t > now {
            reasons[i].push("newer than now".into());
        }
    }
    for p in Period::ALL {
        let Some(w) = class.window(p) else { continue };
        let cutoff = chrono::Duration::from_std(w)
            .ok()
            .and_then(|w| now.checked_sub_signed(w))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let mut seen = HashSet::new();
        for (i, (_, t)) in snaps.iter().enumerate() {
            if *t <= cutoff {
                break;
            }
            in_window[i] = true;
            let label = p.label(*t, tz);
            if seen.insert(label.clone()) {
                reasons[i].push(format!("{} {label}", p.setting()));
            }
        }
    }
    let mut out = Selection::default();
    for (((id, _), why), windowed) in snaps.into_iter().zip(reasons).zip(in_window) {
        if why.is_empty() {
            let reason = if windowed {
                "a newer snapshot is kept for each of its periods"
            } else if class.keep_last.is_some() {
                "older than the last kept and outside every window"
            } else {
                "outside every window"
            };
            out.remove.push((id, reason.to_string()));
        } else {
            out.keep.push((id, why));
        }
    }
    out
}

/// Why a snapshot stays although no rule keeps it: a staying snapshot
/// needs it to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeededBy {
    /// The staying snapshot that needs it, directly or through others (one
    /// that stays on its own: kept by a rule, or not up for removal).
    pub snapshot: Id,
    /// The chain it belongs to (e.g. `tidb`).
    pub chain: String,
}

impl fmt::Display for NeededBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "needed by {} ({} chain)",
            self.snapshot.short(),
            self.chain
        )
    }
}

/// Which of `remove` must stay because a staying snapshot depends on them,
/// directly or through others. `snapshots` is every snapshot (id, backup
/// time, dependencies); those not in `remove` stay. Each one found is named
/// with the newest staying snapshot whose chain reaches it (ties by id), so
/// the result does not depend on the input order. Dependencies on snapshots
/// not in `snapshots` are not followed (the caller reports them).
pub fn needed(
    snapshots: &[(Id, DateTime<Utc>, &[Dependency])],
    remove: &BTreeSet<Id>,
) -> BTreeMap<Id, NeededBy> {
    let deps: HashMap<Id, &[Dependency]> = snapshots.iter().map(|(id, _, d)| (*id, *d)).collect();
    let mut roots: Vec<(DateTime<Utc>, Id)> = snapshots
        .iter()
        .filter(|(id, _, _)| !remove.contains(id))
        .map(|(id, t, _)| (*t, *id))
        .collect();
    roots.sort_by(|a, b| b.cmp(a));
    roots.dedup();
    let mut out: BTreeMap<Id, NeededBy> = BTreeMap::new();
    for (_, root) in roots {
        let mut todo = vec![root];
        while let Some(id) = todo.pop() {
            for d in deps.get(&id).copied().unwrap_or_default() {
                if remove.contains(&d.snapshot) && !out.contains_key(&d.snapshot) {
                    out.insert(
                        d.snapshot,
                        NeededBy {
                            snapshot: root,
                            chain: d.chain.clone(),
                        },
                    );
                    todo.push(d.snapshot);
                }
            }
        }
    }
    out
}

/// Retention classes by name.
pub const RETENTION: crate::catalog::TableDef<String, RetentionClass> =
    crate::catalog::TableDef::new("retention");

impl crate::catalog::Catalog {
    /// Retention classes by name.
    pub fn retention(&self) -> crate::catalog::Tree<String, RetentionClass> {
        self.table(&RETENTION)
    }
}

impl<'a> crate::catalog::Tx<'a> {
    /// Retention classes by name, in this transaction.
    pub fn retention(&self) -> crate::catalog::TxTree<'a, String, RetentionClass> {
        self.table(&RETENTION)
    }
}

#[cfg(test)]
mod tests;
