//! Prometheus metrics on a plain-HTTP `/metrics` endpoint (`metrics_listen`
//! in the configuration; off when unset). Values are read from the catalog
//! and the replicator at each scrape, so they are never stale and cost
//! nothing between scrapes. Keep this endpoint on a private network: it
//! carries names of agents, sources and locations, no data and no keys.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus::{
    Encoder, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::Shared;
use crate::error::{Error, Result};

fn gauge_vec(
    reg: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    reg.register(Box::new(g.clone()))?;
    Ok(g)
}

/// The metrics text (Prometheus exposition format) for the current state.
///
/// # Errors
/// Catalog errors.
pub fn render(shared: &Shared) -> Result<String> {
    let reg = Registry::new();
    let m = |e: prometheus::Error| Error::Io {
        context: "building metrics".into(),
        source: std::io::Error::other(e.to_string()),
    };
    let agents =
        IntGauge::new("trireme_agents_connected", "Agents with a session now").map_err(m)?;
    reg.register(Box::new(agents.clone())).map_err(m)?;
    agents.set(shared.agents.connected().len() as i64);
    let known = IntGauge::new("trireme_agents_known", "Agents in the catalog").map_err(m)?;
    reg.register(Box::new(known.clone())).map_err(m)?;
    known.set(shared.catalog.agents().len() as i64);
    // Per agent: 1 while its session is open, 0 when known but away.
    let connected = gauge_vec(
        &reg,
        "trireme_agent_connected",
        "1 while the agent has a session, 0 when it is known but not connected",
        &["agent"],
    )
    .map_err(m)?;
    // Certificates: renew before this (alert: deploy/monitoring).
    let expiry = gauge_vec(
        &reg,
        "trireme_tls_certificate_expiry_timestamp_seconds",
        "When the controller's own certificate (kind=cert) and the CA certificate (kind=ca) expire, read from the files at each scrape",
        &["kind", "name"],
    )
    .map_err(m)?;
    for (kind, name, t) in shared.authz.files().expiry() {
        expiry.with_label_values(&[kind, name.as_str()]).set(t);
    }
    let agent_expiry = gauge_vec(
        &reg,
        "trireme_agent_certificate_expiry_timestamp_seconds",
        "When the client certificate each agent last connected with expires (absent: not yet seen by this controller)",
        &["agent"],
    )
    .map_err(m)?;
    let now_connected: std::collections::HashSet<String> =
        shared.agents.connected().into_iter().collect();
    for (name, a) in shared.catalog.agents().entries()? {
        let name: String = name;
        connected
            .with_label_values(&[name.as_str()])
            .set(i64::from(now_connected.contains(&name)));
        if let Some(t) = a.certificate_not_after {
            agent_expiry
                .with_label_values(&[name.as_str()])
                .set(t.timestamp());
        }
    }
    let key_up = gauge_vec(
        &reg,
        "trireme_key_service_up",
        "1 when the master key's service generated and unwrapped a data key at the last probe (key_check_interval), 0 when it failed; absent before the first probe",
        &["provider"],
    )
    .map_err(m)?;
    let key_ok = gauge_vec(
        &reg,
        "trireme_key_service_last_success_timestamp_seconds",
        "When the master key's service last answered a probe (absent: not yet)",
        &["provider"],
    )
    .map_err(m)?;
    let kh = &shared.key_health;
    if let Some(up) = kh.up() {
        key_up.with_label_values(&[kh.provider]).set(up);
    }
    if let Some(t) = kh.last_success() {
        key_ok.with_label_values(&[kh.provider]).set(t);
    }
    let build = gauge_vec(
        &reg,
        "trireme_build_info",
        "Always 1; the controller's version in the label",
        &["version"],
    )
    .map_err(m)?;
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    // Kept between scrapes: RPC and notification latencies.
    shared.histograms.register(&reg).map_err(m)?;
    #[cfg(target_os = "linux")]
    reg.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))
    .map_err(m)?;

    let jobs = gauge_vec(
        &reg,
        "trireme_jobs",
        "Jobs in the catalog by state",
        &["state"],
    )
    .map_err(m)?;
    // Kept with every state change (catalog table job_counts): no scan.
    for (state, n) in shared.catalog.job_counts().entries()? {
        let s = if state == "assigned" {
            "running"
        } else {
            state.as_str()
        };
        jobs.with_label_values(&[s])
            .add(i64::try_from(n).unwrap_or(i64::MAX));
    }

    let loc = |n: &str, h: &str| gauge_vec(&reg, n, h, &["location"]).map_err(m);
    let reachable = loc(
        "trireme_location_reachable",
        "1 when the last replication pass could list the location",
    )?;
    let objects = loc(
        "trireme_location_objects",
        "Objects at the location at the last pass",
    )?;
    let bytes = loc(
        "trireme_location_bytes",
        "Bytes at the location at the last pass",
    )?;
    // Counts since the controller started: counters.
    let counter = |n: &str, h: &str| -> Result<IntCounterVec> {
        let c = IntCounterVec::new(Opts::new(n, h), &["location"]).map_err(m)?;
        reg.register(Box::new(c.clone())).map_err(m)?;
        Ok(c)
    };
    let found = counter(
        "trireme_location_damaged_copies_found_total",
        "Missing, truncated or corrupt copies found at the location since the controller started (verification and replication)",
    )?;
    let repaired = counter(
        "trireme_location_damaged_copies_repaired_total",
        "Damaged copies at the location rewritten from a good copy since the controller started",
    )?;
    let last_quick = loc(
        "trireme_location_last_quick_verify_timestamp_seconds",
        "When every object at the location was last HEAD-checked (absent: never)",
    )?;
    let last_deep = loc(
        "trireme_location_last_deep_round_timestamp_seconds",
        "When the rolling deep verification last finished a round at the location (absent: never)",
    )?;
    let progress = GaugeVec::new(
        Opts::new(
            "trireme_location_deep_round_progress_ratio",
            "Share of the location's bytes re-read in the current deep round",
        ),
        &["location"],
    )
    .map_err(m)?;
    reg.register(Box::new(progress.clone())).map_err(m)?;
    for (name, st) in shared.replicator.states() {
        let l = [name.as_str()];
        reachable.with_label_values(&l).set(i64::from(st.reachable));
        objects.with_label_values(&l).set(st.objects as i64);
        bytes.with_label_values(&l).set(st.bytes as i64);
        found.with_label_values(&l).inc_by(st.problems_found);
        repaired.with_label_values(&l).inc_by(st.problems_repaired);
        // "Never" is an absent series, not a timestamp of 0.
        if let Some(t) = st.last_quick_verify {
            last_quick.with_label_values(&l).set(t.timestamp());
        }
        if let Some(t) = st.last_deep_round {
            last_deep.with_label_values(&l).set(t.timestamp());
        }
        progress.with_label_values(&l).set(st.deep_progress);
    }

    // Per source: the newest protected snapshot ([protection] rule).
    let satisfiable = IntGauge::new(
        "trireme_protection_rule_satisfiable",
        "1 when copies at the configured locations can meet the [protection] rule, 0 when no snapshot ever can",
    )
    .map_err(m)?;
    reg.register(Box::new(satisfiable.clone())).map_err(m)?;
    satisfiable.set(i64::from(shared.protection.config_problems().is_empty()));
    let protected = gauge_vec(
        &reg,
        "trireme_source_last_fully_verified_snapshot_timestamp_seconds",
        "Time of the source's newest protected snapshot: verified copies meeting the [protection] rule (absent: none)",
        &["source"],
    )
    .map_err(m)?;
    let newest_protected = gauge_vec(
        &reg,
        "trireme_source_newest_snapshot_protected",
        "1 when the source's newest snapshot's verified copies meet the [protection] rule, 0 when not",
        &["source"],
    )
    .map_err(m)?;
    let newest_copies = gauge_vec(
        &reg,
        "trireme_source_newest_snapshot_verified_copies",
        "Locations where the source's newest snapshot is verified",
        &["source"],
    )
    .map_err(m)?;
    for p in crate::replication::protection(&shared.catalog, &shared.protection)? {
        let source = [p.source.to_string()];
        if let Some(s) = &p.full {
            protected.with_label_values(&source).set(s.time.timestamp());
        }
        newest_copies
            .with_label_values(&source)
            .set(p.newest_verified as i64);
        newest_protected
            .with_label_values(&source)
            .set(i64::from(p.newest_shortfall.is_empty()));
    }

    // DR drills: the newest passed one, per location, and whether stale.
    let drill_last = IntGauge::new(
        "trireme_drill_last_success_timestamp_seconds",
        "When the newest passed DR drill finished (absent: none)",
    )
    .map_err(m)?;
    let drill_location = gauge_vec(
        &reg,
        "trireme_drill_location_last_success_timestamp_seconds",
        "When the newest passed DR drill reading from this location finished (absent: none)",
        &["location"],
    )
    .map_err(m)?;
    let drill_stale = IntGauge::new(
        "trireme_drill_stale",
        "1 when sources can be drilled and no drill passed within [drills] stale_after, or a location had no passed drill in a year; 0 otherwise",
    )
    .map_err(m)?;
    let drill_stale_after = IntGauge::new(
        "trireme_drill_stale_after_seconds",
        "The [drills] stale_after setting",
    )
    .map_err(m)?;
    for g in [&drill_last, &drill_stale, &drill_stale_after] {
        reg.register(Box::new(g.clone())).map_err(m)?;
    }
    let drills = shared.catalog.drills().values()?;
    if let Some(t) = drills
        .iter()
        .filter(|d| d.ok())
        .filter_map(|d| d.finished)
        .max()
    {
        drill_last.set(t.timestamp());
    }
    for l in &shared.locations {
        if let Some(t) = drills
            .iter()
            .filter(|d| d.ok() && d.location.as_deref() == Some(l.name.as_str()))
            .filter_map(|d| d.finished)
            .max()
        {
            drill_location
                .with_label_values(&[l.name.as_str()])
                .set(t.timestamp());
        }
    }
    let drillable = shared
        .catalog
        .policies()
        .values()?
        .iter()
        .any(|p| p.policy.restore_test.is_some());
    let names: Vec<String> = shared.locations.iter().map(|l| l.name.clone()).collect();
    drill_stale.set(i64::from(
        drillable
            && !crate::drills::problems(&drills, &shared.drills, &names, shared.now()).is_empty(),
    ));
    drill_stale_after.set(shared.drills.stale_after.as_secs() as i64);

    // Recovery objectives and restore tests.
    let fgauge = |n: &str, h: &str| -> Result<GaugeVec> {
        let g = GaugeVec::new(Opts::new(n, h), &["source"]).map_err(m)?;
        reg.register(Box::new(g.clone())).map_err(m)?;
        Ok(g)
    };
    let rpo_age = fgauge(
        "trireme_source_rpo_age_seconds",
        "Age of the source's newest protected snapshot (absent: none)",
    )?;
    let rpo = fgauge("trireme_source_rpo_seconds", "The source's RPO")?;
    let rto = fgauge("trireme_source_rto_seconds", "The source's RTO")?;
    let rpo_met = gauge_vec(
        &reg,
        "trireme_source_rpo_met",
        "1 when the source's newest protected snapshot is within its RPO, 0 when not",
        &["source"],
    )
    .map_err(m)?;
    let healthy = gauge_vec(
        &reg,
        "trireme_source_recovery_ok",
        "1 when the source meets its RPO and its last restore test passed within its RTO (status green)",
        &["source"],
    )
    .map_err(m)?;
    let test_ok = gauge_vec(
        &reg,
        "trireme_restore_test_success",
        "1 when the source's last restore test passed (restored, checked, within RTO)",
        &["source"],
    )
    .map_err(m)?;
    let test_time = gauge_vec(
        &reg,
        "trireme_restore_test_last_timestamp_seconds",
        "When the source's last restore test finished",
        &["source"],
    )
    .map_err(m)?;
    let test_secs = fgauge(
        "trireme_restore_test_duration_seconds",
        "How long the source's last restore test took",
    )?;
    for h in crate::recovery::health(&shared.catalog, &shared.protection, shared.now())? {
        let l = [h.source.to_string()];
        if let Some(a) = h.age {
            rpo_age.with_label_values(&l).set(a.as_secs_f64());
        }
        if let Some(r) = h.rpo {
            rpo.with_label_values(&l).set(r.as_secs_f64());
        }
        if let Some(r) = h.rto {
            rto.with_label_values(&l).set(r.as_secs_f64());
        }
        if let Some(ok) = h.rpo_ok {
            rpo_met.with_label_values(&l).set(i64::from(ok));
        }
        healthy.with_label_values(&l).set(i64::from(!h.red()));
        if let Some(t) = &h.last_test {
            test_ok.with_label_values(&l).set(i64::from(t.ok));
            if let Some(f) = t.finished {
                test_time.with_label_values(&l).set(f.timestamp());
            }
            test_secs.with_label_values(&l).set(t.duration_secs);
        }
    }

    let vol_ratio = fgauge(
        "trireme_source_volume_used_ratio",
        "Used share of the filesystem holding the source's data, as its agent reports it (warning at 0.75)",
    )?;
    for (source, v) in shared
        .volumes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
    {
        vol_ratio
            .with_label_values(&[source.to_string()])
            .set(v.ratio());
    }
    let vol_growth = fgauge(
        "trireme_source_volume_growth_bytes_per_day",
        "How fast the source's data volume fills (least squares over the kept samples; absent: too few)",
    )?;
    let vol_days = fgauge(
        "trireme_source_volume_days_until_warning",
        "Days until the source's data volume is 75% full at its growth rate (0: already; absent: not growing)",
    )?;
    for (source, samples) in shared.catalog.volume_samples().entries()? {
        if let Some(g) = crate::growth::growth(&samples.samples) {
            let l = [source.to_string()];
            vol_growth.with_label_values(&l).set(g.bytes_per_day);
            if let Some(d) = g.days_to_warn {
                vol_days.with_label_values(&l).set(d);
            }
        }
    }

    // Replication lag: per location, snapshots not yet verified there and
    // the age of the oldest of them.
    let behind = loc(
        "trireme_location_snapshots_behind",
        "Snapshots not yet verified at the location",
    )?;
    let lag = GaugeVec::new(
        Opts::new(
            "trireme_location_replication_lag_seconds",
            "Age of the oldest snapshot not yet verified at the location (0: none)",
        ),
        &["location"],
    )
    .map_err(m)?;
    reg.register(Box::new(lag.clone())).map_err(m)?;
    let now = shared.now();
    let snaps = shared.catalog.snapshots().values()?;
    for l in &shared.locations {
        let pending: Vec<_> = snaps
            .iter()
            .filter(|s| {
                !matches!(
                    s.copies.get(&l.name),
                    Some(crate::snapshots::CopyState::Verified { .. })
                )
            })
            .collect();
        behind
            .with_label_values(&[l.name.as_str()])
            .set(pending.len() as i64);
        let oldest = pending.iter().map(|s| s.time).min();
        lag.with_label_values(&[l.name.as_str()])
            .set(oldest.map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0));
    }

    // Per source: the newest snapshot's size and dedup.
    let last_bytes = fgauge(
        "trireme_source_last_backup_bytes",
        "Bytes in the source's newest snapshot",
    )?;
    let last_new = fgauge(
        "trireme_source_last_backup_new_bytes",
        "Bytes of new (not deduplicated) chunks in the source's newest snapshot",
    )?;
    let mut newest: std::collections::BTreeMap<String, &crate::snapshots::SnapshotRecord> =
        std::collections::BTreeMap::new();
    for s in &snaps {
        let k = s.source.to_string();
        if newest.get(&k).is_none_or(|n| n.time < s.time) {
            newest.insert(k, s);
        }
    }
    for (k, s) in newest {
        last_bytes
            .with_label_values(&[k.as_str()])
            .set(s.summary.bytes as f64);
        last_new
            .with_label_values(&[k.as_str()])
            .set(s.summary.new_bytes as f64);
    }

    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&reg.gather(), &mut out)
        .map_err(m)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr` until `stop` turns
/// true.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let metrics_of = shared.clone();
    let metrics: trireme_net::metrics_http::Render =
        Arc::new(move || render(&metrics_of).map_err(|e| e.to_string()));
    // Ready from the moment the gRPC listener is bound (before this starts)
    // until shutdown.
    let stopping = stop.clone();
    let ready: trireme_net::metrics_http::Render = Arc::new(move || {
        if *stopping.borrow() {
            return Err("shutting down".into());
        }
        Ok(format!(
            "ready: {} agents connected",
            shared.agents.connected().len()
        ))
    });
    let endpoints = trireme_net::metrics_http::Endpoints { metrics, ready };
    trireme_net::metrics_http::serve(addr, endpoints, stop)
        .await
        .map_err(|e| Error::Io {
            context: format!("metrics endpoint {addr}"),
            source: std::io::Error::other(e.to_string()),
        })
}
