use std::collections::BTreeSet;

use chrono::{Duration as ChronoDuration, NaiveDate, TimeZone};
use proptest::prelude::*;

use super::*;

/// A distinct id per instant.
fn id_of(t: DateTime<Utc>) -> Id {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&t.timestamp().to_be_bytes());
    Id(b)
}

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

/// A simulated year: four snapshots a day (01:00, 07:00, 13:00, 19:00
/// UTC) from 2025-01-01 to 2025-12-31; "now" is 2026-01-01 00:00 UTC.
fn year() -> (Vec<(Id, DateTime<Utc>)>, DateTime<Utc>) {
    let mut v = Vec::new();
    let mut day = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
    while day.year() == 2025 {
        for h in [1, 7, 13, 19] {
            let t = Utc.from_utc_datetime(&day.and_hms_opt(h, 0, 0).unwrap());
            v.push((id_of(t), t));
        }
        day = day.succ_opt().unwrap();
    }
    assert_eq!(v.len(), 4 * 365);
    (v, at(2026, 1, 1, 0))
}

fn dur(s: &str) -> Option<Duration> {
    Some(humantime::parse_duration(s).unwrap())
}

/// The kept set as instants, checking on the way that keep and remove
/// partition the input.
fn kept(class: &RetentionClass, tz: chrono_tz::Tz) -> BTreeSet<DateTime<Utc>> {
    let (snaps, now) = year();
    let sel = select(&snaps, class, now, tz);
    assert_eq!(sel.keep.len() + sel.remove.len(), snaps.len());
    let time = |id: &Id| snaps.iter().find(|s| s.0 == *id).unwrap().1;
    let keep: BTreeSet<_> = sel.keep.iter().map(|(id, _)| time(id)).collect();
    let remove: BTreeSet<_> = sel.remove.iter().map(|(id, _)| time(id)).collect();
    assert!(keep.is_disjoint(&remove));
    keep
}

fn days_at(from: (u32, u32), to: (u32, u32), hour: u32) -> BTreeSet<DateTime<Utc>> {
    let mut out = BTreeSet::new();
    let mut t = at(2025, from.0, from.1, hour);
    while t <= at(2025, to.0, to.1, hour) {
        out.insert(t);
        t += ChronoDuration::days(1);
    }
    out
}

#[test]
fn redis_seven_days_keeps_the_last_seven_evenings() {
    let class = RetentionClass {
        daily: dur("7d"),
        ..Default::default()
    };
    assert_eq!(
        kept(&class, chrono_tz::UTC),
        days_at((12, 25), (12, 31), 19)
    );
}

#[test]
fn mongodb_thirty_dailies_and_ninety_days_of_monthlies() {
    let class = RetentionClass {
        daily: dur("30d"),
        monthly: dur("90d"),
        ..Default::default()
    };
    let mut want = days_at((12, 2), (12, 31), 19);
    want.insert(at(2025, 10, 31, 19));
    want.insert(at(2025, 11, 30, 19));
    let got = kept(&class, chrono_tz::UTC);
    assert_eq!(got.len(), 32);
    assert_eq!(got, want);
}

#[test]
fn mongodb_one_year_of_monthlies_keeps_each_month_end() {
    let class = RetentionClass {
        monthly: dur("1y"),
        ..Default::default()
    };
    let want: BTreeSet<_> = (1..=12)
        .map(|m| {
            let last = NaiveDate::from_ymd_opt(2025 + (m / 12) as i32, m % 12 + 1, 1)
                .unwrap()
                .pred_opt()
                .unwrap();
            at(2025, m, last.day(), 19)
        })
        .collect();
    assert_eq!(kept(&class, chrono_tz::UTC), want);
}

#[test]
fn weekly_uses_iso_weeks() {
    let class = RetentionClass {
        weekly: dur("90d"),
        ..Default::default()
    };
    // The window opens on Friday 2025-10-03; each ISO week's newest is its
    // Sunday evening, and 2025-12-31 (a Wednesday) opens 2026-W01.
    let mut want: BTreeSet<_> = (0..13)
        .map(|w| at(2025, 10, 5, 19) + ChronoDuration::weeks(w))
        .collect();
    assert_eq!(want.last(), Some(&at(2025, 12, 28, 19)));
    want.insert(at(2025, 12, 31, 19));
    assert_eq!(kept(&class, chrono_tz::UTC), want);
}

#[test]
fn keep_last_hourly_and_yearly() {
    let last5 = RetentionClass {
        keep_last: Some(5),
        ..Default::default()
    };
    let want: BTreeSet<_> = [
        at(2025, 12, 31, 19),
        at(2025, 12, 31, 13),
        at(2025, 12, 31, 7),
        at(2025, 12, 31, 1),
        at(2025, 12, 30, 19),
    ]
    .into();
    assert_eq!(kept(&last5, chrono_tz::UTC), want);

    let hourly = RetentionClass {
        hourly: dur("48h"),
        ..Default::default()
    };
    let mut want = days_at((12, 30), (12, 31), 1);
    for h in [7, 13, 19] {
        want.extend(days_at((12, 30), (12, 31), h));
    }
    assert_eq!(kept(&hourly, chrono_tz::UTC), want);

    let yearly = RetentionClass {
        yearly: dur("10y"),
        ..Default::default()
    };
    assert_eq!(kept(&yearly, chrono_tz::UTC), [at(2025, 12, 31, 19)].into());
}

#[test]
fn days_are_read_in_the_policy_time_zone() {
    let class = RetentionClass {
        daily: dur("7d"),
        ..Default::default()
    };
    // Auckland is UTC+13 in December: a local day runs from 11:00 UTC to
    // 11:00 UTC, so each local day's newest is the 07:00 UTC snapshot, and
    // 13:00 and 19:00 UTC on the 31st are already 2026-01-01 there.
    let mut want = days_at((12, 25), (12, 31), 7);
    want.insert(at(2025, 12, 31, 19));
    assert_eq!(kept(&class, chrono_tz::Pacific::Auckland), want);
}

#[test]
fn an_empty_class_keeps_only_the_newest_and_reasons_are_given() {
    let (snaps, now) = year();
    let sel = select(&snaps, &RetentionClass::default(), now, chrono_tz::UTC);
    assert_eq!(sel.keep.len(), 1);
    assert_eq!(sel.keep[0].1, vec!["newest".to_string()]);
    assert_eq!(sel.remove[0].1, "outside every window");
    let class = RetentionClass {
        daily: dur("7d"),
        ..Default::default()
    };
    let sel = select(&snaps, &class, now, chrono_tz::UTC);
    assert_eq!(
        sel.keep[0].1,
        vec!["newest".to_string(), "daily 2025-12-31".into()]
    );
    // 13:00 on the 31st is inside the window but not its day's newest.
    assert_eq!(sel.remove[0].0, id_of(at(2025, 12, 31, 13)));
    assert_eq!(
        sel.remove[0].1,
        "a newer snapshot is kept for each of its periods"
    );
    assert!(class.to_string().contains("daily = \"7days\""), "{class}");
}

/// Three days of hourly TiDB backups, 2026-03-01 00:00 to 2026-03-03
/// 23:00 UTC: a full backup at 03-01 00:00 with an incremental every hour
/// after it, each resting on the one before, until a new full backup at
/// 03-03 12:00 starts a second chain. Each snapshot's dependencies.
fn hourly_chains() -> Vec<(Id, DateTime<Utc>, Vec<Dependency>)> {
    let mut v: Vec<(Id, DateTime<Utc>, Vec<Dependency>)> = Vec::new();
    let mut t = at(2026, 3, 1, 0);
    while t <= at(2026, 3, 3, 23) {
        let full = t == at(2026, 3, 1, 0) || t == at(2026, 3, 3, 12);
        let deps = match v.last() {
            Some((prev, _, _)) if !full => vec![Dependency {
                snapshot: *prev,
                chain: "tidb".into(),
            }],
            _ => Vec::new(),
        };
        v.push((id_of(t), t, deps));
        t += ChronoDuration::hours(1);
    }
    v
}

#[test]
fn a_kept_incremental_keeps_its_full_backup_and_every_intermediate() {
    let chains = hourly_chains();
    let now = at(2026, 3, 4, 0) + ChronoDuration::minutes(30);
    let class = RetentionClass {
        daily: dur("30d"),
        ..Default::default()
    };
    let times: Vec<(Id, DateTime<Utc>)> = chains.iter().map(|(id, t, _)| (*id, *t)).collect();
    let sel = select(&times, &class, now, chrono_tz::UTC);
    // The rules alone keep each day's 23:00 incremental.
    let by_rule: BTreeSet<Id> = sel.keep.iter().map(|k| k.0).collect();
    let evenings: BTreeSet<Id> = (1..=3).map(|d| id_of(at(2026, 3, d, 23))).collect();
    assert_eq!(by_rule, evenings);
    let remove: BTreeSet<Id> = sel.remove.iter().map(|r| r.0).collect();
    let input: Vec<(Id, DateTime<Utc>, &[Dependency])> = chains
        .iter()
        .map(|(id, t, d)| (*id, *t, d.as_slice()))
        .collect();
    let needed = needed(&input, &remove);
    // Each evening keeps its chain back to the full backup (or to the
    // evening before, which stays anyway); only the morning of the 3rd,
    // the end of the first chain after the last evening that needs it,
    // goes.
    let gone: BTreeSet<Id> = remove
        .iter()
        .filter(|id| !needed.contains_key(id))
        .copied()
        .collect();
    let morning: BTreeSet<Id> = (0..12).map(|h| id_of(at(2026, 3, 3, h))).collect();
    assert_eq!(gone, morning);
    assert_eq!(by_rule.len() + needed.len() + gone.len(), chains.len());
    let why = |d, h| needed[&id_of(at(2026, 3, d, h))].to_string();
    let by = |d| id_of(at(2026, 3, d, 23)).short();
    assert_eq!(why(1, 0), format!("needed by {} (tidb chain)", by(1)));
    assert_eq!(why(1, 22), format!("needed by {} (tidb chain)", by(1)));
    assert_eq!(why(2, 0), format!("needed by {} (tidb chain)", by(2)));
    assert_eq!(why(3, 12), format!("needed by {} (tidb chain)", by(3)));
    assert_eq!(needed[&id_of(at(2026, 3, 3, 12))].chain, "tidb");
    // The same whatever the input order.
    let mut rev = input.clone();
    rev.reverse();
    assert_eq!(super::needed(&rev, &remove), needed);
}

#[test]
fn needed_follows_chains_through_removed_snapshots_only() {
    let id = |n: u8| Id([n; 32]);
    let dep = |n: u8| {
        vec![Dependency {
            snapshot: id(n),
            chain: "x".into(),
        }]
    };
    let t = |h: u32| at(2026, 1, 1, h);
    // 1 <- 2 <- 3 <- 4, and 5 depends on a snapshot nobody knows.
    let (d2, d3, d4, d5) = (dep(1), dep(2), dep(3), dep(99));
    let snaps: Vec<(Id, DateTime<Utc>, &[Dependency])> = vec![
        (id(1), t(1), &[]),
        (id(2), t(2), &d2),
        (id(3), t(3), &d3),
        (id(4), t(4), &d4),
        (id(5), t(5), &d5),
    ];
    // Nothing removed: nothing needed.
    assert!(needed(&snaps, &BTreeSet::new()).is_empty());
    // 4 stays: 1, 2, 3 are needed by it.
    let all_but_4: BTreeSet<Id> = [1, 2, 3, 5].map(id).into();
    let n = needed(&snaps, &all_but_4);
    assert_eq!(
        n.keys().copied().collect::<BTreeSet<_>>(),
        [1, 2, 3].map(id).into()
    );
    assert!(n.values().all(|v| v.snapshot == id(4)));
    // 4 goes too: nothing is needed.
    let all: BTreeSet<Id> = [1, 2, 3, 4, 5].map(id).into();
    assert!(needed(&snaps, &all).is_empty());
    // 3 stays, 4 goes: 1 and 2 are needed by 3.
    let but_3: BTreeSet<Id> = [1, 2, 4].map(id).into();
    let n = needed(&snaps, &but_3);
    assert_eq!(
        n.keys().copied().collect::<BTreeSet<_>>(),
        [1, 2].map(id).into()
    );
    assert!(n.values().all(|v| v.snapshot == id(3)));
}

fn class_strategy() -> impl Strategy<Value = RetentionClass> {
    let w = || proptest::option::of((1u64..2000).prop_map(|h| Duration::from_secs(h * 3600)));
    (proptest::option::of(0u32..10), w(), w(), w(), w(), w()).prop_map(
        |(keep_last, hourly, daily, weekly, monthly, yearly)| RetentionClass {
            keep_last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        },
    )
}

proptest! {
    #[test]
    fn the_newest_is_kept_and_keep_and_remove_partition_the_input(
        offsets in proptest::collection::vec(-5_000_000i64..100_000, 1..60),
        class in class_strategy(),
        tz in prop::sample::select(vec![chrono_tz::UTC, chrono_tz::Europe::Paris, chrono_tz::Pacific::Auckland]),
    ) {
        let now = at(2026, 3, 29, 12);
        let snaps: Vec<(Id, DateTime<Utc>)> = offsets
            .iter()
            .enumerate()
            .map(|(i, o)| {
                let mut b = [0u8; 32];
                b[..8].copy_from_slice(&(i as u64).to_be_bytes());
                (Id(b), now + ChronoDuration::seconds(*o))
            })
            .collect();
        let sel = select(&snaps, &class, now, tz);
        let newest = snaps.iter().max_by_key(|s| (s.1, s.0)).unwrap().0;
        prop_assert!(sel.keep.iter().any(|(id, _)| *id == newest));
        let keep: BTreeSet<Id> = sel.keep.iter().map(|k| k.0).collect();
        let remove: BTreeSet<Id> = sel.remove.iter().map(|k| k.0).collect();
        prop_assert!(keep.is_disjoint(&remove));
        let all: BTreeSet<Id> = snaps.iter().map(|s| s.0).collect();
        prop_assert_eq!(keep.union(&remove).copied().collect::<BTreeSet<_>>(), all);
        // Input order does not matter.
        let mut rev = snaps.clone();
        rev.reverse();
        prop_assert_eq!(select(&rev, &class, now, tz), sel);
        // keep_last N keeps at least N (or all).
        if let Some(n) = class.keep_last {
            prop_assert!(keep.len() >= (n as usize).min(snaps.len()));
        }
    }
}
