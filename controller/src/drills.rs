//! DR drills on a schedule: when the next one is due, which location it
//! reads from (each in turn, so every location is drilled), who takes part,
//! and when drills are stale. The drill itself (restores in dependency
//! order from one location, the report) is in [`crate::recovery`].
//!
//! ```toml
//! [drills]
//! schedule = "quarterly"        # or monthly, yearly, or a cron expression
//! stale_after = "92d"           # status and TriremeDrillStale after this
//! channel = "#dr-war-room"
//! participants = ["alice", "bob"]
//! roles = { incident_commander = "alice", restore_lead = "bob", communications = "carol" }
//! failover = ["Point the chat servers at the staging databases", "…"]
//! rollback = ["Point them back at production", "…"]
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::policy::CronExpr;
use crate::recovery::DrillRecord;
pub use crate::recovery::{DrillPeople, Lesson};

/// Default `stale_after`: a quarter, and a little.
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(92 * 86_400);

/// Every location should have a passed drill from it within this long.
pub const LOCATION_STALE_AFTER: Duration = Duration::from_secs(366 * 86_400);

/// `[drills]`.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// When drills run on their own (none: by hand only).
    pub schedule: Option<CronExpr>,
    /// A drill older than this is stale.
    pub stale_after: Duration,
    /// The defaults every drill gets.
    pub people: DrillPeople,
}

impl Default for DrillSettings {
    fn default() -> Self {
        DrillSettings {
            schedule: None,
            stale_after: DEFAULT_STALE_AFTER,
            people: DrillPeople::default(),
        }
    }
}

/// A `[drills] schedule`: `monthly`, `quarterly`, `yearly`, or cron.
///
/// # Errors
/// [`Error::InvalidValue`] naming what is wrong.
pub fn parse_schedule(text: &str) -> Result<CronExpr> {
    let t = text.trim();
    let expr = match t.to_ascii_lowercase().as_str() {
        "monthly" => "0 6 1 * *".to_string(),
        "quarterly" => "0 6 1 1,4,7,10 *".to_string(),
        "yearly" | "annually" => "0 6 1 1 *".to_string(),
        _ => t.to_string(),
    };
    CronExpr::parse(&expr)
}

/// The last schedule slot handled (one key, `schedule`).
pub const DRILL_SLOTS: crate::catalog::TableDef<String, DateTime<Utc>> =
    crate::catalog::TableDef::new("drill_slots");

impl Catalog {
    /// The last drill-schedule slot handled.
    pub fn drill_slots(&self) -> crate::catalog::Tree<String, DateTime<Utc>> {
        self.table(&DRILL_SLOTS)
    }
}

/// Whether a scheduled drill is due now: the newest slot at or before
/// `now` is after the last one handled (recorded here). The first look
/// only sets the baseline.
///
/// # Errors
/// Catalog errors.
pub fn due(catalog: &Catalog, settings: &DrillSettings, now: DateTime<Utc>) -> Result<bool> {
    let Some(schedule) = &settings.schedule else {
        return Ok(false);
    };
    let Some(slot) = schedule.last_at_or_before(now, &Utc) else {
        return Ok(false);
    };
    let key = "schedule".to_string();
    match catalog.drill_slots().get(&key)? {
        Some(prev) if prev >= slot => Ok(false),
        None => {
            catalog.drill_slots().insert(&key, &slot)?;
            Ok(false)
        }
        Some(_) => {
            catalog.drill_slots().insert(&key, &slot)?;
            Ok(true)
        }
    }
}

/// The location the next scheduled drill reads from: the one drilled
/// longest ago (never first), ties in config order.
pub fn next_location(drills: &[DrillRecord], locations: &[String]) -> Option<String> {
    let last = |l: &str| {
        drills
            .iter()
            .filter(|d| d.location.as_deref() == Some(l))
            .map(|d| d.started)
            .max()
    };
    locations
        .iter()
        .enumerate()
        .min_by_key(|(i, l)| (last(l), *i))
        .map(|(_, l)| l.clone())
}

/// What `status` says about drills when sources can be drilled: no passed
/// drill within `stale_after`, and each location without a passed drill
/// from it within a year.
pub fn problems(
    drills: &[DrillRecord],
    settings: &DrillSettings,
    locations: &[String],
    now: DateTime<Utc>,
) -> Vec<String> {
    let passed: Vec<&DrillRecord> = drills.iter().filter(|d| d.ok()).collect();
    let newest = passed.iter().filter_map(|d| d.finished).max();
    let stale = chrono::Duration::from_std(settings.stale_after).unwrap_or_default();
    let how = if settings.schedule.is_some() {
        "the next scheduled one, or `trireme drill run --location L`"
    } else {
        "`trireme drill run --location L`, or set [drills] schedule = \"quarterly\""
    };
    let mut out = Vec::new();
    match newest {
        None => out.push(format!("no DR drill has passed yet: run one ({how})")),
        Some(t) if now - t > stale => out.push(format!(
            "the last passed DR drill finished {} ago (older than {}): run one ({how})",
            crate::recovery::human((now - t).to_std().unwrap_or_default()),
            crate::recovery::human(settings.stale_after)
        )),
        Some(_) => {}
    }
    let year = chrono::Duration::from_std(LOCATION_STALE_AFTER).unwrap_or_default();
    let undrilled: Vec<&str> = locations
        .iter()
        .filter(|l| {
            !passed.iter().any(|d| {
                d.location.as_deref() == Some(l.as_str())
                    && d.finished.is_some_and(|f| now - f <= year)
            })
        })
        .map(String::as_str)
        .collect();
    if !undrilled.is_empty() && newest.is_some() {
        out.push(format!(
            "no passed DR drill read from {} in the last year: every location must be restored from (`trireme drill run --location {}`)",
            undrilled.join(", "),
            undrilled[0]
        ));
    }
    out
}

/// Record lessons learned (and more participants) on drill `id`.
///
/// # Errors
/// [`Error::NotFound`] for an unknown drill; [`Error::InvalidValue`] when
/// there is nothing to record; catalog errors.
pub fn annotate(
    catalog: &Catalog,
    id: &str,
    by: &str,
    lessons: &[String],
    participants: &[String],
    now: DateTime<Utc>,
) -> Result<DrillRecord> {
    let lessons: Vec<&String> = lessons.iter().filter(|l| !l.trim().is_empty()).collect();
    if lessons.is_empty() && participants.is_empty() {
        return Err(Error::invalid(
            "drill annotate",
            id,
            "nothing to record: give --lessons TEXT and/or --participant NAME",
        ));
    }
    let mut d = catalog
        .drills()
        .get(&id.to_string())?
        .ok_or_else(|| Error::not_found("drill", id.to_string()))?;
    for l in lessons {
        d.lessons.push(Lesson {
            at: now,
            by: by.to_string(),
            text: l.trim().to_string(),
        });
    }
    for p in participants {
        if !d.people.participants.contains(p) {
            d.people.participants.push(p.clone());
        }
    }
    catalog.drills().insert(&d.id, &d)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drill(loc: &str, day: u32, ok: bool) -> DrillRecord {
        let t: DateTime<Utc> = format!("2026-01-{day:02}T10:00:00Z").parse().unwrap();
        DrillRecord {
            id: format!("d-{loc}-{day}"),
            location: Some(loc.into()),
            by: "x".into(),
            started: t,
            finished: Some(t),
            locations: Vec::new(),
            steps: vec![crate::recovery::DrillStep {
                source: "a/b".parse().unwrap(),
                kind: String::new(),
                job: None,
                snapshot: None,
                snapshot_time: None,
                result: Some(crate::recovery::RestoreTestRecord {
                    job: crate::jobs::JobId::new(t),
                    source: "a/b".parse().unwrap(),
                    snapshot: trireme_common::Id([1; 32]),
                    target: "a:t".into(),
                    drill: None,
                    location: Some(loc.into()),
                    started: t,
                    finished: Some(t),
                    duration_secs: 1.0,
                    rto: None,
                    ok,
                    checks: Vec::new(),
                    error: String::new(),
                }),
                error: String::new(),
            }],
            scheduled: false,
            people: DrillPeople::default(),
            lessons: Vec::new(),
            platform: None,
            at: None,
        }
    }

    #[test]
    fn each_location_in_turn() {
        let locs: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        assert_eq!(next_location(&[], &locs).unwrap(), "a");
        let d = vec![drill("a", 1, true)];
        assert_eq!(next_location(&d, &locs).unwrap(), "b");
        let d = vec![
            drill("a", 1, true),
            drill("b", 2, true),
            drill("c", 3, true),
        ];
        assert_eq!(next_location(&d, &locs).unwrap(), "a");
        let d = vec![
            drill("b", 5, true),
            drill("a", 1, true),
            drill("c", 3, true),
        ];
        assert_eq!(next_location(&d, &locs).unwrap(), "a");
    }

    #[test]
    fn schedules_take_keywords_and_cron() {
        assert_eq!(
            parse_schedule("quarterly").unwrap().as_str(),
            "0 6 1 1,4,7,10 *"
        );
        assert!(parse_schedule("*/5 * * * *").is_ok());
        let e = parse_schedule("fortnightly").unwrap_err().to_string();
        assert!(e.contains("5 fields"), "{e}");
    }

    #[test]
    fn stale_drills_and_undrilled_locations_are_problems() {
        let locs: Vec<String> = ["a", "b"].map(String::from).to_vec();
        let s = DrillSettings::default();
        let now: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let p = problems(&[], &s, &locs, now);
        assert_eq!(p.len(), 1);
        assert!(p[0].contains("no DR drill has passed yet"), "{p:?}");
        // A failed drill does not count.
        let p = problems(&[drill("a", 5, false)], &s, &locs, now);
        assert!(p[0].contains("no DR drill has passed yet"), "{p:?}");
        let p = problems(&[drill("a", 5, true)], &s, &locs, now);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("read from b in the last year"), "{p:?}");
        let later: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let p = problems(
            &[drill("a", 5, true), drill("b", 6, true)],
            &s,
            &locs,
            later,
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("older than "), "{p:?}");
    }
}
