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

pub use crate::growth::{Volume, VOLUME_WARN_RATIO};

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
    /// When a snapshot's copies count as protected.
    pub protection: &'a crate::protection::ProtectionRule,
    /// `[drills]`, and the locations' names (each must be drilled).
    pub drills: &'a crate::drills::DrillSettings,
    /// The locations' names, in config order.
    pub location_names: &'a [String],
    /// Whether an agent has a session now.
    pub connected: &'a dyn Fn(&str) -> bool,
    /// The sources' data volumes as their agents last reported.
    pub volumes: &'a BTreeMap<SourceId, Volume>,
    /// Each location's state after the last replication pass.
    pub location_states: &'a BTreeMap<String, LocationState>,
    /// The controller's own certificate and the CA's: `(kind, name,
    /// not-after Unix seconds)`, as [`trireme_net::tls::TlsFiles::expiry`].
    pub certificates: &'a [(&'static str, String, i64)],
}

/// Certificates within this many days of expiry are a status problem (the
/// TriremeCertificateExpiringSoon alert's threshold).
pub const CERT_WARN_DAYS: i64 = 30;

/// Status problems for the controller's certificates that expire within
/// [`CERT_WARN_DAYS`] (or have).
pub fn certificate_problems(
    certs: &[(&'static str, String, i64)],
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, name, not_after) in certs {
        let left = not_after - now.timestamp();
        if left >= CERT_WARN_DAYS * 86_400 {
            continue;
        }
        let what = if *kind == "ca" {
            format!("the CA certificate {name:?}")
        } else {
            format!("the controller's certificate {name:?}")
        };
        let when = DateTime::<Utc>::from_timestamp(*not_after, 0).map_or_else(
            || not_after.to_string(),
            |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
        );
        let fix = if *kind == "ca" {
            "make a new CA and reissue every certificate from it before then (docs/operations.md A1)"
        } else {
            "renew it with `trireme cert renew --name` and that name; the controller reloads it within 5 s"
        };
        out.push(if left <= 0 {
            format!("{what} expired on {when}: {fix}")
        } else {
            format!(
                "{what} expires on {when} (in {} days): {fix}",
                left / 86_400
            )
        });
    }
    out
}

/// A status problem for agent `name`'s client certificate (as it last
/// connected with it) when it expires within [`CERT_WARN_DAYS`] of `now`
/// or has expired.
pub fn agent_certificate_problem(
    name: &str,
    not_after: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<String> {
    let left = (not_after - now).num_seconds();
    if left >= CERT_WARN_DAYS * 86_400 {
        return None;
    }
    let when = not_after.format("%Y-%m-%d %H:%M UTC");
    let fix = format!(
        "renew it with `trireme cert renew --name {name}`, put the new files on its host and restart the agent (it reads them when it connects)"
    );
    Some(if left <= 0 {
        format!("agent {name}: its certificate expired on {when}: {fix}")
    } else {
        format!(
            "agent {name}: its certificate expires on {when} (in {} days): {fix}",
            left / 86_400
        )
    })
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
    /// The protection rule in words.
    pub protection_rule: String,
    /// Why the configured locations can never meet the rule (empty: they can).
    pub rule_problems: Vec<String>,
    /// `RED` (the rule cannot be met, a source is not protected, or an
    /// objective is missed), `AMBER` (other problems), or `GREEN`.
    pub state: String,
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
        if let Some(p) = a
            .certificate_not_after
            .and_then(|t| agent_certificate_problem(name, t, now))
        {
            status.problems.push(p);
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
    let rule = live.protection;
    status.locations_total = live.locations;
    status.protection_rule = rule.describe();
    status.rule_problems = rule.config_problems();
    let mut red = !status.rule_problems.is_empty();
    for p in &status.rule_problems {
        status.problems.push(p.clone());
    }
    for p in crate::replication::protection(catalog, rule)? {
        if p.full.is_none() {
            red = true;
            status.problems.push(format!(
                "{}: no snapshot is protected yet ({rule}); newest {}: {}",
                p.source,
                p.newest.id.short(),
                p.newest_shortfall.join("; ")
            ));
        }
        status.protection.push(p);
    }
    status.problems.extend(volume_problems(live.volumes));
    status.problems.extend(crate::growth::problems(catalog)?);
    status
        .problems
        .extend(certificate_problems(live.certificates, now));
    for h in crate::recovery::health(catalog, rule, now)? {
        red |= h.red();
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
    // DR drills, once there is something to drill (a staging target).
    let drillable = catalog
        .policies()
        .values()?
        .iter()
        .any(|p| p.policy.restore_test.is_some());
    if drillable {
        let drills = catalog.drills().values()?;
        status.problems.extend(crate::drills::problems(
            &drills,
            live.drills,
            live.location_names,
            now,
        ));
    }
    status.state = if red {
        "RED"
    } else if status.problems.is_empty() {
        "GREEN"
    } else {
        "AMBER"
    }
    .into();
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

#[cfg(test)]
mod cert_tests {
    use super::*;

    #[test]
    fn certificates_near_or_past_expiry_are_problems() {
        let now: DateTime<Utc> = "2026-12-04T12:00:00Z".parse().unwrap();
        let day = 86_400;
        let t = now.timestamp();
        let certs = [
            ("cert", "ctl.example.com".to_string(), t + 10 * day),
            ("ca", "Trireme CA 1".to_string(), t + 400 * day),
            ("cert", "old".to_string(), t - day),
            ("ca", "Trireme CA 0".to_string(), t + 29 * day),
        ];
        let p = certificate_problems(&certs, now);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p[0].contains("\"ctl.example.com\" expires on 2026-12-14")
                && p[0].contains("in 10 days")
                && p[0].contains("trireme cert renew"),
            "{}",
            p[0]
        );
        assert!(p[1].contains("\"old\" expired on"), "{}", p[1]);
        assert!(
            p[2].contains("CA certificate") && p[2].contains("new CA"),
            "{}",
            p[2]
        );
        assert!(certificate_problems(&certs[1..2], now).is_empty());
    }

    #[test]
    fn agent_certificates_warn_from_thirty_days() {
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let day = ChronoDuration::days(1);
        assert_eq!(
            agent_certificate_problem("web-1", now + day * 30, now),
            None
        );
        let p =
            agent_certificate_problem("web-1", now + day * 30 - ChronoDuration::seconds(1), now)
                .unwrap();
        assert!(
            p.starts_with(
                "agent web-1: its certificate expires on 2027-01-03 11:59 UTC (in 29 days)"
            ) && p.contains("trireme cert renew --name web-1"),
            "{p}"
        );
        let p = agent_certificate_problem("db-1", now - day, now).unwrap();
        assert!(
            p.starts_with("agent db-1: its certificate expired on 2026-12-03 12:00 UTC"),
            "{p}"
        );
    }
}
