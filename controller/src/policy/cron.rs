//! Cron schedules: five fields, validated with `croner`, evaluated in a
//! time zone.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::error::{Error, Result};

/// How a schedule is written, appended to every schedule error.
pub const CRON_HELP: &str = "a schedule is 5 fields: minute hour day-of-month month day-of-week, \
e.g. \"0 2 * * *\" (02:00 every day) or \"30 1 * * SUN\" (01:30 on Sundays); \
@hourly, @daily, @weekly, @monthly and @yearly also work";

/// The five fields, their names and what they accept.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, or L for the last day"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday)"),
];

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// A validated cron expression (five fields, no seconds).
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Arc<Cron>,
}

impl CronExpr {
    /// Parse and validate `text`.
    ///
    /// # Errors
    /// [`Error::InvalidValue`] for `schedule`, naming the bad field, what it
    /// accepts, and an example.
    pub fn parse(text: &str) -> Result<Self> {
        let bad =
            |reason: String| Error::invalid("schedule", text, format!("{reason}; {CRON_HELP}"));
        let trimmed = text.trim();
        let expanded = expand(trimmed).map_err(bad)?;
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            let extra = match fields.len() {
                6 => " (seconds are not supported)",
                7 => " (seconds and years are not supported)",
                _ => "",
            };
            return Err(bad(format!("it has {} fields{extra}", fields.len())));
        }
        // Find the field at fault: each field alone, the others `*`.
        for (i, field) in fields.iter().enumerate() {
            let mut probe = ["*"; 5];
            probe[i] = field;
            if let Err(e) = parser().parse(&probe.join(" ")) {
                let (name, accepts) = FIELDS[i];
                return Err(bad(format!(
                    "the {name} field {field:?} is invalid ({name} accepts {accepts}, lists a,b, ranges a-b and steps */n): {}",
                    describe(&e)
                )));
            }
        }
        let cron = parser()
            .parse(expanded)
            .map_err(|e| bad(format!("the fields do not combine: {}", describe(&e))))?;
        // A pattern such as 30 February parses but never fires.
        let probe = Utc
            .with_ymd_and_hms(2000, 1, 1, 0, 0, 0)
            .single()
            .expect("valid date");
        if cron.find_next_occurrence(&probe, false).is_err() {
            return Err(bad("it never matches a real date (e.g. 30 February)".into()));
        }
        Ok(CronExpr {
            text: trimmed.to_string(),
            cron: Arc::new(cron),
        })
    }

    /// Re-read an expression [`CronExpr::parse`] accepted before (from the
    /// catalog): no field-by-field diagnosis.
    fn reparse(text: &str) -> Result<Self> {
        let trimmed = text.trim();
        match expand(trimmed).ok().and_then(|e| parser().parse(e).ok()) {
            Some(cron) => Ok(CronExpr {
                text: trimmed.to_string(),
                cron: Arc::new(cron),
            }),
            None => CronExpr::parse(text),
        }
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time after `t` (strictly) that the schedule fires in time
    /// zone `tz`; `None` if it never fires again.
    pub fn next_after<Tz: TimeZone>(&self, t: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last time at or before `t` that the schedule fired in time zone
    /// `tz`; `None` if it never did.
    pub fn last_at_or_before<Tz: TimeZone>(
        &self,
        t: DateTime<Utc>,
        tz: &Tz,
    ) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }
}

/// Shorthands to their five fields; anything else as it is.
fn expand(trimmed: &str) -> std::result::Result<&str, String> {
    Ok(match trimmed.to_ascii_lowercase().as_str() {
        "" => return Err("it is empty".into()),
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        s if s.starts_with('@') => return Err(format!("{trimmed:?} is not a known shorthand")),
        _ => trimmed,
    })
}

/// croner's messages, minus its internal type names.
fn describe(e: &croner::errors::CronError) -> String {
    let s = e.to_string();
    s.trim_end_matches('.')
        .replace("CronPattern ", "the pattern ")
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for CronExpr {}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?})", self.text)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for CronExpr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        CronExpr::parse(s)
    }
}

impl TryFrom<String> for CronExpr {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        CronExpr::parse(&s)
    }
}

impl From<CronExpr> for String {
    fn from(c: CronExpr) -> String {
        c.text
    }
}

impl serde::Serialize for CronExpr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for CronExpr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        CronExpr::reparse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn valid_expressions_fire_when_expected() {
        let c = CronExpr::parse("0 2 * * *").unwrap();
        assert_eq!(
            c.next_after(t("2025-03-01T01:59:59Z"), &Utc),
            Some(t("2025-03-01T02:00:00Z"))
        );
        assert_eq!(
            c.next_after(t("2025-03-01T02:00:00Z"), &Utc),
            Some(t("2025-03-02T02:00:00Z")),
            "strictly after"
        );
        assert_eq!(
            c.last_at_or_before(t("2025-03-01T02:00:00Z"), &Utc),
            Some(t("2025-03-01T02:00:00Z"))
        );
        let weekly = CronExpr::parse("@weekly").unwrap();
        assert_eq!(weekly.as_str(), "@weekly");
        assert_eq!(
            weekly.next_after(t("2025-03-01T00:00:00Z"), &Utc), // a Saturday
            Some(t("2025-03-02T00:00:00Z"))
        );
        CronExpr::parse("*/15 1-5 1,15 JAN-JUN MON-FRI").unwrap();
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let c = CronExpr::parse("0 2 * * *").unwrap();
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(
            c.next_after(t("2025-01-10T00:00:00Z"), &paris),
            Some(t("2025-01-10T01:00:00Z")),
            "02:00 in Paris is 01:00 UTC in winter"
        );
        assert_eq!(
            c.next_after(t("2025-07-09T23:00:00Z"), &paris),
            Some(t("2025-07-10T00:00:00Z")),
            "and 00:00 UTC in summer"
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("0 25 * * *", "hour field \"25\""),
            ("61 2 * * *", "minute field \"61\""),
            ("0 2 32 * *", "day-of-month field \"32\""),
            ("0 2 * 13 *", "month field \"13\""),
            ("0 2 * * FUNDAY", "day-of-week field \"FUNDAY\""),
            ("0 2 * *", "it has 4 fields"),
            ("0 0 2 * * *", "seconds are not supported"),
            ("", "it is empty"),
            ("@fortnightly", "not a known shorthand"),
            ("0 0 30 2 *", "never matches"),
        ];
        for (expr, want) in cases {
            let e = CronExpr::parse(expr).unwrap_err().to_string();
            assert!(e.contains(want), "{expr:?}: {e}");
            assert!(e.contains("e.g. \"0 2 * * *\""), "{expr:?}: {e}");
        }
    }
}
