//! The fleet's state as `trireme status` shows it: agents, jobs, each
//! source's 3-2-1 protection and recovery objectives, and every problem an
//! operator should act on (agents away, sources not yet protected
//! everywhere, full volumes, red objectives, unreachable locations, runs
//! given up). Computed from the catalog and what the running controller
//! knows (connected agents, reported volumes, location states).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::jobs::JobState;
use crate::recovery::SourceHealth;
use crate::replication::{LocationState, Protection};
use crate::SourceId;

/// A source's data filesystem as its agent reported it.
#[derive(Debug, Clone)]
pub struct Volume {
    /// The path on the agent's host.
    pub path: String,
    /// Filesystem size.
    pub total_bytes: u64,
    /// Used bytes.
    pub used_bytes: u64,
    /// When reported.
    pub at: DateTime<Utc>,
}

impl Volume {
    /// Used share, 0..1.
    pub fn ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            0.0
        } else {
            self.used_bytes as f64 / self.total_bytes as f64
        }
    }
}

/// Used share at which `status` warns about a source's volume.
pub const VOLUME_WARN_RATIO: f64 = 0.75;

/// Status problems for volumes at or over [`VOLUME_WARN_RATIO`].
pub fn volume_problems(volumes: &BTreeMap<SourceId, Volume>) -> Vec<String> {
    volumes
        .iter()
        .filter(|(_, v)| v.ratio() >= VOLUME_WARN_RATIO)
        .map(|(source, v)| {
            format!(
                "{source}: its data volume {} is {:.0}% full ({} of {} bytes used; warning at 75%)",
                v.path,
                v.ratio() * 100.0,
                v.used_bytes,
                v.total_bytes
            )
        })
        .collect()
}

/// What the running controller knows beyond the catalog.
pub struct Live<'a> {
    /// The controller's time.
    pub now: DateTime<Utc>,
    /// How many locations it writes to.
    pub locations: usize,
    /// Whether an agent has a session now.
    pub connected: &'a dyn Fn(&str) -> bool,
    /// The sources' data volumes as their agents last reported.
    pub volumes: &'a BTreeMap<SourceId, Volume>,
    /// Each location's state after the last replication pass.
    pub location_states: &'a BTreeMap<String, LocationState>,
}

/// The fleet's state.
#[derive(Debug, Clone, Default)]
pub struct FleetStatus {
    /// The controller's version.
    pub version: String,
    /// Agents in the catalog.
    pub agents_total: usize,
    /// Of which connected now.
    pub agents_connected: usize,
    /// Jobs waiting for their agent.
    pub jobs_queued: usize,
    /// Jobs sent to or running on their agent.
    pub jobs_running: usize,
    /// Jobs that failed in the last 24 hours.
    pub jobs_failed_24h: usize,
    /// Locations configured.
    pub locations_total: usize,
    /// Each source's 3-2-1 state.
    pub protection: Vec<Protection>,
    /// Each source's recovery objectives.
    pub recovery: Vec<SourceHealth>,
    /// What an operator should act on, in words.
    pub problems: Vec<String>,
}

/// The fleet's state now.
///
/// # Errors
/// Catalog errors.
pub fn fleet(catalog: &Catalog, live: &Live<'_>) -> Result<FleetStatus> {
    let now = live.now;
    let agents = catalog.agents().entries()?;
    let mut status = FleetStatus {
        version: env!("CARGO_PKG_VERSION").to_string(),
        agents_total: agents.len(),
        ..Default::default()
    };
    for (name, a) in &agents {
        if (live.connected)(name) {
            status.agents_connected += 1;
        } else {
            status.problems.push(format!(
                "agent {name} ({}) is not connected (last seen {})",
                a.hostname,
                a.last_seen.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
    }
    let day_ago = now - ChronoDuration::hours(24);
    for j in catalog.jobs().values()? {
        match &j.state {
            JobState::Queued => status.jobs_queued += 1,
            JobState::Assigned { .. } | JobState::Running { .. } => status.jobs_running += 1,
            JobState::Failed { finished, .. } if finished >= &day_ago => {
                status.jobs_failed_24h += 1;
            }
            _ => {}
        }
    }
    let want = live.locations;
    status.locations_total = want;
    for p in crate::replication::protection(catalog, want)? {
        if p.full.is_none() {
            status.problems.push(format!(
                "{}: no snapshot is verified at all {want} locations yet (newest {}: {}/{want})",
                p.source,
                p.newest.id.short(),
                p.newest_verified
            ));
        }
        status.protection.push(p);
    }
    status.problems.extend(volume_problems(live.volumes));
    for h in crate::recovery::health(catalog, want, now)? {
        for p in &h.problems {
            status.problems.push(format!("{}: {p}", h.source));
        }
        status.recovery.push(h);
    }
    for (name, st) in live.location_states {
        if !st.reachable || !st.last_error.is_empty() {
            status.problems.push(format!(
                "location {name}: {}",
                if st.last_error.is_empty() {
                    "unreachable".to_string()
                } else {
                    st.last_error.clone()
                }
            ));
        }
    }
    for (source, state) in catalog.schedule().entries()? {
        if let Some(g) = &state.gave_up {
            if state.last_success.is_none_or(|t| t < g.at) {
                status.problems.push(format!(
                    "{source}: the run for {} failed {} times and was given up",
                    g.slot.format("%Y-%m-%d %H:%M UTC"),
                    g.attempts
                ));
            }
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_warn_at_three_quarters_full() {
        let v = |used| Volume {
            path: "/data".into(),
            total_bytes: 1000,
            used_bytes: used,
            at: DateTime::from_timestamp(0, 0).unwrap(),
        };
        let m = BTreeMap::from([
            ("a/redis".parse().unwrap(), v(749)),
            ("b/kafka".parse().unwrap(), v(750)),
            ("c/tikv".parse().unwrap(), v(990)),
        ]);
        let p = volume_problems(&m);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(
            p[0].starts_with("b/kafka: its data volume /data is 75% full"),
            "{p:?}"
        );
        assert!(p[1].contains("99% full"), "{p:?}");
    }
}
