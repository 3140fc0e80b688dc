//! Backup policies: per source, when to back up (cron, time zone), full or
//! incremental, which retention class, and how to retry failures.
//!
//! Operators write policies as TOML (see [`parse_policies`]); `trireme
//! policy apply -f FILE` sends the file's text, and [`apply_policies`]
//! stores them in the catalog in one transaction.

mod cron;
mod file;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::catalog::{abort, Catalog};
use crate::error::{Error, Result};
pub use crate::jobs::BackupMode;
use crate::schedule::SourceSchedule;
use crate::sources::SourceId;

pub use cron::{CronExpr, CRON_HELP};
pub use file::{
    parse_policies, parse_policy_file, read_policy_file, PolicyFile, POLICY_HELP, RETENTION_HELP,
};

/// Retries when a policy does not say.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// First retry delay when a policy does not say.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// Most retries a policy may ask for.
pub const MAX_RETRIES_LIMIT: u32 = 100;
/// The delay between retries doubles up to this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);
/// Slack when deciding whether a full backup is due, so that a daily
/// schedule across a daylight saving change keeps its weekday.
pub const FULL_EVERY_SLACK: Duration = Duration::from_secs(3600);

/// An IANA time zone, `UTC` by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timezone(pub chrono_tz::Tz);

impl FromStr for Timezone {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if let Ok(tz) = s.parse::<chrono_tz::Tz>() {
            return Ok(Timezone(tz));
        }
        let hint = chrono_tz::TZ_VARIANTS
            .iter()
            .find(|tz| tz.name().eq_ignore_ascii_case(s))
            .map(|tz| format!("did you mean {:?}? ", tz.name()))
            .unwrap_or_default();
        Err(Error::invalid(
            "timezone",
            s,
            format!(
                "not a known time zone; {hint}use an IANA name such as \"UTC\" or \"Europe/Paris\""
            ),
        ))
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

impl Serialize for Timezone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}

impl<'de> Deserialize<'de> for Timezone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A validated backup policy for one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// The source, `agent/source`.
    pub source: SourceId,
    /// When to back up, evaluated in `timezone`.
    pub schedule: CronExpr,
    /// Full or incremental.
    pub mode: BackupMode,
    /// With `mode = incremental`: make a full backup when the last full one
    /// is this old (or there is none).
    pub full_every: Option<Duration>,
    /// The retention class that applies to this source's snapshots.
    pub retention: String,
    /// The time zone of `schedule`.
    pub timezone: Timezone,
    /// How many times a failed run is retried before giving up.
    pub max_retries: u32,
    /// Delay before the first retry; it doubles for each further one, up to
    /// [`MAX_RETRY_DELAY`].
    pub retry_backoff: Duration,
    /// Recovery point objective: the newest snapshot verified at every
    /// location must be younger than this.
    #[serde(default)]
    pub rpo: Option<Duration>,
    /// Recovery time objective: a restore test must finish within this.
    #[serde(default)]
    pub rto: Option<Duration>,
    /// Scheduled restore tests, and the target drills restore to.
    #[serde(default)]
    pub restore_test: Option<RestoreTestPolicy>,
    /// What the agent leaves out of this source and how fast it uploads it.
    #[serde(default)]
    pub limits: SourceLimits,
}

/// A source's backup limits set by its policy, on top of the agent's own
/// settings for it: sent with each backup job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceLimits {
    /// Globs of paths to leave out (volume sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// File names whose directory is left out (volume sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_if_present: Vec<String>,
    /// Stay on one file system (volume sources).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub one_file_system: bool,
    /// Upload budget of each backup job, bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_bytes_per_sec: Option<u64>,
}

/// Where and when a source's restore tests run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreTestPolicy {
    /// The agent that restores.
    pub agent: String,
    /// Its target: `source:<name>` (a staging datastore) or an absolute path.
    pub target: String,
    /// When, in the policy's time zone.
    pub schedule: CronExpr,
}

/// Restore tests run monthly unless the policy says otherwise.
pub const DEFAULT_RESTORE_TEST_SCHEDULE: &str = "0 4 1 * *";

impl Policy {
    /// The first schedule slot strictly after `t`.
    pub fn next_slot_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.next_after(t, &self.timezone.0)
    }

    /// The last schedule slot at or before `t`.
    pub fn last_slot_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.last_at_or_before(t, &self.timezone.0)
    }

    /// The delay before retrying after failed attempt `attempt` (1-based):
    /// `retry_backoff × 2^(attempt-1)`, at most [`MAX_RETRY_DELAY`].
    pub fn retry_delay(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.retry_backoff
            .checked_mul(factor)
            .unwrap_or(MAX_RETRY_DELAY)
            .min(MAX_RETRY_DELAY)
    }

    /// The mode of the run for `slot`, given the slot of the last successful
    /// full backup.
    pub fn mode_for(&self, slot: DateTime<Utc>, last_full: Option<DateTime<Utc>>) -> BackupMode {
        match (self.mode, self.full_every) {
            (BackupMode::Full, _) => BackupMode::Full,
            (BackupMode::Incremental, None) => BackupMode::Incremental,
            (BackupMode::Incremental, Some(every)) => {
                let due = every.saturating_sub(FULL_EVERY_SLACK.min(every / 2));
                match last_full {
                    Some(t) if (slot - t).to_std().is_ok_and(|age| age < due) => {
                        BackupMode::Incremental
                    }
                    _ => BackupMode::Full,
                }
            }
        }
    }
}

/// A policy as stored in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// The policy.
    pub policy: Policy,
    /// When it was last applied with changes.
    pub applied_at: DateTime<Utc>,
    /// Where it came from (the file name given to `policy apply`).
    #[serde(default)]
    pub origin: String,
}

/// What [`apply_policies`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Sources that had no policy.
    pub created: Vec<SourceId>,
    /// Sources whose policy changed.
    pub updated: Vec<SourceId>,
    /// Sources whose policy was already exactly this.
    pub unchanged: Vec<SourceId>,
    /// Sources no agent has reported yet: their jobs wait until it does.
    pub unknown_sources: Vec<SourceId>,
}

/// Store `policies` in the catalog, all or nothing. Sources not listed keep
/// their policies. A new policy, or one whose schedule or time zone
/// changed, starts counting slots from `now`: it never fires at once for
/// slots from before it was applied.
///
/// # Errors
/// [`Error::InvalidValue`] when a source is listed twice; catalog errors.
pub fn apply_policies(
    catalog: &Catalog,
    policies: &[Policy],
    origin: &str,
    now: DateTime<Utc>,
) -> Result<ApplyReport> {
    apply_policy_file(
        catalog,
        &PolicyFile {
            policies: policies.to_vec(),
            ..PolicyFile::default()
        },
        origin,
        now,
    )
}

/// [`apply_policies`] for a whole policy file: its policies and its
/// retention classes (added or replaced by name; classes it does not define
/// stay), in one transaction.
///
/// # Errors
/// As [`apply_policies`].
pub fn apply_policy_file(
    catalog: &Catalog,
    file: &PolicyFile,
    origin: &str,
    now: DateTime<Utc>,
) -> Result<ApplyReport> {
    let policies = &file.policies;
    for (i, p) in policies.iter().enumerate() {
        if policies[..i].iter().any(|q| q.source == p.source) {
            return Err(Error::invalid(
                "source",
                p.source.to_string(),
                "listed twice; give each source one policy",
            ));
        }
    }
    catalog.transaction_durable(|tx| {
        let mut report = ApplyReport::default();
        for (name, class) in &file.classes {
            if tx.retention().get(name)?.as_ref() != Some(class) {
                tx.retention().insert(name, class)?;
            }
        }
        for p in policies {
            let old = tx.policies().get(&p.source)?;
            let restart_slots = match &old {
                None => true,
                Some(r) => r.policy.schedule != p.schedule || r.policy.timezone != p.timezone,
            };
            match &old {
                Some(r) if r.policy == *p => {
                    report.unchanged.push(p.source.clone());
                    continue;
                }
                Some(_) => report.updated.push(p.source.clone()),
                None => report.created.push(p.source.clone()),
            }
            if tx.sources().get(&p.source)?.is_none() {
                report.unknown_sources.push(p.source.clone());
            }
            let record = PolicyRecord {
                policy: p.clone(),
                applied_at: now,
                origin: origin.to_string(),
            };
            tx.policies().insert(&p.source, &record)?;
            if restart_slots {
                let mut state: SourceSchedule = tx.schedule().get(&p.source)?.unwrap_or_default();
                state.handled_until = Some(state.handled_until.map_or(now, |t| t.max(now)));
                tx.schedule().insert(&p.source, &state)?;
            }
        }
        Ok(report)
    })
}

/// Remove a source's policy: no more runs are scheduled for it. A job already
/// queued or running goes on; its snapshots stay.
///
/// # Errors
/// [`Error::NotFound`] when the source has no policy; catalog errors.
pub fn remove_policy(catalog: &Catalog, source: &SourceId) -> Result<()> {
    catalog.transaction_durable(|tx| {
        if !tx.policies().remove(source)? {
            return Err(abort(Error::not_found("policy for source", source)));
        }
        Ok(())
    })
}

/// Policies by source.
pub const POLICIES: crate::catalog::TableDef<crate::sources::SourceId, PolicyRecord> =
    crate::catalog::TableDef::new("policies");

impl crate::catalog::Catalog {
    /// Policies by source.
    pub fn policies(&self) -> crate::catalog::Tree<crate::sources::SourceId, PolicyRecord> {
        self.table(&POLICIES)
    }
}

impl<'a> crate::catalog::Tx<'a> {
    /// Policies by source, in this transaction.
    pub fn policies(&self) -> crate::catalog::TxTree<'a, crate::sources::SourceId, PolicyRecord> {
        self.table(&POLICIES)
    }
}

#[cfg(test)]
mod tests;
