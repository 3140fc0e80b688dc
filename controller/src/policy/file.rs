//! Policy files: TOML with one `[[policy]]` table per source.
//!
//! ```toml
//! [[policy]]
//! source = "host-a/redis-main"   # agent/source
//! schedule = "0 2 * * *"         # 5-field cron
//! mode = "incremental"           # or "full"
//! full_every = "7d"              # a full backup at least weekly
//! retention = "daily-30"         # retention class
//! timezone = "Europe/Paris"      # default "UTC"
//! max_retries = 3
//! retry_backoff = "5m"           # doubles for each retry
//! rpo = "26h"                    # newest snapshot verified everywhere must be younger
//! rto = "30m"                    # restore tests must finish within
//! restore_test = { target = "host-a:source:redis-staging", schedule = "0 4 1 * *" }
//! exclude = ["*.tmp"]            # volume sources: left out, on top of the agent's own
//! exclude_if_present = [".nobackup"]
//! one_file_system = true
//! upload_bytes_per_sec = "20 MiB" # each backup job's upload budget
//!
//! [retention.daily-30]           # a retention class (see crate::retention)
//! daily = "30d"                  # newest of each day of the last 30 days
//! monthly = "1y"                 # newest of each month of the last year
//! keep_last = 3                  # and the 3 newest
//! ```
//!
//! A file that defines retention classes must define every class its
//! policies name. A file with no `[retention.*]` table is still accepted
//! (classes defined by an earlier file stay in the catalog); each policy
//! whose class is then unknown gets a warning, and prune keeps every
//! snapshot of such a source.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    BackupMode, CronExpr, Policy, RestoreTestPolicy, SourceLimits, Timezone, DEFAULT_MAX_RETRIES,
    DEFAULT_RESTORE_TEST_SCHEDULE, DEFAULT_RETRY_BACKOFF, MAX_RETRIES_LIMIT,
};
use crate::error::{Error, Result};
use crate::retention::RetentionClass;
use crate::sources::{validate_name, SourceId};

/// What a policy table holds, appended to errors about fields.
pub const POLICY_HELP: &str = "a policy file is [[policy]] tables, each with source, schedule and \
retention, and optionally mode, full_every, timezone, max_retries, retry_backoff, rpo, rto, \
restore_test, and for the agent exclude, exclude_if_present, one_file_system and upload_bytes_per_sec";

/// What a retention table holds, appended to errors about it.
pub const RETENTION_HELP: &str = "a [retention.NAME] table sets keep_last (a count) and/or \
hourly, daily, weekly, monthly, yearly (windows such as \"30d\" or \"1y\")";

/// A policy file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// The policies, one `[[policy]]` table each.
    #[serde(default)]
    policy: Vec<RawPolicy>,
    /// Retention classes by name, one `[retention.NAME]` table each.
    #[serde(default)]
    retention: BTreeMap<String, Spanned<RawRetention>>,
}

/// One `[retention.NAME]` table as written; validated into a
/// [`RetentionClass`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    /// Keep the newest N snapshots.
    #[serde(default)]
    keep_last: Option<Spanned<u32>>,
    /// Window within which the newest snapshot of each hour is kept, e.g. `"48h"`.
    #[serde(default)]
    hourly: Option<Spanned<String>>,
    /// ... of each day, e.g. `"30d"`.
    #[serde(default)]
    daily: Option<Spanned<String>>,
    /// ... of each ISO week, e.g. `"90d"`.
    #[serde(default)]
    weekly: Option<Spanned<String>>,
    /// ... of each month, e.g. `"1y"`.
    #[serde(default)]
    monthly: Option<Spanned<String>>,
    /// ... of each year, e.g. `"10y"`.
    #[serde(default)]
    yearly: Option<Spanned<String>>,
}

/// A parsed policy file: its policies, the retention classes it defines,
/// and remarks that do not stop it from being applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFile {
    /// The policies, in file order.
    pub policies: Vec<Policy>,
    /// Retention classes by name.
    pub classes: BTreeMap<String, RetentionClass>,
    /// Non-fatal remarks (a policy naming a class the file does not define,
    /// in a file that defines none).
    pub warnings: Vec<String>,
}

/// One `[[policy]]` table as written; validated into a [`Policy`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// The source to back up, `agent/source` as the agent reports it, e.g.
    /// `"host-a/redis-main"`.
    source: Spanned<String>,
    /// When to back up: a 5-field cron expression (minute hour day-of-month
    /// month day-of-week), e.g. `"0 2 * * *"`, or `@daily` and friends.
    schedule: Spanned<String>,
    /// `"incremental"` (the default: only what changed since the last
    /// snapshot is read) or `"full"` (everything, every time).
    #[serde(default)]
    mode: Option<Spanned<BackupMode>>,
    /// With `mode = "incremental"`: make a full backup when the last full
    /// one is at least this old, e.g. `"7d"`. Unset: always incremental.
    #[serde(default)]
    full_every: Option<Spanned<String>>,
    /// The retention class for this source's snapshots, e.g. `"daily-30"`.
    retention: Spanned<String>,
    /// IANA time zone the schedule is read in; default `"UTC"`.
    #[serde(default)]
    timezone: Option<Spanned<String>>,
    /// How many times a failed run is retried before giving up; default 3.
    #[serde(default)]
    max_retries: Option<Spanned<u32>>,
    /// Delay before the first retry, doubling for each further one (at
    /// most a day), e.g. `"5m"`; default 5 minutes.
    #[serde(default)]
    retry_backoff: Option<Spanned<String>>,
    /// Recovery point objective, e.g. `"26h"`: the newest snapshot verified
    /// at every location must be younger.
    #[serde(default)]
    rpo: Option<Spanned<String>>,
    /// Recovery time objective, e.g. `"30m"`: restore tests must finish
    /// within it.
    #[serde(default)]
    rto: Option<Spanned<String>>,
    /// `{ target = "agent:source:<name>", schedule = "0 4 1 * *" }`.
    #[serde(default)]
    restore_test: Option<RawRestoreTest>,
    /// Globs of paths to leave out (volume sources).
    #[serde(default)]
    exclude: Option<Spanned<Vec<String>>>,
    /// File names whose directory is left out (volume sources).
    #[serde(default)]
    exclude_if_present: Option<Spanned<Vec<String>>>,
    /// Stay on one file system (volume sources).
    #[serde(default)]
    one_file_system: Option<bool>,
    /// Upload budget of each backup job: bytes per second, or "20 MiB".
    #[serde(default)]
    upload_bytes_per_sec: Option<Spanned<toml::Value>>,
}

/// `restore_test = { target = ..., schedule = ... }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestoreTest {
    /// `AGENT:TARGET`, the target being `source:<name>` or an absolute path.
    target: Spanned<String>,
    /// Cron; default monthly.
    #[serde(default)]
    schedule: Option<Spanned<String>>,
}

/// Where an error is: file, line and column of a byte span.
struct Locator<'a> {
    file: &'a str,
    text: &'a str,
}

impl Locator<'_> {
    /// 1-based line and column of a byte offset.
    fn position(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        (line, before[line_start..].chars().count() + 1)
    }

    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> Error {
        let (line, column) = span.map_or((1, 1), |s| self.position(s.start));
        Error::Policy {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error about a value, from a domain error (whose message already
    /// names the setting and the value).
    fn value_error<T>(&self, v: &Spanned<T>, e: Error) -> Error {
        self.error(Some(v.span()), e.to_string())
    }
}

fn duration(
    loc: &Locator<'_>,
    field: &'static str,
    v: &Spanned<String>,
    min: Duration,
    max: Duration,
) -> Result<Duration> {
    let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
        loc.value_error(
            v,
            Error::invalid(
                field,
                v.get_ref(),
                format!("{e}; write a duration such as \"7d\", \"12h\" or \"5m\""),
            ),
        )
    })?;
    if d < min || d > max {
        return Err(loc.value_error(
            v,
            Error::invalid(
                field,
                v.get_ref(),
                format!(
                    "must be between {} and {}",
                    humantime::format_duration(min),
                    humantime::format_duration(max)
                ),
            ),
        ));
    }
    Ok(d)
}

/// Parse a policy file's text. `file` names it in errors.
///
/// # Errors
/// [`Error::Policy`] naming the file, line and column, the problem and what
/// to write instead: TOML syntax, unknown or missing fields, a bad cron
/// expression, time zone, duration or source, a source listed twice.
pub fn parse_policies(file: &str, text: &str) -> Result<Vec<Policy>> {
    parse_policy_file(file, text).map(|f| f.policies)
}

/// Parse a policy file's text with its retention classes. `file` names it
/// in errors.
///
/// # Errors
/// As [`parse_policies`], and for retention tables: an unknown setting, a
/// bad window or count, a class with no rule, a bad class name, and a
/// policy naming a class the file does not define (when it defines any).
pub fn parse_policy_file(file: &str, text: &str) -> Result<PolicyFile> {
    let loc = Locator { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let mut msg = e.message().trim_end().to_string();
        if msg.contains("field") {
            msg = format!("{msg}; {POLICY_HELP}");
        }
        loc.error(e.span(), msg)
    })?;
    if raw.policy.is_empty() {
        return Err(loc.error(
            None,
            format!("no policies; {POLICY_HELP}, e.g.\n[[policy]]\nsource = \"host-a/redis-main\"\nschedule = \"0 2 * * *\"\nretention = \"daily-30\""),
        ));
    }
    let mut out: Vec<(Policy, Range<usize>)> = Vec::with_capacity(raw.policy.len());
    for r in &raw.policy {
        let p = validate(&loc, r)?;
        if let Some((_, first)) = out.iter().find(|(q, _)| q.source == p.source) {
            let (line, _) = loc.position(first.start);
            return Err(loc.error(
                Some(r.source.span()),
                format!(
                    "source {} already has a policy at line {line}; give each source one [[policy]] table",
                    p.source
                ),
            ));
        }
        out.push((p, r.source.span()));
    }
    let mut classes = BTreeMap::new();
    for (name, raw) in &raw.retention {
        classes.insert(name.clone(), validate_class(&loc, name, raw)?);
    }
    let mut warnings = Vec::new();
    for (r, (p, _)) in raw.policy.iter().zip(&out) {
        if classes.contains_key(&p.retention) {
            continue;
        }
        if classes.is_empty() {
            warnings.push(format!(
                "policy for {}: retention class {:?} is not defined in this file; unless an earlier file defined it, prune keeps every snapshot of this source (add a [retention.{}] table)",
                p.source, p.retention, p.retention
            ));
            continue;
        }
        return Err(loc.error(
            Some(r.retention.span()),
            format!(
                "retention class {:?} is not defined; this file defines {}: add a [retention.{}] table or name one of those",
                p.retention,
                classes.keys().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "),
                p.retention
            ),
        ));
    }
    Ok(PolicyFile {
        policies: out.into_iter().map(|(p, _)| p).collect(),
        classes,
        warnings,
    })
}

/// Longest retention window.
const MAX_WINDOW: Duration = Duration::from_secs(100 * 366 * 24 * 3600);

fn validate_class(
    loc: &Locator<'_>,
    name: &str,
    raw: &Spanned<RawRetention>,
) -> Result<RetentionClass> {
    let span = Some(raw.span());
    validate_name("retention class name", name)
        .map_err(|e| loc.error(span.clone(), e.to_string()))?;
    let r = raw.get_ref();
    let window = |field: &'static str, v: &Option<Spanned<String>>| {
        v.as_ref()
            .map(|v| duration(loc, field, v, Duration::from_secs(3600), MAX_WINDOW))
            .transpose()
    };
    let keep_last = match &r.keep_last {
        Some(v) if *v.get_ref() == 0 => {
            return Err(loc.value_error(
                v,
                Error::invalid(
                    "keep_last",
                    "0",
                    "must be at least 1 (the newest snapshot is always kept); remove it to keep by windows only",
                ),
            ))
        }
        v => v.as_ref().map(|v| *v.get_ref()),
    };
    let class = RetentionClass {
        keep_last,
        hourly: window("hourly", &r.hourly)?,
        daily: window("daily", &r.daily)?,
        weekly: window("weekly", &r.weekly)?,
        monthly: window("monthly", &r.monthly)?,
        yearly: window("yearly", &r.yearly)?,
    };
    if class.is_empty() {
        return Err(loc.error(
            span,
            format!("retention class {name:?} has no rule; {RETENTION_HELP}"),
        ));
    }
    Ok(class)
}

fn validate(loc: &Locator<'_>, r: &RawPolicy) -> Result<Policy> {
    let source: SourceId = r
        .source
        .get_ref()
        .parse()
        .map_err(|e| loc.value_error(&r.source, e))?;
    let schedule =
        CronExpr::parse(r.schedule.get_ref()).map_err(|e| loc.value_error(&r.schedule, e))?;
    let mode = r.mode.as_ref().map(|m| *m.get_ref()).unwrap_or_default();
    let full_every = match &r.full_every {
        None => None,
        Some(v) if mode == BackupMode::Full => {
            return Err(loc.value_error(
                v,
                Error::invalid(
                    "full_every",
                    v.get_ref(),
                    "only applies to mode = \"incremental\" (with mode = \"full\" every backup is full); remove it or set mode = \"incremental\"",
                ),
            ))
        }
        Some(v) => Some(duration(
            loc,
            "full_every",
            v,
            Duration::from_secs(3600),
            Duration::from_secs(366 * 24 * 3600),
        )?),
    };
    validate_name("retention", r.retention.get_ref()).map_err(|_| {
        loc.value_error(
            &r.retention,
            Error::invalid(
                "retention",
                r.retention.get_ref(),
                "name a retention class (letters, digits, '.', '-', '_'), e.g. \"daily-30\"",
            ),
        )
    })?;
    let timezone = match &r.timezone {
        None => Timezone::default(),
        Some(v) => v.get_ref().parse().map_err(|e| loc.value_error(v, e))?,
    };
    let max_retries = match &r.max_retries {
        None => DEFAULT_MAX_RETRIES,
        Some(v) if *v.get_ref() > MAX_RETRIES_LIMIT => {
            return Err(loc.value_error(
                v,
                Error::invalid(
                    "max_retries",
                    v.get_ref().to_string(),
                    format!("at most {MAX_RETRIES_LIMIT}"),
                ),
            ))
        }
        Some(v) => *v.get_ref(),
    };
    let retry_backoff = match &r.retry_backoff {
        None => DEFAULT_RETRY_BACKOFF,
        Some(v) => duration(
            loc,
            "retry_backoff",
            v,
            Duration::from_secs(1),
            Duration::from_secs(24 * 3600),
        )?,
    };
    let objective = |field: &'static str, v: &Option<Spanned<String>>| {
        v.as_ref()
            .map(|v| {
                duration(
                    loc,
                    field,
                    v,
                    Duration::from_secs(1),
                    Duration::from_secs(400 * 24 * 3600),
                )
            })
            .transpose()
    };
    let rpo = objective("rpo", &r.rpo)?;
    let rto = objective("rto", &r.rto)?;
    let restore_test = match &r.restore_test {
        None => None,
        Some(t) => {
            let (agent, target) = t
                .target
                .get_ref()
                .split_once(':')
                .filter(|(a, t)| {
                    !a.is_empty() && (t.starts_with("source:") && t.len() > 7 || t.starts_with('/'))
                })
                .ok_or_else(|| {
                    loc.value_error(
                        &t.target,
                        Error::invalid(
                            "restore_test.target",
                            t.target.get_ref(),
                            "write AGENT:source:NAME (a staging source of that agent) or AGENT:/absolute/path, e.g. \"cache-1:source:redis-staging\"",
                        ),
                    )
                })?;
            let schedule = match &t.schedule {
                None => CronExpr::parse(DEFAULT_RESTORE_TEST_SCHEDULE)?,
                Some(s) => CronExpr::parse(s.get_ref()).map_err(|e| loc.value_error(s, e))?,
            };
            Some(RestoreTestPolicy {
                agent: agent.to_string(),
                target: target.to_string(),
                schedule,
            })
        }
    };
    let limits = limits(loc, r)?;
    Ok(Policy {
        source,
        schedule,
        mode,
        full_every,
        retention: r.retention.get_ref().clone(),
        timezone,
        max_retries,
        retry_backoff,
        rpo,
        rto,
        restore_test,
        limits,
    })
}

/// The policy's `exclude`, `exclude_if_present`, `one_file_system` and
/// `upload_bytes_per_sec`, checked.
fn limits(loc: &Locator<'_>, r: &RawPolicy) -> Result<SourceLimits> {
    let exclude = match &r.exclude {
        None => Vec::new(),
        Some(v) => {
            trireme_common::glob::PathGlobs::new("exclude", v.get_ref())
                .map_err(|e| loc.value_error(v, Error::BadRequest(e.to_string())))?;
            v.get_ref().clone()
        }
    };
    let exclude_if_present = match &r.exclude_if_present {
        None => Vec::new(),
        Some(v) => {
            if let Some(bad) = v
                .get_ref()
                .iter()
                .find(|n| n.is_empty() || n.contains('/') || *n == "." || *n == "..")
            {
                return Err(loc.value_error(
                    v,
                    Error::invalid(
                        "exclude_if_present",
                        bad,
                        "each is a file name (no '/'), e.g. [\".nobackup\"]",
                    ),
                ));
            }
            v.get_ref().clone()
        }
    };
    let upload_bytes_per_sec = match &r.upload_bytes_per_sec {
        None => None,
        Some(v) => {
            let bad = || {
                loc.value_error(
                    v,
                    Error::invalid(
                        "upload_bytes_per_sec",
                        match v.get_ref() {
                            toml::Value::String(t) => t.clone(),
                            other => format!("{other:?}"),
                        },
                        "write a positive size per second, e.g. \"20 MiB\" or 20971520",
                    ),
                )
            };
            let n = match v.get_ref() {
                toml::Value::Integer(n) if *n > 0 => *n as u64,
                toml::Value::String(t) => {
                    t.parse::<bytesize::ByteSize>().map_err(|_| bad())?.as_u64()
                }
                _ => return Err(bad()),
            };
            if n == 0 {
                return Err(bad());
            }
            Some(n)
        }
    };
    Ok(SourceLimits {
        exclude,
        exclude_if_present,
        one_file_system: r.one_file_system.unwrap_or(false),
        upload_bytes_per_sec,
    })
}

/// Read and parse a policy file.
///
/// # Errors
/// [`Error::PolicyRead`] when it cannot be read; as [`parse_policies`].
pub fn read_policy_file(path: &Path) -> Result<Vec<Policy>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::PolicyRead {
        path: path.to_path_buf(),
        source,
    })?;
    parse_policies(&path.display().to_string(), &text)
}
